// fuzz_checkpoint: restoring a checkpoint never crashes and, refused, changes nothing
// (it throws std::invalid_argument and nothing else); accepted, the state builds,
// checkpoints to bytes that restore to the same bytes again, and takes a further entry.
// The input is the payload, wrapped in a valid header and zstd frame, unless its first
// byte is odd: then the rest is taken as a whole checkpoint.
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

// An entry of new series only, which applies on top of any state.
std::string next_payload() {
  static const Label host[] = {{"host", "z"}};
  Sample samples[] = {Sample{"cpu", "", host, {}, 2.5, 0, SampleKind::gauge},
                      Sample{"jobs", "_total", {}, {}, 9, 0, SampleKind::counter}};
  std::string urls[] = {"synthetic://"};
  Aggregator scratch(config());
  Replica empty;
  empty.stage_begin(config(), urls);
  empty.stage(0, samples, kClock);
  return empty.take_staged();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string checkpoint;
  if (data[0] & 1) {
    checkpoint = input;
  } else {
    Aggregator empty_aggregator(config());
    checkpoint = Replica().checkpoint(empty_aggregator, 5).substr(0, Replica::kCheckpointHeaderBytes);
    wire::compress(checkpoint, input, 1);
  }
  Replica replica;
  std::unique_ptr<Aggregator> aggregator;
  uint64_t seq = 0;
  try {
    Replica::restore(checkpoint, config(), &replica, &aggregator, &seq);
  } catch (const std::invalid_argument&) {
    if (aggregator || seq != 0 || replica.dictionary_size() != 0) std::abort();
    return 0;
  }
  shm::SnapshotBuilder builder;
  aggregator->build(builder, kClock);
  const std::string saved = replica.checkpoint(*aggregator, seq);
  Replica again;
  std::unique_ptr<Aggregator> restored;
  uint64_t restored_seq = 0;
  Replica::restore(saved, config(), &again, &restored, &restored_seq);
  if (again.checkpoint(*restored, restored_seq) != saved) std::abort();
  replica.apply(next_payload(), seq + 1, kClock + 1'000'000'000, *aggregator, nullptr, nullptr);
  aggregator->build(builder, kClock + 1'000'000'000);
  return 0;
}
