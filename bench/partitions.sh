#!/usr/bin/env bash
# bench/partitions.sh: what a partitioned cluster costs per node, per move and in Redis
# (docs/performance.md, Partitions). One redis-server on 127.0.0.1; for each replication
# factor R in RFS and node count N in NODES (N >= R; N = 1 is run once, R = 1, and is
# the baseline of both), a fresh cluster (--partitions P --replication-factor R) of N
# nodes, every node with the same source synthetic://?hosts=HOSTS&metrics=METRICS (one
# sample per series per interval; one node pulls it and appends one entry per partition
# per tick). Per configuration:
#   settle   every partition ready on R nodes (`show cluster json` of every node) and
#            the series every node holds (`show snapshot` series) sum to R x the total;
#   warm     WARM_TICKS entries in partition 0's log (default: a full window); every
#            writer SIGKILLed (its supervisor starts another, which loads its node's
#            partitions: its memory is then its share's, not the first seconds' high-water
#            when one node held every partition), settled again (RESTART=0: not); then
#            to the first tick after a checkpoint, so that the span below has none;
#   span     SPAN_TICKS ticks (< CHECKPOINT_EVERY), in which are read, per node, the
#            writer's CPU (utime + stime of /proc/WRITER/stat: per-process CPU time, since
#            every node shares this machine's cores), its RssAnon and VmRSS
#            (/proc/WRITER/status at the end), the series and partitions it holds; and in
#            Redis, used_memory (INFO memory), every partition's log-end seq and XLEN,
#            and the checkpoints' bytes. Ticks = the growth of partition 0's log-end seq;
#   redis    bytes per sample, two ways: (stream) over every partition, MEMORY USAGE
#            SAMPLES 0 of its stream / its XLEN is the stream's bytes per entry; summed
#            over partitions, the bytes of one tick, / the series (one sample each).
#            (growth) the streams' MEMORY USAGE's growth over the span / the samples
#            appended in it (ticks x series), when no log was trimmed in the span.
#            (dataset, used) the growth of used_memory_dataset and of used_memory over
#            the span / the samples appended in it (ticks x series), only when no
#            partition's log was trimmed and no checkpoint written in the span (else
#            "-"); used_memory also counts the clients' buffers, which shrink after a
#            checkpoint's 1 MB chunks. Plus the entries' own bytes (the e fields);
#   puller   samples appended per second of wall time over the span, and per second of
#            the puller's writer CPU (which also applies and builds what it holds);
#   join     a new node (node N+1) started into the running cluster: seconds from its
#            start to its partitions ready (/healthz 200, which a partitioned node
#            answers once every partition it holds is ready, and one held) and to the cluster settled again (every partition on R ready nodes,
#            none leaving); the partitions it loaded and the bytes of the checkpoints it
#            loaded them from (its log's "restored from its checkpoint at SEQ" lines,
#            the chunks' STRLEN in Redis).
# Ratios are to the single node's: per node, RssAnon, CPU per tick and series held, with
# the target <= 1.15 x R/N, and the same over the node's share of the partitions; and
# the node's part of all nodes' CPU x R (read at the same time, so free of the load that
# differs between configurations). Each node's line says whether it pulls.
# Lines "RESULT ..." are the figures; "FAIL ..." a check that did not hold (exit 1).
#
# SHORT=1 is the ctest profile (tests/ops, `ops.partitions`): 20,000 series, interval 1s,
# window 10s, 1 and 2 nodes, R = 1, about 40 s, checks every figure is sane.
#
# Environment (defaults: full profile / SHORT=1):
#   HOSTS=10000/200 METRICS=100 INTERVAL=2s/1s WINDOW=60s/10s PARTITIONS=16
#   NODES="1 2 4"/"1 2" RFS="1 2"/"1" WARM_TICKS=(window ticks + 1)/4 SPAN_TICKS=10/4
#   CHECKPOINT_EVERY=15/6 LEASE=20s/3s SETTLE_LIMIT=600/30 (seconds) JOIN=1 RESTART=1
#   OUT=/tmp/telemetryd-partitions (SHORT: a temporary directory, removed when it passes)
#   BUILD=build, or TELEMETRYD= TELEMETRYCTL= (ctest)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

SHORT=${SHORT:-0}
s() { if [ "$SHORT" = 1 ]; then echo "$2"; else echo "$1"; fi; }
HOSTS=${HOSTS:-$(s 10000 200)}
METRICS=${METRICS:-100}
INTERVAL=${INTERVAL:-$(s 2s 1s)}
WINDOW=${WINDOW:-$(s 60s 10s)}
PARTITIONS=${PARTITIONS:-16}
NODES=${NODES:-$(s "1 2 4" "1 2")}
RFS=${RFS:-$(s "1 2" "1")}
SPAN_TICKS=${SPAN_TICKS:-$(s 10 4)}
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-$(s 15 6)}
LEASE=${LEASE:-$(s 20s 3s)}
SETTLE_LIMIT=${SETTLE_LIMIT:-$(s 600 30)}
JOIN=${JOIN:-1}
RESTART=${RESTART:-1}
BUILD=${BUILD:-build}
TELEMETRYD=${TELEMETRYD:-$PWD/$BUILD/server/telemetryd}
TELEMETRYCTL=${TELEMETRYCTL:-$PWD/$BUILD/server/telemetryctl}
PY=/usr/bin/python3
seconds() { $PY -c "import sys; s=sys.argv[1]; print(float(s[:-2])/1000 if s.endswith('ms') else float(s[:-1]))" "$1"; }
INTERVAL_S=$(seconds "$INTERVAL")
WARM_TICKS=${WARM_TICKS:-$(s "$($PY -c "print(int($(seconds "$WINDOW") / $INTERVAL_S) + 1)")" 4)}
SERIES=$((HOSTS * METRICS))
[ "$SPAN_TICKS" -lt "$CHECKPOINT_EVERY" ] || { echo "SPAN_TICKS must be below CHECKPOINT_EVERY" >&2; exit 2; }
command -v redis-server >/dev/null || { echo "SKIP: redis-server is not installed (scripts/deps.sh installs it)"; exit 77; }
{ [ -x "$TELEMETRYD" ] && [ -x "$TELEMETRYCTL" ]; } ||
  { echo "build first: cmake --build $BUILD --target telemetryd telemetryctl" >&2; exit 2; }

REMOVE_OUT=0
if [ -z "${OUT:-}" ]; then
  if [ "$SHORT" = 1 ]; then OUT=$(mktemp -d /tmp/tdpart.XXXXXX); REMOVE_OUT=1; else OUT=/tmp/telemetryd-partitions; fi
fi
rm -rf "$OUT"
mkdir -p "$OUT"
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port)
REDIS_PID=""
declare -a NODE_PID NODE_PORT
FAILS=0
cleanup() {
  local rc=$?
  stop_nodes
  stop_process "$REDIS_PID" 50
  if [ "$FAILS" = 0 ] && [ "$rc" = 0 ] && [ "$REMOVE_OUT" = 1 ]; then rm -rf "$OUT"; fi
  [ "$rc" = 0 ] || echo "(logs in $OUT)"
  exit "$rc"
}
# Every node's process group (supervisor, writer, readers): SIGTERM, then SIGKILL.
stop_nodes() {
  local i
  for i in "${!NODE_PID[@]}"; do kill -TERM -- "-${NODE_PID[i]}" 2>/dev/null || true; done
  for i in "${!NODE_PID[@]}"; do
    for _ in $(seq 100); do pgrep -g "${NODE_PID[i]}" >/dev/null || break; sleep 0.1; done
    kill -KILL -- "-${NODE_PID[i]}" 2>/dev/null || true
    wait "${NODE_PID[i]}" 2>/dev/null || true
  done
  NODE_PID=()
  rm -f /dev/shm/tdpart$$-*
}
on_exit cleanup
fail() { echo "FAIL $*"; FAILS=$((FAILS + 1)); }

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
rc() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
for _ in $(seq 50); do rc ping >/dev/null 2>&1 && break; sleep 0.1; done
rc ping >/dev/null || { echo "redis-server did not start (see $OUT/redis.log)"; exit 1; }

NAME=""  # the configuration's cluster name
ctl() { timeout 10 "$TELEMETRYCTL" -s "$OUT/$NAME-node$1.sock" "${@:2}"; }
start_node() {  # index R
  local i=$1
  NODE_PORT[i]=$(free_port)
  setsid "$TELEMETRYD" --listen "127.0.0.1:${NODE_PORT[i]}" --admin-socket "$OUT/$NAME-node$i.sock" \
    --shm-name "tdpart$$-$i" --log-file "$OUT/$NAME-node$i.log" --node-id "node$i" --workers 2 \
    --cluster "redis://127.0.0.1:$REDIS_PORT" --cluster-name "$NAME" --partitions "$PARTITIONS" \
    --replication-factor "$2" --source "synthetic://?hosts=$HOSTS&metrics=$METRICS" --interval "$INTERVAL" \
    --window "$WINDOW" --lease "$LEASE" --checkpoint-every "$CHECKPOINT_EVERY" --writer-stuck-timeout 10m \
    --max-series $((SERIES * 2)) --max-series-per-source $((SERIES * 2)) >>"$OUT/$NAME-node$i.out" 2>&1 &
  NODE_PID[i]=$!
}
# Every node's `show cluster json` into $OUT/json.I (an empty file when it does not answer).
read_json() { local i; for i in "$@"; do ctl "$i" show cluster json >"$OUT/json.$i" 2>/dev/null || : >"$OUT/json.$i"; done; }
# Exit 0 when every partition is ready on exactly R of the nodes and no node holds one in
# another state; prints "ready holders per node" either way.
settled() {  # R node indexes...
  local r=$1
  shift
  read_json "$@"
  $PY - "$PARTITIONS" "$r" "$OUT" "$@" <<'PY'
import json, sys
parts, r, out, nodes = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
holders, other, per = [0] * parts, 0, []
for i in nodes:
    try: held = json.load(open(f"{out}/json.{i}"))["partitioning"]["held"]
    except Exception: print(f"node{i}: no answer"); sys.exit(1)
    ready = [h["partition"] for h in held if h["state"] == "ready"]
    other += len(held) - len(ready)
    for p in ready: holders[p] += 1
    per.append(f"node{i}:{len(ready)}")
print(" ".join(per))
sys.exit(0 if other == 0 and all(h == min(r, len(nodes)) for h in holders) else 1)
PY
}
series_of() { ctl "$1" show snapshot 2>/dev/null | sed -n 's/^series: //p' | grep . || echo 0; }
writer_pid() { ctl "$1" show info 2>/dev/null | sed -n 's/^writer_pid: //p'; }
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }  # utime + stime
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
log_end() { rc GET "{$NAME:$1}:log-end" | cut -d' ' -f1 | grep . || echo 0; }
newest_checkpoint() { rc LINDEX "{$NAME:$1}:checkpoints" 0 | cut -d' ' -f1 | grep . || echo 0; }
checkpoint_bytes() {  # all checkpoint chunks of the cluster in Redis
  rc EVAL "local n = 0
    for p = 0, tonumber(ARGV[2]) - 1 do
      for _, c in ipairs(redis.call('LRANGE', '{' .. ARGV[1] .. ':' .. p .. '}:checkpoints', 0, -1)) do
        local seq, term, chunks = string.match(c, '^(%d+) (%d+) (%d+)')
        for k = 0, tonumber(chunks) - 1 do
          n = n + redis.call('STRLEN', '{' .. ARGV[1] .. ':' .. p .. '}:checkpoint:' .. seq .. ':' .. term .. ':' .. k)
        end
      end
    end
    return n" 0 "$NAME" "$PARTITIONS"
}
# Per partition: "log_end xlen stream_memory entry_bytes" (entry_bytes: the e fields).
redis_streams() {
  local p
  for p in $(seq 0 $((PARTITIONS - 1))); do
    echo "$(log_end "$p") $(rc XLEN "{$NAME:$p}:log") $(rc MEMORY USAGE "{$NAME:$p}:log" SAMPLES 0 | grep . || echo 0)" \
      "$(rc EVAL "local n = 0
        for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
          for i = 1, #e[2], 2 do if e[2][i] == 'e' then n = n + #e[2][i + 1] end end
        end
        return n" 1 "{$NAME:$p}:log")"
  done
}
# used_memory, then used_memory_dataset: used_memory without Redis's overhead, the
# clients' buffers among it (after a checkpoint, the 1 MB chunks' query buffers shrink
# for seconds and hide the log's growth from used_memory).
used_memory() { rc INFO memory | tr -d '\r' | awk -F: '$1 == "used_memory" {u = $2} $1 == "used_memory_dataset" {d = $2} END {print u, d}'; }
wait_seq() {  # partition 0's log-end seq at least $1, bounded by SETTLE_LIMIT
  local t0=$SECONDS
  while [ "$(log_end 0)" -lt "$1" ]; do
    [ $((SECONDS - t0)) -lt "$SETTLE_LIMIT" ] || return 1
    sleep 0.2
  done
}
HZ=$(getconf CLK_TCK)
BASE_RSS="" BASE_CPU="" BASE_SERIES=""

# One configuration: R, N. Reads the figures above and prints RESULT lines.
run_config() {
  local r=$1 n=$2 i t0
  NAME="pb-r$r-n$n"
  rc FLUSHALL >/dev/null
  echo "== R=$r N=$n: $SERIES series, P=$PARTITIONS, interval $INTERVAL, window $WINDOW [$(elapsed)s]"
  for i in $(seq "$n"); do start_node "$i" "$r"; done
  local -a nodes
  mapfile -t nodes < <(seq "$n")
  t0=$SECONDS
  until settled "$r" "${nodes[@]}" >/dev/null && [ "$(log_end 0)" -ge 1 ]; do
    [ $((SECONDS - t0)) -lt "$SETTLE_LIMIT" ] || { fail "R=$r N=$n: not settled in ${SETTLE_LIMIT}s: $(settled "$r" "${nodes[@]}")"; return 1; }
    sleep 0.5
  done
  echo "settled in $((SECONDS - t0)) s: $(settled "$r" "${nodes[@]}")"
  wait_seq "$WARM_TICKS" || { fail "R=$r N=$n: partition 0 short of $WARM_TICKS entries"; return 1; }
  # Every writer SIGKILLed and started again by its supervisor: the new writer loads what
  # its node holds from the checkpoints and the log, so that its memory is its share's,
  # not the high-water of the first seconds, when the first node up held every partition
  # until the others registered (freed memory stays in the writer's heap).
  # (RESTART=0: not.)
  if [ "$RESTART" = 1 ]; then
    local -a old_pid
    for i in "${nodes[@]}"; do old_pid[i]=$(writer_pid "$i"); kill -KILL "${old_pid[i]}"; done
    t0=$SECONDS
    for i in "${nodes[@]}"; do
      until [ -n "$(writer_pid "$i")" ] && [ "$(writer_pid "$i")" != "${old_pid[i]}" ] && [ "$(writer_pid "$i")" != 0 ]; do
        [ $((SECONDS - t0)) -lt "$SETTLE_LIMIT" ] || { fail "R=$r N=$n: node$i's writer did not come back"; return 1; }
        sleep 0.2
      done
    done
    sleep 2  # the new writers' first heartbeat: settled() must not read the old statuses
    until settled "$r" "${nodes[@]}" >/dev/null; do
      [ $((SECONDS - t0)) -lt "$SETTLE_LIMIT" ] || { fail "R=$r N=$n: not settled again in ${SETTLE_LIMIT}s after the writers' restart"; return 1; }
      sleep 0.5
    done
    echo "writers restarted, settled again in $((SECONDS - t0)) s"
  fi
  span_figures "$r" "$n" "${nodes[@]}" || return 1
  [ "$JOIN" != 1 ] || join_node "$r" "$((n + 1))"
}

# The span of one configuration (R, N, the node indexes), after the warm-up: the readings,
# then the figures (RESULT lines) and their checks; the single node's are the baseline.
# Over 80 lines: most of it is the one Python heredoc that computes the figures.
span_figures() {
  local r=$1 n=$2 i t0
  shift 2
  local -a nodes=("$@")
  # To the first tick after a checkpoint (committed), so that the span has none.
  local next=$(( ($(log_end 0) / CHECKPOINT_EVERY + 1) * CHECKPOINT_EVERY ))
  wait_seq $((next + 1)) || { fail "R=$r N=$n: no tick past $next"; return 1; }
  t0=$SECONDS
  until [ "$(newest_checkpoint 0)" -ge "$next" ]; do
    [ $((SECONDS - t0)) -lt "$SETTLE_LIMIT" ] || { fail "R=$r N=$n: no checkpoint at $next"; return 1; }
    sleep 0.2
  done

  # The span.
  local -a wpid cpu0
  for i in "${nodes[@]}"; do wpid[i]=$(writer_pid "$i"); cpu0[i]=$(cpu_ticks "${wpid[i]}"); done
  local seq0 mem0 ck0 ms0 streams0 data0 data1 stream_mem0
  seq0=$(log_end 0) ck0=$(checkpoint_bytes) ms0=$(ms)
  read -r mem0 data0 < <(used_memory)
  stream_mem0=$(for p in $(seq 0 $((PARTITIONS - 1))); do rc MEMORY USAGE "{$NAME:$p}:log" SAMPLES 0; done | awk '{n += $1} END {print n + 0}')
  streams0=$(for p in $(seq 0 $((PARTITIONS - 1))); do echo "$(log_end "$p") $(rc XLEN "{$NAME:$p}:log")"; done | tr '\n' ' ')
  wait_seq $((seq0 + SPAN_TICKS)) || { fail "R=$r N=$n: the span's ticks did not come"; return 1; }
  local seq1 mem1 ck1 ms1
  for i in "${nodes[@]}"; do echo "${wpid[i]} $(cpu_ticks "${wpid[i]}")" >"$OUT/cpu.$i"; done
  seq1=$(log_end 0) ck1=$(checkpoint_bytes) ms1=$(ms)
  read -r mem1 data1 < <(used_memory)
  redis_streams >"$OUT/streams"
  read_json "${nodes[@]}"
  for i in "${nodes[@]}"; do
    echo "${cpu0[i]} $(cat "$OUT/cpu.$i") $(writer_pid "$i") $(status_kb "${wpid[i]}" RssAnon) $(status_kb "${wpid[i]}" VmRSS) $(series_of "$i")" >"$OUT/node.$i"
  done
  $PY - <<PY || fail "R=$r N=$n: figures (above)"
import json, sys
r, n, parts, series, hz, interval = $r, $n, $PARTITIONS, $SERIES, $HZ, $INTERVAL_S
ticks, wall_s = $seq1 - $seq0, ($ms1 - $ms0) / 1000
base = dict(rss="$BASE_RSS", cpu="$BASE_CPU", series="$BASE_SERIES")
ok = True
def check(cond, what):
    global ok
    if not cond: print(f"FAIL R={r} N={n}: {what}"); ok = False
check(ticks >= $SPAN_TICKS, f"{ticks} ticks in the span")
rows, total_series, total_held = [], 0, 0
for i in range(1, n + 1):
    c0, pid, c1, pid_end, rss, vm, held_series = open(f"$OUT/node.{i}").read().split()
    check(pid == pid_end, f"node{i}'s writer changed in the span ({pid} -> {pid_end})")
    js = json.load(open(f"$OUT/json.{i}"))
    held = js["partitioning"]["held"]
    lag = max((h["log_end"] - h["generation"] for h in held), default=0)
    cpu_ms = (int(c1) - int(c0)) * 1000 / hz / max(ticks, 1)
    rows.append(dict(node=i, puller=bool(js["pulling"]), parts=len(held), series=int(held_series),
                     rss=int(rss) * 1024, vm=int(vm) * 1024, cpu=cpu_ms, lag=lag, appended=js["entries_appended"],
                     refused=js["appends_refused"]))
    total_series += int(held_series)
check(total_series == min(r, n) * series, f"the nodes hold {total_series} series, not {min(r, n)} x {series}")
check(sum(1 for x in rows if x["puller"]) == 1, "not exactly one puller")
target = 1.15 * min(r, n) / n
# Each node's part of the CPU all nodes spent, x R: read at the same time on the same
# machine, so free of the load that differs between configurations (the ratio to the
# single node's is not).
total_cpu = sum(x["cpu"] for x in rows)
for x in rows:
    ratio = lambda k: f"{x[k] / float(base[k]):.3f}" if base[k] else "-"
    # The ratio over the node's share of the partitions (held / P): what a partition
    # costs here against the single node's, apart from how evenly they were placed.
    per_share = lambda k: f"{x[k] / float(base[k]) / (x['parts'] / parts):.3f}" if base[k] and x["parts"] else "-"
    print(f"RESULT node R={r} N={n} node{x['node']}{' puller' if x['puller'] else ''} partitions={x['parts']} "
          f"series={x['series']} rss_anon_mb={x['rss'] / 1e6:.1f} vmrss_mb={x['vm'] / 1e6:.1f} "
          f"cpu_ms_per_tick={x['cpu']:.0f} ratio_series={ratio('series')} ratio_rss={ratio('rss')} "
          f"ratio_cpu={ratio('cpu')} cpu_part_x_r={x['cpu'] / total_cpu * min(r, n):.3f} target={target:.3f} share={x['parts'] / parts:.3f} "
          f"ratio_cpu_per_share={per_share('cpu')} ratio_rss_per_share={per_share('rss')} "
          f"apply_lag_entries={x['lag']} refused={x['refused']}")
    check(x["cpu"] > 0 and x["rss"] > 0 and x["series"] > 0, f"node{x['node']}: a zero figure")
# Redis bytes per sample.
s0 = [tuple(map(int, p)) for p in zip(*[iter("$streams0".split())] * 2)]
s1 = [tuple(map(int, l.split())) for l in open("$OUT/streams")]
trimmed = any(b[1] - a[1] != b[0] - a[0] for a, b in zip(s0, s1))
per_tick_mem = sum(m / x for _, x, m, _ in s1 if x)
stream_growth = "-" if trimmed else f"{(sum(m for _, _, m, _ in s1) - $stream_mem0) / (ticks * series):.2f}"
per_tick_entry = sum(e / x for _, x, _, e in s1 if x)
growth = lambda a, b: "-" if trimmed or $ck1 != $ck0 else f"{(b - a) / (ticks * series):.2f}"
print(f"RESULT redis R={r} N={n} stream_bytes_per_sample={per_tick_mem / series:.2f} "
      f"entry_bytes_per_sample={per_tick_entry / series:.2f} stream_growth_bytes_per_sample={stream_growth} "
      f"dataset_bytes_per_sample={growth($data0, $data1)} "
      f"used_memory_bytes_per_sample={growth($mem0, $mem1)} "
      f"used_memory_mb={$mem1 / 1e6:.1f} checkpoint_mb={$ck1 / 1e6:.1f} ticks={ticks} wall_s={wall_s:.1f}")
check(0 < per_tick_mem / series < 64, "stream bytes per sample not in (0, 64)")
check(0 < per_tick_entry / series < 32, "entry bytes per sample not in (0, 32)")
pull = [x for x in rows if x["puller"]][0] if any(x["puller"] for x in rows) else rows[0]
others = [x["cpu"] for x in rows if not x["puller"] and x["parts"] == pull["parts"]]
extra = f"{series / ((pull['cpu'] - sum(others) / len(others)) / 1000) / 1e6:.2f}" if others and pull["cpu"] > sum(others) / len(others) else "-"
print(f"RESULT puller R={r} N={n} node{pull['node']} samples_per_wall_s={ticks * series / wall_s:.0f} "
      f"all_nodes_cpu_ms_per_tick={total_cpu:.0f} offered_per_s={series / interval:.0f} msamples_per_writer_cpu_s={series / (pull['cpu'] / 1000) / 1e6:.2f} "
      f"msamples_per_pulling_cpu_s={extra}")
sys.exit(0 if ok else 1)
PY
  if [ "$n" = 1 ]; then  # the baseline: RssAnon bytes, CPU ms per tick, series
    read -r BASE_RSS BASE_CPU BASE_SERIES < <(awk -v hz="$HZ" -v t=$((seq1 - seq0)) \
      '{print $5 * 1024, ($3 - $1) * 1000 / hz / t, $7}' "$OUT/node.1")
  fi
}

# Node J started into the running cluster of nodes 1..J-1.
join_node() {
  local r=$1 j=$2 t0 tready="" polls=0
  local -a nodes
  mapfile -t nodes < <(seq "$j")
  checkpoint_list >"$OUT/checkpoints"
  t0=$(ms)
  start_node "$j" "$r"
  while :; do
    [ $(($(ms) - t0)) -lt $((SETTLE_LIMIT * 1000)) ] || { fail "R=$r join node$j: not settled in ${SETTLE_LIMIT}s: $(settled "$r" "${nodes[@]}")"; return 1; }
    if [ -z "$tready" ] && [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:${NODE_PORT[j]}/healthz" || true)" = 200 ] &&
       ctl "$j" show cluster json 2>/dev/null | grep -q '"state":"ready"'; then
      tready=$(($(ms) - t0))
    fi
      [ -n "$tready" ] && settled "$r" "${nodes[@]}" >/dev/null && break
    # Every checkpoint while it loads: the one it restored from may be replaced by then.
    polls=$((polls + 1))
    [ $((polls % 10)) != 0 ] || checkpoint_list >>"$OUT/checkpoints"
    sleep 0.1
  done
  local tsettled=$(($(ms) - t0))
  checkpoint_list >>"$OUT/checkpoints"
  grep -o 'partition [0-9]* restored from its checkpoint at [0-9]*' "$OUT/$NAME-node$j.log" | awk '{print $2, $NF}' >"$OUT/restored" || true
  $PY - "$OUT/checkpoints" "$OUT/restored" "$OUT/json.$j" <<PY || fail "R=$r join node$j: figures (above)"
import json, sys
sizes = {}
for line in open(sys.argv[1]):
    p, seq, b = map(int, line.split())
    sizes[(p, seq)] = b
restored = [tuple(map(int, l.split())) for l in open(sys.argv[2])]
held = [h["partition"] for h in json.load(open(sys.argv[3]))["partitioning"]["held"]]
loaded = sum(sizes.get(k, 0) for k in restored)
unknown = [k for k in restored if k not in sizes]
n = len(held)
print(f"RESULT join R=$r node$j ready_s={$tready / 1000:.1f} settled_s={$tsettled / 1000:.1f} partitions={n} "
      f"from_checkpoint={len(restored)} checkpoint_mb={loaded / 1e6:.1f} "
      f"mb_per_partition={loaded / 1e6 / max(len(restored), 1):.2f} s_per_partition={$tready / 1000 / max(n, 1):.2f}"
      + (f" checkpoints_gone={len(unknown)}" if unknown else ""))
ok = n > 0 and len(restored) > 0 and loaded > 0 and not unknown
if not ok: print(f"FAIL R=$r join node$j: {n} partitions held, {len(restored)} restored from checkpoints of {loaded} bytes")
sys.exit(0 if ok else 1)
PY
  JOINS=$((JOINS + 1))
}
# "PARTITION SEQ BYTES" of every checkpoint in Redis.
checkpoint_list() {
  rc EVAL "local out = {}
    for p = 0, tonumber(ARGV[2]) - 1 do
      for _, c in ipairs(redis.call('LRANGE', '{' .. ARGV[1] .. ':' .. p .. '}:checkpoints', 0, -1)) do
        local seq, term, chunks = string.match(c, '^(%d+) (%d+) (%d+)')
        local n = 0
        for k = 0, tonumber(chunks) - 1 do
          n = n + redis.call('STRLEN', '{' .. ARGV[1] .. ':' .. p .. '}:checkpoint:' .. seq .. ':' .. term .. ':' .. k)
        end
        table.insert(out, p .. ' ' .. seq .. ' ' .. n)
      end
    end
    return out" 0 "$NAME" "$PARTITIONS"
}

exec > >(tee "$OUT/results.txt") 2>&1
JOINS=0
start_clock
echo "== bench/partitions: $SERIES series (synthetic://?hosts=$HOSTS&metrics=$METRICS), P=$PARTITIONS, interval $INTERVAL," \
  "window $WINDOW, warm $WARM_TICKS ticks, span $SPAN_TICKS ticks, checkpoint every $CHECKPOINT_EVERY; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
FIRST=1
for r in $RFS; do
  for n in $NODES; do
    [ "$n" -ge "$r" ] || continue
    [ "$n" -gt 1 ] || [ "$FIRST" = 1 ] || continue  # one single node, the baseline of every R
    run_config "$(( n == 1 ? 1 : r ))" "$n" || true
    FIRST=0
    stop_nodes
  done
done
[ "$JOINS" -gt 0 ] || [ "$JOIN" != 1 ] || fail "no join measured"
echo "== done in $(elapsed) s; load $(cut -d' ' -f1-3 /proc/loadavg); $FAILS checks failed"
[ "$FAILS" = 0 ] || exit 1
