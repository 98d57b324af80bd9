#!/usr/bin/env bash
# bench/fuzz.sh: run every libFuzzer target for a set time and keep what it learned.
#   FUZZ_SECONDS=600 bench/fuzz.sh [target...]     (default: every target, 60 s each)
# Builds build-fuzz/ with clang (coverage + ASan + UBSan), runs each target on a scratch
# copy of its kept corpus (tests/data/fuzz/NAME plus the target's seed folders), then
# merges the new coverage back into tests/data/fuzz/NAME (-merge=1 keeps only inputs
# that add coverage, so the folder stays small). A crash, leak or timeout is written to
# tests/data/fuzz/NAME/ as crash-*/leak-*/timeout-*, where ctest's fuzz_replay_NAME
# replays it from then on, and the script exits non-zero. Prints one line per target:
# runs, executions per second, coverage, and findings.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
jobs=$(nproc)
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTELEMETRYD_BENCH=OFF -DTELEMETRYD_FUZZ=ON >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd build-fuzz/fuzz && ls *.seeds | sed 's/\.seeds$//')
fi
cmake --build build-fuzz -j"$jobs" --target "${targets[@]}"
failed=0
for t in "${targets[@]}"; do
  bin=$(find build-fuzz -type f -name "$t" -perm -u+x | head -1)
  kept="tests/data/fuzz/$t"
  mkdir -p "$kept"
  scratch=$(mktemp -d)
  # Seeds: the kept corpus plus the folders ctest replays beside it.
  mapfile -t seeds < <(grep . "build-fuzz/fuzz/$t.seeds" || true)
  log="build-fuzz/$t.log"
  set +e
  "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$kept/" "$scratch" "$kept" ${seeds[@]+"${seeds[@]}"} >"$log" 2>&1
  rc=$?
  set -e
  "$bin" -merge=1 "$kept" "$scratch" >/dev/null 2>&1 || true
  rm -rf "$scratch"
  stats=$(grep -E '^#[0-9]+.*(DONE|pulse)' "$log" | tail -1)
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  if [ $rc -ne 0 ]; then failed=1; verdict="FINDING (see $log, input kept in $kept/)"; else verdict="no finding"; fi
  echo "$t: ${seconds}s, $execs runs, $speed exec/s, ${stats#*cov: }; $verdict"
done
exit $failed
