# bench/lib.sh: what the benchmark scripts (chaos.sh, cluster_chaos.sh, soak.sh, flood.sh,
# http.sh, partition_queries.sh) share, sourced after `cd` to the project root: the traps,
# stopping a process, waiting for a server to answer, the clock of a run's event log, and
# what the two chaos scripts share (the QUICK profile, the output folder, `show workers`,
# the victims' draws and the verdict's PASS/FAIL lines).

# on_exit CLEANUP: CLEANUP runs when the script ends, however it ends; Ctrl-C and
# SIGTERM end it with status 130 (so CLEANUP runs once, from the EXIT trap).
on_exit() {
  trap "$1" EXIT
  trap 'exit 130' INT TERM
}

# stop_process PID [TENTHS]: SIGTERM, up to TENTHS tenths of a second (default 150) to
# exit, then SIGKILL. Nothing when PID is empty or already gone.
stop_process() {
  local pid=$1 tenths=${2:-150}
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq "$tenths"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# wait_up URL PID [TENTHS]: until URL answers 200, up to TENTHS tenths of a second
# (default 300; then it returns 0 and what follows finds out). Returns 1 as soon as PID,
# the server, has exited.
wait_up() {
  local url=$1 pid=$2 tenths=${3:-300}
  for _ in $(seq "$tenths"); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -m 1 "$url" || true)" = 200 ] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 0
}

# The run's clock: ms is the wall clock in milliseconds; elapsed, seconds.milliseconds
# since T0 (start_clock sets it, and again when the measured part begins).
ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
start_clock() { T0=$(ms); }
elapsed() { local t; t=$(ms); printf '%d.%03d' $(((t - T0) / 1000)) $(((t - T0) % 1000)); }

# q FULL QUICK: the value of the profile QUICK selects (QUICK=1: the ctest profile).
q() { if [ "${QUICK:-0}" = 1 ]; then echo "$2"; else echo "$1"; fi; }

# out_dir FULL_DIR QUICK_PREFIX: OUT, unless given, is FULL_DIR, or with QUICK=1 a new
# temporary folder /tmp/QUICK_PREFIX.XXXXXX, which REMOVE_OUT=1 says to remove once the
# run passes. Then OUT exists.
out_dir() {
  REMOVE_OUT=0
  if [ -z "${OUT:-}" ]; then
    if [ "${QUICK:-0}" = 1 ]; then OUT=$(mktemp -d "/tmp/$2.XXXXXX"); REMOVE_OUT=1; else OUT=$1; fi
  fi
  mkdir -p "$OUT"
}

# parse_workers: `telemetryctl show workers` on stdin; on stdout one line per child:
# role slot pid state connections_open.
parse_workers() {
  awk -F': ' '
    /^worker\.[0-9]+\./ { split($1, k, "."); i = k[2] + 0; v[i, k[3]] = $2; if (i > n) n = i }
    END { for (i = 0; i <= n; i++) print v[i, "role"], v[i, "slot"], v[i, "pid"], v[i, "state"], v[i, "connections_open"] }'
}

# RANDOM (seeded with SEED) is only read in the main shell: a subshell, a pipeline stage
# or a $(...) draws from a generator of its own, seeded anew. pick_line N: line N mod the
# count of stdin's lines. reader_gap: GAP, the ms to the next reader kill, drawn from
# READER_KILL_MIN..READER_KILL_MAX seconds.
pick_line() { awk -v n="$1" '{ l[NR] = $0 } END { if (NR) print l[n % NR + 1] }'; }
reader_gap() { GAP=$(((READER_KILL_MIN + RANDOM % (READER_KILL_MAX - READER_KILL_MIN + 1)) * 1000)); }

# The verdict: one PASS or FAIL line a target; a FAIL sets ok=0 (set ok=1 first).
# check TEXT CONDITION: CONDITION is evaluated here, at the check.
pass() { echo "PASS  $*"; }
fail() { echo "FAIL  $*"; ok=0; }
check() { if eval "$2"; then pass "$1"; else fail "$1"; fi; }
