#!/bin/sh
# bench/http_micro/run.sh: the reader alone under wrk. Starts http_micro (100,000 series,
# R readers pinned to CPU 1), runs wrk pinned to CPU 0 with bench/wrk/random_series.lua,
# and prints requests/s, latency, the readers' CPU time per request (user + system from
# /proc/PID/stat) and the connection split across readers.
#
#   bench/http_micro/run.sh BINARY [READERS] [CONNECTIONS] [SECONDS]
#   e.g. bench/http_micro/run.sh build/bench/http_micro/http_micro 1 64 10
set -eu
BIN=$1
READERS=${2:-1}
CONNS=${3:-64}
SECS=${4:-10}
PORT=${PORT:-18080}
HERE=$(cd "$(dirname "$0")" && pwd)
KEYS=/tmp/http_micro_keys.$$.txt
OUT=/tmp/http_micro.$$.out
WRKOUT=/tmp/http_micro_wrk.$$.out

taskset -c 1 "$BIN" --series 100000 --readers "$READERS" --port "$PORT" --keys "$KEYS" >"$OUT" &
MAIN=$!
i=0
until grep -q READY "$OUT" 2>/dev/null; do
  i=$((i + 1)); [ $i -lt 600 ] || { echo "http_micro did not start" >&2; kill $MAIN; exit 1; }
  sleep 0.1
done
PIDS=$(sed -n 's/.*pids=//p' "$OUT")
ticks() { t=0; for p in $PIDS; do t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat))); done; echo $t; }

t0=$(ticks)
WRK_KEYS=$KEYS taskset -c 0 wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$HERE/../wrk/random_series.lua" \
  "http://127.0.0.1:$PORT" >"$WRKOUT"
t1=$(ticks)
kill -TERM $MAIN
wait $MAIN || true

HZ=$(getconf CLK_TCK)
REQ=$(sed -n 's/.*RESULT requests=\([0-9]*\).*/\1/p' "$WRKOUT")
grep -E "Requests/sec|RESULT" "$WRKOUT"
echo "readers=$READERS connections=$CONNS seconds=$SECS requests=$REQ reader_cpu_s=$(echo "scale=2; ($t1 - $t0) / $HZ" | bc)" \
  "cpu_us_per_request=$(echo "scale=2; ($t1 - $t0) * 1000000 / $HZ / $REQ" | bc)"
grep '^reader ' "$OUT"
rm -f "$KEYS" "$OUT" "$WRKOUT"
