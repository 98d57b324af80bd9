// sdk_e2e.mjs: end-to-end test of the OTLP/HTTP receiver with the real OpenTelemetry
// JavaScript SDK. Starts telemetryd (argv[2]) with --otlp-listen on free loopback ports
// and a 200ms interval, exports known values through the JSON exporter (cumulative)
// and the protobuf exporter (gzip, delta temporality) in two collections each, and
// checks the aggregates telemetryd's read API then serves. Run by run_sdk_e2e.sh.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { OTLPMetricExporter as JsonExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { AggregationTemporalityPreference } from '@opentelemetry/exporter-metrics-otlp-http';
import { OTLPMetricExporter as ProtoExporter } from '@opentelemetry/exporter-metrics-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';

const telemetryd = process.argv[2];
const deadlineMs = 15000;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function poll(what, fn) {
  const end = Date.now() + deadlineMs;
  let last;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ''}`);
}

const dir = mkdtempSync(join(tmpdir(), 'telemetryd-otlp-sdk-'));
const [apiPort, otlpPort] = [await freePort(), await freePort()];
const service = spawn(telemetryd, [
  '--listen', `127.0.0.1:${apiPort}`, '--otlp-listen', `127.0.0.1:${otlpPort}`,
  '--interval', '200ms', '--workers', '2', '--shm-name', `tmd-otlp-sdk-${process.pid}`,
  '--admin-socket', join(dir, 'admin.sock'), '--log-file', join(dir, 'telemetryd.log'),
  '--source', 'synthetic://?hosts=1&metrics=1',
], { stdio: 'inherit' });
let exited = false;
service.on('exit', () => { exited = true; });

const api = (path) => fetch(`http://127.0.0.1:${apiPort}${path}`);

// One meter provider per exporter; two collections with known values in between.
async function exportThrough(exporter, prefix) {
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3600000 });
  const provider = new MeterProvider({
    resource: resourceFromAttributes({ 'service.name': 'sdk-e2e' }),
    readers: [reader],
  });
  const meter = provider.getMeter('sdk-e2e');
  const requests = meter.createCounter(`${prefix}.requests`);
  const inflight = meter.createUpDownCounter(`${prefix}.inflight`);
  const latency = meter.createHistogram(`${prefix}.latency`);
  let temperature = 21.5;
  meter.createObservableGauge(`${prefix}.temperature`).addCallback((r) => r.observe(temperature));

  requests.add(5, { route: '/a' });
  inflight.add(10);
  for (const v of [0.2, 0.4, 3]) latency.record(v);
  await reader.forceFlush();  // rejects when the export fails
  await new Promise((r) => setTimeout(r, 300));  // a later timestamp for the second
  requests.add(7, { route: '/a' });
  inflight.add(-3);
  latency.record(7);
  temperature = 23;
  await reader.forceFlush();
  await provider.shutdown();
}

async function series(metric, filter = '') {
  const res = await api(`/v1/query?metric=${encodeURIComponent(metric)}${filter}`);
  if (res.status !== 200) return null;
  const body = await res.json();
  const list = body.series ?? [];
  if (list.length !== 1) return null;
  const one = list[0];
  if (typeof one === 'string') {
    const r = await api(`/v1/series/${encodeURIComponent(one)}`);
    return r.status === 200 ? r.json() : null;
  }
  return one;
}

const failures = [];
function check(what, got, want, tolerance = 1e-9) {
  const ok = typeof got === 'number' && Math.abs(got - want) <= tolerance * Math.max(1, Math.abs(want));
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}: ${got} (want ${want})`);
  if (!ok) failures.push(what);
}

// What telemetryd must show, from what the SDK was given: the counter went 5 -> 12,
// the up-down counter 10 -> 7, the gauge 21.5 -> 23, the histogram had 3
// observations (sum 3.6), then 4 (sum 10.6). The provider's shutdown collects a third
// time: cumulative points and gauges repeat their values, delta instruments without
// news export nothing (the SDK keeps up-down counters cumulative). A cumulative
// series' window starts at its first point; a delta one counts from 0 at the first
// point's start.
async function verify(prefix, delta) {
  const req = await poll(`${prefix}.requests`, async () => {
    const s = await series(`${prefix}.requests`, '&route=%2Fa');
    return s && s.last === 12 ? s : null;
  });
  check(`${prefix}.requests last`, req.last, 12);
  check(`${prefix}.requests first`, req.first, delta ? 0 : 5);
  check(`${prefix}.requests count`, req.count, 3);
  const dt = (req.last_ts - req.first_ts);
  check(`${prefix}.requests rate * dt`, req.rate * dt, delta ? 12 : 7, 1e-6);
  const inflight = await series(`${prefix}.inflight`);
  check(`${prefix}.inflight last`, inflight?.last, 7);
  check(`${prefix}.inflight sum`, inflight?.sum, 24);
  const temp = await series(`${prefix}.temperature`);
  check(`${prefix}.temperature last`, temp?.last, 23);
  check(`${prefix}.temperature first`, temp?.first, 21.5);
  check(`${prefix}.temperature count`, temp?.count, 3);
  const count = await series(`${prefix}.latency_count`);
  check(`${prefix}.latency_count last`, count?.last, 4);
  const sum = await series(`${prefix}.latency_sum`);
  check(`${prefix}.latency_sum last`, sum?.last, 10.6, 1e-9);
  const hist = await series(`${prefix}.latency`);
  check(`${prefix}.latency observations in the window`, hist?.count, delta ? 4 : 1);
  check(`${prefix}.latency sum in the window`, hist?.sum, delta ? 10.6 : 7, 1e-9);
}

let code = 0;
try {
  await poll('telemetryd to serve', async () => (await api('/v1/metrics')).status === 200);
  await poll('the OTLP receiver', async () =>
    (await fetch(`http://127.0.0.1:${otlpPort}/v1/metrics`)).status === 405);
  const url = `http://127.0.0.1:${otlpPort}/v1/metrics`;
  await exportThrough(new JsonExporter({ url }), 'sdk.json');
  await exportThrough(new ProtoExporter({
    url, compression: 'gzip', temporalityPreference: AggregationTemporalityPreference.DELTA,
  }), 'sdk.proto');
  await verify('sdk.json', false);
  await verify('sdk.proto', true);
  const sources = await (await api('/v1/status')).text();
  if (!sources.includes(`otlp://127.0.0.1:${otlpPort}`)) failures.push('otlp source in /v1/status');
  if (exited) failures.push('telemetryd exited');
  code = failures.length ? 1 : 0;
  if (failures.length) console.log(`failed: ${failures.join(', ')}`);
} catch (e) {
  console.log(`FAIL ${e.stack ?? e}`);
  code = 1;
} finally {
  service.kill('SIGTERM');
  await poll('telemetryd to exit', async () => exited).catch(() => service.kill('SIGKILL'));
  if (code) {
    try { console.log(readFileSync(join(dir, 'telemetryd.log'), 'utf8')); } catch {}
  }
  rmSync(dir, { recursive: true, force: true });
}
process.exit(code);
