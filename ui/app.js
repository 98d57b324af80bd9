// ui/app.js: the behaviour of telemetryd's web view (ui/index.html).
//
// Polls GET /v1/status every second and shows the service from it; whenever the
// snapshot generation changes it refreshes the metric list (GET /v1/metrics) and the
// open metric's series (GET /v1/query), so the page follows every publish without a
// reload. Label search reads metric rollups (GET /v1/metrics/NAME), a bounded number per
// search. Only GET requests: nothing here can change the service. No framework, no build
// step; the Content-Security-Policy allows this file and nothing else to run.
'use strict';

const POLL_MS = 1000;             // /v1/status, while the page is visible
const HIDDEN_POLL_MS = 10000;     // while the tab is in the background
const FETCH_TIMEOUT_MS = 10000;
const PAGE = 100;                 // series per page of /v1/query ("Show more")
const MAX_LIMIT = 10000;          // /v1/query's largest page
const HISTORY_POINTS = 120;       // recent values kept per series for the sparklines
const HISTORY_SERIES = 5000;      // series whose history is kept at all
const SEARCH_MAX_METRICS = 50;    // rollups fetched per label search, at most
const SEARCH_MAX_SERIES = 100000; // series keys downloaded per label search, at most
const ROLLUP_TTL_MS = 30000;      // a rollup's labels are reused this long
const SEARCH_CONCURRENCY = 4;

const $ = (id) => document.getElementById(id);

const state = {
  generation: -1,
  generationTimes: [],   // [performance.now(), generation] at each change seen
  lastRequests: null,    // {t, byPid}: the previous poll, for rates
  metrics: [],
  metricsSort: { key: 'metric', dir: 1 },
  searchRun: 0,
  rollups: new Map(),    // metric -> {at, seriesCount, labels: Map(name -> Set(value))}
  metric: null,
  series: [],
  seriesSort: { key: 'key', dir: 1 },
  seriesLimit: PAGE,
  nextCursor: null,
  seriesRun: 0,
  history: new Map(),    // series key -> [{t, v}] (t: the sample's time, Unix seconds)
  chartKey: null,
  chartOpener: null,
};

// ---------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

// Text and a short word for the state, never colour alone.
function badge(kind, text) {
  return el('span', { class: `badge ${kind}`, text });
}

// Five significant digits: enough to read, narrow enough for a table (cells keep the
// exact value in their title).
function fmtNum(v) {
  if (v === null || v === undefined) return '–';
  if (typeof v !== 'number') return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e9 || a < 1e-4)) return v.toExponential(4);
  return String(Number(v.toPrecision(5)));
}

function fmtCount(n) {
  return n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US');
}

function fmtBytes(n) {
  if (!n) return '0 B';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; ++i; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return '–';
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86400)} d`;
}

function since(iso) {
  if (!iso) return null;
  return Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
}

function timeText(iso) {
  return iso ? `${fmtAge(since(iso))} ago` : 'never';
}

// Replaces a tbody's rows with `rows` (tr elements keyed by data-key), moving an
// existing row only when its place changes, so that focus inside it survives a refresh.
function placeRows(tbody, rows) {
  rows.forEach((row, i) => {
    if (tbody.children[i] !== row) tbody.insertBefore(row, tbody.children[i] || null);
  });
  while (tbody.children.length > rows.length) tbody.lastElementChild.remove();
}

async function getJSON(url) {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), FETCH_TIMEOUT_MS);
  try {
    // no-cache: revalidate with the ETag every time (a 304 when nothing changed).
    const r = await fetch(url, { cache: 'no-cache', signal: ctrl.signal, headers: { Accept: 'application/json' } });
    const body = await r.json().catch(() => null);
    if (!r.ok) throw new Error(body && body.error ? `HTTP ${r.status}: ${body.error}` : `HTTP ${r.status}`);
    if (body === null) throw new Error('the response is not JSON');
    return { body, generation: Number(r.headers.get('X-Snapshot-Generation') || 0) };
  } catch (e) {
    if (e.name === 'AbortError') throw new Error(`no answer within ${FETCH_TIMEOUT_MS / 1000} s`);
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

// `name="value"` pairs of a canonical series key (values unescaped: \\, \", \n).
function keyLabels(key) {
  const out = [];
  let i = key.indexOf('{');
  if (i < 0) return out;
  ++i;
  while (i < key.length && key[i] !== '}') {
    const eq = key.indexOf('=', i);
    if (eq < 0 || key[eq + 1] !== '"') break;
    const name = key.slice(i, eq);
    let j = eq + 2, value = '';
    while (j < key.length && key[j] !== '"') {
      if (key[j] === '\\' && j + 1 < key.length) {
        value += key[j + 1] === 'n' ? '\n' : key[j + 1];
        j += 2;
      } else {
        value += key[j++];
      }
    }
    out.push([name, value]);
    i = j + 1;
    if (key[i] === ',') ++i;
  }
  return out;
}

// "cpu host=web-1" -> words that must appear in the metric name, and label pairs.
function parseTerms(text) {
  const words = [], labels = [];
  for (const t of text.trim().split(/\s+/)) {
    if (!t) continue;
    const eq = t.indexOf('=');
    if (eq > 0) labels.push([t.slice(0, eq), t.slice(eq + 1)]);
    else words.push(t.toLowerCase());
  }
  return { words, labels };
}

// ---------------------------------------------------------------------------------
// Service status
// ---------------------------------------------------------------------------------

async function poll() {
  try {
    const { body } = await getJSON('/v1/status');
    showStatus(body);
  } catch (e) {
    showUnreachable(e);
  }
  setTimeout(poll, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
}

// The badge is a live region: its text is only touched when it changes.
function setHealth(kind, text) {
  const h = $('health');
  h.className = `badge ${kind}`;
  if (h.textContent !== text) h.textContent = text;
}

function showUnreachable(e) {
  setHealth('bad', 'UNREACHABLE');
  setBanner([`The service did not answer /v1/status: ${e.message}. The figures below are from the last answer.`]);
}

function setBanner(problems) {
  const b = $('banner');
  const text = problems.join('\n');
  if (b.dataset.text === text) return;  // unchanged: leave it (and screen readers) alone
  b.dataset.text = text;
  b.replaceChildren();
  if (!problems.length) {
    b.hidden = true;
    return;
  }
  b.hidden = false;
  if (problems.length === 1) b.textContent = problems[0];
  else b.append(el('ul', {}, ...problems.map((p) => el('li', { text: p }))));
}

function showStatus(s) {
  const now = performance.now();
  const problems = [];
  if (s.status === 'stale') {
    problems.push(`The snapshot is ${fmtAge(s.age_s)} old (healthy below ${fmtAge(s.healthz_max_age_s)}): the writer is not publishing.`);
  } else if (s.status !== 'ok') {
    problems.push('No snapshot has been published yet.');
  }
  const failing = s.sources.filter((x) => x.state === 'failing');
  if (failing.length) problems.push(`${failing.length} of ${s.sources.length} source${s.sources.length > 1 ? 's' : ''} failing: ${failing.map((x) => x.url).join(', ')}.`);
  if (s.writer.state !== 'running') problems.push(`Writer: ${s.writer.state === 'none' ? 'not running' : 'late (no heartbeat for ' + fmtCount(s.writer.heartbeat_age_ms) + ' ms)'}.`);
  const late = s.readers.filter((r) => r.state !== 'running');
  if (late.length) problems.push(`${late.length} reader${late.length > 1 ? 's' : ''} late.`);
  if (s.status === 'stale') setHealth('warn', 'STALE SNAPSHOT');
  else if (s.status !== 'ok') setHealth('bad', 'NO SNAPSHOT');
  else if (problems.length) setHealth('warn', 'DEGRADED');  // fresh, but something else is wrong
  else setHealth('ok', 'OK');
  setBanner(problems);

  // Requests per second, from the difference to the previous poll.
  const byPid = new Map(s.readers.map((r) => [r.pid, r.requests]));
  const prev = state.lastRequests;
  const dt = prev ? (now - prev.t) / 1000 : 0;
  const rate = (pid, requests) => {
    if (!prev || dt <= 0 || !prev.byPid.has(pid)) return null;
    return Math.max(0, requests - prev.byPid.get(pid)) / dt;
  };
  let totalRate = null;
  if (prev && dt > 0) totalRate = s.readers.reduce((a, r) => a + (rate(r.pid, r.requests) || 0), 0);
  state.lastRequests = { t: now, byPid };

  if (s.generation !== state.generation) {
    state.generationTimes.push([now, s.generation]);
    if (state.generationTimes.length > 10) state.generationTimes.shift();
  }
  $('generation').textContent = String(s.generation);
  const age = $('age');
  age.textContent = s.age_s === null ? 'none' : fmtAge(s.age_s);
  age.className = s.status === 'ok' ? '' : 'alert';
  $('interval').textContent = intervalText(s);
  $('rps').textContent = totalRate === null ? '–' : fmtNum(Math.round(totalRate * 10) / 10);
  $('updated').textContent = new Date().toLocaleTimeString();

  $('built').textContent = s.built_at ? `${new Date(s.built_at).toLocaleTimeString()} (${timeText(s.built_at)})` : 'never';
  $('snap-size').textContent = `${fmtBytes(s.snapshot_bytes)}, ${fmtCount(s.snapshot_records)} records`;
  $('publishes').textContent = fmtCount(s.publishes);
  $('skipped').textContent = fmtCount(s.publish_skipped);
  $('max-age').textContent = fmtAge(s.healthz_max_age_s);
  $('started').textContent = s.started_at ? `${new Date(s.started_at).toLocaleString()} (${timeText(s.started_at)})` : '–';
  $('restarts').textContent = `writer ${s.restarts.writer}, readers ${s.restarts.reader}`;
  $('kills').textContent = `writer ${s.watchdog_kills.writer}, readers ${s.watchdog_kills.reader}`;
  $('reader-count').textContent = String(s.readers.length);
  $('connections').textContent = fmtCount(s.readers.reduce((a, r) => a + r.connections_open, 0));

  showSources(s.sources);
  showWorkers(s, rate);
  showCluster(s.cluster);

  if (s.generation !== state.generation) {
    state.generation = s.generation;
    refreshMetrics();
    refreshSeries();
  }
}

function intervalText(s) {
  if (s.interval_s) return `${fmtNum(s.interval_s)} s`;
  const t = state.generationTimes;
  if (t.length < 3) return '–';  // the first change seen may have been half an interval in
  const [t0, g0] = t[1], [t1, g1] = t[t.length - 1];
  return g1 > g0 ? `≈${((t1 - t0) / 1000 / (g1 - g0)).toFixed(1)} s` : '–';
}

function showSources(sources) {
  const tbody = $('sources').tBodies[0];
  if (!sources.length) {
    tbody.replaceChildren(el('tr', {}, el('td', { colspan: 8, class: 'hint', text: 'No sources configured.' })));
    return;
  }
  tbody.replaceChildren(...sources.map((x) => {
    const st = x.state === 'failing' ? badge('bad', 'FAILING') : x.state === 'ok' ? badge('ok', 'ok') : badge('muted', x.state);
    return el('tr', { class: x.state === 'failing' ? 'failing' : null, 'data-url': x.url },
      el('th', { scope: 'row', class: 'url' }, el('code', { text: x.url }), x.format ? el('span', { class: 'hint', text: ` ${x.format}` }) : null),
      el('td', {}, st),
      el('td', { class: 'num', text: x.last_status ? String(x.last_status) : '–' }),
      el('td', { class: 'nowrap', title: x.last_fetch || '', text: timeText(x.last_fetch) }),
      el('td', { class: 'num', text: fmtCount(x.samples) }),
      el('td', { class: 'num', text: fmtCount(x.dropped) }),
      el('td', { class: 'num', text: fmtCount(x.errors) }),
      el('td', { class: 'error', title: x.last_error_at || '', text: x.last_error || '–' }));
  }));
}

function showWorkers(s, rate) {
  const w = s.writer;
  const writerState = w.state === 'running' ? badge('ok', 'running') : w.state === 'late' ? badge('warn', 'LATE') : badge('bad', 'NOT RUNNING');
  const rows = [el('tr', {},
    el('th', { scope: 'row', text: 'writer' }), el('td', { class: 'num', text: '–' }),
    el('td', { class: 'num', text: w.pid === null ? '–' : String(w.pid) }), el('td', {}, writerState),
    el('td', { class: 'num', text: w.heartbeat_age_ms === null ? '–' : `${fmtCount(w.heartbeat_age_ms)} ms` }),
    el('td', { class: 'num', text: '–' }), el('td', { class: 'num', text: '–' }), el('td', { class: 'num', text: '–' }))];
  for (const r of s.readers) {
    const rps = rate(r.pid, r.requests);
    rows.push(el('tr', { class: r.state === 'running' ? null : 'late' },
      el('th', { scope: 'row', text: 'reader' }), el('td', { class: 'num', text: String(r.slot) }),
      el('td', { class: 'num', text: String(r.pid) }),
      el('td', {}, r.state === 'running' ? badge('ok', 'running') : badge('warn', 'LATE')),
      el('td', { class: 'num', text: `${fmtCount(r.heartbeat_age_ms)} ms` }),
      el('td', { class: 'num', text: fmtCount(r.requests) }),
      el('td', { class: 'num', text: rps === null ? '–' : fmtNum(Math.round(rps * 10) / 10) }),
      el('td', { class: 'num', text: fmtCount(r.connections_open) })));
  }
  $('workers').tBodies[0].replaceChildren(...rows);
}

// A cluster node's status is `show cluster json` (docs/operations.md): this node's role,
// term, leader, Redis and sync state, and the live members as the last heartbeat saw them.
function showCluster(cluster) {
  $('cluster-single').hidden = !!cluster;
  $('cluster-nodes').hidden = !cluster || !!(cluster && cluster.partitioning);
  $('cluster-partitions').hidden = !(cluster && cluster.partitioning);
  if (!cluster) return;
  if (cluster.partitioning) return showPartitions(cluster);
  const state = cluster.degraded ? 'degraded: Redis unreachable'
    : cluster.follow_problem && cluster.follow_problem !== '-' ? `cannot follow: ${cluster.follow_problem}`
    : cluster.synced ? 'synced' : 'syncing';
  $('cluster-self').textContent = `This node: ${cluster.node_id}, ${cluster.role} in term ${cluster.term}; ` +
    `leader ${cluster.leader_id}; Redis ${cluster.redis} (${cluster.redis_address}); ${state}; ` +
    `applied ${fmtCount(cluster.applied)}, replication lag ${fmtCount(cluster.replication_lag_ms)} ms`;
  const members = Array.isArray(cluster.node) ? cluster.node : [];
  $('cluster-nodes').querySelector('tbody').replaceChildren(...members.map((n) => el('tr', { 'data-key': n.node_id },
    el('th', { scope: 'row', text: String(n.node_id) }),
    el('td', { text: n.node_id === cluster.leader_id ? 'leader' : n.may_lead === false ? 'follower only' : String(n.role) }),
    el('td', { class: 'num', text: fmtCount(n.applied) }),
    el('td', { class: 'num', text: `${fmtCount(n.lag_ms)} ms` }))));
}

// A partitioned node: the partition map as the members' heartbeats publish it (each
// member's ready partitions), and this node's own share with its state.
function showPartitions(cluster) {
  const p = cluster.partitioning;
  const held = new Map((Array.isArray(p.held) ? p.held : []).map((h) => [h.partition, h]));
  const members = Array.isArray(cluster.node) ? cluster.node : [];
  const readyOn = (part) => members.filter((n) => String(n.partitions).split(',').includes(String(part)))
    .map((n) => n.node_id);
  $('partitions-self').textContent = `This node: ${cluster.node_id}; ${p.partitions} partitions, each held by ` +
    `${p.replication_factor} nodes; it holds ${held.size}; Redis ${cluster.redis}; ` +
    `${cluster.ready ? 'ready' : 'syncing'}; ${members.length} members`;
  const rows = [];
  for (let part = 0; part < p.partitions; ++part) {
    const h = held.get(part);
    const holders = readyOn(part);
    rows.push(el('tr', { 'data-key': String(part) },
      el('th', { scope: 'row', text: String(part) }),
      el('td', { text: holders.length ? holders.join(', ') : 'none ready' }),
      el('td', { text: h ? String(h.state) : '–' }),
      el('td', { text: h && h.primary ? 'yes' : '–' }),
      el('td', { class: 'num', text: h ? fmtCount(h.generation) : '–' })));
  }
  $('cluster-partitions').querySelector('tbody').replaceChildren(...rows);
}

// ---------------------------------------------------------------------------------
// Metrics list and search
// ---------------------------------------------------------------------------------

async function refreshMetrics() {
  try {
    const { body } = await getJSON('/v1/metrics');
    state.metrics = body.metrics || [];
    await showMetrics();
  } catch (e) {
    $('search-note').textContent = `Could not load the metrics: ${e.message}`;
  }
}

async function rollupLabels(metric, seriesCount) {
  const cached = state.rollups.get(metric);
  if (cached && cached.seriesCount === seriesCount && performance.now() - cached.at < ROLLUP_TTL_MS) return cached.labels;
  const { body } = await getJSON(`/v1/metrics/${encodeURIComponent(metric)}`);
  const labels = new Map();
  for (const key of body.series || []) {
    for (const [name, value] of keyLabels(key)) {
      if (!labels.has(name)) labels.set(name, new Set());
      labels.get(name).add(value);
    }
  }
  state.rollups.set(metric, { at: performance.now(), seriesCount, labels });
  return labels;
}

function hasLabels(labels, wanted) {
  return wanted.every(([name, value]) => labels.has(name) && (value === '' || labels.get(name).has(value)));
}

// Filters the list by the search box. Label terms need each metric's rollup: fetched
// for at most SEARCH_MAX_METRICS metrics and SEARCH_MAX_SERIES series keys per search,
// and the page says how many were left out.
async function showMetrics() {
  const run = ++state.searchRun;
  const { words, labels } = parseTerms($('metric-search').value);
  let shown = state.metrics.filter((m) => words.every((w) => m.metric.toLowerCase().includes(w)));
  const note = $('search-note');
  note.textContent = '';
  if (labels.length) {
    const byName = [...shown].sort((a, b) => (a.metric < b.metric ? -1 : 1));
    const toCheck = [];
    let keys = 0, skipped = 0;
    for (const m of byName) {
      if (toCheck.length >= SEARCH_MAX_METRICS || keys + m.series_count > SEARCH_MAX_SERIES) {
        ++skipped;
        continue;
      }
      toCheck.push(m);
      keys += m.series_count;
    }
    note.textContent = `Searching the labels of ${toCheck.length} metrics…`;
    const matched = new Set();
    let failed = 0, next = 0;
    const worker = async () => {
      while (next < toCheck.length && run === state.searchRun) {
        const m = toCheck[next++];
        try {
          if (hasLabels(await rollupLabels(m.metric, m.series_count), labels)) matched.add(m.metric);
        } catch (e) {
          ++failed;
        }
      }
    };
    await Promise.all(Array.from({ length: SEARCH_CONCURRENCY }, worker));
    if (run !== state.searchRun) return;  // a newer search took over
    shown = shown.filter((m) => matched.has(m.metric));
    const parts = [];
    if (skipped) parts.push(`Label search limit reached: looked at ${toCheck.length} of ${byName.length} metrics (at most ${SEARCH_MAX_METRICS} metrics and ${fmtCount(SEARCH_MAX_SERIES)} series per search); add a word of the metric name to narrow it.`);
    if (failed) parts.push(`${failed} metric${failed > 1 ? 's' : ''} could not be read.`);
    note.textContent = parts.join(' ');
  }
  renderMetrics(shown);
}

function renderMetrics(list) {
  const { key, dir } = state.metricsSort;
  list = [...list].sort((a, b) => {
    const x = a[key], y = b[key];
    return (x < y ? -1 : x > y ? 1 : 0) * dir || (a.metric < b.metric ? -1 : 1);
  });
  const tbody = $('metrics').tBodies[0];
  const old = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
  const rows = list.map((m) => {
    let tr = old.get(m.metric);
    if (!tr) {
      const open = el('button', { type: 'button', class: 'link', text: m.metric });
      open.addEventListener('click', () => openMetric(m.metric));
      tr = el('tr', { 'data-key': m.metric }, el('th', { scope: 'row' }, open), el('td', { class: 'num' }));
      tr.addEventListener('click', (ev) => { if (ev.target === tr || ev.target.tagName === 'TD') openMetric(m.metric); });
    }
    tr.cells[1].textContent = fmtCount(m.series_count);
    const current = m.metric === state.metric;
    tr.classList.toggle('current', current);
    if (current) tr.setAttribute('aria-current', 'true');
    else tr.removeAttribute('aria-current');
    return tr;
  });
  placeRows(tbody, rows);
  $('metrics-count').textContent = `${list.length} of ${state.metrics.length} metrics`;
}

// ---------------------------------------------------------------------------------
// One metric's series
// ---------------------------------------------------------------------------------

function openMetric(name) {
  if (state.metric !== name) {
    state.metric = name;
    state.series = [];
    state.seriesLimit = PAGE;
    state.nextCursor = null;
    $('series').tBodies[0].replaceChildren();
    $('series-filter').value = '';
  }
  const hash = `#metric=${encodeURIComponent(name)}`;
  if (location.hash !== hash) history.replaceState(null, '', hash);
  $('metric-h').textContent = name;
  $('metric-empty').hidden = true;
  $('metric-view').hidden = false;
  for (const tr of $('metrics').tBodies[0].children) {
    const current = tr.dataset.key === name;
    tr.classList.toggle('current', current);
    if (current) tr.setAttribute('aria-current', 'true');
    else tr.removeAttribute('aria-current');
  }
  refreshSeries();
}

function queryURL(limit, cursor) {
  const p = new URLSearchParams();
  p.set('metric', state.metric);
  for (const [name, value] of parseTerms($('series-filter').value).labels) p.append(name, value);
  p.set('limit', String(limit));
  if (cursor) p.set('cursor', cursor);
  return `/v1/query?${p}`;
}

// Reads the first seriesLimit series (at most MAX_LIMIT) in one request, from the start.
async function refreshSeries() {
  if (!state.metric) return;
  const run = ++state.seriesRun;
  const metric = state.metric;
  try {
    const { body, generation } = await getJSON(queryURL(Math.min(state.seriesLimit, MAX_LIMIT)));
    if (run !== state.seriesRun || metric !== state.metric) return;
    state.series = body.series;
    state.nextCursor = body.next_cursor || null;
    showSeries(generation);
  } catch (e) {
    if (run === state.seriesRun) $('series-count').textContent = `could not load: ${e.message}`;
  }
}

// "Show more": one page more, read with the rest in the next single request (so that
// a refresh racing with the click cannot drop it).
function moreSeries() {
  state.seriesLimit = Math.min(state.seriesLimit + PAGE, MAX_LIMIT);
  refreshSeries();
}

function remember(s) {
  if (s.last === null || s.last_ts === null) return;
  let h = state.history.get(s.key);
  if (!h) {
    if (state.history.size >= HISTORY_SERIES) state.history.delete(state.history.keys().next().value);
    h = [];
    state.history.set(s.key, h);
  }
  if (h.length && h[h.length - 1].t === s.last_ts) return;
  h.push({ t: s.last_ts, v: s.last });
  if (h.length > HISTORY_POINTS) h.shift();
}

function labelText(s) {
  const pairs = Object.entries(s.labels || {});
  return pairs.length ? pairs.map(([k, v]) => `${k}=${v}`).join(' ') : '(no labels)';
}

const SERIES_FIELDS = ['count', 'last', 'mean', 'min', 'max', 'rate', 'p50', 'p90', 'p99'];

function showSeries(generation) {
  for (const s of state.series) remember(s);
  $('series-generation').textContent = String(generation);
  $('series-count').textContent = `${state.series.length} series${state.nextCursor ? ' shown, more available' : ''}`;
  $('more').hidden = !state.nextCursor || state.series.length >= MAX_LIMIT;

  const { key, dir } = state.seriesSort;
  const value = (s) => (key === 'key' ? labelText(s) : s[key]);
  const list = [...state.series].sort((a, b) => {
    const x = value(a), y = value(b);
    if (x === null && y !== null) return 1;   // missing values last, whatever the direction
    if (y === null && x !== null) return -1;
    return (x < y ? -1 : x > y ? 1 : 0) * dir || (a.key < b.key ? -1 : 1);
  });
  const tbody = $('series').tBodies[0];
  const old = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
  const rows = list.map((s) => {
    let tr = old.get(s.key);
    if (!tr) {
      const open = el('button', { type: 'button', class: 'link', title: s.key, text: labelText(s) });
      open.addEventListener('click', () => openChart(s.key, open));
      tr = el('tr', { 'data-key': s.key }, el('th', { scope: 'row' }, open), el('td', { class: 'spark' }),
        ...SERIES_FIELDS.map((f) => el('td', { class: 'num', 'data-field': f })), el('td', { 'data-field': 'stale' }));
      tr.addEventListener('click', (ev) => { if (ev.target.closest('td')) openChart(s.key, open); });
    }
    tr.cells[1].replaceChildren(sparkline(state.history.get(s.key) || []));
    SERIES_FIELDS.forEach((f, i) => {
      const cell = tr.cells[i + 2];
      cell.textContent = f === 'count' ? fmtCount(s[f]) : fmtNum(s[f]);
      cell.title = s[f] === null ? '' : String(s[f]);  // the exact value, on hover
    });
    tr.cells[SERIES_FIELDS.length + 2].replaceChildren(s.stale ? badge('warn', 'STALE') : el('span', { class: 'hint', text: 'no' }));
    tr.classList.toggle('stale', !!s.stale);
    return tr;
  });
  placeRows(tbody, rows);
  if (state.chartKey) drawChart();
}

function sparkline(points) {
  const w = 80, h = 22;
  const svg = svgEl('svg', { viewBox: `0 0 ${w} ${h}`, width: w, height: h, class: 'sparkline', 'aria-hidden': 'true' });
  if (points.length < 2) return svg;
  svg.append(svgEl('polyline', { points: scale(points, w, h, 2).join(' '), fill: 'none' }));
  return svg;
}

// Points as "x,y" strings inside a w x h box with a margin `pad`.
function scale(points, w, h, pad, box) {
  const b = box || bounds(points);
  return points.map((p) => {
    const x = pad + ((p.t - b.t0) / (b.t1 - b.t0 || 1)) * (w - 2 * pad);
    const y = h - pad - ((p.v - b.v0) / (b.v1 - b.v0 || 1)) * (h - 2 * pad);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
}

function bounds(points) {
  let v0 = Infinity, v1 = -Infinity;
  for (const p of points) { v0 = Math.min(v0, p.v); v1 = Math.max(v1, p.v); }
  return { t0: points[0].t, t1: points[points.length - 1].t, v0, v1 };
}

// ---------------------------------------------------------------------------------
// The larger chart of one series
// ---------------------------------------------------------------------------------

function openChart(key, opener) {
  state.chartKey = key;
  state.chartOpener = opener;
  drawChart();
  const d = $('chart');
  if (!d.open) d.showModal();
}

function drawChart() {
  const s = state.series.find((x) => x.key === state.chartKey);
  const points = state.history.get(state.chartKey) || [];
  $('chart-title').textContent = state.chartKey;
  const w = 640, h = 270, padL = 64, pad = 18;
  const svg = svgEl('svg', { viewBox: `0 0 ${w} ${h}`, class: 'chart', role: 'img',
    'aria-label': `recent values of ${state.chartKey}: ${points.length} points` });
  if (points.length >= 2) {
    const b = bounds(points);
    const plot = scale(points, w - padL, h, pad, b).map((xy) => {
      const [x, y] = xy.split(',');
      return `${(Number(x) + padL).toFixed(1)},${y}`;
    });
    svg.append(svgEl('line', { x1: padL, y1: pad, x2: padL, y2: h - pad, class: 'axis' }));
    svg.append(svgEl('line', { x1: padL, y1: h - pad, x2: w - pad, y2: h - pad, class: 'axis' }));
    const label = (x, y, text, anchor) => {
      const t = svgEl('text', { x, y, 'text-anchor': anchor || 'end', class: 'tick' });
      t.textContent = text;
      svg.append(t);
    };
    label(padL - 6, pad + 4, fmtNum(b.v1));
    label(padL - 6, h - pad, fmtNum(b.v0));
    const clock = (t) => new Date(t * 1000).toLocaleTimeString();
    label(padL, h - 2, clock(b.t0), 'start');
    label(w - pad, h - 2, clock(b.t1), 'end');
    svg.append(svgEl('polyline', { points: plot.join(' '), fill: 'none', class: 'line' }));
    for (const xy of plot) {
      const [x, y] = xy.split(',');
      svg.append(svgEl('circle', { cx: x, cy: y, r: 2.5, class: 'dot' }));
    }
    $('chart-note').textContent = `${points.length} values over the last ${fmtAge(b.t1 - b.t0)} (kept while this page is open).`;
  } else {
    $('chart-note').textContent = 'Collecting: the chart fills as new samples arrive while this page is open.';
  }
  const facts = s ? el('dl', { class: 'kv inline' }, ...SERIES_FIELDS.concat(['stale']).flatMap((f) =>
    [el('dt', { text: f }), el('dd', { text: f === 'stale' ? (s.stale ? 'STALE' : 'no') : fmtNum(s[f]) })])) : null;
  $('chart-body').replaceChildren(svg, facts || '');
}

// ---------------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------------

function sortable(table, sortState, apply) {
  for (const th of table.tHead.querySelectorAll('th[data-sort]')) {
    th.querySelector('button').addEventListener('click', () => {
      const key = th.dataset.sort;
      sortState.dir = sortState.key === key ? -sortState.dir : (key === 'metric' || key === 'key' ? 1 : -1);
      sortState.key = key;
      for (const other of table.tHead.querySelectorAll('th[data-sort]')) other.removeAttribute('aria-sort');
      th.setAttribute('aria-sort', sortState.dir > 0 ? 'ascending' : 'descending');
      apply();
    });
  }
}

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

function openFromHash() {
  const m = /^#metric=(.+)$/.exec(location.hash);
  if (m) openMetric(decodeURIComponent(m[1]));
}

document.addEventListener('DOMContentLoaded', () => {
  sortable($('metrics'), state.metricsSort, () => showMetrics());
  sortable($('series'), state.seriesSort, () => showSeries(Number($('series-generation').textContent) || 0));
  $('metric-search').addEventListener('input', debounce(showMetrics, 250));
  $('series-filter').addEventListener('input', debounce(() => {
    state.seriesLimit = PAGE;
    refreshSeries();
  }, 250));
  $('more').addEventListener('click', moreSeries);
  $('chart-close').addEventListener('click', () => $('chart').close());
  $('chart').addEventListener('close', () => {
    state.chartKey = null;
    if (state.chartOpener && state.chartOpener.isConnected) state.chartOpener.focus();
  });
  window.addEventListener('hashchange', openFromHash);
  openFromHash();
  poll();
});
