# scripts/cluster.sh: a local telemetryd cluster on 127.0.0.1, sourced by
# scripts/cluster-demo and bench/cluster_chaos.sh. It starts a Redis master and a
# replica (no persistence), three redis-sentinels watching them, one upstream the nodes
# fetch from (bench/cluster/upstream.py) and telemetryd nodes, each on free ports and
# with every file in one temporary directory; cl_stop_all stops all of it by pid.
# Nothing here is a system service.
#
# The caller sets, before sourcing or before cl_start_*:
#   CL_TELEMETRYD CL_TELEMETRYCTL  binaries (cl_build sets them: a Release build in build/)
#   CL_DIR       where configs, sockets and logs go (default: a new temporary directory)
#   CL_NODE_ARGS extra telemetryd arguments of every node (an array), e.g. (--lease 3s)
#   CL_SERIES    series the upstream serves (default 20)
#   CL_NODE_CLUSTER[i]  node i's --cluster address, when not CL_CLUSTER_URL (e.g. a proxy)
#   CL_NODE_WRAP[i]     words node i's command starts with (e.g. env LD_PRELOAD=... for
#                       a skewed clock), CL_NODE_EXTRA[i] words added to its arguments
#   CL_CTL_TIMEOUT      seconds cl_ctl waits for a node's answer (default 2: a stopped
#                       node answers nothing)
# and reads:
#   CL_REDIS_PORT[0..1]  the two Redis ports (0 starts as master)
#   CL_SENTINEL_PORT[0..2], CL_MASTER_NAME, CL_CLUSTER_URL
#   CL_UPSTREAM_PORT, CL_UPSTREAM_URL
#   CL_NODE_PORT[i], CL_NODE_SOCK[i], CL_NODE_LOG[i], CL_NODE_PID[i] (supervisor, also
#   the node's process group), nodes numbered 1..3
CL_PY=/usr/bin/python3
CL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CL_MASTER_NAME=${CL_MASTER_NAME:-tdmaster}
CL_SERIES=${CL_SERIES:-20}
CL_PIDS=()  # every process started here, in start order
declare -a CL_REDIS_PORT CL_REDIS_PID CL_SENTINEL_PORT CL_NODE_PORT CL_NODE_SOCK CL_NODE_LOG CL_NODE_PID
declare -a CL_NODE_CLUSTER CL_NODE_WRAP CL_NODE_EXTRA
[ -n "${CL_NODE_ARGS+x}" ] || CL_NODE_ARGS=()

# Installs what is missing and builds the binaries in Release, as scripts/run does.
cl_build() {  # [build dir] [extra targets...]
  local build=${1:-build}
  shift || true
  (cd "$CL_ROOT" && . scripts/deps.sh && ensure_packages)
  cmake -S "$CL_ROOT" -B "$CL_ROOT/$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$CL_ROOT/$build" -j"$(nproc)" --target telemetryd telemetryctl "$@" >/dev/null
  CL_TELEMETRYD=$CL_ROOT/$build/server/telemetryd
  CL_TELEMETRYCTL=$CL_ROOT/$build/server/telemetryctl
}

cl_dir() {
  [ -n "${CL_DIR:-}" ] || CL_DIR=$(mktemp -d /tmp/tdcluster.XXXXXX)
  mkdir -p "$CL_DIR"
}

cl_free_port() {
  $CL_PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Polls a command until it succeeds, every 0.1 s for at most $1 seconds.
cl_wait() {  # seconds command...
  local n=$(($1 * 10))
  shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

cl_redis_cli() { redis-cli -h 127.0.0.1 -p "$@"; }

# Redis i (0 or 1) on its port; with a master port, as its replica. It starts empty:
# a replica keeps the snapshot of its last full sync in its directory even without
# persistence, and loaded at a restart that snapshot would be data minutes old, which
# the sentinels may then promote.
cl_start_redis() {  # index [master port]
  local i=$1 master=${2:-}
  cl_dir
  [ -n "${CL_REDIS_PORT[i]:-}" ] || CL_REDIS_PORT[i]=$(cl_free_port)
  mkdir -p "$CL_DIR/redis$i"
  rm -f "$CL_DIR/redis$i/dump.rdb"
  local args=(--port "${CL_REDIS_PORT[i]}" --bind 127.0.0.1 --save '' --appendonly no
              --daemonize no --dir "$CL_DIR/redis$i")
  [ -z "$master" ] || args+=(--replicaof 127.0.0.1 "$master")
  redis-server "${args[@]}" >>"$CL_DIR/redis$i.log" 2>&1 &
  CL_REDIS_PID[i]=$!
  CL_PIDS+=($!)
  cl_wait 10 cl_redis_cli "${CL_REDIS_PORT[i]}" ping || { echo "redis $i did not start (see $CL_DIR/redis$i.log)" >&2; return 1; }
}

# Three sentinels, each with its own writable configuration (a sentinel rewrites it).
cl_start_sentinels() {  # master port
  local i conf
  for i in 0 1 2; do
    CL_SENTINEL_PORT[i]=$(cl_free_port)
    conf=$CL_DIR/sentinel$i.conf
    cat >"$conf" <<EOF
port ${CL_SENTINEL_PORT[i]}
bind 127.0.0.1
daemonize no
dir $CL_DIR
sentinel monitor $CL_MASTER_NAME 127.0.0.1 $1 2
sentinel down-after-milliseconds $CL_MASTER_NAME 1000
sentinel failover-timeout $CL_MASTER_NAME 5000
sentinel parallel-syncs $CL_MASTER_NAME 1
EOF
    redis-sentinel "$conf" >>"$CL_DIR/sentinel$i.log" 2>&1 &
    CL_PIDS+=($!)
  done
  for i in 0 1 2; do
    cl_wait 10 cl_redis_cli "${CL_SENTINEL_PORT[i]}" ping || { echo "sentinel $i did not start" >&2; return 1; }
  done
}

# The Redis master as the sentinels see it: its port.
cl_master_port() {
  local i
  for i in 0 1 2; do
    cl_redis_cli "${CL_SENTINEL_PORT[i]}" SENTINEL get-master-addr-by-name "$CL_MASTER_NAME" 2>/dev/null |
      sed -n 2p | grep . && return 0
  done
  return 1
}

cl_redis_index() {  # port -> 0 or 1
  if [ "${CL_REDIS_PORT[0]}" = "$1" ]; then echo 0; else echo 1; fi
}

# The Redis pair and the sentinels; CL_CLUSTER_URL names the sentinels when this
# telemetryd supports them, else the master (then a master kill is not survivable).
cl_start_redis_pair() {
  cl_start_redis 0
  cl_start_redis 1 "${CL_REDIS_PORT[0]}"
  cl_start_sentinels "${CL_REDIS_PORT[0]}"
  local url="redis-sentinel://127.0.0.1:${CL_SENTINEL_PORT[0]},127.0.0.1:${CL_SENTINEL_PORT[1]},127.0.0.1:${CL_SENTINEL_PORT[2]}/$CL_MASTER_NAME"
  if "$CL_TELEMETRYD" --check-config --cluster "$url" >/dev/null 2>&1; then
    CL_CLUSTER_URL=$url CL_SENTINEL=1
  else
    CL_CLUSTER_URL="redis://127.0.0.1:${CL_REDIS_PORT[0]}" CL_SENTINEL=0
  fi
}

# The upstream every node fetches: CL_SERIES series whose values are a known function of
# a fetch counter (bench/cluster/upstream.py).
cl_start_upstream() {
  cl_dir
  CL_UPSTREAM_PORT=$(cl_free_port)
  $CL_PY "$CL_ROOT/bench/cluster/upstream.py" --port "$CL_UPSTREAM_PORT" --series "$CL_SERIES" \
    >>"$CL_DIR/upstream.log" 2>&1 &
  CL_PIDS+=($!)
  CL_UPSTREAM_URL="http://127.0.0.1:$CL_UPSTREAM_PORT/telemetry"
  cl_wait 10 curl -sf -o /dev/null "http://127.0.0.1:$CL_UPSTREAM_PORT/peek" ||
    { echo "the upstream did not start (see $CL_DIR/upstream.log)" >&2; return 1; }
}

# Node i (1..3) in a process group of its own (setsid), so that the whole node can be
# killed at once; started again with the same index, it gets the same settings.
cl_start_node() {  # index [extra telemetryd arguments...]
  local i=$1
  shift
  [ -n "${CL_NODE_PORT[i]:-}" ] || CL_NODE_PORT[i]=$(cl_free_port)
  CL_NODE_SOCK[i]=$CL_DIR/node$i.sock
  CL_NODE_LOG[i]=$CL_DIR/node$i.log
  # shellcheck disable=SC2086 # CL_NODE_WRAP and CL_NODE_EXTRA are lists of words
  setsid ${CL_NODE_WRAP[i]:-} "$CL_TELEMETRYD" --listen "127.0.0.1:${CL_NODE_PORT[i]}" --admin-socket "${CL_NODE_SOCK[i]}" \
    --shm-name "tdcl$$-$i" --log-file "${CL_NODE_LOG[i]}" --node-id "node$i" \
    --cluster "${CL_NODE_CLUSTER[i]:-$CL_CLUSTER_URL}" --source "$CL_UPSTREAM_URL" "${CL_NODE_ARGS[@]}" \
    ${CL_NODE_EXTRA[i]:-} "$@" &
  CL_NODE_PID[i]=$!
  CL_PIDS+=($!)
}

cl_ctl() {  # node index, command...
  local i=$1
  shift
  timeout "${CL_CTL_TIMEOUT:-2}" "$CL_TELEMETRYCTL" -s "${CL_NODE_SOCK[i]}" "$@"
}

cl_healthz() {  # node index -> HTTP status of /healthz
  curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:${CL_NODE_PORT[$1]}/healthz" || true
}

cl_ready() { [ "$(cl_healthz "$1")" = 200 ]; }

# The index of the node that says it leads, or nothing.
cl_leader() {
  local i
  for i in 1 2 3; do
    cl_ctl "$i" show cluster 2>/dev/null | grep -q '^role: leader$' && { echo "$i"; return 0; }
  done
  return 0
}

# SIGKILLs node i's whole process group (supervisor, writer, readers) and waits until
# none of them is left.
cl_kill_node() {
  local pid=${CL_NODE_PID[$1]}
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for _ in $(seq 100); do pgrep -g "$pid" >/dev/null || return 0; sleep 0.05; done
}

# Stops everything started here: nodes by process group (SIGTERM, then SIGKILL after
# 10 s), the rest by pid; removes the nodes' shared memory.
cl_stop_all() {
  local p i left
  for i in 1 2 3; do
    [ -z "${CL_NODE_PID[i]:-}" ] || kill -TERM -- "-${CL_NODE_PID[i]}" 2>/dev/null || true
  done
  for p in "${CL_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 100); do
    left=0
    for p in "${CL_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && left=1; done
    for i in 1 2 3; do [ -n "${CL_NODE_PID[i]:-}" ] && pgrep -g "${CL_NODE_PID[i]}" >/dev/null && left=1; done
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  for i in 1 2 3; do
    [ -z "${CL_NODE_PID[i]:-}" ] || kill -KILL -- "-${CL_NODE_PID[i]}" 2>/dev/null || true
  done
  for p in "${CL_PIDS[@]}"; do
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -f /dev/shm/tdcl$$-*
  return 0
}
