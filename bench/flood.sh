#!/usr/bin/env bash
# bench/flood.sh: telemetryd under connection floods (not run in CI). telemetryd with
# 2 readers (--workers 3) on 100,000 synthetic series, on 127.0.0.1, the server pinned to
# core SRV_CPU and the clients to CLI_CPU (taskset), as in bench/http.sh.
#
# 1. Other clients' latency: bench/loadgen at a moderate constant RATE over CONNS
#    keep-alive connections for DURATION seconds, quiet, then while bench/flood holds IDLE idle
#    connections and SLOWLORIS clients that send a request head one byte a second
#    (reopened when the server closes them). RUNS of each, alternating. Also the readers'
#    CPU (utime+stime from /proc) during each loadgen run.
# 2. Burst: bench/flood opens BURST connections as fast as it can, one request on each,
#    and records each one's time to first response; the split of the connections over
#    the readers is read from `telemetryctl show workers` while they are held open.
# Output: OUT/latency.tsv, OUT/burst.tsv, medians on stdout and in OUT/summary.txt.
#
# Environment: RUNS=3 RATE=10000 CONNS=64 DURATION=20 IDLE=10000 SLOWLORIS=500 BURST=4000
#              WORKERS=3 BUILD=build-bench OUT=/tmp/telemetryd-flood PORT=18500
#              SRV_CPU=1 CLI_CPU=0 PARTS="latency burst"
#              TD=path/to/telemetryd (default: BUILD's; to compare two builds)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD
. bench/lib.sh

RUNS=${RUNS:-3}
RATE=${RATE:-10000}
CONNS=${CONNS:-64}
DURATION=${DURATION:-20}
IDLE=${IDLE:-10000}
SLOWLORIS=${SLOWLORIS:-500}
BURST=${BURST:-4000}
WORKERS=${WORKERS:-3}
BUILD=${BUILD:-build-bench}
OUT=${OUT:-/tmp/telemetryd-flood}
PORT=${PORT:-18500}
SRV_CPU=${SRV_CPU:-1}
CLI_CPU=${CLI_CPU:-0}
PARTS=${PARTS:-"latency burst"}
SHM="tdflood$$"
SOCK="$OUT/td.sock"
PY=/usr/bin/python3
HZ=$(getconf CLK_TCK)
mkdir -p "$OUT"

# Descriptors: the flood client holds IDLE + SLOWLORIS, each reader its share, and the
# burst client BURST. Both sides inherit this limit.
need=$((IDLE + SLOWLORIS + BURST + CONNS + 256))
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge "$need" ] ||
  { echo "ulimit -n is $(ulimit -n), need $need (raise the hard limit, or lower IDLE/BURST)" >&2; exit 1; }

TD_PID="" FLOOD_PID=""
stop_flood() {
  [ -n "$FLOOD_PID" ] || return 0
  kill "$FLOOD_PID" 2>/dev/null || true
  wait "$FLOOD_PID" 2>/dev/null || true
  FLOOD_PID=""
}
cleanup() {
  stop_flood
  stop_process "$TD_PID"
  rm -f /dev/shm/"$SHM"*
}
on_exit cleanup

echo "== build ($BUILD, Release)"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j2 --target telemetryd telemetryctl loadgen flood >/dev/null
TD=${TD:-$ROOT_DIR/$BUILD/server/telemetryd}
CTL="$ROOT_DIR/$BUILD/server/telemetryctl"
LOADGEN="$ROOT_DIR/$BUILD/bench/loadgen/loadgen"
FLOOD="$ROOT_DIR/$BUILD/bench/flood/flood"

taskset -c "$SRV_CPU" "$TD" --listen "127.0.0.1:$PORT" --workers "$WORKERS" --shm-name "$SHM" \
  --admin-socket "$SOCK" --source 'synthetic://?hosts=1000&metrics=100&seed=1' --log-file "$OUT/telemetryd.log" &
TD_PID=$!
wait_up "http://127.0.0.1:$PORT/healthz" "$TD_PID" || { echo "telemetryd died" >&2; exit 1; }
if [[ " $PARTS " == *" latency "* ]] && [ ! -s "$OUT/keys.txt" ]; then
  $PY bench/peers/dump_bodies.py "http://127.0.0.1:$PORT" "$OUT" --keys-only
fi
sleep 2

# Per reader (slot order): connections_open, comma-separated; and their sum.
split() { "$CTL" -s "$SOCK" show workers | awk -F': ' '/\.role: reader/ { r = 1; next } /\.role:/ { r = 0 } r && /connections_open/ { printf "%s%s", sep, $2; sep = "," } END { print "" }'; }
open_total() { split | tr ',' '\n' | awk '{ s += $1 } END { print s + 0 }'; }
reader_ticks() {  # utime+stime of the readers (the supervisor's children but the writer)
  local writer t=0 p
  writer=$("$CTL" -s "$SOCK" show workers | awk -F': ' '/\.role: writer/ { w = 1; next } w && /\.pid:/ { print $2; exit }')
  for p in $(cat /proc/"$TD_PID"/task/*/children 2>/dev/null); do
    [ "$p" = "$writer" ] && continue
    t=$((t + $(sed 's/.*) //' /proc/"$p"/stat | awk '{ print $12 + $13 }')))
  done
  echo "$t"
}
wait_open() {  # $1 = at least this many open (or at most, with $2 = below)
  for _ in $(seq 1200); do
    local n; n=$(open_total)
    if [ "${2:-}" = below ]; then [ "$n" -le "$1" ] && return 0; else [ "$n" -ge "$1" ] && return 0; fi
    sleep 0.1
  done
  echo "timeout waiting for $1 open connections (now $(open_total))" >&2; return 1
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
loadgen_run() {  # prints: rps p50 p99 p999 max non2xx reader_cpu_percent
  local a b line
  a=$(reader_ticks)
  line=$(taskset -c "$CLI_CPU" "$LOADGEN" --port "$PORT" --keys "$OUT/keys.txt" --conns "$CONNS" \
           --rate "$RATE" --duration "$DURATION" --seed 1 | grep '^RESULT')
  b=$(reader_ticks)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(field rps "$line")" "$(field p50_us "$line")" "$(field p99_us "$line")" \
    "$(field p999_us "$line")" "$(field max_us "$line")" "$(field non2xx "$line")" \
    "$(awk -v t=$((b - a)) -v hz="$HZ" -v s="$DURATION" 'BEGIN { printf "%.1f", t / hz / s * 100 }')"
}

if [[ " $PARTS " == *" latency "* ]]; then
  echo "== latency: loadgen $RATE req/s over $CONNS connections, ${DURATION}s; quiet vs $IDLE idle + $SLOWLORIS slowloris"
  echo -e "case\trun\trps\tp50_us\tp99_us\tp999_us\tmax_us\tnon2xx\treader_cpu_pct\topen_during" >"$OUT/latency.tsv"
  for r in $(seq "$RUNS"); do
    printf 'quiet\t%s\t%s\t%s\n' "$r" "$(loadgen_run)" "$(split)" | tee -a "$OUT/latency.tsv"
    taskset -c "$CLI_CPU" "$FLOOD" hold --port "$PORT" --idle "$IDLE" --slowloris "$SLOWLORIS" \
      --duration $((DURATION + 60)) >"$OUT/hold.$r.txt" &
    FLOOD_PID=$!
    wait_open $((IDLE + SLOWLORIS))
    sleep 1
    printf 'flood\t%s\t%s\t%s\n' "$r" "$(loadgen_run)" "$(split)" | tee -a "$OUT/latency.tsv"
    stop_flood
    wait_open 0 below
  done
fi

if [[ " $PARTS " == *" burst "* ]]; then
  echo "== burst: $BURST connections at once, time to first response (GET /healthz)"
  echo -e "run\tconns\tanswered\tfailed\tseconds\trate\tttfr_p50_ms\tttfr_p99_ms\tttfr_max_ms\tsplit" >"$OUT/burst.tsv"
  for r in $(seq "$RUNS"); do
    taskset -c "$CLI_CPU" "$FLOOD" burst --port "$PORT" --conns "$BURST" --hold 3 >"$OUT/burst.$r.txt" &
    FLOOD_PID=$!
    for _ in $(seq 600); do grep -q '^RESULT' "$OUT/burst.$r.txt" && break; sleep 0.1; done
    sleep 0.5
    s=$(split)
    line=$(grep '^RESULT' "$OUT/burst.$r.txt")
    wait "$FLOOD_PID" || true
    FLOOD_PID=""
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$(field conns "$line")" "$(field answered "$line")" \
      "$(field failed "$line")" "$(field seconds "$line")" "$(field rate "$line")" "$(field ttfr_p50_ms "$line")" \
      "$(field ttfr_p99_ms "$line")" "$(field ttfr_max_ms "$line")" "$s" | tee -a "$OUT/burst.tsv"
    wait_open 0 below
  done
fi

$PY - "$OUT" >"$OUT/summary.txt" <<'PYEOF'
import csv, os, statistics, sys
out = sys.argv[1]
def rows(name):
    p = os.path.join(out, name)
    return list(csv.DictReader(open(p), delimiter="\t")) if os.path.exists(p) else []
def med(rs, k):
    return statistics.median(float(r[k]) for r in rs) if rs else float("nan")
lat = rows("latency.tsv")
if lat:
    print(f"{'case':6} {'runs':>4} {'rps':>8} {'p50_us':>7} {'p99_us':>7} {'p99.9_us':>8} {'max_us':>8} {'non2xx':>6} {'reader_cpu%':>11}")
    for case in ("quiet", "flood"):
        rs = [r for r in lat if r["case"] == case]
        print(f"{case:6} {len(rs):4d} {med(rs,'rps'):8.0f} {med(rs,'p50_us'):7.0f} {med(rs,'p99_us'):7.0f} "
              f"{med(rs,'p999_us'):8.0f} {med(rs,'max_us'):8.0f} {sum(int(r['non2xx']) for r in rs):6d} {med(rs,'reader_cpu_pct'):11.1f}")
    q = [r for r in lat if r["case"] == "quiet"]; f = [r for r in lat if r["case"] == "flood"]
    if q and f:
        print(f"p99 flood / quiet: {med(f,'p99_us') / med(q,'p99_us'):.2f}")
b = rows("burst.tsv")
if b:
    print(f"burst of {b[0]['conns']}: runs {len(b)}, seconds {med(b,'seconds'):.3f}, rate {med(b,'rate'):.0f}/s, "
          f"ttfr p50 {med(b,'ttfr_p50_ms'):.1f} ms, p99 {med(b,'ttfr_p99_ms'):.1f} ms, max {med(b,'ttfr_max_ms'):.1f} ms, "
          f"failed {sum(int(r['failed']) for r in b)}, splits {' '.join(r['split'] for r in b)}")
PYEOF
cat "$OUT/summary.txt"
