#!/usr/bin/env bash
# bench/cluster_chaos.sh: a three-node telemetryd cluster under load while its processes
# and its Redis master are killed. The cluster of scripts/cluster.sh on 127.0.0.1 (Redis
# master + replica, three sentinels, the counting upstream bench/cluster/upstream.py,
# three nodes with --interval INTERVAL --lease LEASE --window WINDOW); per node, wrk (the
# bulk) and bench/loadgen --check-generation (per-connection checks) on the series of the
# upstream for DURATION seconds, during which it
#   - SIGKILLs a random running reader of a random node every READER_KILL_MIN..MAX s,
#   - SIGKILLs the writer of a random node at WRITER_KILL_FIRST s, then every
#     WRITER_KILL_EVERY s,
#   - SIGKILLs the leader node's whole process group at LEADER_KILL_FIRST s, then every
#     LEADER_KILL_EVERY s, and starts it again with the same settings NODE_DOWN s later.
#     Its load is stopped first (SIGINT: wrk and loadgen finish what is in flight and
#     report) and started again once the node answers /healthz 200, so that its clients
#     count no connection refused while it is down;
#   - SIGKILLs the Redis master at REDIS_KILL_FIRST s, then every REDIS_KILL_EVERY s
#     (only when the nodes reach Redis through the sentinels: redis-sentinel://); the
#     sentinels promote the replica, and the old master is started again as a replica of
#     the new one (--replicaof), as an operator would.
# A writer or leader kill due within FAULT_GAP s after a Redis kill waits, and so does a
# Redis kill due within FAULT_GAP s after a writer or leader kill, or while a node is
# down: each kill is a single fault, which the leader target below is about (a leader
# lost during a Redis failover waits for the failover, then a lease: docs/performance.md).
# None of these (nor the faults below) starts in the last 2 leases + 1 s, so that the
# poll sees the next leader.
# The nodes run with --crash-loop-limit 1000 --restart-backoff-max 1s (kills are no
# crash loop).
#
# With PARTITIONS=1 (the default) each node reaches the Redis master through a TCP proxy
# of its own (bench/cluster/proxy.py; redis:// to the proxy, so no sentinels and no Redis
# kill), and so does the replica's replication link; node SKEW_NODE runs under
# libfaketime with its clock SKEW off (FAKETIME_DONT_FAKE_MONOTONIC=1); every node serves
# OTLP (--otlp-listen). From NET_FIRST s on, NET_GAP_MIN..MAX s after the previous fault
# healed (and NET_GAP s away from any kill, with every node ready), one more fault, the
# kinds in a seeded shuffled rotation:
#   cut-leader    the leader's proxy stops relaying (sockets stay open) for 1 s .. 2
#                 leases + 1 s, so past the lease about half the time;
#   cut-follower  the same for a follower;
#   cut-replica   the replica's link to the master, as long (the leader's WAIT fails);
#   pause-writer  SIGSTOP the leader's writer for a lease + 0.5 s .. 2 leases + 1 s;
#   pause-node    SIGSTOP the leader's whole process group, as long (resumed past the
#                 stuck-timeout, its supervisor kills the readers as stuck: their
#                 connections are added to the failures' allowance, as for a reader kill);
#   drop-reply    the next bytes the leader sends to Redis within 3 s are relayed,
#                 Redis's reply is thrown away and the connection closed 0.3 s later (a
#                 reply lost after the command took effect: a resent append must be a
#                 DUP); the summary counts the replies dropped.
# Meanwhile bench/cluster/pusher.py pushes OTLP/JSON points with unique values at a
# node picked at random, PUSH_RATE requests a second, and records the answers; and
# bench/cluster/observe.py samples four series on every node every 0.5 s and keeps every
# log entry before checkpoints trim it.
#
# Targets, each checked at the end (PASS/FAIL lines; exit 1 on any miss):
#   failures    broken requests (wrk read/write/connect/timeout errors, loadgen broken
#               requests, socket errors and unanswered requests) plus loadgen's
#               connections closed while idle <= the connections the killed readers held
#               (connections_open in `show workers` just before each kill), as chaos.sh;
#   non-2xx     0;
#   generation  no loadgen connection saw its node's generation go back, every response
#               carried one and was checked;
#   leader      after each kill, the time no node said it leads (`show cluster` of every
#               node polled every ~100 ms; from the last sample with a leader, or the
#               kill, to the next) < 2 leases;
#   ready       after each kill, the node answered /healthz 200 with every child
#               running again, within READY_LIMIT s; after a Redis kill, every node
#               published a generation 2 above the highest before the kill (followers
#               apply entries from the new master) and the old master is a connected
#               replica again;
#   end         every node answers /healthz 200, lists 3 nodes and one leader;
#   exact       bench/cluster/reference.py: the log (the entries observe.py kept plus
#               the live one) holds one upstream fetch per entry, in order, each value as
#               served, and no seq was ever read with two contents; every node's count,
#               sum, min, max, first and last of every series, at the end and in every
#               answer observe.py took during the run that the log can check, equal
#               those computed from the log's samples of the window at the answer's
#               generation; at each generation one body per series over all nodes and
#               all samples (during the run and at the end);
#   pushes      every point of a push answered 200 is in the log exactly once, no point
#               is in it twice, none that was not pushed (points answered 503 or not at
#               all may be in it or not: counted);
#   load        every kind of kill happened (the Redis kill only with sentinels; with
#               PARTITIONS=1 and DURATION >= 300 every network/pause fault kind too) and
#               the load answered >= half of loadgen's scheduled requests.
# The leader target also covers the faults above (time without a leader after each).
#
# QUICK=1 is the ctest profile (tests/ops, `ops.cluster_chaos`): 60 s, reader kills every
# 6-10 s, writer kills at 12 s and 42 s, the leader node at 22 s, the Redis master at 35 s
# (PARTITIONS=0), network/pause faults from 30 s on, 3-5 s apart (PARTITIONS=1).
#
# Environment (defaults: full profile / QUICK=1):
#   DURATION=600/60 SEED=$$ WORKERS=3 SERIES=20 INTERVAL=1s LEASE=3s WINDOW=10s CHECKPOINT_EVERY=20
#   READER_KILL_MIN=5/6 READER_KILL_MAX=15/10 WRITER_KILL_FIRST=20/12 WRITER_KILL_EVERY=45/30
#   LEADER_KILL_FIRST=40/22 LEADER_KILL_EVERY=90/1000 NODE_DOWN=4
#   REDIS_KILL_FIRST=70/35 REDIS_KILL_EVERY=120/1000 FAULT_GAP=12 READY_LIMIT=30
#   WRK_CONNS=8/2 WRK_DELAY_MS=0/10 LOADGEN_CONNS=4/2 LOADGEN_RATE=300/100 (per node)
#   PARTITIONS=1 NET_FIRST=60/30 NET_GAP_MIN=8/3 NET_GAP_MAX=20/5 NET_GAP=10/5
#   SKEW=-30s SKEW_NODE=2 PUSH_RATE=6/4 NET_ONLY= (some of the kinds above, to rerun those)
#   OUT=/tmp/telemetryd-cluster-chaos (QUICK: a temporary directory, removed when the run passes)
#   BUILD=build-bench, or TELEMETRYD= TELEMETRYCTL= LOADGEN= LOG_ENTRIES= to use built binaries (ctest)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD
. bench/lib.sh

DURATION=${DURATION:-$(q 600 60)}
SEED=${SEED:-$$}
WORKERS=${WORKERS:-3}
SERIES=${SERIES:-20}
INTERVAL=${INTERVAL:-1s}
LEASE=${LEASE:-3s}
WINDOW=${WINDOW:-10s}
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-20}
READER_KILL_MIN=${READER_KILL_MIN:-$(q 5 6)}
READER_KILL_MAX=${READER_KILL_MAX:-$(q 15 10)}
WRITER_KILL_FIRST=${WRITER_KILL_FIRST:-$(q 20 12)}
WRITER_KILL_EVERY=${WRITER_KILL_EVERY:-$(q 45 30)}
LEADER_KILL_FIRST=${LEADER_KILL_FIRST:-$(q 40 22)}
LEADER_KILL_EVERY=${LEADER_KILL_EVERY:-$(q 90 1000)}
NODE_DOWN=${NODE_DOWN:-4}
REDIS_KILL_FIRST=${REDIS_KILL_FIRST:-$(q 70 35)}
REDIS_KILL_EVERY=${REDIS_KILL_EVERY:-$(q 120 1000)}
FAULT_GAP=${FAULT_GAP:-12}
READY_LIMIT=${READY_LIMIT:-30}
WRK_CONNS=${WRK_CONNS:-$(q 8 2)}
WRK_DELAY_MS=${WRK_DELAY_MS:-$(q 0 10)}
LOADGEN_CONNS=${LOADGEN_CONNS:-$(q 4 2)}
LOADGEN_RATE=${LOADGEN_RATE:-$(q 300 100)}
PARTITIONS=${PARTITIONS:-1}
NET_FIRST=${NET_FIRST:-$(q 60 30)}
NET_GAP_MIN=${NET_GAP_MIN:-$(q 8 3)}
NET_GAP_MAX=${NET_GAP_MAX:-$(q 20 5)}
NET_GAP=${NET_GAP:-$(q 10 5)}
SKEW=${SKEW:--30s}
SKEW_NODE=${SKEW_NODE:-2}
PUSH_RATE=${PUSH_RATE:-$(q 6 4)}
FAKETIME_LIB=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
BUILD=${BUILD:-build-bench}
CLUSTER_NAME=chaos

for tool in redis-server redis-sentinel wrk; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed (scripts/deps.sh installs it)"; exit 77; }
done
[ "$PARTITIONS" = 0 ] || [ -r "$FAKETIME_LIB" ] || { echo "SKIP: libfaketime is not installed (scripts/deps.sh installs faketime)"; exit 77; }
. scripts/cluster.sh
if [ -n "${TELEMETRYD:-}" ]; then
  CL_TELEMETRYD=$TELEMETRYD
  CL_TELEMETRYCTL=${TELEMETRYCTL:?TELEMETRYCTL must be given with TELEMETRYD}
  LOADGEN=${LOADGEN:?LOADGEN must be given with TELEMETRYD}
  LOG_ENTRIES=${LOG_ENTRIES:?LOG_ENTRIES must be given with TELEMETRYD}
else
  cl_build "$BUILD" loadgen cluster_log_entries
  LOADGEN=$ROOT_DIR/$BUILD/bench/loadgen/loadgen
  LOG_ENTRIES=$ROOT_DIR/$BUILD/bench/cluster/cluster_log_entries
fi

out_dir /tmp/telemetryd-cluster-chaos tdclchaos
rm -rf "${OUT:?}"/*  # a rerun starts from an empty folder
CL_DIR=$OUT
CL_SERIES=$SERIES
CL_NODE_ARGS=(--workers "$WORKERS" --interval "$INTERVAL" --lease "$LEASE" --window "$WINDOW"
              --cluster-name "$CLUSTER_NAME" --checkpoint-every "$CHECKPOINT_EVERY"
              --restart-backoff-max 1s --crash-loop-limit 1000)
RESULT_OK=0
POLLER_PID="" PUSHER_PID="" OBSERVER_PID=""
declare -a LOAD_WRK LOAD_LG

cleanup() {
  local rc=$?
  [ -z "$POLLER_PID" ] || kill "$POLLER_PID" 2>/dev/null || true
  for i in 1 2 3; do  # a stopped node would not see the SIGTERM
    [ -z "${CL_NODE_PID[i]:-}" ] || kill -CONT -- "-${CL_NODE_PID[i]}" 2>/dev/null || true
  done
  for i in 1 2 3; do
    [ -z "${LOAD_WRK[i]:-}" ] || kill "${LOAD_WRK[i]}" 2>/dev/null || true
    [ -z "${LOAD_LG[i]:-}" ] || kill "${LOAD_LG[i]}" 2>/dev/null || true
  done
  cl_stop_all
  if [ "$RESULT_OK" = 1 ] && [ "$REMOVE_OUT" = 1 ]; then
    rm -rf "$OUT"
  elif [ "$RESULT_OK" != 1 ]; then
    echo "--- nodes' logs: warnings and errors (all files are in $OUT) ---"
    for i in 1 2 3; do grep -h -E ' (warn|error) ' "$OUT/node$i.log" 2>/dev/null | tail -n 15 | sed "s/^/node$i: /"; done
  fi
  exit "$rc"
}
on_exit cleanup
start_clock
event() { printf '%s\t%s\n' "$(($(ms) - T0))" "$*" >>"$OUT/events.tsv"; echo "[$(elapsed)s] $*"; }
case $LEASE in *ms) LEASE_MS=${LEASE%ms} ;; *s) LEASE_MS=$((${LEASE%s} * 1000)) ;; *) echo "LEASE: ms or s" >&2; exit 2 ;; esac
# One line per child of node $1: role slot pid state connections_open
# (Helpers that ask a node answer nothing, successfully, when it is down.)
workers() { { cl_ctl "$1" show workers 2>/dev/null || true; } | parse_workers; }

echo "== cluster chaos: ${DURATION}s, seed $SEED, out $OUT"
RANDOM=$SEED
# A proxy.py relaying 127.0.0.1:(a free port) to port $2, its control file $OUT/proxy-$1.ctl:
# PROXY_PORT[$1].
declare -A PROXY_PORT
start_proxy() {
  local port
  port=$(cl_free_port)
  echo ok >"$OUT/proxy-$1.ctl"
  $CL_PY bench/cluster/proxy.py --listen "$port" --to "$2" --control "$OUT/proxy-$1.ctl" >"$OUT/proxy-$1.log" 2>&1 &
  CL_PIDS+=($!)
  PROXY_PORT[$1]=$port
  cl_wait 10 $CL_PY -c "import socket; socket.create_connection(('127.0.0.1', $port)).close()" ||
    { echo "FAIL: proxy $1 did not start"; exit 1; }
}
if [ "$PARTITIONS" = 1 ]; then
  cl_dir
  cl_start_redis 0
  start_proxy replica "${CL_REDIS_PORT[0]}"
  cl_start_redis 1 "${PROXY_PORT[replica]}"
  CL_CLUSTER_URL="redis://127.0.0.1:${CL_REDIS_PORT[0]}" CL_SENTINEL=0
  for i in 1 2 3; do
    start_proxy "node$i" "${CL_REDIS_PORT[0]}"
    CL_NODE_CLUSTER[i]="redis://127.0.0.1:${PROXY_PORT[node$i]}"
  done
  CL_NODE_WRAP[SKEW_NODE]="env LD_PRELOAD=$FAKETIME_LIB FAKETIME=$SKEW FAKETIME_DONT_FAKE_MONOTONIC=1"
else
  cl_start_redis_pair
fi
cl_start_upstream
declare -a OTLP_PORT
for i in 1 2 3; do
  OTLP_PORT[i]=$(cl_free_port)
  CL_NODE_EXTRA[i]="--otlp-listen 127.0.0.1:${OTLP_PORT[i]}"
  cl_start_node "$i"
done
for i in 1 2 3; do
  cl_wait 60 cl_ready "$i" || { echo "FAIL: node $i not ready within 60 s"; exit 1; }
done
[ "$CL_SENTINEL" = 1 ] || [ "$PARTITIONS" = 1 ] ||
  echo "note: this telemetryd has no redis-sentinel:// support: the nodes use $CL_CLUSTER_URL and the Redis master is not killed"
[ "$PARTITIONS" = 0 ] || echo "nodes reach Redis :${CL_REDIS_PORT[0]} through proxies (no sentinels, no Redis kill); node$SKEW_NODE's clock is $SKEW off"
$CL_PY -c '
import sys, urllib.parse
print("/v1/series/chaos.counter")
for k in range(1, int(sys.argv[1])): print("/v1/series/" + urllib.parse.quote("chaos.value{k=\"%03d\"}" % k, safe=""))
' "$SERIES" >"$OUT/keys.txt"
echo "dofile(\"$ROOT_DIR/bench/wrk/random_series.lua\")" >"$OUT/chaos.lua"
[ "$WRK_DELAY_MS" -gt 0 ] && echo "function delay() return $WRK_DELAY_MS end" >>"$OUT/chaos.lua"

start_clock
END=$((T0 + DURATION * 1000))
SEGMENTS=0 LOADGEN_SCHEDULED=0 LOAD_END=$END
# Node $1's load until the end of the chaos: one wrk and one loadgen (a "segment").
start_load() {
  local i=$1 left=$(((END - $(ms) + 999) / 1000))
  [ "$left" -ge 2 ] || return 0
  SEGMENTS=$((SEGMENTS + 1))
  WRK_KEYS="$OUT/keys.txt" WRK_SEED="$((SEED + SEGMENTS))" \
    wrk -t1 -c"$WRK_CONNS" -d"${left}s" --timeout 10s -s "$OUT/chaos.lua" "http://127.0.0.1:${CL_NODE_PORT[i]}" \
    >"$OUT/wrk.$SEGMENTS.node$i.txt" 2>&1 &
  LOAD_WRK[i]=$!
  "$LOADGEN" --port "${CL_NODE_PORT[i]}" --keys "$OUT/keys.txt" --conns "$LOADGEN_CONNS" --rate "$LOADGEN_RATE" \
    --duration "$left" --seed "$((SEED + SEGMENTS))" --check-generation \
    >"$OUT/loadgen.$SEGMENTS.node$i.txt" 2>"$OUT/loadgen.$SEGMENTS.node$i.err" &
  LOAD_LG[i]=$!
  LOADGEN_SCHEDULED=$((LOADGEN_SCHEDULED + LOADGEN_RATE * left))
}
stop_load() {  # SIGINT: both finish what is in flight and print their results
  local i=$1
  [ -z "${LOAD_LG[i]:-}" ] || LOADGEN_SCHEDULED=$((LOADGEN_SCHEDULED - LOADGEN_RATE * (LOAD_END - $(ms)) / 1000))
  [ -z "${LOAD_WRK[i]:-}" ] || { kill -INT "${LOAD_WRK[i]}" 2>/dev/null || true; wait "${LOAD_WRK[i]}" || true; }
  [ -z "${LOAD_LG[i]:-}" ] || { kill -INT "${LOAD_LG[i]}" 2>/dev/null || true; wait "${LOAD_LG[i]}" || true; }
  LOAD_WRK[i]="" LOAD_LG[i]=""
}
for i in 1 2 3; do start_load "$i"; done
$CL_PY bench/cluster/pusher.py --ports "${OTLP_PORT[1]},${OTLP_PORT[2]},${OTLP_PORT[3]}" --out "$OUT/pushes.jsonl" \
  --rate "$PUSH_RATE" --seed "$SEED" >"$OUT/pusher.log" 2>&1 &
PUSHER_PID=$!
CL_PIDS+=($!)
$CL_PY bench/cluster/observe.py --decoder "$LOG_ENTRIES" --redis-port "${CL_REDIS_PORT[0]}" --cluster-name "$CLUSTER_NAME" \
  --series "$SERIES" --ports "${CL_NODE_PORT[1]},${CL_NODE_PORT[2]},${CL_NODE_PORT[3]}" \
  --answers "$OUT/answers.jsonl" --log "$OUT/log.tsv" >"$OUT/observe.log" 2>&1 &
OBSERVER_PID=$!
CL_PIDS+=($!)

# Every ~100 ms (slower when loaded, or while a node is stopped: up to the 1 s the
# poll gives each answer, so that a stopped node blurs the leaderless time by at most
# that): the time (ms since T0) and each node's role and term.
(
  set +e +o pipefail  # a node that is down (or stopped) answers nothing: "down"
  while :; do
    line=""
    for i in 1 2 3; do  # asked together: a stopped node holds up no other's answer
      CL_CTL_TIMEOUT=1 cl_ctl "$i" show cluster >"$OUT/poll.$i" 2>/dev/null &
    done
    wait
    for i in 1 2 3; do
      r=$(awk -F': ' '$1 == "role" { r = $2 } $1 == "term" { t = $2 } END { print (r ? r : "down") ":" (t ? t : 0) }' "$OUT/poll.$i")
      line+=" ${r:-down:0}"
    done
    # stamped once all three answered (a fault that began during the questions comes
    # before the stamp, not after: its effect is counted for it, not for the one before)
    echo "$(($(ms) - T0))$line"
    sleep 0.1
  done
) >"$OUT/roles.tsv" 2>/dev/null &
POLLER_PID=$!

# ---------------------------------------------------------------------------------
# The chaos. Times in ms since T0.
# ---------------------------------------------------------------------------------
reader_gap
next_reader=$((T0 + GAP))
next_writer=$((T0 + WRITER_KILL_FIRST * 1000))
next_leader=$((T0 + LEADER_KILL_FIRST * 1000))
next_redis=$((T0 + REDIS_KILL_FIRST * 1000))
LAST_REDIS_KILL=0 LAST_LEADER_LOSS=0
ALLOWANCE=0 READER_KILLS=0 WRITER_KILLS=0 LEADER_KILLS=0 REDIS_KILLS=0
declare -a DOWN_UNTIL WAIT_READY WAIT_KIND
REDIS_WAIT=0 REDIS_OLD="" REDIS_GEN=0
: >"$OUT/ready.tsv"

pick_node() {  # PICK = a random node that is up, or empty
  local i up=()
  for i in 1 2 3; do [ -n "${DOWN_UNTIL[i]:-}" ] || [ "$i" = "${NET_NODE:-}" ] || up+=("$i"); done
  PICK=""
  [ ${#up[@]} = 0 ] || PICK=${up[RANDOM % ${#up[@]}]}
}
watch_ready() {  # node, what was killed
  WAIT_READY[$1]=$(ms) WAIT_KIND[$1]=$2
}
kill_reader() {
  local i line pid conns r
  pick_node; i=$PICK; r=$RANDOM
  [ -n "$i" ] || { event "reader kill skipped: no node up"; return; }
  line=$(workers "$i" | awk '$1 == "reader" && $4 == "running" && $3 > 0' | pick_line "$r") || true
  [ -n "$line" ] || { event "reader kill skipped: node$i has no running reader"; return; }
  read -r _ _ pid _ conns <<<"$line"
  pgrep -g "${CL_NODE_PID[i]}" | grep -qx "$pid" && kill -KILL "$pid" 2>/dev/null || { event "reader $pid gone before the kill"; return 0; }
  ALLOWANCE=$((ALLOWANCE + conns)); READER_KILLS=$((READER_KILLS + 1))
  event "SIGKILL node$i reader $pid ($conns connections)"
  watch_ready "$i" reader
}
kill_writer() {
  local i pid lead
  pick_node; i=$PICK
  [ -n "$i" ] || { event "writer kill skipped: no node up"; return; }
  pid=$(workers "$i" | awk '$1 == "writer" && $4 == "running" { print $3 }')
  [ -n "$pid" ] && [ "$pid" -gt 0 ] && pgrep -g "${CL_NODE_PID[i]}" | grep -qx "$pid" ||
    { event "writer kill skipped: node$i's writer not running"; return; }
  lead=$({ cl_ctl "$i" show cluster 2>/dev/null || true; } | sed -n 's/^role: //p')
  kill -KILL "$pid" 2>/dev/null || { event "writer $pid gone before the kill"; return 0; }
  WRITER_KILLS=$((WRITER_KILLS + 1))
  event "SIGKILL node$i writer $pid (node$i was $lead)"
  watch_ready "$i" writer
}
kill_leader() {
  local i
  i=$(cl_leader)
  [ -n "$i" ] || { event "leader kill skipped: no node leads"; return 1; }
  [ -z "${DOWN_UNTIL[i]:-}" ] || { event "leader kill skipped: node$i is down"; return 1; }
  stop_load "$i"
  event "SIGKILL node$i (the leader): its process group"
  cl_kill_node "$i"
  LEADER_KILLS=$((LEADER_KILLS + 1))
  DOWN_UNTIL[i]=$(($(ms) + NODE_DOWN * 1000))
  watch_ready "$i" node
}
restart_node() {
  cl_start_node "$1"
  DOWN_UNTIL[$1]=""
  event "node$1 started again"
}
generation() {  # node -> the generation it publishes (0 if it does not answer)
  { cl_ctl "$1" show cluster 2>/dev/null || true; } | awk -F': ' '$1 == "published_generation" { g = $2 } END { print g + 0 }'
}
kill_redis() {
  local port idx g
  port=$(cl_master_port) || { event "redis kill skipped: no master known"; return; }
  REDIS_GEN=0
  for i in 1 2 3; do g=$(generation "$i"); [ "$g" -le "$REDIS_GEN" ] || REDIS_GEN=$g; done
  idx=$(cl_redis_index "$port")
  kill -KILL "${CL_REDIS_PID[idx]}" 2>/dev/null || true
  wait "${CL_REDIS_PID[idx]}" 2>/dev/null || true
  REDIS_KILLS=$((REDIS_KILLS + 1)) REDIS_OLD=$idx REDIS_WAIT=$(ms)
  event "SIGKILL redis master :$port (pid ${CL_REDIS_PID[idx]})"
  for i in 1 2 3; do [ -n "${DOWN_UNTIL[i]:-}" ] || watch_ready "$i" redis; done
}
# After a Redis kill: once the sentinels name a new master, the old one comes back as
# its replica; done when the master the sentinels name has the other one as a replica
# with its link up (the sentinels may have moved the master again meanwhile).
redis_step() {
  local port other
  other=$((1 - REDIS_OLD))
  if [ -n "${CL_REDIS_PID[REDIS_OLD]}" ] && ! kill -0 "${CL_REDIS_PID[REDIS_OLD]}" 2>/dev/null; then
    port=$(cl_master_port) || return 0
    [ "$port" = "${CL_REDIS_PORT[other]}" ] || return 0
    event "sentinels promoted :$port ($(($(ms) - REDIS_WAIT)) ms after the kill); the old master starts as its replica"
    cl_start_redis "$REDIS_OLD" "$port" || event "the old master did not start"
    printf 'redis-failover\t%s\n' "$(($(ms) - REDIS_WAIT))" >>"$OUT/ready.tsv"
  elif port=$(cl_master_port) && other=$((1 - $(cl_redis_index "$port"))) &&
       cl_redis_cli "${CL_REDIS_PORT[other]}" INFO replication 2>/dev/null | tr -d '\r' |
         awk -F: -v m="$port" '$1 == "master_port" && $2 == m { p = 1 } $1 == "master_link_status" && $2 == "up" { u = 1 } END { exit !(p && u) }'; then
    printf 'redis-replica\t%s\n' "$(($(ms) - REDIS_WAIT))" >>"$OUT/ready.tsv"
    event "master :$port has a connected replica ($(($(ms) - REDIS_WAIT)) ms after the kill)"
    REDIS_WAIT=0
  fi
}
# /healthz 200 and every child running; after a Redis kill also a generation above
# the highest any node published before it, plus one: a follower gets there only through
# the new master (a leader may ingest alone while Redis is away).
node_ready() {  # node, what was killed
  cl_ready "$1" && [ "$(workers "$1" | awk '$4 != "running" || $3 == 0' | wc -l)" = 0 ] &&
    { [ "$2" != redis ] || [ "$(generation "$1")" -gt $((REDIS_GEN + 1)) ]; }
}
ready_step() {
  local i t
  for i in 1 2 3; do
    [ -n "${WAIT_READY[i]:-}" ] && [ -z "${DOWN_UNTIL[i]:-}" ] || continue
    node_ready "$i" "${WAIT_KIND[i]}" || continue
    t=$(($(ms) - WAIT_READY[i]))
    printf '%s\t%s\n' "${WAIT_KIND[i]}" "$t" >>"$OUT/ready.tsv"
    case ${WAIT_KIND[i]} in
      reader) ;;
      cut-* | pause-* | drop-*) event "node$i ready again ($t ms after the ${WAIT_KIND[i]} healed)" ;;
      *) event "node$i ready again ($t ms after the ${WAIT_KIND[i]} kill)" ;;
    esac
    [ "${WAIT_KIND[i]}" != node ] || start_load "$i"
    WAIT_READY[i]=""
  done
}

# Network and pause faults (PARTITIONS=1): one at a time, NET_KIND while one lasts
# (until NET_UNTIL), on NET_NODE (0: the replica link).
# shellcheck disable=SC2206 # NET_ONLY is a list of kinds
NET_KINDS=(${NET_ONLY:-cut-leader cut-follower cut-replica pause-writer pause-node drop-reply})
NET_ORDER=() NET_KIND="" NET_NODE="" NET_UNTIL=0 NET_END=0 NET_STOPPED=""
declare -A NET_COUNT
for k in "${NET_KINDS[@]}"; do NET_COUNT[$k]=0; done
next_net=$((T0 + NET_FIRST * 1000))
[ "$PARTITIONS" = 1 ] || next_net=$((END + 1))
PAUSE_CONNS=0 PAUSE_STUCK=0 STUCK_KILLS=0
stuck_kills() { grep -c 'reader .* made no progress' "${CL_NODE_LOG[$1]}" || true; }
hold_ms() {  # a fault's length: cuts 1 s .. 2 leases + 1 s, pauses past the lease
  if [ "${1%%-*}" = pause ]; then HOLD=$((LEASE_MS + 500 + RANDOM % (LEASE_MS + 501)))
  else HOLD=$((1000 + RANDOM % (2 * LEASE_MS + 1))); fi
}
next_kind() {  # the next kind of a seeded shuffled rotation of NET_KINDS
  local i j t
  if [ ${#NET_ORDER[@]} = 0 ]; then
    NET_ORDER=("${NET_KINDS[@]}")
    for ((i = ${#NET_ORDER[@]} - 1; i > 0; i--)); do
      j=$((RANDOM % (i + 1))) t=${NET_ORDER[i]}; NET_ORDER[i]=${NET_ORDER[j]}; NET_ORDER[j]=$t
    done
  fi
  KIND=${NET_ORDER[0]}
  NET_ORDER=("${NET_ORDER[@]:1}")
}
start_net_fault() {
  local lead i pid others=()
  next_kind
  lead=$(cl_leader)
  [ -n "$lead" ] || { event "$KIND skipped: no node leads"; return 1; }
  for i in 1 2 3; do [ "$i" = "$lead" ] || others+=("$i"); done
  hold_ms "$KIND"
  case $KIND in
    cut-leader | cut-follower)
      i=$lead
      [ "$KIND" = cut-leader ] || i=${others[RANDOM % 2]}
      echo cut >"$OUT/proxy-node$i.ctl"
      event "CUT node$i ($([ "$i" = "$lead" ] && echo leader || echo follower)) from Redis for $HOLD ms" ;;
    cut-replica)
      i=0
      echo cut >"$OUT/proxy-replica.ctl"
      event "CUT the replica's link to the master for $HOLD ms (node$lead leads)" ;;
    pause-writer)
      i=$lead
      pid=$(workers "$i" | awk '$1 == "writer" && $4 == "running" { print $3 }')
      [ -n "$pid" ] && [ "$pid" -gt 0 ] || { event "pause-writer skipped: node$i's writer not running"; return 1; }
      kill -STOP "$pid"
      NET_STOPPED=$pid
      event "SIGSTOP node$i (leader) writer $pid for $HOLD ms" ;;
    pause-node)
      i=$lead
      # Past stuck-timeout (5 s), the supervisor, resumed with its readers, may find their
      # heartbeats old and kill them (their connections then count as a reader kill's).
      PAUSE_CONNS=$(workers "$i" | awk '$1 == "reader" && $4 == "running" { s += $5 } END { print s + 0 }')
      PAUSE_STUCK=$(stuck_kills "$i")
      kill -STOP -- "-${CL_NODE_PID[i]}"
      NET_STOPPED=-${CL_NODE_PID[i]}
      event "SIGSTOP node$i (leader) process group for $HOLD ms" ;;
    drop-reply)
      i=$lead HOLD=3000  # armed until the leader next sends (a tick is 1 s)
      echo drop >"$OUT/proxy-node$i.ctl"
      event "DROP the next Redis reply to node$i (leader)" ;;
  esac
  NET_COUNT[$KIND]=$((NET_COUNT[$KIND] + 1))
  NET_KIND=$KIND NET_NODE=$i NET_UNTIL=$(($(ms) + HOLD))
}
heal_net_fault() {
  local i
  case $NET_KIND in
    cut-* | drop-reply) for f in "$OUT"/proxy-*.ctl; do echo ok >"$f"; done ;;
    pause-*) kill -CONT -- "$NET_STOPPED" 2>/dev/null || true; NET_STOPPED="" ;;
  esac
  if [ "$NET_KIND" = pause-node ]; then
    sleep 0.5
    n=$(($(stuck_kills "$NET_NODE") - PAUSE_STUCK))
    if [ "$n" -gt 0 ]; then
      ALLOWANCE=$((ALLOWANCE + PAUSE_CONNS)) STUCK_KILLS=$((STUCK_KILLS + n))
      event "node$NET_NODE's supervisor killed $n readers as stuck after the pause ($PAUSE_CONNS connections)"
    fi
  fi
  event "healed $NET_KIND"
  if [ "$NET_NODE" = 0 ]; then
    for i in 1 2 3; do [ -n "${DOWN_UNTIL[i]:-}" ] || watch_ready "$i" "$NET_KIND"; done
  else
    watch_ready "$NET_NODE" "$NET_KIND"
  fi
  NET_KIND="" NET_NODE="" NET_END=$(ms)
}
net_step() {  # now
  if [ -n "$NET_KIND" ]; then
    [ "$1" -lt "$NET_UNTIL" ] || heal_net_fault
    return 0
  fi
  [ "$1" -ge "$next_net" ] && [ "$REDIS_WAIT" = 0 ] && [ $(($1 - LAST_LEADER_LOSS)) -ge $((NET_GAP * 1000)) ] &&
    [ $((END - $1)) -ge $((2 * LEASE_MS + 1000)) ] || return 0
  for i in 1 2 3; do [ -z "${DOWN_UNTIL[i]:-}" ] && [ -z "${WAIT_READY[i]:-}" ] || return 0; done
  start_net_fault || true
  next_net=$((NET_UNTIL + (NET_GAP_MIN + RANDOM % (NET_GAP_MAX - NET_GAP_MIN + 1)) * 1000))
}

while :; do
  now=$(ms)
  [ "$now" -lt "$END" ] || break
  for i in 1 2 3; do
    if [ -n "${DOWN_UNTIL[i]:-}" ] && [ "$now" -ge "${DOWN_UNTIL[i]}" ]; then restart_node "$i"; fi
  done
  if [ "$now" -ge "$next_reader" ]; then kill_reader; reader_gap; next_reader=$((now + GAP)); fi
  after_redis=$((now - LAST_REDIS_KILL < FAULT_GAP * 1000 || REDIS_WAIT != 0))
  # a kill waits NET_GAP s after a network/pause fault, and for its node to be ready
  [ -z "$NET_KIND" ] && [ $((now - NET_END)) -ge $((NET_GAP * 1000)) ] || after_redis=1
  for i in 1 2 3; do case ${WAIT_KIND[i]:-} in cut-* | pause-* | drop-*) [ -z "${WAIT_READY[i]:-}" ] || after_redis=1 ;; esac; done
  # nor in the last 2 leases + 1 s: the leader target needs to see the next leader
  [ $((END - now)) -ge $((2 * LEASE_MS + 1000)) ] || after_redis=1
  if [ "$now" -ge "$next_writer" ] && [ "$after_redis" = 0 ]; then
    kill_writer
    LAST_LEADER_LOSS=$now
    next_writer=$((next_writer + WRITER_KILL_EVERY * 1000))
  fi
  if [ "$now" -ge "$next_leader" ] && [ "$after_redis" = 0 ]; then
    kill_leader || true
    LAST_LEADER_LOSS=$now
    next_leader=$((next_leader + LEADER_KILL_EVERY * 1000))
  fi
  any_down=0
  for i in 1 2 3; do [ -z "${DOWN_UNTIL[i]:-}" ] && [ -z "${WAIT_READY[i]:-}" ] || any_down=1; done
  if [ "$now" -ge "$next_redis" ] && [ "$REDIS_WAIT" = 0 ] && [ "$any_down" = 0 ] &&
     [ $((now - LAST_LEADER_LOSS)) -ge $((FAULT_GAP * 1000)) ] && [ $((END - now)) -ge $((2 * LEASE_MS + 1000)) ]; then
    if [ "$CL_SENTINEL" = 1 ]; then kill_redis; LAST_REDIS_KILL=$now; fi
    next_redis=$((next_redis + REDIS_KILL_EVERY * 1000))
  fi
  [ "$REDIS_WAIT" = 0 ] || redis_step
  net_step "$now"
  ready_step
  sleep 0.1
done
[ -z "$NET_KIND" ] || heal_net_fault
event "chaos over"
for i in 1 2 3; do
  if [ -n "${DOWN_UNTIL[i]:-}" ]; then restart_node "$i"; fi
done
# The pusher finishes the request in flight (10 s at most) and stops.
kill -TERM "$PUSHER_PID" 2>/dev/null || true
wait "$PUSHER_PID" 2>/dev/null || true
# The load ends with the chaos (loadgen waits up to 5 s for late answers).
for i in 1 2 3; do
  for p in "${LOAD_WRK[i]:-}" "${LOAD_LG[i]:-}"; do
    [ -n "$p" ] || continue
    for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill "$p" 2>/dev/null || true  # still running 15 s late: no result, a miss
    wait "$p" || true
  done
  LOAD_WRK[i]="" LOAD_LG[i]=""
done
# Whatever is still recovering gets READY_LIMIT more seconds.
deadline=$(($(ms) + READY_LIMIT * 1000))
while [ "$(ms)" -lt "$deadline" ]; do
  [ "$REDIS_WAIT" = 0 ] || redis_step
  ready_step
  pending=0
  for i in 1 2 3; do [ -z "${WAIT_READY[i]:-}" ] || pending=1; done
  [ "$pending" = 1 ] || [ "$REDIS_WAIT" != 0 ] || break
  sleep 0.1
done
kill "$POLLER_PID" 2>/dev/null || true
wait "$POLLER_PID" 2>/dev/null || true
POLLER_PID=""
kill -TERM "$OBSERVER_PID" 2>/dev/null || true  # it reads the log once more and stops
wait "$OBSERVER_PID" 2>/dev/null || true

# ---------------------------------------------------------------------------------
# Verdict
# ---------------------------------------------------------------------------------
ok=1
# Sum of a RESULT field over result files: total FIELD FILES...
total() {
  local f=$1
  shift
  cat "$@" 2>/dev/null | sed -n "s/^RESULT.* $f=\([0-9]*\).*/\1/p" | awk '{ s += $1 } END { print s + 0 }'
}
WRK_FILES=("$OUT"/wrk.*.txt) LG_FILES=("$OUT"/loadgen.*.txt)
W_RESULTS=$(cat "${WRK_FILES[@]}" | grep -c '^RESULT' || true)
L_RESULTS=$(cat "${LG_FILES[@]}" | grep -c '^RESULT' || true)
W_REQ=$(total requests "${WRK_FILES[@]}") W_FAILED=$(total socket_errors "${WRK_FILES[@]}") W_NON2XX=$(total non2xx "${WRK_FILES[@]}")
L_REQ=$(total requests "${LG_FILES[@]}") L_NON2XX=$(total non2xx "${LG_FILES[@]}")
L_BROKEN=$(total broken "${LG_FILES[@]}") L_SOCKERR=$(total socket_errors "${LG_FILES[@]}")
L_UNANSWERED=$(total unanswered "${LG_FILES[@]}") L_IDLE=$(total closed_idle "${LG_FILES[@]}")
GV=$(total gen_violations "${LG_FILES[@]}") GM=$(total gen_missing "${LG_FILES[@]}") GC=$(total gen_checked "${LG_FILES[@]}")
FAILED=$((W_FAILED + L_BROKEN + L_SOCKERR + L_UNANSWERED))

# Leaderless time after each kill (but a reader's) or network/pause fault, ms: when a sample without a leader comes after the
# kill and before the next one, from the last sample with a leader before it (or the
# kill) to the next sample with a leader (-1: none within 30 s); else 0.
awk -F'\t' '$2 ~ /^(SIGKILL|SIGSTOP|CUT|DROP)/ && $2 !~ / reader / { print $1 "\t" $2 }' "$OUT/events.tsv" >"$OUT/kills.tsv"
awk -v lease="$LEASE_MS" '
  NR == FNR { kt[++nk] = $1; kd[nk] = $0; next }
  { t[++n] = $1; lead[n] = ($0 ~ / leader:/) }
  END {
    for (k = 1; k <= nk; k++) {
      next_kill = (k < nk) ? kt[k + 1] : 1e18
      from = kt[k]; gap = 0; start = -1
      for (j = 1; j <= n; j++) {
        if (t[j] < kt[k]) continue
        if (t[j] > kt[k] + 30000) break
        if (!lead[j] && start < 0) { if (t[j] >= next_kill) break; start = from }
        if (lead[j]) { if (start >= 0) { gap = t[j] - start; break } from = t[j] }
      }
      if (start >= 0 && gap == 0) gap = -1
      print gap "\t" kd[k]
    }
  }' FS='\t' "$OUT/kills.tsv" FS=' ' "$OUT/roles.tsv" >"$OUT/leaderless.tsv"
POLLED_UNTIL=$(tail -n 1 "$OUT/roles.tsv" | cut -d' ' -f1)
MAX_LEADERLESS=$(awk -F'\t' '$1 > m { m = $1 } $1 < 0 { m = 1e9 } END { print m + 0 }' "$OUT/leaderless.tsv")
ready_max() { awk -F'\t' -v k="$1" '$1 == k && $2 > m { m = $2 } $1 == k { n++ } END { printf "%d (%d)", m, n }' "$OUT/ready.tsv"; }

echo
echo "== summary (seed $SEED; files in $OUT)"
echo "cluster: $CL_CLUSTER_URL; interval $INTERVAL, lease $LEASE, window $WINDOW, checkpoint every $CHECKPOINT_EVERY"
echo "requests: wrk $W_REQ, loadgen $L_REQ of ~$LOADGEN_SCHEDULED scheduled, in $SEGMENTS load segments"
echo "kills: reader $READER_KILLS, writer $WRITER_KILLS, leader node $LEADER_KILLS, redis master $REDIS_KILLS"
NET_SUMMARY="" NET_KINDS_OK=1 NET_TOTAL=0
for k in "${NET_KINDS[@]}"; do
  NET_TOTAL=$((NET_TOTAL + NET_COUNT[$k]))
  NET_SUMMARY+=" $k ${NET_COUNT[$k]},"
  [ "${NET_COUNT[$k]}" -gt 0 ] || NET_KINDS_OK=0
done
DROPPED=$(cat "$OUT"/proxy-*.log 2>/dev/null | grep -c 'dropping the reply' || true)
[ "$PARTITIONS" = 0 ] || echo "network/pause faults:${NET_SUMMARY%,} ($DROPPED replies dropped); node$SKEW_NODE's clock $SKEW off; readers the supervisor killed as stuck after a pause: $STUCK_KILLS"
PUSHES=$(wc -l <"$OUT/pushes.jsonl" 2>/dev/null || echo 0)
echo "pushes: $PUSHES requests, by answer: $($CL_PY -c '
import collections, json, sys
c = collections.Counter(str(json.loads(l)["status"]) for l in open(sys.argv[1]) if l.strip())
print(", ".join(f"{k} {v}" for k, v in sorted(c.items())))' "$OUT/pushes.jsonl" 2>/dev/null)"
echo "errors: wrk $W_FAILED non2xx $W_NON2XX; loadgen broken $L_BROKEN socket $L_SOCKERR unanswered $L_UNANSWERED closed_idle $L_IDLE non2xx $L_NON2XX"
echo "leaderless ms after each kill (not a reader's) or fault (-1: no leader until the next one):"
sed 's/^/  /' "$OUT/leaderless.tsv"
echo "ready again, largest ms (count): reader $(ready_max reader), writer $(ready_max writer), node $(ready_max node), nodes after a redis kill $(ready_max redis), redis failover $(ready_max redis-failover), a connected replica again $(ready_max redis-replica)"
[ "$PARTITIONS" = 0 ] || echo "ready again after a healed fault, largest ms (count):$(for k in "${NET_KINDS[@]}"; do printf ' %s %s,' "$k" "$(ready_max "$k")"; done | sed 's/,$//')"
echo

check "load: $W_RESULTS wrk and $L_RESULTS loadgen results of $SEGMENTS segments" '[ "$W_RESULTS" = "$SEGMENTS" ] && [ "$L_RESULTS" = "$SEGMENTS" ]'
check "failures: $FAILED broken requests + $L_IDLE idle connections closed <= $ALLOWANCE connections the killed readers held" \
  '[ $((FAILED + L_IDLE)) -le "$ALLOWANCE" ]'
check "non-2xx: $((W_NON2XX + L_NON2XX))" '[ $((W_NON2XX + L_NON2XX)) = 0 ]'
check "generation: $GV per-connection violations, $GM responses without it, $GC of $L_REQ checked" \
  '[ "$GV" = 0 ] && [ "$GM" = 0 ] && [ "$GC" = "$L_REQ" ] && [ "$L_REQ" -gt 0 ]'
check "leader: at most $MAX_LEADERLESS ms without a leader after a kill or fault (< 2 leases, $((2 * LEASE_MS)) ms; polled until $POLLED_UNTIL ms)" \
  '[ "$MAX_LEADERLESS" -lt $((2 * LEASE_MS)) ] && [ "${POLLED_UNTIL:-0}" -ge $((DURATION * 1000 - 1000)) ]'
pending=""
for i in 1 2 3; do [ -z "${WAIT_READY[i]:-}" ] || pending+=" node$i(${WAIT_KIND[i]})"; done
[ "$REDIS_WAIT" = 0 ] || pending+=" redis"
check "ready: every killed node ready again within ${READY_LIMIT}s of the end${pending:+, not:$pending}" '[ -z "$pending" ]'
end_state() {
  local i leaders=0 n
  for i in 1 2 3; do
    cl_ready "$i" || { echo "      node$i /healthz $(cl_healthz "$i")"; return 1; }
    n=$(cl_ctl "$i" show cluster | grep -c '^node\.[0-9]*\.node_id:')
    [ "$n" = 3 ] || { echo "      node$i lists $n nodes"; return 1; }
    cl_ctl "$i" show cluster | grep -q '^role: leader$' && leaders=$((leaders + 1))
  done
  [ "$leaders" = 1 ] || { echo "      $leaders leaders"; return 1; }
}
check "end: every node /healthz 200, 3 nodes listed, one leader" 'cl_wait 15 end_state || end_state'
MASTER=${CL_REDIS_PORT[0]}
[ "$CL_SENTINEL" = 0 ] || MASTER=$(cl_master_port || echo "${CL_REDIS_PORT[0]}")
if $CL_PY bench/cluster/reference.py --decoder "$LOG_ENTRIES" --redis-port "$MASTER" --cluster-name "$CLUSTER_NAME" \
     --series "$SERIES" --source "$CL_UPSTREAM_URL" --rounds 4 --pause 1.2 --log-record "$OUT/log.tsv" \
     --answers "$OUT/answers.jsonl" --pushes "$OUT/pushes.jsonl" "${CL_NODE_PORT[1]}" "${CL_NODE_PORT[2]}" "${CL_NODE_PORT[3]}" \
     >"$OUT/reference.txt" 2>&1; then :; else ok=0; fi
sed -E 's/^(PASS|FAIL)  /\1  exact: /' "$OUT/reference.txt"
KINDS_OK=1
[ "$READER_KILLS" -gt 0 ] && [ "$WRITER_KILLS" -gt 0 ] && [ "$LEADER_KILLS" -gt 0 ] || KINDS_OK=0
[ "$CL_SENTINEL" = 0 ] || [ "$REDIS_KILLS" -gt 0 ] || KINDS_OK=0
[ "$PARTITIONS" = 0 ] || [ "$DURATION" -lt 300 ] || [ "$NET_KINDS_OK" = 1 ] || KINDS_OK=0
[ "$PARTITIONS" = 0 ] || [ "$NET_TOTAL" -ge 2 ] || KINDS_OK=0
check "load: kills happened (reader $READER_KILLS, writer $WRITER_KILLS, leader $LEADER_KILLS, redis $REDIS_KILLS$([ "$CL_SENTINEL" = 1 ] || echo ': no sentinels, not killed')$([ "$PARTITIONS" = 0 ] || echo "; network/pause faults $NET_TOTAL:${NET_SUMMARY%,}")" '[ "$KINDS_OK" = 1 ]'
check "load: loadgen answered $L_REQ of ~$LOADGEN_SCHEDULED scheduled, wrk $W_REQ" \
  '[ $((L_REQ * 2)) -ge "$LOADGEN_SCHEDULED" ] && [ "$W_REQ" -gt 0 ]'

if [ "$ok" = 1 ]; then
  RESULT_OK=1
  echo "CLUSTER CHAOS PASS"
else
  echo "CLUSTER CHAOS FAIL (seed $SEED)"
  exit 1
fi
