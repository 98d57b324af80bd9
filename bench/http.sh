#!/usr/bin/env bash
# bench/http.sh: HTTP load test of telemetryd against two peers, with wrk on one core and
# the servers on the other (taskset). 100,000 synthetic series; wrk requests random
# existing series keys (bench/wrk/random_series.lua, deterministic seed).
#
# Servers, same machine, same bodies:
#   telemetryd-2r  telemetryd --workers 3 (1 writer + 2 readers), ingest publishing every 2 s
#   telemetryd-1r  telemetryd --workers 2 (1 writer + 1 reader)
#   nginx-static   nginx, as many workers as telemetryd-2r readers, the bodies as files
#   nginx-return   nginx answering `return 200` with one body from memory (CPU reference)
#   python-dict    one Uvicorn asyncio worker (uvloop + httptools: its fastest Debian setup),
#                  bodies in a dict swapped every 2 s
#   python-pure    the same on the standard asyncio loop and the pure-Python h11 parser
# For every server and connection count, RUNS runs of DURATION s: requests/s, p50/p99/
# p99.9 latency, non-2xx, socket errors, and the server's CPU time per request
# (utime+stime from /proc/PID/stat of all its processes, before/after each run; for
# telemetryd also the readers alone). Then latency at a constant rate of half each
# server's peak, at every connection count, with bench/loadgen (open loop, Poisson
# arrivals, latency counted from each request's scheduled time; wrk paced from Lua spends
# most of its core on the script and its own queueing shows in its latencies).
# Output: OUT/results.tsv, OUT/summary.txt, OUT/rate.tsv, docs/throughput.png (PLOT=1).
#
# Environment: CONNS="16 64 256" RUNS=3 DURATION=10 SERVERS="..." WRK_CPU=0 SRV_CPU=1
#              BUILD=build-bench OUT=/tmp/telemetryd-http PORT=18480 PLOT=1 RATE_SECONDS=10
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD
. bench/lib.sh
. scripts/deps.sh
ensure_packages wrk nginx-light python3-uvicorn python3-uvloop python3-httptools gnuplot-nox

CONNS=${CONNS:-"16 64 256"}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
SERVERS=${SERVERS:-"telemetryd-2r telemetryd-1r nginx-static nginx-return python-dict python-pure"}
WRK_CPU=${WRK_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
BUILD=${BUILD:-build-bench}
OUT=${OUT:-/tmp/telemetryd-http}
PORT=${PORT:-18480}
PLOT=${PLOT:-1}
RATE_SECONDS=${RATE_SECONDS:-10}
SHM="tdhttp$$"
PY=/usr/bin/python3   # Debian's python3, where python3-uvicorn lives
HZ=$(getconf CLK_TCK)

mkdir -p "$OUT"
ulimit -n 262144 2>/dev/null || ulimit -n "$(ulimit -Hn)"  # nginx's open_file_cache, 256 conns
RES="$OUT/results.tsv"
RATE_RES="$OUT/rate.tsv"
SRV_PID=""

stop_server() {
  [ -n "$SRV_PID" ] || return 0
  stop_process "$SRV_PID" 100
  wait "$SRV_PID" 2>/dev/null || true
  SRV_PID=""
}
cleanup() { stop_server; rm -f /dev/shm/"$SHM"*; }
on_exit cleanup

echo "== build ($BUILD, Release)"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j2 --target telemetryd telemetryctl loadgen >/dev/null
TD="$ROOT_DIR/$BUILD/server/telemetryd"
LOADGEN="$ROOT_DIR/$BUILD/bench/loadgen/loadgen"

SOURCE='synthetic://?hosts=1000&metrics=100&seed=1'
start_telemetryd() {  # $1 = workers
  taskset -c "$SRV_CPU" "$TD" --listen "127.0.0.1:$PORT" --workers "$1" --shm-name "$SHM" \
    --admin-socket "$OUT/td.sock" --source "$SOURCE" --log-file "$OUT/telemetryd.log" &
  SRV_PID=$!
}
wait_http() {  # $1 = URL
  for _ in $(seq 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -m 1 "$1" || true)" = 200 ] && return 0
    kill -0 "$SRV_PID" 2>/dev/null || { echo "server died" >&2; return 1; }
    sleep 0.1
  done
  echo "timeout waiting for $1" >&2; return 1
}

# The bodies: dump once from telemetryd (each series body as served).
DUMP="$OUT/dump"
if [ ! -s "$DUMP/bodies.json" ]; then
  echo "== dump 100,000 series bodies"
  start_telemetryd 2
  wait_http "http://127.0.0.1:$PORT/healthz"
  sleep 3  # a few publishes: every series has samples
  rm -rf "$DUMP"; mkdir -p "$DUMP"
  $PY bench/peers/dump_bodies.py "http://127.0.0.1:$PORT" "$DUMP"
  stop_server
fi
KEYS="$DUMP/keys.txt"
FIRST_KEY=$(head -n 1 "$KEYS")

nginx_conf() {  # $1 = static|return
  local dir="$OUT/nginx-$1" loc
  mkdir -p "$dir/tmp"
  if [ "$1" = static ]; then
    loc='location /v1/series/ { try_files $uri =404; }'
  else
    # One representative body (the first key's), from memory.
    local body; body=$(cat "$DUMP/www/v1/series/$($PY -c 'import sys,urllib.parse; print(urllib.parse.unquote(sys.argv[1][11:]))' "$FIRST_KEY")")
    loc="location /v1/series/ { return 200 '$body'; }"
  fi
  sed -e "s|@USER@|$(id -un)|" -e "s|@WORKERS@|$NGINX_WORKERS|" -e "s|@DIR@|$dir|g" -e "s|@PORT@|$PORT|" \
      -e "s|@ROOT@|$DUMP/www|" bench/peers/nginx.conf.in | LOC="$loc" awk '{ if ($0 ~ /@LOCATION@/) print "    " ENVIRON["LOC"]; else print }' >"$dir/nginx.conf"
  echo "$dir/nginx.conf"
}
NGINX_WORKERS=2

start_server() {  # $1 = name; sets SRV_PID and URL_CHECK
  case "$1" in
    telemetryd-2r) start_telemetryd 3 ;;
    telemetryd-1r) start_telemetryd 2 ;;
    nginx-static|nginx-return)
      local conf; conf=$(nginx_conf "${1#nginx-}")
      taskset -c "$SRV_CPU" nginx -c "$conf" -e "$(dirname "$conf")/error.log" & SRV_PID=$! ;;
    python-dict|python-pure)
      local loop=uvloop http=httptools
      [ "$1" = python-pure ] && loop=asyncio http=h11
      BODIES="$DUMP/bodies.json" INTERVAL=2 taskset -c "$SRV_CPU" $PY -m uvicorn --app-dir bench/peers \
        dict_server:app --host 127.0.0.1 --port "$PORT" --workers 1 --loop $loop --http $http \
        --no-access-log --log-level warning &
      SRV_PID=$! ;;
  esac
  wait_http "http://127.0.0.1:$PORT$FIRST_KEY"
}

# All processes of the server: the top pid and its descendants.
pids_of() {
  local p=$1 c
  echo "$p"
  for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do pids_of "$c"; done
}
# utime+stime ticks over pids; $2 = "readers" keeps telemetryd's readers only (children
# of the supervisor except the writer, which is the first child started).
cpu_ticks() {
  local which=${2:-all} pids p t=0
  if [ "$which" = readers ]; then
    pids=$(cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -v "^$WRITER_PID\$" || true)
  else
    pids=$(pids_of "$1")
  fi
  for p in $pids; do
    [ -r /proc/"$p"/stat ] || continue
    t=$((t + $(sed 's/.*) //' /proc/"$p"/stat | awk '{print $12 + $13}')))
  done
  echo "$t"
}

run_wrk() {  # $1 = conns, $2 = duration, $3 = lua; prints the RESULT line
  WRK_KEYS="$KEYS" WRK_SEED=1 WRK_LUA_DIR="$ROOT_DIR/bench/wrk" taskset -c "$WRK_CPU" \
    wrk -t1 -c"$1" -d"$2"s --timeout 5s -s "$3" "http://127.0.0.1:$PORT" | grep '^RESULT'
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

echo -e "server\tconns\trun\trps\tp50_us\tp99_us\tp999_us\tnon2xx\tsocket_errors\tcpu_us_per_req\treader_cpu_us_per_req" >"$RES"
for s in $SERVERS; do
  echo "== $s"
  start_server "$s"
  WRITER_PID=""
  case "$s" in telemetryd-*)
    WRITER_PID=$(awk '/started writer/ { sub(/\)/, "", $NF); w=$NF } END { print w }' "$OUT/telemetryd.log")
    sleep 2 ;;
  esac
  run_wrk 16 2 "$ROOT_DIR/bench/wrk/random_series.lua" >/dev/null  # warm-up
  for c in $CONNS; do
    for r in $(seq "$RUNS"); do
      a=$(cpu_ticks "$SRV_PID"); ar=$(cpu_ticks "$SRV_PID" readers)
      line=$(run_wrk "$c" "$DURATION" "$ROOT_DIR/bench/wrk/random_series.lua")
      b=$(cpu_ticks "$SRV_PID"); br=$(cpu_ticks "$SRV_PID" readers)
      n=$(field requests "$line")
      cpu=$(awk -v t=$((b - a)) -v n="$n" -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
      rcpu="-"
      [ -n "$WRITER_PID" ] && rcpu=$(awk -v t=$((br - ar)) -v n="$n" -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$c" "$r" "$(field rps "$line")" \
        "$(field p50_us "$line")" "$(field p99_us "$line")" "$(field p999_us "$line")" \
        "$(field non2xx "$line")" "$(field socket_errors "$line")" "$cpu" "$rcpu" | tee -a "$RES"
    done
  done
  stop_server
done

# Medians per server and connection count.
$PY - "$RES" >"$OUT/summary.txt" <<'PYEOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
groups = {}
for r in rows:
    groups.setdefault((r["server"], int(r["conns"])), []).append(r)
def med(rs, k):
    v = [float(r[k]) for r in rs if r[k] not in ("-", "")]
    return statistics.median(v) if v else float("nan")
print(f"{'server':14} {'conns':>5} {'rps':>9} {'p50_us':>7} {'p99_us':>7} {'p99.9_us':>8} {'non2xx':>6} {'sockerr':>7} {'cpu_us/req':>10} {'reader_us/req':>13}")
for (s, c), rs in groups.items():
    print(f"{s:14} {c:5d} {med(rs,'rps'):9.0f} {med(rs,'p50_us'):7.0f} {med(rs,'p99_us'):7.0f} {med(rs,'p999_us'):8.0f} "
          f"{sum(int(r['non2xx']) for r in rs):6d} {sum(int(r['socket_errors']) for r in rs):7d} {med(rs,'cpu_us_per_req'):10.2f} {med(rs,'reader_cpu_us_per_req'):13.2f}")
PYEOF
cat "$OUT/summary.txt"

# Latency at a constant rate of half of each server's peak (its best median rps).
if [ "$RATE_SECONDS" -gt 0 ]; then
  echo -e "server\tconns\ttarget_rps\trps\tp50_us\tp99_us\tp999_us\tnon2xx" >"$RATE_RES"
  for s in $SERVERS; do
    peak=$(awk -v s="$s" '$1 == s { print $3 }' "$OUT/summary.txt" | sort -n | tail -n 1)
    [ -n "$peak" ] || continue
    rate=$(awk -v p="$peak" 'BEGIN { printf "%d", p / 2 }')
    start_server "$s"
    case "$s" in telemetryd-*) sleep 2 ;; esac
    for c in $CONNS; do
      line=$(taskset -c "$WRK_CPU" "$LOADGEN" --port "$PORT" --keys "$KEYS" --conns "$c" \
               --rate "$rate" --duration "$RATE_SECONDS" --seed 1 | grep '^RESULT')
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$c" "$rate" "$(field rps "$line")" \
        "$(field p50_us "$line")" "$(field p99_us "$line")" "$(field p999_us "$line")" \
        "$(field non2xx "$line")" | tee -a "$RATE_RES"
    done
    stop_server
  done
fi

if [ "$PLOT" = 1 ]; then
  $PY - "$OUT/summary.txt" "$OUT/plot.dat" <<'PYEOF'
import sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
servers = ["telemetryd-2r", "nginx-static", "python-dict", "telemetryd-1r", "nginx-return", "python-pure"]
conns = sorted({int(r[1]) for r in rows})
with open(sys.argv[2], "w") as f:
    f.write("# conns " + " ".join(servers) + "\n")
    for c in conns:
        vals = {r[0]: r[2] for r in rows if int(r[1]) == c}
        f.write(f"{c} " + " ".join(vals.get(s, "NaN") for s in servers) + "\n")
PYEOF
  gnuplot -e "datafile='$OUT/plot.dat'; outfile='$ROOT_DIR/docs/throughput.png'" bench/plot.gp
  echo "plot: docs/throughput.png"
fi
echo "results: $RES, $OUT/summary.txt, $RATE_RES"
