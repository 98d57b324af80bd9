// bench/measure.h: what the in-process benchmarks share to time their steps and feed
// their synthetic sources: the CPU clock of the calling thread, the median of a run's
// figures, and the tick clock the synthetic series start from.
#pragma once

#include <time.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace bench {

constexpr int64_t kSec = 1'000'000'000;            // a second, in the samples' nanoseconds
constexpr int64_t kT0 = 1'732'700'000 * kSec;      // the first tick of every synthetic run

// Seconds of CPU time the calling thread has used: a step's cost without the time other
// processes on a shared machine take from it.
inline double thread_cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// The median of a run's figures (the upper one of an even count), 0 for none.
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace bench
