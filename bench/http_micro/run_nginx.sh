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
. "$HERE/wrk_cpu.sh"
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

run_wrk "$DIR/wrk.out"
kill -TERM "$(cat "$DIR/nginx.pid")"
wait $MAIN || true

report "$DIR/wrk.out" nginx cpu_s
rm -rf "$DIR"
