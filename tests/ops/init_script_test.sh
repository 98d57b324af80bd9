#!/usr/bin/env bash
# tests/ops/init_script_test.sh BUILD_DIR [TELEMETRYD TELEMETRYCTL [standalone|cluster]]
# Installs BUILD_DIR into a temporary prefix (cmake --install) and drives the installed
# LSB init script. standalone (the default): start, status, reload, a rejected reload,
# status, stop, stop again. cluster: a configuration file with `cluster =
# "redis://..."` pointing at a redis-server this test starts on a free loopback port:
# a start before Redis is up fails (not ready) but leaves the node running, and it leads
# once Redis is there; a start with Redis up is ready, the node leads (show cluster, the
# lease key in Redis), status shows its cluster role; stop.
# The installed systemd unit is checked with `systemd-analyze verify` where available.
# Everything is private to this run: free 127.0.0.1 ports, a temporary runtime and log
# directory, a unique shm name, admin socket and cluster name. As root the service runs
# as `nobody` (the dedicated-user path). Bounded waits; cleans up on any exit.
set -euo pipefail
BUILD=${1:?usage: init_script_test.sh BUILD_DIR [TELEMETRYD TELEMETRYCTL [standalone|cluster]]}
SCENARIO=${4:-standalone}

command -v start-stop-daemon >/dev/null || { echo "SKIP: no start-stop-daemon"; exit 77; }
if [ "$SCENARIO" = cluster ]; then
  command -v redis-server >/dev/null || { echo "SKIP: no redis-server (scripts/deps.sh installs it)"; exit 77; }
  command -v redis-cli >/dev/null || { echo "SKIP: no redis-cli"; exit 77; }
fi

TMP=$(mktemp -d /tmp/tdops.XXXXXX)
chmod 0755 "$TMP"  # the service user must reach the runtime directory
SHM="tdops$$"
PREFIX="$TMP/prefix"
INIT="$PREFIX/etc/init.d/telemetryd"
export TELEMETRYD_DEFAULTS="$TMP/default"

fail() { echo "FAIL: $*" >&2; exit 1; }

# Alive and not a zombie (the reaper of an orphan may be slow, or absent in a container).
alive() { [ -r "/proc/$1/stat" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1)" != Z ]; }

REDIS_PID=""

cleanup() {
  local rc=$? pid
  if [ -f "$TMP/run/telemetryd.pid" ]; then
    pid=$(cat "$TMP/run/telemetryd.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && alive "$pid"; then
      echo "cleanup: killing leftover telemetryd session $pid" >&2
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
      kill -KILL -- "-$pid" 2>/dev/null || true  # start-stop-daemon --background: own session
    fi
  fi
  if [ "$rc" -ne 0 ] && [ -f "$TMP/log/telemetryd.log" ]; then
    echo "--- telemetryd log (tail) ---" >&2; tail -n 30 "$TMP/log/telemetryd.log" >&2
  fi
  if [ -n "$REDIS_PID" ]; then kill -KILL "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; fi
  rm -f /dev/shm/"$SHM"* 2>/dev/null || true
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)

echo "== install into $PREFIX"
cmake --install "$BUILD" --prefix "$PREFIX" >/dev/null
for f in bin/telemetryd bin/telemetryctl etc/telemetryd/telemetryd.conf etc/init.d/telemetryd \
         lib/systemd/system/telemetryd.service; do
  [ -e "$PREFIX/$f" ] || fail "not installed: $f"
done
[ -x "$INIT" ] || fail "init script not executable"
grep -q "DAEMON:=$PREFIX/bin/telemetryd" "$INIT" || fail "init script not rewritten to the prefix"
grep -q "ExecStart=$PREFIX/bin/telemetryd" "$PREFIX/lib/systemd/system/telemetryd.service" || fail "unit not rewritten"
[ -e "$PREFIX/share/doc/telemetryd/operations.md" ] || fail "operator docs not installed"
# No systemd runs here (no PID 1 systemd in a container), but its offline checker reads
# the unit as systemd would: syntax, directives, executables and documentation paths.
if command -v systemd-analyze >/dev/null; then
  echo "== systemd-analyze verify the installed unit"
  systemd-analyze verify "$PREFIX/lib/systemd/system/telemetryd.service" \
    || fail "systemd-analyze verify rejected the unit"
else
  echo "== systemd-analyze not installed: unit not verified"
fi
"$PREFIX/bin/telemetryd" --check-config --config "$PREFIX/etc/telemetryd/telemetryd.conf" >/dev/null \
  || fail "installed default config rejected"

CONF="$PREFIX/etc/telemetryd/telemetryd.conf"
cat >>"$CONF" <<CONF
source = ["synthetic://?hosts=20&metrics=5&seed=3"]
interval = "200ms"
CONF

USER_LINE=""
if [ "$(id -u)" -eq 0 ] && id nobody >/dev/null 2>&1; then USER_LINE="TELEMETRYD_USER=nobody"; fi
cat >"$TELEMETRYD_DEFAULTS" <<DEF
RUNDIR=$TMP/run
LOGDIR=$TMP/log
STATEDIR=$TMP/state
$USER_LINE
TELEMETRYD_OPTS="--listen 127.0.0.1:$PORT --shm-name $SHM --workers 2 --shutdown-timeout 5s"
READY_TIMEOUT=20
STOP_TIMEOUT=15
DEF
echo "port $PORT, shm $SHM, ${USER_LINE:-running as $(id -un)}"

http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$PORT$1" || true; }

standalone() {
  echo "== start"
  "$INIT" start || fail "start failed"
  [ -s "$TMP/run/telemetryd.pid" ] || fail "no pidfile"
  PID=$(cat "$TMP/run/telemetryd.pid")
  [ -S "$TMP/run/telemetryd.sock" ] || fail "no admin socket"
  [ -f "$TMP/state/lock" ] || fail "the writer does not use the state dir $TMP/state"
  # --notify-await returned: READY=1 means readers listen and a snapshot is published.
  [ "$(http_code /healthz)" = 200 ] || fail "/healthz not 200 right after start"
  [ "$(http_code /v1/metrics)" = 200 ] || fail "/v1/metrics not 200"
  if [ -n "$USER_LINE" ]; then
    [ "$(stat -c %U "/proc/$PID")" = nobody ] || fail "supervisor not running as nobody"
  fi
  echo "== start again (already running: ok, same pid)"
  "$INIT" start || fail "second start failed"
  [ "$(cat "$TMP/run/telemetryd.pid")" = "$PID" ] || fail "pid changed"

  echo "== status"
  "$INIT" status | tee "$TMP/status1" || fail "status not 0 while running"
  grep -q "generation" "$TMP/status1" || fail "status did not show the admin info"
  grep -q "^  cluster:$" "$TMP/status1" && fail "status of a standalone node shows a cluster part"

  echo "== reload (log-level debug)"
  echo 'log-level = "debug"' >>"$CONF"
  "$INIT" reload || fail "reload failed"
  ok=""
  for _ in $(seq 50); do
    grep -q "reload" "$TMP/log/telemetryd.log" 2>/dev/null && { ok=1; break; }
    sleep 0.1
  done
  [ -n "$ok" ] || fail "no reload in the log"
  grep -i "reload" "$TMP/log/telemetryd.log" | tail -n 2

  echo "== reload with a broken config: refused, service keeps running"
  cp "$CONF" "$TMP/conf.good"
  echo 'interval = "soon"' >>"$CONF"
  if "$INIT" reload; then fail "reload of a broken config reported success"; fi
  cp "$TMP/conf.good" "$CONF"
  [ "$(cat "$TMP/run/telemetryd.pid")" = "$PID" ] || fail "pid changed after reload"

  echo "== status after reload"
  "$INIT" status >/dev/null || fail "status not 0 after reload"
  [ "$(http_code /healthz)" = 200 ] || fail "/healthz not 200 after reload"

  echo "== stop"
  "$INIT" stop || fail "stop failed"
  alive "$PID" && fail "supervisor $PID still alive after stop"
  [ -e "$TMP/run/telemetryd.pid" ] && fail "pidfile left behind"
  ls /dev/shm/"$SHM"* >/dev/null 2>&1 && fail "shm segments left behind: $(ls /dev/shm/"$SHM"*)"
  [ "$(http_code /healthz)" = 000 ] || fail "port still answering after stop"

  echo "== stop again (not running: ok), status 3"
  "$INIT" stop || fail "second stop failed"
  set +e; "$INIT" status >/dev/null; rc=$?; set -e
  [ "$rc" -eq 3 ] || fail "status after stop: $rc, want 3"
}

# The show cluster field NAME of the running node ("" when not a cluster node).
cluster_field() {
  "$PREFIX/bin/telemetryctl" -s "$TMP/run/telemetryd.sock" show cluster 2>/dev/null \
    | sed -n "s/^$1: //p" || true
}

start_redis() {
  redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    --dir "$TMP" >"$TMP/redis.log" 2>&1 &
  REDIS_PID=$!
  local ok=""
  for _ in $(seq 100); do
    [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && { ok=1; break; }
    sleep 0.1
  done
  [ -n "$ok" ] || fail "redis-server did not answer on $1: $(cat "$TMP/redis.log")"
}

# Polls (15 s at most) until the node is a synced leader.
wait_for_leader() {
  local _
  for _ in $(seq 150); do
    [ "$(cluster_field role)" = leader ] && [ "$(cluster_field synced)" = true ] && return 0
    sleep 0.1
  done
  fail "the node did not become a synced leader: $("$PREFIX/bin/telemetryctl" -s "$TMP/run/telemetryd.sock" show cluster)"
}

cluster() {
  local redis_port cluster_name="tdops$$" node_id
  redis_port=$(free_port)
  # Only the configuration file names the cluster: the init script adds nothing for it.
  cat >>"$CONF" <<CONF
cluster = "redis://127.0.0.1:$redis_port"
cluster-name = "$cluster_name"
lease = "1500ms"
checkpoint-every = 10
CONF
  "$PREFIX/bin/telemetryd" --check-config --config "$CONF" >/dev/null || fail "cluster config rejected"

  echo "== start while Redis is down: not ready in time, runs on, joins once Redis is up"
  sed -i 's/^READY_TIMEOUT=.*/READY_TIMEOUT=2/' "$TELEMETRYD_DEFAULTS"
  if "$INIT" start >"$TMP/start.err" 2>&1; then fail "start reported ready without Redis"; fi
  cat "$TMP/start.err"
  grep -q "still running" "$TMP/start.err" || fail "start did not say that the node runs on"
  PID=$(cat "$TMP/run/telemetryd.pid")
  alive "$PID" || fail "the node exited"
  "$INIT" status >"$TMP/status0" || fail "status not 0 while running"
  grep -q "is running (pid $PID, cluster candidate)" "$TMP/status0" || fail "status: $(head -n 1 "$TMP/status0")"
  grep -q "^    redis: connected$" "$TMP/status0" && fail "redis connected while down"
  [ "$(http_code /healthz)" = 503 ] || fail "/healthz not 503 before the node joined"
  echo "== redis-server on 127.0.0.1:$redis_port"
  start_redis "$redis_port"
  wait_for_leader
  [ "$(http_code /healthz)" = 200 ] || fail "/healthz not 200 once leading"
  "$INIT" stop || fail "stop failed"
  alive "$PID" && fail "supervisor $PID still alive after stop"
  sed -i 's/^READY_TIMEOUT=.*/READY_TIMEOUT=20/' "$TELEMETRYD_DEFAULTS"

  echo "== start again, Redis up: ready once it serves the cluster's data"
  "$INIT" start || fail "start failed"
  PID=$(cat "$TMP/run/telemetryd.pid")
  [ "$(http_code /healthz)" = 200 ] || fail "/healthz not 200 right after start"
  wait_for_leader
  # node-id defaults to HOSTNAME:PORT of listen.
  node_id=$(cluster_field node_id)
  [ "$node_id" = "$(hostname):$PORT" ] || fail "node_id '$node_id', want '$(hostname):$PORT'"
  [ "$(cluster_field leader_id)" = "$node_id" ] || fail "leader_id is not this node"
  [ "$(cluster_field redis)" = connected ] || fail "redis not connected"
  [ "$(cluster_field redis_address)" = "redis://127.0.0.1:$redis_port/0" ] || fail "redis_address $(cluster_field redis_address)"
  [ "$(cluster_field node.0.node_id)" = "$node_id" ] || fail "the node is not in its own member list"
  # The lease and the log really are in this Redis, under this cluster's name.
  redis-cli -p "$redis_port" get "{$cluster_name}:lease" | grep -q "^$node_id " || fail "lease key not held by $node_id"
  [ "$(redis-cli -p "$redis_port" xlen "{$cluster_name}:log")" -gt 0 ] || fail "nothing in the log"

  echo "== status shows the cluster role"
  "$INIT" status | tee "$TMP/status" || fail "status not 0 while running"
  grep -q "^  generation: " "$TMP/status" || fail "status did not show the admin info"
  grep -q "is running (pid $PID, cluster leader)" "$TMP/status" || fail "status did not say the node leads"
  grep -q "^    role: leader$" "$TMP/status" || fail "status did not show show cluster"
  grep -q "^    node_id: $node_id$" "$TMP/status" || fail "status did not show show cluster"

  echo "== stop"
  "$INIT" stop || fail "stop failed"
  alive "$PID" && fail "supervisor $PID still alive after stop"
  ls /dev/shm/"$SHM"* >/dev/null 2>&1 && fail "shm segments left behind: $(ls /dev/shm/"$SHM"*)"
  [ "$(http_code /healthz)" = 000 ] || fail "port still answering after stop"
  kill -TERM "$REDIS_PID"
  wait "$REDIS_PID" || true
  REDIS_PID=""
}

case "$SCENARIO" in
  standalone|cluster) "$SCENARIO" ;;
  *) fail "unknown scenario $SCENARIO" ;;
esac
echo "PASS"
