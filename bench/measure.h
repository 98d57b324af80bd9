// bench/measure.h: what the benchmark programs share: the clocks they time with (the
// CPU clock of the calling thread, the monotonic clock), the median of a run's figures,
// the tick clock the synthetic series start from, and the load tools' way out when a
// system call fails.
#pragma once

#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
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

// Nanoseconds of the monotonic clock: a load tool's schedule and latencies.
inline int64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1'000'000'000 + ts.tv_nsec;
}

// Exits with status 1 after "PROGRAM: WHAT: the errno text" on stderr.
[[noreturn]] inline void die_errno(const char* program, const std::string& what) {
  std::fprintf(stderr, "%s: %s: %s\n", program, what.c_str(), std::strerror(errno));
  std::exit(1);
}

// The median of a run's figures (the upper one of an even count), 0 for none.
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace bench
