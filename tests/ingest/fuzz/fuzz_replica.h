// fuzz_replica.h: what the replication fuzz targets (fuzz_checkpoint, fuzz_log_entry,
// fuzz_partition_entry) share: the clock their entries carry, the configuration they
// aggregate under, the samples their state is primed with, and a snapshot's bytes.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ingest/ingest.h"

namespace fuzz_replica {

inline constexpr int64_t kClock = 1'732'700'000'000'000'000;

inline ingest::Config config() {
  ingest::Config c;
  c.interval = std::chrono::milliseconds(1000);
  c.window = std::chrono::milliseconds(10000);
  return c.resolved();
}

// A few series of each kind (a gauge, a counter, a histogram bucket), so that the
// entries a fuzzer writes can refer to a dictionary.
inline std::span<const ingest::Sample> prime_samples() {
  using ingest::Label, ingest::Sample, ingest::SampleKind;
  static const Label host[] = {{"host", "a"}};
  static const Label le[] = {{"le", "1"}};
  static const Sample samples[] = {
      Sample{"cpu", "", host, {}, 1.5, 0, SampleKind::gauge},
      Sample{"jobs", "_total", {}, {}, 7, kClock - 1'000'000, SampleKind::counter},
      Sample{"req", "_bucket", le, {}, 3, 0, SampleKind::bucket},
  };
  return samples;
}

// The bytes of the snapshot b holds, to compare two states' snapshots.
inline std::string snapshot_bytes(const shm::SnapshotBuilder& b) {
  std::vector<std::byte> bytes = b.serialize(1, 0);
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

}  // namespace fuzz_replica
