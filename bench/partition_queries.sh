#!/usr/bin/env bash
# bench/partition_queries.sh: what a query costs on a partitioned cluster, through one
# node, against the same query on a standalone node. On 127.0.0.1: one redis-server, two
# telemetryd nodes A and B (--partitions 16 --replication-factor 1: each holds half the
# partitions, so half of A's single-series reads go to B and every list or rollup asks B
# for its eight) and one standalone node, all three on the same synthetic source
# (HOSTS x METRICS series). Servers on SRV_CPU, wrk on WRK_CPU (taskset), as bench/http.sh.
#
# The request kinds, each a file of URL paths picked at random by
# bench/wrk/random_series.lua:
#   series-local   /v1/series/KEY for keys of partitions A holds
#   series-remote  /v1/series/KEY for keys of partitions B holds (A asks B)
#   rollup         /v1/metrics/NAME (every partition; HOSTS series per metric)
#   metrics        /v1/metrics
#   query          /v1/query?metric=NAME&limit=100
# Local and remote keys are told apart by A's answer: its Telemetryd-Generations header
# names the key's partition, compared with A's `show cluster json` partitioning.held.
#
# For every reader engine (ENGINES), kind and server (A, standalone), RUNS runs of
# DURATION s each of:
#   latency  wrk with LAT_CONNS connections (default 1: the unloaded p50/p99)
#   rate     wrk with CONNS connections: requests/s, and the CPU time (utime+stime from
#            /proc) of the node's readers per request. For A the readers of B serve the
#            remote part: their CPU is reported apart (peer_us/req).
# Every answer must be 2xx, and each kind's first answer on A, before and after its runs,
# complete: the script fails otherwise. Each run also counts the answers that said
# Telemetryd-Partial: true (`partial`) and the partitions A or B took or gave up meanwhile
# (`moves`, from their logs): a node whose writer misses its membership heartbeats (a
# starved core) loses its partitions to the other for a while. Such runs are in
# results.tsv but left out of the medians, which say how many runs they are of.
# Output: OUT/results.tsv (every run), OUT/summary.txt (medians, and A's rate as a ratio
# of the standalone's).
#
# QUICK=1 is the ctest profile (tests/ops/CMakeLists.txt, `ops.partition_queries`):
# 1 run of 1 s per kind on the default engine, the same checks, no figures worth quoting.
#
# Environment: HOSTS=1000 METRICS=100 CONNS=16 LAT_CONNS=1 DURATION=5 RUNS=3
#   ENGINES="io_uring epoll" INTERVAL=5s LEASE=6s WORKERS=2 WRK_CPU=0 SRV_CPU=1 BUILD=build
#   OUT=/tmp/telemetryd-partition-queries KINDS="series-local ..." (all five)
#   TELEMETRYD= TELEMETRYCTL= (prebuilt binaries; else BUILD is built)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD
. bench/lib.sh

QUICK=${QUICK:-0}
HOSTS=${HOSTS:-1000}
METRICS=${METRICS:-100}
CONNS=${CONNS:-16}
LAT_CONNS=${LAT_CONNS:-1}
INTERVAL=${INTERVAL:-5s}
LEASE=${LEASE:-6s}
WORKERS=${WORKERS:-2}
WRK_CPU=${WRK_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
BUILD=${BUILD:-build}
KINDS=${KINDS:-"series-local series-remote rollup metrics query"}
if [ "$QUICK" = 1 ]; then
  DURATION=${DURATION:-1} RUNS=${RUNS:-1} ENGINES=${ENGINES:-auto}
  OUT=${OUT:-$(mktemp -d /tmp/tdpq.XXXXXX)}
else
  DURATION=${DURATION:-5} RUNS=${RUNS:-3} ENGINES=${ENGINES:-"io_uring epoll"}
  OUT=${OUT:-/tmp/telemetryd-partition-queries}
fi
for tool in redis-server wrk curl taskset; do
  command -v "$tool" >/dev/null || { echo "partition_queries: $tool is not installed: skipped"; exit 77; }
done
[ "$(nproc)" -ge 2 ] || { WRK_CPU=0 SRV_CPU=0; }

if [ -z "${TELEMETRYD:-}" ]; then
  echo "== build ($BUILD, Release)"
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" -j2 --target telemetryd telemetryctl >/dev/null
  TELEMETRYD=$ROOT_DIR/$BUILD/server/telemetryd
  TELEMETRYCTL=$ROOT_DIR/$BUILD/server/telemetryctl
fi
PY=/usr/bin/python3
HZ=$(getconf CLK_TCK)
SOURCE="synthetic://?hosts=$HOSTS&metrics=$METRICS&seed=1"
mkdir -p "$OUT"
RES=$OUT/results.tsv
TAG="tdpq$$"

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port)
declare -A PORT PID SOCK
for n in a b s; do PORT[$n]=$(free_port); SOCK[$n]=$OUT/$n.sock; PID[$n]=""; done
REDIS_PID=""

stop_nodes() {
  local n
  for n in a b s; do
    [ -n "${PID[$n]}" ] || continue
    stop_process "${PID[$n]}" 100
    wait "${PID[$n]}" 2>/dev/null || true
    PID[$n]=""
  done
}
cleanup() {
  stop_nodes
  stop_process "$REDIS_PID" 50
  rm -f /dev/shm/"$TAG"*
  if [ "$QUICK" = 1 ] && [ "${KEEP_OUT:-0}" != 1 ]; then rm -rf "$OUT"; fi
}
on_exit cleanup
fail() { echo "partition_queries: FAIL: $*" >&2; KEEP_OUT=1; exit 1; }

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

# start_node NAME ENGINE: a (cluster), b (cluster) or s (standalone).
start_node() {
  local n=$1 engine=$2 args
  args=(--listen "127.0.0.1:${PORT[$n]}" --workers "$WORKERS" --shm-name "$TAG$n"
        --admin-socket "${SOCK[$n]}" --log-file "$OUT/$n-$engine.log" --interval "$INTERVAL"
        --reader-engine "$engine" --source "$SOURCE")
  # A cluster per engine (its own name): the partitions are placed afresh each time.
  [ "$n" = s ] || args+=(--cluster "redis://127.0.0.1:$REDIS_PORT" --cluster-name "pq-$engine"
                         --node-id "$n" --lease "$LEASE" --partitions 16 --replication-factor 1)
  taskset -c "$SRV_CPU" "$TELEMETRYD" "${args[@]}" &
  PID[$n]=$!
}
ctl() { "$TELEMETRYCTL" -s "${SOCK[$1]}" "${@:2}"; }

# Until A's /v1/metrics is complete and counts every series (HOSTS x METRICS), and A
# holds exactly half the partitions, ready: both nodes hold theirs, neither has taken the
# other's, and both have applied an interval of the source.
a_ready_partitions() {  # the partitions A holds, or -1 while one of them is not ready
  ctl a show cluster json 2>/dev/null | $PY -c '
import json, sys
held = json.load(sys.stdin)["partitioning"]["held"]
print(len(held) if all(h["state"] == "ready" for h in held) else -1)' 2>/dev/null
}
wait_cluster() {
  local url="http://127.0.0.1:${PORT[a]}/v1/metrics" n
  for _ in $(seq 600); do
    curl -s -m 2 "$url" 2>/dev/null | $PY -c '
import json, sys
m = json.load(sys.stdin)
sys.exit(0 if not m["partial"] and sum(x["series_count"] for x in m["metrics"]) == int(sys.argv[1]) else 1)' \
      $((HOSTS * METRICS)) 2>/dev/null && [ "$(a_ready_partitions)" = 8 ] && return 0
    for n in a b; do kill -0 "${PID[$n]}" 2>/dev/null || fail "node $n exited (see $OUT/$n-*.log)"; done
    sleep 0.2
  done
  fail "the cluster did not count $((HOSTS * METRICS)) series through A in 120 s"
}

# The paths of each kind, into OUT/paths-KIND.txt: metric names from the standalone's
# /v1/metrics, keys from the rollups of the first metrics, split by their partition.
make_paths() {
  $PY - "http://127.0.0.1:${PORT[a]}" "http://127.0.0.1:${PORT[s]}" "$OUT" \
    "$(ctl a show cluster json)" <<'PYEOF'
import http.client, json, sys, urllib.parse
a, s, out, cluster = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
held = {h["partition"] for h in cluster["partitioning"]["held"]}
def conn(url):
    return http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=10)
cs = conn(s)
def get(c, path):
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit(f"GET {path}: {r.status} {body[:200]!r}")
    return r, json.loads(body)
_, m = get(cs, "/v1/metrics")
names = [x["metric"] for x in m["metrics"]]
q = lambda v: urllib.parse.quote(v, safe="")
keys = []
for name in names[:4]:
    keys += get(cs, "/v1/metrics/" + q(name))[1]["series"]
ca = conn(a)
local, remote = [], []
for k in keys[:2000]:
    r, _ = get(ca, "/v1/series/" + q(k))
    part = int(r.getheader("Telemetryd-Generations").split(":")[0])
    (local if part in held else remote).append("/v1/series/" + q(k))
if not local or not remote:
    sys.exit(f"keys: {len(local)} local, {len(remote)} remote: expected both")
paths = {"series-local": local, "series-remote": remote,
         "rollup": ["/v1/metrics/" + q(n) for n in names],
         "metrics": ["/v1/metrics"],
         "query": [f"/v1/query?metric={q(n)}&limit=100" for n in names]}
for kind, ps in paths.items():
    open(f"{out}/paths-{kind}.txt", "w").write("\n".join(ps) + "\n")
print(f"{len(names)} metrics; {len(local)} local keys, {len(remote)} remote keys (A holds {sorted(held)})")
PYEOF
}

# Each kind's first path on A: 200 and Telemetryd-Partial: false (or absent for a series).
check_answers() {
  local kind path head
  for kind in $KINDS; do
    path=$(head -n 1 "$OUT/paths-$kind.txt")
    head=$(curl -s -D - -o /dev/null -m 5 "http://127.0.0.1:${PORT[a]}$path")
    grep -q '^HTTP/1.1 200' <<<"$head" || fail "$kind: $path on A answered: $(head -n 1 <<<"$head")"
    if grep -qi '^Telemetryd-Partial: true' <<<"$head"; then fail "$kind: $path on A is partial"; fi
  done
}

# utime+stime ticks of a node's readers (`show workers`).
reader_ticks() {
  local p t=0
  for p in $(ctl "$1" show workers | awk -F': ' '/^worker\.[0-9]+\.role: reader/ { split($1, f, "."); r[f[2]] = 1 }
                                                 /^worker\.[0-9]+\.pid: / { split($1, f, "."); pid[f[2]] = $2 }
                                                 END { for (i in r) print pid[i] }'); do
    [ -r /proc/"$p"/stat ] || continue
    t=$((t + $(sed 's/.*) //' /proc/"$p"/stat | awk '{print $12 + $13}')))
  done
  echo "$t"
}

run_wrk() {  # node conns kind: prints the RESULT line
  WRK_KEYS="$OUT/paths-$3.txt" WRK_SEED=1 taskset -c "$WRK_CPU" \
    wrk -t1 -c"$2" -d"$DURATION"s --timeout 5s -s "$ROOT_DIR/bench/wrk/random_series.lua" \
    "http://127.0.0.1:${PORT[$1]}" | grep '^RESULT' || fail "wrk against $1 ($3) printed no result"
}
# Partitions taken or given up so far by A and B under this engine (their log lines).
moves() { cat "$OUT/a-$1.log" "$OUT/b-$1.log" | grep -c 'partitioned cluster: \(holding partition\|partition [0-9]* released\)' || true; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
per_req() { awk -v t="$1" -v n="$2" -v hz="$HZ" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "-" }'; }

echo -e "engine\tkind\tnode\tmode\trun\tconns\trps\tp50_us\tp99_us\tnon2xx\tsocket_errors\tpartial\tmoves\treader_us_per_req\tpeer_us_per_req" >"$RES"
FAILED=()
echo "== $HOSTS x $METRICS series, engines: $ENGINES, out $OUT"
for engine in $ENGINES; do
  echo "== engine $engine"
  start_node a "$engine"; start_node b "$engine"; start_node s "$engine"
  wait_up "http://127.0.0.1:${PORT[s]}/v1/metrics" "${PID[s]}" 1200 || fail "standalone node exited"
  wait_cluster
  make_paths
  check_answers
  for kind in $KINDS; do
    for node in a s; do
      run_wrk "$node" "$CONNS" "$kind" >/dev/null  # warm-up: connections to B, caches
      for r in $(seq "$RUNS"); do
        for mode in latency rate; do
          c=$LAT_CONNS; [ "$mode" = rate ] && c=$CONNS
          m0=$(moves "$engine")
          t0=$(reader_ticks "$node"); p0=0; [ "$node" = a ] && p0=$(reader_ticks b)
          line=$(run_wrk "$node" "$c" "$kind")
          t1=$(reader_ticks "$node"); p1=0; [ "$node" = a ] && p1=$(reader_ticks b)
          m1=$(moves "$engine")
          moved=0; [ "$node" = a ] && moved=$((m1 - m0))  # the standalone does not care
          n=$(field requests "$line")
          peer="-"; [ "$node" = a ] && peer=$(per_req $((p1 - p0)) "$n")
          printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$engine" "$kind" "$node" "$mode" "$r" "$c" \
            "$(field rps "$line")" "$(field p50_us "$line")" "$(field p99_us "$line")" "$(field non2xx "$line")" \
            "$(field socket_errors "$line")" "$(field partial "$line")" "$moved" \
            "$(per_req $((t1 - t0)) "$n")" "$peer" | tee -a "$RES"
          [ "$(field non2xx "$line")" = 0 ] && [ "$(field socket_errors "$line")" = 0 ] ||
            FAILED+=("$engine $kind on $node ($mode, run $r): $line")
        done
      done
    done
  done
  check_answers  # still complete after the load
  stop_nodes
done

$PY - "$RES" >"$OUT/summary.txt" <<'PYEOF'
import csv, statistics, sys
all_rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
rows = [r for r in all_rows if r["partial"] == "0" and r["moves"] == "0"]
if len(rows) < len(all_rows):
    print(f"left out: {len(all_rows) - len(rows)} of {len(all_rows)} runs (partial answers or partitions moved):")
    for r in all_rows:
        if r not in rows:
            print(f"  {r['engine']} {r['kind']} {r['node']} {r['mode']} run {r['run']}: partial {r['partial']}, moves {r['moves']}")
def med(engine, kind, node, mode, k):
    v = [float(r[k]) for r in rows if (r["engine"], r["kind"], r["node"], r["mode"]) == (engine, kind, node, mode) and r[k] != "-"]
    return statistics.median(v) if v else float("nan")
def n(engine, kind):
    return min(sum(1 for r in rows if (r["engine"], r["kind"], r["node"], r["mode"]) == (engine, kind, node, mode))
               for node in ("a", "s") for mode in ("latency", "rate"))
print(f"{'engine':8} {'kind':13} {'A p50_us':>8} {'A p99_us':>8} {'S p50_us':>8} {'S p99_us':>8} "
      f"{'A rps':>8} {'S rps':>8} {'A/S':>5} {'A us/req':>8} {'B us/req':>8} {'S us/req':>8} {'runs':>4}")
seen = []
for r in all_rows:
    if (r["engine"], r["kind"]) not in seen: seen.append((r["engine"], r["kind"]))
for e, k in seen:
    ar, sr = med(e, k, "a", "rate", "rps"), med(e, k, "s", "rate", "rps")
    print(f"{e:8} {k:13} {med(e,k,'a','latency','p50_us'):8.0f} {med(e,k,'a','latency','p99_us'):8.0f} "
          f"{med(e,k,'s','latency','p50_us'):8.0f} {med(e,k,'s','latency','p99_us'):8.0f} "
          f"{ar:8.0f} {sr:8.0f} {ar / sr:5.2f} {med(e,k,'a','rate','reader_us_per_req'):8.1f} "
          f"{med(e,k,'a','rate','peer_us_per_req'):8.1f} {med(e,k,'s','rate','reader_us_per_req'):8.1f} {n(e,k):4d}")
PYEOF
cat "$OUT/summary.txt"
if [ ${#FAILED[@]} -gt 0 ]; then
  printf 'non-2xx answers or socket errors: %s\n' "${FAILED[@]}" >&2
  fail "${#FAILED[@]} runs had non-2xx answers or socket errors (results in $OUT/results.tsv)"
fi
echo "partition_queries: PASS"
