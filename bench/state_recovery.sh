#!/usr/bin/env bash
# bench/state_recovery.sh: how long a standalone node takes to get its window back from
# its state dir (docs/performance.md, State dir). A synthetic source of HOSTS x METRICS
# series runs until the window is full and a checkpoint exists, then:
#   restart  the service is stopped (SIGTERM) and started again on the same state dir:
#            time from the start to the first publish (the recovered window, before any
#            tick), and the writer's own figure (show info state_recovery_ms: restore +
#            replay);
#   kill     the writer is SIGKILLed: state_recovery_ms of the new writer, and the time
#            from the kill to its first publish (its first tick: a fetch and a build).
# Each series' count is checked to go on (one series, before and after).
# Environment: HOSTS=10000 METRICS=100 (1,000,000 series) INTERVAL=10s WINDOW=60s
#   CHECKPOINT_EVERY=3 ROUNDS=2 BUILD=build OUT=(a temporary directory, removed at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTS=${HOSTS:-10000}
METRICS=${METRICS:-100}
INTERVAL=${INTERVAL:-10s}
WINDOW=${WINDOW:-60s}
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-3}
ROUNDS=${ROUNDS:-2}
BUILD=${BUILD:-build}
TELEMETRYD=$PWD/$BUILD/server/telemetryd
TELEMETRYCTL=$PWD/$BUILD/server/telemetryctl
[ -x "$TELEMETRYD" ] || { echo "build telemetryd first: cmake --build $BUILD --target telemetryd telemetryctl"; exit 1; }
OUT=${OUT:-$(mktemp -d /tmp/tdstate.XXXXXX)}
SHM="tdstate$$"
SOCK="$OUT/td.sock"
LOG="$OUT/telemetryd.log"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TD_PID=""
cleanup() {
  [ -n "$TD_PID" ] && kill -TERM "$TD_PID" 2>/dev/null && wait "$TD_PID" 2>/dev/null || true
  rm -rf "$OUT"
}
trap cleanup EXIT
trap "exit 130" INT TERM

ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
info() { "$TELEMETRYCTL" -s "$SOCK" show info 2>/dev/null | sed -n "s/^$1: //p"; }
KEY=""  # the first series of the first metric, once there is a snapshot
first_key() {
  python3 - "$PORT" <<'PY'
import json, sys, urllib.parse, urllib.request
base = "http://127.0.0.1:" + sys.argv[1]
get = lambda p: json.loads(urllib.request.urlopen(base + p, timeout=30).read())
m = get("/v1/metrics")["metrics"][0]["metric"]
print("/v1/series/" + urllib.parse.quote(get("/v1/metrics/" + urllib.parse.quote(m, safe=""))["series"][0], safe=""))
PY
}
count() { curl -s -m 10 "http://127.0.0.1:$PORT$KEY" | grep -o '"count":[0-9]*' | cut -d: -f2 | grep . || echo 0; }
start() {
  "$TELEMETRYD" --source "synthetic://?hosts=$HOSTS&metrics=$METRICS" --interval "$INTERVAL" --window "$WINDOW" \
    --workers 2 --listen "127.0.0.1:$PORT" --shm-name "$SHM" --admin-socket "$SOCK" --log-file "$LOG" \
    --state-dir "$OUT/state" --checkpoint-every "$CHECKPOINT_EVERY" --writer-stuck-timeout 10m \
    --max-series 2000000 --max-series-per-source 2000000 &
  TD_PID=$!
}
# Until the generation passes $1 (bounded: 10 minutes).
wait_generation() {
  for _ in $(seq 12000); do
    [ "$(info generation || echo 0)" -gt "$1" ] 2>/dev/null && return 0
    sleep 0.05
  done
  echo "no generation past $1"; exit 1
}

echo "== $((HOSTS * METRICS)) series, interval $INTERVAL, window $WINDOW, checkpoint every $CHECKPOINT_EVERY entries; $(nproc) cores"
start
# A full window and a checkpoint with entries after it.
WINDOW_TICKS=$(python3 -c "import sys; p=lambda s: float(s[:-2])/1000 if s.endswith('ms') else float(s[:-1]); print(int(p('$WINDOW')/p('$INTERVAL'))+1)")
wait_generation "$((WINDOW_TICKS + CHECKPOINT_EVERY))"
KEY=$(first_key)
echo "window full: generation $(info generation), count $(count), checkpoint $(info state_checkpoint_bytes) bytes, log $(info state_log_bytes) bytes"

for round in $(seq "$ROUNDS"); do
  # restart: stop, start, first publish
  c0=$(count)
  kill -TERM "$TD_PID"; wait "$TD_PID" || true
  t0=$(ms)
  start
  wait_generation 0
  t1=$(ms)
  echo "restart $round: first publish $((t1 - t0)) ms after the start; recovery $(info state_recovery_ms) ms, $(info state_recovery_entries) entries replayed; count $c0 -> $(count)"
  # kill: SIGKILL the writer, its successor's recovery and first publish
  wait_generation "$(($(info generation) + CHECKPOINT_EVERY))"
  c0=$(count) g0=$(info generation) pid=$(info writer_pid)
  t0=$(ms)
  kill -KILL "$pid"
  wait_generation "$g0"
  t1=$(ms)
  echo "kill $round: first publish $((t1 - t0)) ms after the kill (its first tick); recovery $(info state_recovery_ms) ms, $(info state_recovery_entries) entries replayed; count $c0 -> $(count)"
done
grep -E "state: (recovered|checkpoint|log)" "$LOG" | tail -n 4
