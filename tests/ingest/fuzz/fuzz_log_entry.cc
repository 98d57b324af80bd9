// fuzz_log_entry: applying a log entry's payload never crashes; a payload refused
// changes nothing; one accepted builds, and its state survives a checkpoint round trip
// with the same bytes and the same snapshot. The first input byte chooses between a
// raw payload (statuses included) and a whole entry (header and zstd frame).
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "ingest/ingest.h"
#include "ingest/replica/replica.h"
#include "ingest/replica/wire.h"
#include "tests/ingest/fuzz/fuzz_replica.h"

using namespace ingest;

namespace {

using fuzz_replica::config;
using fuzz_replica::kClock;

// A dictionary to refer to: the payload a leader stages for a few series.
void prime(Replica& replica, Aggregator& aggregator) {
  std::string urls[] = {"synthetic://"};
  replica.stage_begin(config(), urls);
  replica.stage(0, fuzz_replica::prime_samples(), kClock - 2'000'000'000);
  replica.apply(replica.take_staged(), 1, kClock - 2'000'000'000, aggregator, nullptr, nullptr);
}

std::string dump(Aggregator& aggregator) {
  shm::SnapshotBuilder b;
  aggregator.build(b, kClock);
  return fuzz_replica::snapshot_bytes(b);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  if (size == 0) return 0;
  const bool whole = data[0] & 1;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  Aggregator aggregator(config());
  Replica replica;
  prime(replica, aggregator);
  const std::string before = replica.checkpoint(aggregator, 1);
  uint64_t seq = 2;
  int64_t clock = kClock;
  std::string payload;
  try {
    if (whole) {
      Replica::read_entry_header(input, &seq, &clock);
      payload = wire::decompress(input.substr(Replica::kEntryHeaderBytes), size_t{64} << 20);
    } else {
      payload = input;
    }
    std::vector<shm::SourceStatus> statuses;
    replica.apply(payload, seq, clock, aggregator, nullptr, &statuses);
  } catch (const std::invalid_argument&) {
    if (replica.checkpoint(aggregator, 1) != before) std::abort();
    return 0;
  }
  const std::string snapshot = dump(aggregator);
  const std::string saved = replica.checkpoint(aggregator, seq);
  Replica again;
  std::unique_ptr<Aggregator> restored;
  uint64_t restored_seq = 0;
  Replica::restore(saved, config(), &again, &restored, &restored_seq);
  if (restored_seq != seq || again.checkpoint(*restored, seq) != saved) std::abort();
  if (dump(*restored) != snapshot) std::abort();
  return 0;
}
