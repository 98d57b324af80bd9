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
. "$HERE/wrk_cpu.sh"
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

run_wrk "$WRKOUT"
kill -TERM $MAIN
wait $MAIN || true

report "$WRKOUT" "readers=$READERS" reader_cpu_s
grep '^reader ' "$OUT"
rm -f "$KEYS" "$OUT" "$WRKOUT"
