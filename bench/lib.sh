# bench/lib.sh: what the benchmark scripts (chaos.sh, cluster_chaos.sh, soak.sh, flood.sh,
# http.sh, partition_queries.sh) share, sourced after `cd` to the project root: the traps,
# stopping a process, waiting for a server to answer, and the clock of a run's event log.

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
