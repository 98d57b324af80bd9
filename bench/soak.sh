#!/usr/bin/env bash
# bench/soak.sh: soak test (not run in CI). SOAK_SECONDS (default 600) of wrk load on
# random existing series while ingest publishes every interval (100,000 synthetic series,
# 2 readers). Passes when: no non-2xx and no socket errors, no process restarted, the
# snapshot generation advanced (at least half the expected publishes), and no process's
# private memory (RssAnon) grew by more than 10% + 8 MiB between the start sample (taken
# after WARMUP seconds of load) and the end. VmRSS (which includes the shared snapshot
# pages a process has touched) is reported too. Samples every 10 s to OUT/rss.tsv.
# Environment: SOAK_SECONDS=600 WARMUP=75 CONNS=64 BUILD=build-bench OUT=/tmp/telemetryd-soak
#              PORT=18490 WRK_CPU=0 SRV_CPU=1
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD
. scripts/deps.sh
. bench/lib.sh
ensure_packages wrk

SOAK_SECONDS=${SOAK_SECONDS:-600}
WARMUP=${WARMUP:-75}  # > the 1 min aggregation window: the writer's memory grows until it is full
CONNS=${CONNS:-64}
BUILD=${BUILD:-build-bench}
OUT=${OUT:-/tmp/telemetryd-soak}
PORT=${PORT:-18490}
WRK_CPU=${WRK_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
SHM="tdsoak$$"
SOCK="$OUT/td.sock"
PY=/usr/bin/python3
mkdir -p "$OUT"
TD_PID="" WRK_PID=""
cleanup() {
  [ -n "$WRK_PID" ] && kill "$WRK_PID" 2>/dev/null || true
  stop_process "$TD_PID"
  rm -f /dev/shm/"$SHM"*
}
on_exit cleanup

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j2 --target telemetryd telemetryctl >/dev/null
CTL="$BUILD/server/telemetryctl"

taskset -c "$SRV_CPU" "$BUILD/server/telemetryd" --listen "127.0.0.1:$PORT" --workers 3 --shm-name "$SHM" \
  --admin-socket "$SOCK" --source 'synthetic://?hosts=1000&metrics=100&seed=1' --log-file "$OUT/telemetryd.log" &
TD_PID=$!
wait_up "http://127.0.0.1:$PORT/healthz" "$TD_PID" || { echo "telemetryd died"; exit 1; }
$PY bench/peers/dump_bodies.py "http://127.0.0.1:$PORT" "$OUT" --keys-only

info() { "$CTL" -s "$SOCK" show info | sed -n "s/^$1: //p"; }
procs() { { echo "$TD_PID"; cat /proc/"$TD_PID"/task/*/children; } | tr ' ' '\n' | grep -v '^$'; }
sample() {  # $1 = label; one line per process: label t pid VmRSS_kB RssAnon_kB
  local p
  for p in $(procs); do
    awk -v l="$1" -v t="$SECONDS" -v p="$p" '/^VmRSS:/ { r = $2 } /^RssAnon:/ { a = $2 } END { print l "\t" t "\t" p "\t" r "\t" a }' /proc/"$p"/status
  done
}

echo "== soak: ${SOAK_SECONDS}s of wrk -c$CONNS (warm-up ${WARMUP}s included)"
PIDS_BEFORE=$(procs | sort | tr '\n' ' ')
GEN0=$(info generation)
WRK_KEYS="$OUT/keys.txt" WRK_SEED=7 WRK_LUA_DIR="$ROOT_DIR/bench/wrk" taskset -c "$WRK_CPU" \
  wrk -t1 -c"$CONNS" -d"${SOAK_SECONDS}s" --timeout 5s -s bench/wrk/random_series.lua "http://127.0.0.1:$PORT" \
  >"$OUT/wrk.txt" &
WRK_PID=$!
echo -e "label\tt_s\tpid\tvmrss_kb\trssanon_kb" >"$OUT/rss.tsv"
sleep "$WARMUP"
sample start | tee -a "$OUT/rss.tsv"
while kill -0 "$WRK_PID" 2>/dev/null; do
  sleep 10
  kill -0 "$WRK_PID" 2>/dev/null && sample mid >>"$OUT/rss.tsv"
done
sample end | tee -a "$OUT/rss.tsv"
wait "$WRK_PID" || true
WRK_PID=""
GEN1=$(info generation)
PIDS_AFTER=$(procs | sort | tr '\n' ' ')
RESULT=$(grep '^RESULT' "$OUT/wrk.txt" || true)
echo "$RESULT"

ok=1
bad() { echo "FAIL: $*"; ok=0; }
[ -n "$RESULT" ] || bad "no wrk result"
grep -q ' non2xx=0 ' <<<"$RESULT" || bad "non-2xx responses"
grep -q ' socket_errors=0$' <<<"$RESULT" || bad "socket errors"
[ "$PIDS_BEFORE" = "$PIDS_AFTER" ] || bad "processes changed: $PIDS_BEFORE -> $PIDS_AFTER"
[ "$(info restarts_writer)" = 0 ] && [ "$(info restarts_reader)" = 0 ] || bad "restarts"
INTERVAL_S=2
expect=$((SOAK_SECONDS / INTERVAL_S / 2))
echo "generation: $GEN0 -> $GEN1 (expected at least +$expect)"
[ $((GEN1 - GEN0)) -ge "$expect" ] || bad "generation advanced only $((GEN1 - GEN0))"
echo "RSS per process, start -> end (kB):"
while read -r pid; do
  s=$(awk -v p="$pid" '$1 == "start" && $3 == p' "$OUT/rss.tsv")
  e=$(awk -v p="$pid" '$1 == "end" && $3 == p' "$OUT/rss.tsv")
  [ -n "$s" ] && [ -n "$e" ] || continue
  read -r _ _ _ rs as <<<"$s"; read -r _ _ _ re ae <<<"$e"
  echo "  pid $pid: VmRSS $rs -> $re, RssAnon $as -> $ae"
  [ "$ae" -le $((as + as / 10 + 8192)) ] || bad "pid $pid private memory grew: $as -> $ae kB"
done <<<"$(procs)"
[ "$ok" = 1 ] && echo "SOAK PASS" || { echo "SOAK FAIL"; exit 1; }
