#!/usr/bin/env bash
# bench/chaos.sh: telemetryd under load while its children are killed, stopped and
# reloaded. A real telemetryd on a free 127.0.0.1 port, wrk (the bulk of the load) and
# bench/loadgen --check-generation (per-connection checks) for WARMUP + DURATION seconds;
# during the last DURATION seconds:
#   - SIGKILL a random running reader every READER_KILL_MIN..READER_KILL_MAX s (random),
#   - SIGKILL the writer at WRITER_KILL_FIRST s, then every WRITER_KILL_EVERY s,
#   - SIGSTOP the reader holding the most connections for STOP_SECONDS at STOP_FIRST s,
#     then every STOP_EVERY s, then SIGCONT it if it is still alive. The service runs
#     with --stuck-timeout STUCK_TIMEOUT (< STOP_SECONDS), so the supervisor's watchdog
#     is expected to kill the stopped reader first; which of the two happened is
#     printed for each stop,
#   - `telemetryctl reload` at RELOAD_FIRST s, then every RELOAD_EVERY s, the
#     configuration file's interval alternating between two values (so the writer really
#     reconfigures). RELOAD_WITH_WRITER_KILL=1 also sends a reload to a stopped writer
#     just before each writer kill: the reload must still be answered ok (the writer
#     that replaces it starts from the accepted configuration).
# Deliberate kills are not a crash loop: the service runs with --crash-loop-limit 1000
# and --restart-backoff-max 1s (a reader killed often is back within a second).
#
# Targets, each checked at the end (one PASS/FAIL line each; exit 1 on any miss):
#   failures      broken requests (wrk read/write/connect/timeout errors, loadgen broken
#                 requests, connect errors and unanswered requests) plus loadgen's
#                 connections closed while idle <= the connections the victims held: for
#                 each SIGKILLed reader, and each stopped reader the watchdog killed, its
#                 connections_open (show workers) just before. Each of a victim's
#                 connections ends as one broken request or one idle close, so the two
#                 sides are equal when nothing else lost a connection;
#   non-2xx       0 (loadgen does not count 503s with generation 0 before the first
#                 snapshot; the load starts after one exists anyway);
#   generation    loadgen saw no connection's generation go back, every response carried
#                 one, and every response was checked;
#   restarts      restarts_writer = writer kills, restarts_reader = reader kills + readers
#                 the watchdog killed, stuck_readers_killed = the stopped readers it
#                 killed: no child died on its own and no running reader was taken as stuck;
#   reloads       every reload answered `reload: ok`;
#   counts        each writer kill continued the window: a series' count read just
#                 before the kill, and again once the new writer published twice, is at
#                 least half of what it was (a window of 10-20 intervals; a writer that
#                 started again from nothing shows 1-3; the alternating interval and
#                 the time the writer is down move it a little). The writer keeps its
#                 state in /dev/shm (no --state-dir);
#   rss           RssAnon (private memory) of the supervisor and every child, from
#                 /proc/PID/status: after the warm-up (start), every 5 s, and after the
#                 chaos (end, every child running again). Per role (supervisor, writer,
#                 reader), the largest value in the second half of the run (end included)
#                 <= the largest in the first half (start included) + max(20%, 8 MiB).
#                 Not a single start value: children are replaced every few seconds and
#                 a child's memory depends on its age and configuration (the writer's
#                 window fills up, its buffers grow in steps, the reloads alternate the
#                 interval), so one sample may catch a low step. State that grows with
#                 the run (the supervisor lives through it; whatever a replacement
#                 inherits) shows as a second half above the first. A child lives seconds
#                 here: growth over a long life is bench/soak.sh's check.
#   shm           as many /dev/shm segments at the end as at the start (no incarnation leaked);
#   supervisor    the same supervisor pid from start to end (never restarted);
#   serving       after the load: /healthz 200, a series 200, a new generation published,
#                 every reader running;
#   load          the load really ran: loadgen answered >= half its scheduled requests,
#                 wrk > 0, and at least one kill of each kind happened.
#
# QUICK=1 is the ctest profile (tests/ops, `ops.chaos`): DURATION 60, 2 readers, reader
# kills every 4-6 s, writer kills at 20 s and 45 s, one stop at 30 s, reloads at 7 s and
# every 15 s, wrk paced to ~4 x 200 req/s, loadgen 200 req/s.
#
# Environment (defaults: full profile / QUICK=1):
#   DURATION=600/60 WARMUP=30/12 SEED=$$ (picks the victims and the gaps between reader kills)
#   WORKERS=4/3 SERIES_HOSTS=500/50 SERIES_METRICS=40/20 WINDOW=20s/10s INTERVALS="1s 700ms"/"500ms 300ms"
#   READER_KILL_MIN=3/4 READER_KILL_MAX=7/6 WRITER_KILL_FIRST=30/20 WRITER_KILL_EVERY=30/25
#   STOP_FIRST=40/30 STOP_EVERY=60/60 STOP_SECONDS=8 STUCK_TIMEOUT=3s
#   RELOAD_FIRST=5/7 RELOAD_EVERY=20/15 RELOAD_WITH_WRITER_KILL=0
#   WRK_CONNS=48/4 WRK_DELAY_MS=0/5 LOADGEN_CONNS=16/8 LOADGEN_RATE=1000/200
#   OUT=/tmp/telemetryd-chaos (QUICK: a temporary directory, removed when the run passes)
#   BUILD=build-bench, or TELEMETRYD= TELEMETRYCTL= LOADGEN= to use built binaries (ctest)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD
. bench/lib.sh

DURATION=${DURATION:-$(q 600 60)}
WARMUP=${WARMUP:-$(q 30 12)}
SEED=${SEED:-$$}
WORKERS=${WORKERS:-$(q 4 3)}
SERIES_HOSTS=${SERIES_HOSTS:-$(q 500 50)}
SERIES_METRICS=${SERIES_METRICS:-$(q 40 20)}
WINDOW=${WINDOW:-$(q 20s 10s)}
INTERVALS=${INTERVALS:-$(q "1s 700ms" "500ms 300ms")}
READER_KILL_MIN=${READER_KILL_MIN:-$(q 3 4)}
READER_KILL_MAX=${READER_KILL_MAX:-$(q 7 6)}
WRITER_KILL_FIRST=${WRITER_KILL_FIRST:-$(q 30 20)}
WRITER_KILL_EVERY=${WRITER_KILL_EVERY:-$(q 30 25)}
STOP_FIRST=${STOP_FIRST:-$(q 40 30)}
STOP_EVERY=${STOP_EVERY:-60}
STOP_SECONDS=${STOP_SECONDS:-8}
STUCK_TIMEOUT=${STUCK_TIMEOUT:-3s}
RELOAD_EVERY=${RELOAD_EVERY:-$(q 20 15)}
RELOAD_FIRST=${RELOAD_FIRST:-$(q 5 7)}
RELOAD_WITH_WRITER_KILL=${RELOAD_WITH_WRITER_KILL:-0}
WRK_CONNS=${WRK_CONNS:-$(q 48 4)}
WRK_DELAY_MS=${WRK_DELAY_MS:-$(q 0 5)}
LOADGEN_CONNS=${LOADGEN_CONNS:-$(q 16 8)}
LOADGEN_RATE=${LOADGEN_RATE:-$(q 1000 200)}
BUILD=${BUILD:-build-bench}
PY=/usr/bin/python3

if [ -n "${TELEMETRYD:-}" ]; then
  command -v wrk >/dev/null || { echo "SKIP: wrk is not installed (scripts/deps.sh installs it)"; exit 77; }
  TELEMETRYCTL=${TELEMETRYCTL:?TELEMETRYCTL must be given with TELEMETRYD}
  LOADGEN=${LOADGEN:?LOADGEN must be given with TELEMETRYD}
else
  . scripts/deps.sh
  ensure_packages wrk
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" -j2 --target telemetryd telemetryctl loadgen >/dev/null
  TELEMETRYD="$ROOT_DIR/$BUILD/server/telemetryd"
  TELEMETRYCTL="$ROOT_DIR/$BUILD/server/telemetryctl"
  LOADGEN="$ROOT_DIR/$BUILD/bench/loadgen/loadgen"
fi

out_dir /tmp/telemetryd-chaos tdchaos
rm -f "$OUT"/{events.tsv,rss.tsv,reloads.log,wrk.txt,loadgen.txt,loadgen.err,telemetryd.log}
SHM="tdchaos$$"
SOCK="$OUT/td.sock"
CONF="$OUT/telemetryd.conf"
LOG="$OUT/telemetryd.log"
PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TD_PID="" WRK_PID="" LG_PID="" STOPPED=""
RESULT_OK=0

cleanup() {
  local rc=$?
  [ -n "$STOPPED" ] && kill -CONT "$STOPPED" 2>/dev/null || true
  [ -n "$WRK_PID" ] && kill "$WRK_PID" 2>/dev/null || true
  [ -n "$LG_PID" ] && kill "$LG_PID" 2>/dev/null || true
  stop_process "$TD_PID" 200
  rm -f /dev/shm/"$SHM"* 2>/dev/null || true
  rm -rf /dev/shm/"$SHM".state  # the writer's default state dir, a directory
  if [ "$RESULT_OK" = 1 ] && [ "$REMOVE_OUT" = 1 ]; then
    rm -rf "$OUT"
  elif [ "$RESULT_OK" != 1 ] && [ -f "$LOG" ]; then
    echo "--- telemetryd log: warnings and errors (all files are in $OUT) ---"
    grep -E ' (warn|error) ' "$LOG" | tail -n 40 || true
  fi
  exit "$rc"
}
on_exit cleanup
start_clock
event() { printf '%s\t%s\n' "$(elapsed)" "$*" >>"$OUT/events.tsv"; echo "[$(elapsed)s] $*"; }
ctl() { "$TELEMETRYCTL" -s "$SOCK" "$@"; }
info() { ctl show info | sed -n "s/^$1: //p"; }
# One line per child: role slot pid state connections_open
workers() { ctl show workers | parse_workers; }
# Start time of a process (field 22 of /proc/PID/stat), empty if gone or a zombie.
start_time() {
  local s
  s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 0
  [ "$(cut -d' ' -f1 <<<"$s")" = Z ] || cut -d' ' -f20 <<<"$s"
}
# Only our own service's children are signalled.
our_child() { [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f2)" = "$TD_PID" ]; }

write_config() {  # $1 = interval
  cat >"$CONF.new" <<EOF
source = ["synthetic://?hosts=$SERIES_HOSTS&metrics=$SERIES_METRICS&seed=1"]
interval = "$1"
window = "$WINDOW"
EOF
  mv "$CONF.new" "$CONF"  # the supervisor and the writer read it at any time: never half-written
}
read -r INTERVAL_A INTERVAL_B <<<"$INTERVALS"
write_config "$INTERVAL_A"

echo "== chaos: ${DURATION}s after ${WARMUP}s of warm-up, seed $SEED, port $PORT, out $OUT"
RANDOM=$SEED
"$TELEMETRYD" --config "$CONF" --listen "127.0.0.1:$PORT" --workers "$WORKERS" --shm-name "$SHM" \
  --admin-socket "$SOCK" --log-file "$LOG" --stuck-timeout "$STUCK_TIMEOUT" \
  --restart-backoff-max 1s --crash-loop-limit 1000 &
TD_PID=$!
wait_up "http://127.0.0.1:$PORT/healthz" "$TD_PID" 600 || { echo "FAIL: telemetryd exited at start"; exit 1; }
$PY bench/peers/dump_bodies.py "http://127.0.0.1:$PORT" "$OUT" --keys-only

# The load: wrk for the bulk, loadgen for the per-connection checks.
LOAD_SECONDS=$((WARMUP + DURATION))
echo "dofile(\"$ROOT_DIR/bench/wrk/random_series.lua\")" >"$OUT/chaos.lua"
[ "$WRK_DELAY_MS" -gt 0 ] && echo "function delay() return $WRK_DELAY_MS end" >>"$OUT/chaos.lua"
WRK_KEYS="$OUT/keys.txt" WRK_SEED="$SEED" \
  wrk -t1 -c"$WRK_CONNS" -d"${LOAD_SECONDS}s" --timeout 10s -s "$OUT/chaos.lua" "http://127.0.0.1:$PORT" \
  >"$OUT/wrk.txt" 2>&1 &
WRK_PID=$!
"$LOADGEN" --port "$PORT" --keys "$OUT/keys.txt" --conns "$LOADGEN_CONNS" --rate "$LOADGEN_RATE" \
  --duration "$LOAD_SECONDS" --seed "$SEED" --check-generation >"$OUT/loadgen.txt" 2>"$OUT/loadgen.err" &
LG_PID=$!

# RssAnon of the supervisor and every child: label t role pid rssanon_kb
sample_rss() {
  { echo "supervisor - $TD_PID - -"; workers; } | while read -r role _ pid state _; do
    [ "$pid" -gt 0 ] 2>/dev/null || continue
    [ "$state" = running ] || [ "$role" = supervisor ] || continue
    awk -v l="$1" -v t="$(elapsed)" -v r="$role" -v p="$pid" \
      '/^RssAnon:/ { print l "\t" t "\t" r "\t" p "\t" $2 }' "/proc/$pid/status" 2>/dev/null || true
  done >>"$OUT/rss.tsv"
}
# Until every child is running again (after a kill, or at the end), bounded.
all_running() {
  for _ in $(seq 300); do
    [ "$(workers | awk '$4 != "running" || $3 == 0' | wc -l)" = 0 ] && return 0
    sleep 0.1
  done
  return 1
}
shm_segments() { ls /dev/shm/ | grep -c "^$SHM\(\.\|$\)" || true; }

sleep "$WARMUP"
all_running || true
start_clock
sample_rss start
SUP_START_TIME=$(start_time "$TD_PID")
SHM_START=$(shm_segments)

# ---------------------------------------------------------------------------------
# The chaos. Times in ms since T0; allowance = connections held by victims.
# ---------------------------------------------------------------------------------
END=$((T0 + DURATION * 1000))
reader_gap
next_reader=$((T0 + GAP))
next_writer=$((T0 + WRITER_KILL_FIRST * 1000))
next_stop=$((T0 + STOP_FIRST * 1000))
next_reload=$((T0 + RELOAD_FIRST * 1000))
next_sample=$((T0 + 5000))
cont_at=0
COUNT_CHECKS=0 COUNT_BREAKS=0
ALLOWANCE=0 READER_KILLS=0 WRITER_KILLS=0 STOPS=0 STOPS_KILLED=0 STOPS_SURVIVED=0 RELOADS=0
STOPPED_CONNS=0 STOPPED_TIME=""
reload_n=0
RELOAD_PIDS=()

kill_reader() {
  local line pid conns r=$RANDOM
  line=$(workers | awk -v s="${STOPPED:-0}" '$1 == "reader" && $4 == "running" && $3 > 0 && $3 != s' | pick_line "$r") || true
  [ -n "$line" ] || { event "reader kill skipped: no running reader"; return; }
  read -r _ _ pid _ conns <<<"$line"
  our_child "$pid" && kill -KILL "$pid" 2>/dev/null || { event "reader $pid gone before the kill"; return 0; }
  ALLOWANCE=$((ALLOWANCE + conns)); READER_KILLS=$((READER_KILLS + 1))
  event "SIGKILL reader $pid ($conns connections)"
}
kill_writer() {
  local pid
  pid=$(workers | awk '$1 == "writer" && $4 == "running" { print $3 }')
  [ -n "$pid" ] && [ "$pid" -gt 0 ] && our_child "$pid" || { event "writer kill skipped: writer not running"; return; }
  if [ "$RELOAD_WITH_WRITER_KILL" = 1 ]; then
    # Stopped, the writer cannot answer the SIGHUP the reload sends it before it dies.
    kill -STOP "$pid" 2>/dev/null || true
    reload
    for _ in $(seq 100); do grep -q "asking the writer (pid $pid)" "$LOG" && break; sleep 0.1; done
  fi
  local key c0 c1 g0
  key=$(head -n 1 "$OUT/keys.txt")
  c0=$(series_count "$key") g0=$(info generation)
  kill -KILL "$pid" 2>/dev/null || { event "writer $pid gone before the kill"; return 0; }
  WRITER_KILLS=$((WRITER_KILLS + 1))
  event "SIGKILL writer $pid"
  # The window must go on: the new writer recovers the state the dead one had (a
  # window of 10-20 intervals; a writer that started again from nothing shows 1-3).
  for _ in $(seq 100); do [ "$(info generation || echo 0)" -gt $((g0 + 1)) ] && break; sleep 0.1; done
  c1=$(series_count "$key")
  COUNT_CHECKS=$((COUNT_CHECKS + 1))
  if [ "$c0" -lt 4 ] || [ $((c1 * 2)) -lt "$c0" ]; then
    COUNT_BREAKS=$((COUNT_BREAKS + 1))
    event "writer kill: the window did not go on: count $c0 before, $c1 after"
  else
    event "writer kill: count $c0 before, $c1 after"
  fi
}
# The count of a series in the snapshot served now (0 when not served).
series_count() {
  curl -s -m 5 "http://127.0.0.1:$PORT$1" | grep -o '"count":[0-9]*' | head -n 1 | cut -d: -f2 | grep . || echo 0
}
stop_reader() {
  local line pid conns r=$RANDOM
  # The reader holding the most connections (clients that reconnect after a kill all
  # land on the readers alive then, so a fresh reader often holds none).
  line=$(workers | awk '$1 == "reader" && $4 == "running" && $3 > 0' | sort -k5,5nr |
         awk 'NR == 1 { top = $5 } $5 == top' | pick_line "$r") || true
  [ -n "$line" ] || { event "stop skipped: no running reader"; return 1; }
  read -r _ _ pid _ conns <<<"$line"
  our_child "$pid" || return 1
  STOPPED_TIME=$(start_time "$pid")
  kill -STOP "$pid" 2>/dev/null || { event "reader $pid gone before the stop"; return 1; }
  STOPPED=$pid STOPPED_CONNS=$conns STOPS=$((STOPS + 1))
  event "SIGSTOP reader $pid ($conns connections) for ${STOP_SECONDS}s"
}
cont_reader() {
  if [ -n "$STOPPED_TIME" ] && [ "$(start_time "$STOPPED")" = "$STOPPED_TIME" ]; then
    kill -CONT "$STOPPED" 2>/dev/null || true
    STOPS_SURVIVED=$((STOPS_SURVIVED + 1))
    event "SIGCONT reader $STOPPED: still alive, the watchdog did not kill it"
  else
    ALLOWANCE=$((ALLOWANCE + STOPPED_CONNS)); STOPS_KILLED=$((STOPS_KILLED + 1))
    local seen
    seen=$(grep -o "(pid $STOPPED) made no progress for [0-9]*ms" "$LOG" | tail -n 1 || true)
    event "reader $STOPPED was killed by the watchdog while stopped: ${seen:-no watchdog line in the log}"
  fi
  STOPPED="" STOPPED_TIME=""
}
reload() {
  reload_n=$((reload_n + 1)); RELOADS=$((RELOADS + 1))
  local interval=$INTERVAL_A
  [ $((reload_n % 2)) = 1 ] && interval=$INTERVAL_B
  write_config "$interval"
  event "reload (interval $interval)"
  local n=$reload_n
  ( if out=$(ctl reload 2>&1); then echo "$n ok"; else echo "$n FAIL $(tr '\n' ' ' <<<"$out")"; fi ) >>"$OUT/reloads.log" &
  RELOAD_PIDS+=($!)
}

while :; do
  now=$(ms)
  [ "$now" -lt "$END" ] || break
  if [ "$cont_at" -gt 0 ] && [ "$now" -ge "$cont_at" ]; then cont_reader; cont_at=0; fi
  if [ "$now" -ge "$next_reader" ]; then
    kill_reader
    reader_gap
    next_reader=$((now + GAP))
  fi
  if [ "$now" -ge "$next_writer" ]; then kill_writer; next_writer=$((next_writer + WRITER_KILL_EVERY * 1000)); fi
  if [ "$now" -ge "$next_stop" ] && [ -z "$STOPPED" ]; then
    stop_reader && cont_at=$((now + STOP_SECONDS * 1000))
    next_stop=$((next_stop + STOP_EVERY * 1000))
  fi
  if [ "$now" -ge "$next_reload" ]; then reload; next_reload=$((next_reload + RELOAD_EVERY * 1000)); fi
  if [ "$now" -ge "$next_sample" ]; then sample_rss mid; next_sample=$((next_sample + 5000)); fi
  sleep 0.1
done
[ -n "$STOPPED" ] && cont_reader
event "chaos over"

# Let the load finish (it ends with the chaos; loadgen waits up to 5 s for late answers).
for _ in $(seq 600); do
  kill -0 "$WRK_PID" 2>/dev/null || kill -0 "$LG_PID" 2>/dev/null || break
  sleep 0.1
done
kill "$WRK_PID" "$LG_PID" 2>/dev/null || true  # still running a minute late: no result, a miss
wait "$WRK_PID" || true; WRK_PID=""
wait "$LG_PID" || true; LG_PID=""
for p in "${RELOAD_PIDS[@]}"; do wait "$p" || true; done  # reloads still in flight
ALL_RUNNING=1
all_running || ALL_RUNNING=0
sample_rss end

# ---------------------------------------------------------------------------------
# Verdict
# ---------------------------------------------------------------------------------
ok=1
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
num() { local v; v=$(field "$1" "$2"); echo "${v:-0}"; }

WRK_RESULT=$(grep '^RESULT' "$OUT/wrk.txt" || true)
LG_RESULT=$(grep '^RESULT' "$OUT/loadgen.txt" || true)
read -r W_CONNECT W_READ W_WRITE W_TIMEOUT <<<"$(sed -n 's/.*Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1 \2 \3 \4/p' "$OUT/wrk.txt")"
W_CONNECT=${W_CONNECT:-0} W_READ=${W_READ:-0} W_WRITE=${W_WRITE:-0} W_TIMEOUT=${W_TIMEOUT:-0}
W_FAILED=$(num socket_errors "$WRK_RESULT")
L_BROKEN=$(num broken "$LG_RESULT") L_SOCKERR=$(num socket_errors "$LG_RESULT") L_UNANSWERED=$(num unanswered "$LG_RESULT")
L_IDLE=$(num closed_idle "$LG_RESULT")
FAILED=$((W_FAILED + L_BROKEN + L_SOCKERR + L_UNANSWERED))
NON2XX=$(($(num non2xx "$WRK_RESULT") + $(num non2xx "$LG_RESULT")))
W_REQ=$(num requests "$WRK_RESULT") L_REQ=$(num requests "$LG_RESULT")
L_EXPECTED=$((LOADGEN_RATE * LOAD_SECONDS))

echo
echo "== summary (seed $SEED; files in $OUT)"
echo "requests: wrk $W_REQ ($(field rps "$WRK_RESULT") req/s, $WRK_CONNS connections), loadgen $L_REQ ($(field rps "$LG_RESULT") req/s of $LOADGEN_RATE scheduled, p99 $(field p99_us "$LG_RESULT") us, max $(field max_us "$LG_RESULT") us)"
echo "kills: reader $READER_KILLS, writer $WRITER_KILLS; stops $STOPS (killed by the watchdog $STOPS_KILLED, survived $STOPS_SURVIVED); reloads $RELOADS"
GEN=$(info generation || echo 0)
echo "restarts: writer $(info restarts_writer), reader $(info restarts_reader), stuck readers killed $(info stuck_readers_killed); generation $GEN (loadgen saw up to $(field max_generation "$LG_RESULT")); publish_skipped $(info publish_skipped)"
echo "errors: wrk connect $W_CONNECT read $W_READ write $W_WRITE timeout $W_TIMEOUT non2xx $(num non2xx "$WRK_RESULT"); loadgen broken $L_BROKEN (retried $(num retried "$LG_RESULT")) socket $L_SOCKERR unanswered $L_UNANSWERED closed_idle $(num closed_idle "$LG_RESULT") server_closed $(num server_closed "$LG_RESULT") non2xx $(num non2xx "$LG_RESULT") no_snapshot_503 $(num no_snapshot_503 "$LG_RESULT")"
# Largest RssAnon of a role: rss_max start|end|first|second ROLE (first, second: halves of the run)
rss_max() {
  awk -v r="$2" -v w="$1" -v half="$((DURATION / 2))" '
    $3 == r && ($1 == w || (w == "first" && $1 != "end" && $2 <= half) || (w == "second" && ($1 == "end" || $2 > half))) {
      if ($5 > m) m = $5 }
    END { print m + 0 }' "$OUT/rss.tsv"
}
echo "RssAnon per role, largest (kB): start -> end; first half -> second half:"
for role in supervisor writer reader; do
  echo "  $role: $(rss_max start "$role") -> $(rss_max end "$role"); $(rss_max first "$role") -> $(rss_max second "$role")"
done
echo

# failures
[ -n "$WRK_RESULT" ] || fail "load: wrk printed no result"
[ -n "$LG_RESULT" ] || fail "load: loadgen printed no result"
check "failures: $FAILED broken requests + $L_IDLE idle connections closed <= $ALLOWANCE connections the killed readers held" \
  '[ $((FAILED + L_IDLE)) -le "$ALLOWANCE" ]'
check "non-2xx: $NON2XX" '[ "$NON2XX" = 0 ]'
GV=$(num gen_violations "$LG_RESULT") GM=$(num gen_missing "$LG_RESULT") GC=$(num gen_checked "$LG_RESULT")
check "generation: $GV per-connection violations, $GM responses without it" '[ "$GV" = 0 ] && [ "$GM" = 0 ]'
check "generation: every loadgen response checked ($GC of $L_REQ)" '[ "$GC" = "$L_REQ" ] && [ "$L_REQ" -gt 0 ]'
RW=$(info restarts_writer) RR=$(info restarts_reader) SK=$(info stuck_readers_killed)
check "restarts: writer $RW = $WRITER_KILLS kills" '[ "$RW" = "$WRITER_KILLS" ]'
check "restarts: reader $RR = $READER_KILLS kills + $STOPS_KILLED killed by the watchdog" '[ "$RR" = $((READER_KILLS + STOPS_KILLED)) ]'
check "restarts: stuck_readers_killed $SK = $STOPS_KILLED stopped readers killed" '[ "$SK" = "$STOPS_KILLED" ]'
check "counts: $((COUNT_CHECKS - COUNT_BREAKS)) of $COUNT_CHECKS writer kills continued the window (a series' count kept)" \
  '[ "$COUNT_BREAKS" = 0 ] && [ "$COUNT_CHECKS" = "$WRITER_KILLS" ]'
RELOAD_OK=$(grep -c ' ok$' "$OUT/reloads.log" 2>/dev/null || true)
check "reloads: ${RELOAD_OK:-0} of $RELOADS answered ok" '[ "${RELOAD_OK:-0}" = "$RELOADS" ]'
if [ "$RELOAD_OK" != "$RELOADS" ]; then grep -v ' ok$' "$OUT/reloads.log" | sed 's/^/      reload /' || true; fi

# RSS: tolerance max(20%, 8 MiB) over the first half's largest value, per role.
within() { [ "$2" -le $(($1 + ($1 / 5 > 8192 ? $1 / 5 : 8192))) ]; }
for role in supervisor writer reader; do
  first=$(rss_max first "$role") second=$(rss_max second "$role")
  check "rss: $role RssAnon, largest in the first half $first kB, in the second $second kB" \
    '[ "$first" -gt 0 ] && within "$first" "$second"'
done
END_PROCS=$(awk '$1 == "end"' "$OUT/rss.tsv" | wc -l)
check "rss: the end sample has all $((WORKERS + 1)) processes ($END_PROCS)" '[ "$END_PROCS" -ge $((WORKERS + 1)) ]'
SHM_END=$(shm_segments)
check "shm: $SHM_START segments at the start, $SHM_END at the end" '[ "$SHM_START" = "$SHM_END" ]'

check "supervisor: pid $TD_PID alive and the same process throughout" \
  '[ "$(start_time "$TD_PID")" = "$SUP_START_TIME" ] && [ "$(info pid)" = "$TD_PID" ]'
serving() {
  [ "$ALL_RUNNING" = 1 ] || return 1
  local key g0 g1
  key=$(head -n 1 "$OUT/keys.txt")
  g0=$(info generation)
  for _ in $(seq 300); do
    g1=$(info generation)
    [ "$g1" -gt "$g0" ] && break
    sleep 0.1
  done
  [ "$g1" -gt "$g0" ] || { echo "      no new generation within 30 s ($g0)"; return 1; }
  [ "$(curl -s -o /dev/null -w '%{http_code}' -m 5 "http://127.0.0.1:$PORT/healthz")" = 200 ] || return 1
  [ "$(curl -s -o /dev/null -w '%{http_code}' -m 5 "http://127.0.0.1:$PORT$key")" = 200 ]
}
check "serving: every child running, a new generation, /healthz and a series 200 after the chaos" serving
check "load: loadgen answered $L_REQ of ~$L_EXPECTED scheduled, wrk $W_REQ" '[ $((L_REQ * 2)) -ge "$L_EXPECTED" ] && [ "$W_REQ" -gt 0 ]'
check "load: kills happened (reader $READER_KILLS, writer $WRITER_KILLS, stops $STOPS)" \
  '[ "$READER_KILLS" -gt 0 ] && [ "$WRITER_KILLS" -gt 0 ] && [ "$STOPS" -gt 0 ]'

if [ "$ok" = 1 ]; then
  RESULT_OK=1
  echo "CHAOS PASS"
else
  echo "CHAOS FAIL (seed $SEED)"
  exit 1
fi
