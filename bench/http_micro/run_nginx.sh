#!/bin/sh
# bench/http_micro/run_nginx.sh: the reference for run.sh on the same machine and
# settings: nginx (1 worker pinned to CPU 1, access log off) answering every path with
# `return 200` and one series body from memory, under the same wrk command (CPU 0, the
# same key list, so the same request bytes). Prints the same figures as run.sh.
#
#   bench/http_micro/run_nginx.sh HTTP_MICRO_BINARY [CONNECTIONS] [SECONDS]
set -eu
BIN=$1
CONNS=${2:-64}
SECS=${3:-10}
PORT=${PORT:-18081}
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=$(mktemp -d /tmp/http_micro_nginx.XXXXXX)
KEYS=$DIR/keys.txt

# The key list and a body of the real shape, without serving anything.
"$BIN" --series 100000 --readers 0 --port "$PORT" --keys "$KEYS" --sample-body "$DIR/body.json" >"$DIR/gen.out" &
GEN=$!
until grep -q READY "$DIR/gen.out" 2>/dev/null; do sleep 0.1; done
kill -TERM $GEN; wait $GEN || true

cat >"$DIR/nginx.conf" <<CONF
worker_processes 1;
worker_cpu_affinity 10;
daemon off;
pid $DIR/nginx.pid;
error_log $DIR/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$PORT backlog=4096;
    location / { default_type application/json; return 200 '$(cat "$DIR/body.json")'; }
  }
}
CONF
nginx -p "$DIR" -c "$DIR/nginx.conf" &
MAIN=$!
sleep 1
PIDS="$(cat "$DIR/nginx.pid") $(pgrep -P "$(cat "$DIR/nginx.pid")")"
ticks() { t=0; for p in $PIDS; do t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat))); done; echo $t; }

t0=$(ticks)
WRK_KEYS=$KEYS taskset -c 0 wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$HERE/../wrk/random_series.lua" \
  "http://127.0.0.1:$PORT" >"$DIR/wrk.out"
t1=$(ticks)
kill -TERM "$(cat "$DIR/nginx.pid")"
wait $MAIN || true

HZ=$(getconf CLK_TCK)
REQ=$(sed -n 's/.*RESULT requests=\([0-9]*\).*/\1/p' "$DIR/wrk.out")
grep -E "Requests/sec|RESULT" "$DIR/wrk.out"
echo "nginx connections=$CONNS seconds=$SECS requests=$REQ cpu_s=$(echo "scale=2; ($t1 - $t0) / $HZ" | bc)" \
  "cpu_us_per_request=$(echo "scale=2; ($t1 - $t0) * 1000000 / $HZ / $REQ" | bc)"
rm -rf "$DIR"
