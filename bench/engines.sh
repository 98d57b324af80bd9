#!/usr/bin/env bash
# bench/engines.sh: the reader's two connection engines side by side with nginx `return
# 200` from memory (the CPU-per-request floor of an epoll server), in one run.
#
# Three servers run at once, each on its own port, every process pinned to SRV_CPU:
#   td-epoll     telemetryd --workers 2 (1 writer + 1 reader) --reader-engine epoll
#   td-io_uring  the same with --reader-engine io_uring
#   nginx-return nginx, 1 worker, `return 200 '<one series body>'` (bench/peers/nginx.conf.in)
# telemetryd serves 100,000 synthetic series, ingest publishing every 2 s (as
# bench/http.sh). wrk, pinned to WRK_CPU, requests random existing series keys
# (bench/wrk/random_series.lua) with CONNS connections for DURATION s; ROUNDS rounds, each
# running the three servers in turn, so that a change in the machine's load shows in all
# three. CPU per request = utime + stime (/proc/PID/stat, before and after the run) /
# requests: telemetryd's reader process alone, nginx's worker (the master sleeps).
# Prints every run, then the medians and the ratios to nginx-return and to td-epoll.
#
# Environment: CONNS=64 ROUNDS=3 DURATION=10 WRK_CPU=0 SRV_CPU=1 BUILD=build
#              OUT=/tmp/telemetryd-engines PORT=18490 (uses PORT..PORT+2)
#              PRIO="": a prefix for the servers and wrk; on a machine shared with other
#              work, PRIO="chrt -f 10" (root: real-time FIFO, bounded by the kernel's RT
#              throttling) keeps that work from delaying their wakeups. telemetryd's
#              writer leaves it (SCHED_BATCH, nice 19) as it does in production.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD
. scripts/deps.sh
ensure_packages wrk nginx-light

CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WRK_CPU=${WRK_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
BUILD=${BUILD:-build}
OUT=${OUT:-/tmp/telemetryd-engines}
PORT=${PORT:-18490}
PRIO=${PRIO:-}
HZ=$(getconf CLK_TCK)
PY=/usr/bin/python3
SERVERS="td-epoll td-io_uring nginx-return"

mkdir -p "$OUT"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -f /dev/shm/tdeng"$$"*
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== build ($BUILD, Release)"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j2 --target telemetryd telemetryctl >/dev/null
TD="$ROOT_DIR/$BUILD/server/telemetryd"
CTL="$ROOT_DIR/$BUILD/server/telemetryctl"

port_of() { case "$1" in td-epoll) echo "$PORT" ;; td-io_uring) echo $((PORT + 1)) ;; nginx-return) echo $((PORT + 2)) ;; esac; }
wait_http() {  # $1 = URL
  for _ in $(seq 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -m 1 "$1" || true)" = 200 ] && return 0
    sleep 0.1
  done
  echo "timeout waiting for $1" >&2; return 1
}

start_telemetryd() {  # $1 = engine
  local name="td-$1"
  $PRIO taskset -c "$SRV_CPU" "$TD" --listen "127.0.0.1:$(port_of "$name")" --workers 2 --shm-name "tdeng$$$1" \
    --admin-socket "$OUT/$name.sock" --source 'synthetic://?hosts=1000&metrics=100&seed=1' \
    --reader-engine "$1" --log-file "$OUT/$name.log" &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$(port_of "$name")/healthz"
  local running; running=$("$CTL" -s "$OUT/$name.sock" show info | sed -n 's/^reader_engines_running: //p')
  [ "$running" = "$1" ] || { echo "$name runs engine '$running', not $1 (see $OUT/$name.log)" >&2; exit 1; }
}
reader_pid() { "$CTL" -s "$OUT/$1.sock" show workers | sed -n 's/^worker\.1\.pid: //p'; }

echo "== start"
start_telemetryd epoll
start_telemetryd io_uring
sleep 3  # a few publishes: every series has samples
$PY bench/peers/dump_bodies.py "http://127.0.0.1:$PORT" "$OUT/keys" --keys-only
KEYS="$OUT/keys/keys.txt"
FIRST_KEY=$(head -n 1 "$KEYS")
BODY=$(curl -s "http://127.0.0.1:$PORT$FIRST_KEY")
mkdir -p "$OUT/nginx/tmp"
sed -e "s|@USER@|$(id -un)|" -e "s|@WORKERS@|1|" -e "s|@DIR@|$OUT/nginx|g" -e "s|@PORT@|$(port_of nginx-return)|" \
    -e "s|@ROOT@|$OUT/nginx|" bench/peers/nginx.conf.in |
  LOC="location /v1/series/ { return 200 '$BODY'; }" awk '{ if ($0 ~ /@LOCATION@/) print "    " ENVIRON["LOC"]; else print }' \
  >"$OUT/nginx/nginx.conf"
ulimit -n "$(ulimit -Hn)"
$PRIO taskset -c "$SRV_CPU" nginx -c "$OUT/nginx/nginx.conf" -e "$OUT/nginx/error.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$(port_of nginx-return)$FIRST_KEY"
NGINX_WORKER=$(cat /proc/"${PIDS[2]}"/task/*/children | awk '{print $1}')

measured_pid() { case "$1" in td-*) reader_pid "$1" ;; nginx-return) echo "$NGINX_WORKER" ;; esac; }
ticks() { sed 's/.*) //' /proc/"$1"/stat | awk '{print $12 + $13}'; }
run_wrk() {  # $1 = server, $2 = duration
  WRK_KEYS="$KEYS" WRK_SEED=1 WRK_LUA_DIR="$ROOT_DIR/bench/wrk" $PRIO taskset -c "$WRK_CPU" \
    wrk -t1 -c"$CONNS" -d"$2"s --timeout 5s -s bench/wrk/random_series.lua "http://127.0.0.1:$(port_of "$1")" |
    grep '^RESULT'
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

for s in $SERVERS; do run_wrk "$s" 2 >/dev/null; done  # warm-up
RES="$OUT/results.tsv"
echo -e "round\tserver\trps\tp50_us\tp99_us\tnon2xx\tsocket_errors\tcpu_us_per_req" | tee "$RES"
for r in $(seq "$ROUNDS"); do
  for s in $SERVERS; do
    pid=$(measured_pid "$s")
    a=$(ticks "$pid")
    line=$(run_wrk "$s" "$DURATION")
    b=$(ticks "$pid")
    n=$(field requests "$line")
    cpu=$(awk -v t=$((b - a)) -v n="$n" -v hz="$HZ" 'BEGIN { printf "%.3f", t / hz * 1e6 / n }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$s" "$(field rps "$line")" "$(field p50_us "$line")" \
      "$(field p99_us "$line")" "$(field non2xx "$line")" "$(field socket_errors "$line")" "$cpu" | tee -a "$RES"
  done
done

$PY - "$RES" <<'PYEOF' | tee "$OUT/summary.txt"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
servers = ["td-epoll", "td-io_uring", "nginx-return"]
med = {s: {k: statistics.median(float(r[k]) for r in rows if r["server"] == s)
           for k in ("rps", "p50_us", "p99_us", "cpu_us_per_req")} for s in servers}
errors = {s: sum(int(r["non2xx"]) + int(r["socket_errors"]) for r in rows if r["server"] == s) for s in servers}
print(f"medians of {len(rows) // 3} rounds")
print(f"{'server':13} {'req/s':>9} {'p50 us':>7} {'p99 us':>7} {'CPU us/req':>10} {'errors':>6}")
for s in servers:
    m = med[s]
    print(f"{s:13} {m['rps']:9.0f} {m['p50_us']:7.0f} {m['p99_us']:7.0f} {m['cpu_us_per_req']:10.3f} {errors[s]:6d}")
n = med["nginx-return"]
for s in ("td-epoll", "td-io_uring"):
    print(f"{s} / nginx-return: CPU per request {med[s]['cpu_us_per_req'] / n['cpu_us_per_req']:.2f}x, "
          f"req/s {med[s]['rps'] / n['rps']:.2f}x")
e = med["td-epoll"]
print(f"td-io_uring / td-epoll: CPU per request {med['td-io_uring']['cpu_us_per_req'] / e['cpu_us_per_req']:.2f}x, "
      f"req/s {med['td-io_uring']['rps'] / e['rps']:.2f}x")
PYEOF
echo "results: $RES, $OUT/summary.txt"
