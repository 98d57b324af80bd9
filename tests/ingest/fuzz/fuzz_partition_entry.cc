// fuzz_partition_entry: applying a partition log's entry (ingest/replica/replica.h,
// PartitionState) never crashes; an entry refused changes nothing; one applied builds,
// and its state survives a checkpoint round trip with the same bytes and the same
// snapshot. The state is primed with one writer's entry, so that inputs may use its
// series numbers; the first input byte chooses between that writer's source and
// another one.
#include <cstdlib>
#include <string>
#include <string_view>

#include "ingest/ingest.h"
#include "ingest/replica/replica.h"
#include "tests/ingest/fuzz/fuzz_replica.h"

using namespace ingest;

namespace {

using fuzz_replica::config;
using fuzz_replica::kClock;

PartitionState primed() {
  PartitionWriter writer("synthetic://", 3, 1);
  PartitionState state(0, config());
  for (auto& e : writer.encode(5, kClock - 2'000'000'000, fuzz_replica::prime_samples(), config(), shm::SourceStatus{}))
    state.apply(e.bytes, 1);
  return state;
}

std::string dump(PartitionState& state) {
  shm::SnapshotBuilder b;
  AggregatorPart part{&state.aggregator(), state.clock()};
  build_parts(b, std::span<const AggregatorPart>(&part, 1));
  return fuzz_replica::snapshot_bytes(b);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  std::string_view entry(reinterpret_cast<const char*>(data), size);
  PartitionState state = primed();
  const std::string before = state.checkpoint();
  try {
    state.apply(entry, 2);
  } catch (const std::invalid_argument&) {
    if (state.checkpoint() != before) std::abort();
    return 0;
  }
  const std::string snapshot = dump(state);
  const std::string saved = state.checkpoint();
  PartitionState again = PartitionState::restore(saved, config());
  if (again.checkpoint() != saved || again.applied_seq() != 2) std::abort();
  if (dump(again) != snapshot) std::abort();
  return 0;
}
