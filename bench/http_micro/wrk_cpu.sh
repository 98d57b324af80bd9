# bench/http_micro/wrk_cpu.sh: what run.sh and run_nginx.sh share, sourced (POSIX sh):
# the one wrk command both run and the CPU time the server's processes spend under it.
# They set HERE (this folder), KEYS (the key list), CONNS, SECS, PORT and PIDS (the
# server's processes) first.

# ticks: user + system clock ticks the processes PIDS have used so far (/proc/PID/stat).
ticks() { t=0; for p in $PIDS; do t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat))); done; echo $t; }

# run_wrk WRKOUT: wrk pinned to CPU 0 with bench/wrk/random_series.lua on KEYS, its
# output in WRKOUT; T0 and T1 are the servers' ticks before and after.
run_wrk() {
  T0=$(ticks)
  WRK_KEYS=$KEYS taskset -c 0 wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$HERE/../wrk/random_series.lua" \
    "http://127.0.0.1:$PORT" >"$1"
  T1=$(ticks)
}

# report WRKOUT LABEL CPU_NAME: wrk's figures, then one line: LABEL, the load, and the
# servers' CPU seconds (as CPU_NAME) and microseconds per request.
report() {
  HZ=$(getconf CLK_TCK)
  REQ=$(sed -n 's/.*RESULT requests=\([0-9]*\).*/\1/p' "$1")
  grep -E "Requests/sec|RESULT" "$1"
  echo "$2 connections=$CONNS seconds=$SECS requests=$REQ $3=$(echo "scale=2; ($T1 - $T0) / $HZ" | bc)" \
    "cpu_us_per_request=$(echo "scale=2; ($T1 - $T0) * 1000000 / $HZ / $REQ" | bc)"
}
