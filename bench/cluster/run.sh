#!/usr/bin/env bash
# bench/cluster/run.sh: replication figures of a two-node cluster over a local
# redis-server (not run in CI). A leader and a follower ingest SERIES synthetic series
# (one sample per series per interval) for INTERVALS intervals; reported:
#   - replication lag, leader publish -> follower publish of the same generation
#     (the follower's replication_lag_ms of every entry, from `show cluster json`),
#     p50 / p99 / max;
#   - Redis bytes per interval (the log entry's size) and per sample, and the stream's
#     memory in Redis per sample (MEMORY USAGE over the entries it holds);
#   - CPU (user + system) of the leader's and the follower's writer per interval.
# Environment: SERIES=100000 INTERVAL=2s INTERVALS=40 LEASE=6s BUILD=build OUT=/tmp/telemetryd-cluster-bench
# (the lease must exceed the longest tick: a tick holds the writer's loop)
set -euo pipefail
cd "$(dirname "$0")/../.."
SERIES=${SERIES:-100000}
INTERVAL=${INTERVAL:-2s}
INTERVALS=${INTERVALS:-40}
LEASE=${LEASE:-6s}
BUILD=${BUILD:-build}
OUT=${OUT:-/tmp/telemetryd-cluster-bench}
TD=$BUILD/server/telemetryd
CTL=$BUILD/server/telemetryctl
PY=/usr/bin/python3
mkdir -p "$OUT"
rm -f "$OUT"/*.log
RPORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -f /dev/shm/tdclbench$$*
}
trap cleanup EXIT
trap 'exit 130' INT TERM

redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$OUT/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

HOSTS=$((SERIES / 10))
start_node() {  # name port [flags]
  local name=$1 port=$2
  shift 2
  "$TD" --listen 127.0.0.1:"$port" --workers 2 --shm-name "tdclbench$$$name" --admin-socket "$OUT/$name.sock" \
    --log-file "$OUT/$name.log" --interval "$INTERVAL" --source "synthetic://?hosts=$HOSTS&metrics=10" \
    --max-series $((SERIES * 2)) --max-series-per-source $((SERIES * 2)) --writer-stuck-timeout 10m \
    --cluster "redis://127.0.0.1:$RPORT" --cluster-name bench --node-id "$name" --lease "$LEASE" "$@" &
  PIDS+=($!)
}
start_node leader 18601
for _ in $(seq 300); do "$CTL" -s "$OUT/leader.sock" show cluster 2>/dev/null | grep -q '^role: leader' && break; sleep 0.2; done
start_node follower 18602 --role follower
for _ in $(seq 600); do curl -sf localhost:18602/healthz >/dev/null 2>&1 && break; sleep 0.2; done

writer_cpu() {  # node -> clock ticks of its writer (utime + stime)
  local pid
  pid=$("$CTL" -s "$OUT/$1.sock" show workers | awk '/^worker.0.pid:/ {print $2}')
  awk '{print $14 + $15}' "/proc/$pid/stat"
}
lcpu0=$(writer_cpu leader) fcpu0=$(writer_cpu follower)
gen0=$("$CTL" -s "$OUT/follower.sock" show cluster | awk '/^applied:/ {print $2}')
# One sample of the follower's lag per applied entry: poll faster than the interval.
: >"$OUT/lag.tsv"
end=$(( $(date +%s) + INTERVALS * ${INTERVAL%s} ))
while [ "$(date +%s)" -lt "$end" ]; do
  "$CTL" -s "$OUT/follower.sock" show cluster | awk '/^applied:/ {a=$2} /^replication_lag_ms:/ {l=$2} END {print a "\t" l}' >>"$OUT/lag.tsv"
  sleep 0.1
done
lcpu1=$(writer_cpu leader) fcpu1=$(writer_cpu follower)
gen1=$("$CTL" -s "$OUT/follower.sock" show cluster | awk '/^applied:/ {print $2}')
entries=$((gen1 - gen0))
hz=$(getconf CLK_TCK)

sizes=$(redis-cli -p "$RPORT" EVAL "local r = redis.call('XRANGE', KEYS[1], '-', '+')
  local n = 0
  for _, e in ipairs(r) do for i = 1, #e[2], 2 do if e[2][i] == 'e' then n = n + #e[2][i + 1] end end end
  return {#r, n}" 1 "{bench}:log" | tr "\n" " ")
memory=$(redis-cli -p "$RPORT" MEMORY USAGE "{bench}:log" SAMPLES 0)
$PY - "$OUT/lag.tsv" "$SERIES" "$entries" "$lcpu0" "$lcpu1" "$fcpu0" "$fcpu1" "$hz" "$memory" $sizes <<'PYEOF'
import sys
path, series, entries, l0, l1, f0, f1, hz, memory, n_entries, entry_bytes = sys.argv[1:]
series, entries, hz = int(series), max(1, int(entries)), int(hz)
lags = {}
for line in open(path):
    parts = line.split()
    if len(parts) == 2: lags[int(parts[0])] = int(parts[1])
values = sorted(list(lags.values())[1:])  # the first was applied before the window
def pct(p): return values[min(len(values) - 1, int(p * len(values)))] if values else float('nan')
n_entries, entry_bytes, memory = int(n_entries), int(entry_bytes), int(memory)
print(f"series {series}, entries measured {len(values)}")
print(f"replication lag ms: p50 {pct(0.5)}  p99 {pct(0.99)}  max {max(values) if values else 'nan'}")
print(f"log entry bytes per interval: {entry_bytes / n_entries:.0f}  per sample: {entry_bytes / n_entries / series:.2f}")
print(f"stream memory in Redis per sample: {memory / n_entries / series:.2f} ({n_entries} entries, {memory} bytes)")
print(f"writer CPU ms per interval: leader {(int(l1) - int(l0)) * 1000 / hz / entries:.0f}  follower {(int(f1) - int(f0)) * 1000 / hz / entries:.0f}")
PYEOF
