#!/usr/bin/env bash
# tests/ops/loadgen_check_test.sh LOADGEN
# bench/chaos.sh trusts loadgen's counters; this checks each one against a server that
# misbehaves on purpose, one connection at a time (a small Python server on a free
# 127.0.0.1 port, one thread per connection, bounded run):
#   request 1           503 with generation 0 (no snapshot yet)   -> no_snapshot_503=1
#   first connection    generations 11, 12, then 1                -> gen_violations=1
#   request 20          read, then closed without an answer       -> broken=1, retried=1
#   request 30          answered with Connection: close            -> server_closed=1
#   request 40          404                                        -> non2xx=1
# Every new connection starts again at generation 11, lower than the last one seen on the
# connection before it: not a violation (the check is per connection).
set -euo pipefail
LOADGEN=${1:?usage: loadgen_check_test.sh LOADGEN}
TMP=$(mktemp -d /tmp/tdlgcheck.XXXXXX)
SRV_PID=""
cleanup() {
  [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

cat >"$TMP/server.py" <<'EOF'
import socket, sys, threading
lock = threading.Lock()
count = 0
conn_number = 0

def respond(c, status, generation, close=False):
    body = b'{}'
    head = (f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
            f"X-Snapshot-Generation: {generation}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n")
    c.sendall(head.encode() + body)

def serve(c, number):
    buf, served = b"", 0
    with c:
        while True:
            while b"\r\n\r\n" not in buf:
                data = c.recv(4096)
                if not data:
                    return
                buf += data
            buf = buf[buf.index(b"\r\n\r\n") + 4:]
            global count
            with lock:
                count += 1
                k = count
            served += 1
            generation = 1 if (number == 1 and served == 3) else 10 + served
            if k == 1:
                respond(c, 503, 0)
            elif k == 20:
                return  # close with the request unanswered
            elif k == 30:
                respond(c, 200, generation, close=True)
                return
            elif k == 40:
                respond(c, 404, generation)
            else:
                respond(c, 200, generation)

s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    conn_number += 1
    threading.Thread(target=serve, args=(c, conn_number), daemon=True).start()
EOF
python3 "$TMP/server.py" >"$TMP/port" &
SRV_PID=$!
for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.1; done
PORT=$(cat "$TMP/port")
[ -n "$PORT" ] || { echo "FAIL: test server did not start"; exit 1; }
echo /v1/series/x >"$TMP/keys"

# One connection, 100 requests/s for 1 s: about 100 requests, all in order.
RESULT=$(timeout 30 "$LOADGEN" --port "$PORT" --keys "$TMP/keys" --conns 1 --rate 100 --duration 1 \
           --check-generation 2>"$TMP/err" | grep '^RESULT')
echo "$RESULT"
cat "$TMP/err"
ok=1
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$RESULT"; }
want() {
  local got; got=$(field "$1")
  if [ "$got" != "$2" ]; then echo "FAIL: $1=$got, want $2"; ok=0; fi
}
want no_snapshot_503 1
want gen_violations 1
want broken 1
want retried 1
want server_closed 1
want non2xx 1
want socket_errors 0
want unanswered 0
want gen_missing 0
want closed_idle 0
[ "$(field requests)" -ge 45 ] || { echo "FAIL: only $(field requests) requests"; ok=0; }
[ "$(field gen_checked)" = "$(field requests)" ] || { echo "FAIL: not every response checked"; ok=0; }
grep -q "generation 1 after 12" "$TMP/err" || { echo "FAIL: the violation was not reported"; ok=0; }
[ "$ok" = 1 ] && echo PASS || exit 1
