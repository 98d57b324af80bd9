// fuzz_replica.h: what the replication fuzz targets (fuzz_checkpoint, fuzz_log_entry)
// share: the clock their entries carry and the configuration they aggregate under.
#pragma once

#include <chrono>
#include <cstdint>

#include "ingest/ingest.h"

namespace fuzz_replica {

inline constexpr int64_t kClock = 1'732'700'000'000'000'000;

inline ingest::Config config() {
  ingest::Config c;
  c.interval = std::chrono::milliseconds(1000);
  c.window = std::chrono::milliseconds(10000);
  return c.resolved();
}

}  // namespace fuzz_replica
