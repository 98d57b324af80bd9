#!/usr/bin/env bash
# bench/writer.sh: the writer at scale, as an operator sizing a host would see it (not
# run in CI). A standalone node ingests `synthetic://?hosts=SERIES/100&metrics=100`
# (one sample per series per tick) at the default 2 s interval and 60 s window; once
# the window is full (WARMUP seconds), reported over MEASURE seconds:
#   - writer CPU (utime + stime from /proc/PID/stat) per tick, ticks published;
#   - writer RSS (VmRSS, the shared snapshot buffers it touched included);
#   - snapshot bytes per series (`show snapshot`);
# each with its ratio to its target (targets scaled linearly from a million series).
# Then bench_writer (the same tick in process, synthetic clock) for the state and
# checkpoint bytes per series, unless NODE_ONLY=1.
# Environment: SERIES=1000000 WARMUP=70 MEASURE=20 THREADS= (--writer-threads, default
# the node's) BUILD=build OUT=/tmp/telemetryd-writer-bench
set -euo pipefail
cd "$(dirname "$0")/.."
SERIES=${SERIES:-1000000}
WARMUP=${WARMUP:-70}
MEASURE=${MEASURE:-20}
THREADS=${THREADS:-}
BUILD=${BUILD:-build}
OUT=${OUT:-/tmp/telemetryd-writer-bench}
TD=$BUILD/server/telemetryd
CTL=$BUILD/server/telemetryctl
mkdir -p "$OUT"
rm -f "$OUT"/*.log
PID=
cleanup() {
  if [ -n "$PID" ]; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
  fi
  rm -f /dev/shm/tdwbench$$*
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
EXTRA=()
[ -n "$THREADS" ] && EXTRA+=(--writer-threads "$THREADS")
"$TD" --listen 127.0.0.1:"$PORT" --workers 2 --shm-name "tdwbench$$" --admin-socket "$OUT/node.sock" \
  --log-file "$OUT/node.log" --source "synthetic://?hosts=$((SERIES / 100))&metrics=100" \
  --max-series $((SERIES * 2)) --max-series-per-source $((SERIES * 2)) --writer-stuck-timeout 10m \
  "${EXTRA[@]}" &
PID=$!
for _ in $(seq 600); do curl -sf "127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
sleep "$WARMUP"

info() { "$CTL" -s "$OUT/node.sock" show info | awk -v k="$1:" '$1 == k {print $2}'; }
WPID=$(info writer_pid)
cpu() { awk '{print $14 + $15}' "/proc/$WPID/stat"; }
c0=$(cpu) g0=$(info generation)
sleep "$MEASURE"
c1=$(cpu) g1=$(info generation)
rss=$(awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$WPID/status")
snap=$("$CTL" -s "$OUT/node.sock" show snapshot | awk '$1 == "bytes:" {print $2}')
python3 - "$SERIES" "$MEASURE" "$c0" "$c1" "$g0" "$g1" "$(getconf CLK_TCK)" "$rss" "$snap" <<'PYEOF'
import sys
series, measure, c0, c1, g0, g1, hz, rss, snap = map(int, sys.argv[1:])
scale = series / 1e6
ticks = max(1, g1 - g0)
cpu = (c1 - c0) / hz / ticks
print(f"node: {series} series, {measure} s measured after the window filled, {g1 - g0} ticks published "
      f"(of {measure / 2:.0f} due)")
print(f"  writer CPU per tick  {cpu * 1e3:8.0f} ms   target <= {1000 * scale:.0f} ms: {cpu / scale:.2f}x target")
print(f"  writer RSS           {rss / 1e6:8.0f} MB   target <= {2500 * scale:.0f} MB: {rss / 2.5e9 / scale:.2f}x target")
print(f"  snapshot per series  {snap / series:8.0f} B    target <= 400 B: {snap / series / 400:.2f}x target")
PYEOF
if [ "${NODE_ONLY:-0}" != 1 ]; then
  cleanup
  PID=
  "$BUILD/bench/writer/bench_writer" "$SERIES" 3 ${THREADS:+"$THREADS"}
fi
