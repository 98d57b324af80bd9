// partition_test.cc: a partition's log entries and state (ingest/replica/replica.h,
// PartitionWriter and PartitionState), in-process: the split is exact, numbers are
// defined until settled, epochs and ticks only go up, bad bytes change nothing, and a
// checkpoint is the state.
#include <catch2/catch.hpp>

#include "common/partitions.h"
#include "ingest/replica/replica.h"
#include "tests/ingest/partition_util.h"
#include "tests/ingest/test_util.h"

using namespace ingest;
using namespace ingest_test;

namespace {

constexpr uint32_t kPartitions = 4;
int64_t clock_of(uint64_t tick) { return kT0 + int64_t(tick) * kSec; }

std::vector<PartitionState> states() {
  std::vector<PartitionState> out;
  for (uint32_t p = 0; p < kPartitions; ++p) out.emplace_back(p, small_config());
  return out;
}

// Encodes a tick of source `source` and applies every entry to its partition; settles
// them as in the log.
void feed(PartitionWriter& w, std::vector<PartitionState>& parts, int source, uint64_t tick, int series = 60) {
  SourceTick t = source_tick(source, tick, series, clock_of(tick));
  for (auto& e : w.encode(tick, clock_of(tick), t.samples, small_config(), shm::SourceStatus{})) {
    parts[e.partition].apply(e.bytes, parts[e.partition].applied_seq() + 1);
    w.settle(e.partition, tick, true);
  }
}

void check_equal(const Aggregate& a, const Aggregate& b) {
  CHECK(a.count == b.count);
  CHECK(a.sum == b.sum);
  CHECK(a.min == b.min);
  CHECK(a.max == b.max);
  CHECK(a.first == b.first);
  CHECK(a.last == b.last);
  CHECK(a.first_ts_ns == b.first_ts_ns);
  CHECK(a.last_ts_ns == b.last_ts_ns);
  CHECK(a.p99 == b.p99);
  CHECK(a.resets == b.resets);
}

}  // namespace

TEST_CASE("partition entries: every series lands in its partition with the aggregate one aggregator gives") {
  PartitionWriter a("http://a/", 1, kPartitions), b("http://b/", 1, kPartitions);
  std::vector<PartitionState> parts = states();
  Aggregator reference(small_config());
  for (uint64_t tick = 1; tick <= 12; ++tick) {
    feed(a, parts, 0, tick);
    feed(b, parts, 1, tick);
    for (int s = 0; s < 2; ++s) {
      SourceTick t = source_tick(s, tick, 60, clock_of(tick));
      reference.apply(uint32_t(s), t.samples, clock_of(tick));
    }
    reference.expire(clock_of(tick));
  }
  size_t held = 0;
  for (int s = 0; s < 2; ++s)
    for (int j = 0; j < 60; ++j) {
      std::string key = fmt::format("m{}{{host=\"h{}\",src=\"s{}\"}}", j % 5, j, s);
      std::optional<Aggregate> want = reference.series(key);
      REQUIRE(want);
      uint32_t p = common::partition_of(key, kPartitions);
      for (uint32_t q = 0; q < kPartitions; ++q) {
        std::optional<Aggregate> got = parts[q].aggregator().series(key);
        CHECK(bool(got) == (q == p));
        if (got) check_equal(*got, *want);
      }
    }
  for (const PartitionState& p : parts) held += p.aggregator().series_count();
  CHECK(held == reference.series_count());
  CHECK(parts[0].statuses().size() == 2);
}

TEST_CASE("partition entries: a number is defined until an entry that defined it is in the log") {
  PartitionWriter w("http://a/", 1, 1);
  auto entry = [&](uint64_t tick) {
    SourceTick t = source_tick(0, tick, 40, clock_of(tick));
    return w.encode(tick, clock_of(tick), t.samples, small_config(), {}).at(0).bytes;
  };
  // Whether an entry defines every number it uses: it applies to a state that saw nothing.
  auto stands_alone = [](const std::string& e) {
    PartitionState fresh(0, small_config());
    try {
      fresh.apply(e, 1);
      return true;
    } catch (const std::invalid_argument&) {
      CHECK(fresh.applied_seq() == 0);
      return false;
    }
  };
  std::string e1 = entry(1);
  CHECK(stands_alone(e1));
  CHECK(stands_alone(entry(2)));  // tick 1 not settled: defined again
  w.settle(0, 1, false);          // refused (or no answer)
  CHECK(stands_alone(entry(3)));
  w.settle(0, 3, true);  // in the log: numbers only from now on
  std::string e4 = entry(4);
  CHECK_FALSE(stands_alone(e4));
  CHECK(e4.size() < e1.size());
  PartitionState part(0, small_config());
  part.apply(e1, 1);
  CHECK(part.apply(e4, 2) == PartitionState::Applied::applied);
}

TEST_CASE("partition entries: a tick counted is skipped, another epoch numbers afresh") {
  PartitionState part(0, small_config());
  PartitionWriter old_writer("http://a/", 1, 1), new_writer("http://a/", 2, 1);
  SourceTick t1 = source_tick(0, 1, 20, clock_of(1));
  std::string first = old_writer.encode(1, clock_of(1), t1.samples, small_config(), {}).at(0).bytes;
  CHECK(part.apply(first, 1) == PartitionState::Applied::applied);
  old_writer.settle(0, 1, true);
  CHECK(part.apply(first, 2) == PartitionState::Applied::skipped);  // the same tick again
  CHECK(part.applied_seq() == 2);
  // The new writer's numbers are its own: defined in its first entry.
  SourceTick t2 = source_tick(0, 2, 20, clock_of(2));
  CHECK(part.apply(new_writer.encode(2, clock_of(2), t2.samples, small_config(), {}).at(0).bytes, 3) ==
        PartitionState::Applied::applied);
  // The old writer's next entry only numbers its series (its first is in the log): the
  // partition no longer has those numbers, which the append script never lets happen
  // (STALE); here it is refused as bad bytes, changing nothing.
  SourceTick t3 = source_tick(0, 3, 20, clock_of(3));
  const std::string before = part.checkpoint();
  CHECK_THROWS_WITH(part.apply(old_writer.encode(3, clock_of(3), t3.samples, small_config(), {}).at(0).bytes, 4),
                    Catch::Contains("never defined"));
  CHECK(part.checkpoint() == before);
  // After a Redis that restarted empty, epochs start again lower: still another epoch.
  PartitionWriter restarted("http://a/", 1, 1);
  SourceTick t4 = source_tick(0, 4, 20, clock_of(4));
  CHECK(part.apply(restarted.encode(4, clock_of(4), t4.samples, small_config(), {}).at(0).bytes, 4) ==
        PartitionState::Applied::applied);
  CHECK(part.aggregator().series("m1{host=\"h1\",src=\"s0\"}")->count == 3);
}

TEST_CASE("partition entries: bad bytes are refused whole and change nothing") {
  PartitionWriter w("http://a/", 1, 1);
  PartitionState part(0, small_config());
  SourceTick t1 = source_tick(0, 1, 30, clock_of(1)), t2 = source_tick(0, 2, 30, clock_of(2));
  part.apply(w.encode(1, clock_of(1), t1.samples, small_config(), {}).at(0).bytes, 1);
  std::string entry = w.encode(2, clock_of(2), t2.samples, small_config(), {}).at(0).bytes;
  const std::string before = part.checkpoint();
  for (size_t cut = 0; cut < entry.size(); cut += 1 + cut / 8) {
    std::string bad = entry.substr(0, cut);
    CHECK_THROWS_AS(part.apply(bad, 2), std::invalid_argument);
  }
  for (size_t at : {size_t(3), size_t(12), size_t(20), entry.size() - 3}) {
    std::string bad = entry;
    bad[at] ^= 0x40;
    CHECK_THROWS_AS(part.apply(bad, 2), std::invalid_argument);
  }
  CHECK(part.checkpoint() == before);
  CHECK(part.apply(entry, 2) == PartitionState::Applied::applied);
}

TEST_CASE("partition checkpoints: restored, the state goes on to the same bytes") {
  PartitionWriter a("http://a/", 3, kPartitions);
  std::vector<PartitionState> parts = states();
  for (uint64_t tick = 1; tick <= 6; ++tick) feed(a, parts, 0, tick);
  std::vector<PartitionState> restored;
  for (const PartitionState& p : parts) {
    restored.push_back(PartitionState::restore(p.checkpoint(), small_config()));
    CHECK(restored.back().checkpoint() == p.checkpoint());
    CHECK(restored.back().applied_seq() == p.applied_seq());
  }
  for (uint64_t tick = 7; tick <= 20; ++tick) {
    SourceTick t = source_tick(0, tick, 60, clock_of(tick));
    for (auto& e : a.encode(tick, clock_of(tick), t.samples, small_config(), {})) {
      parts[e.partition].apply(e.bytes, parts[e.partition].applied_seq() + 1);
      restored[e.partition].apply(e.bytes, restored[e.partition].applied_seq() + 1);
      a.settle(e.partition, tick, true);
    }
  }
  for (uint32_t p = 0; p < kPartitions; ++p) CHECK(restored[p].checkpoint() == parts[p].checkpoint());
  std::string bad = parts[1].checkpoint();
  bad[bad.size() / 2] ^= 1;
  CHECK_THROWS_AS(PartitionState::restore(bad, small_config()), std::invalid_argument);
}

TEST_CASE("partition entries: a histogram's buckets, sum and count go to its family's partition together") {
  static const Label b1[] = {{"host", "a"}, {"le", "0.5"}}, b2[] = {{"host", "a"}, {"le", "1"}},
                     binf[] = {{"host", "a"}, {"le", "+Inf"}}, host[] = {{"host", "a"}};
  std::vector<Sample> samples = {
      Sample{"lat", "_bucket", b1, {}, 3, 0, SampleKind::bucket},
      Sample{"lat", "_bucket", b2, {}, 5, 0, SampleKind::bucket},
      Sample{"lat", "_bucket", binf, {}, 6, 0, SampleKind::bucket},
      Sample{"lat", "_sum", host, {}, 4.5, 0, SampleKind::counter},
      Sample{"lat", "_count", host, {}, 6, 0, SampleKind::counter},
  };
  for (uint32_t partitions : {2u, 8u, 64u}) {
    PartitionWriter w("http://a/", 1, partitions);
    auto entries = w.encode(1, clock_of(1), samples, small_config(), {});
    REQUIRE(entries.size() == 1);
    CHECK(entries[0].partition == common::partition_of("lat{host=\"a\"}", partitions));
    // Its partition builds it (build_parts refuses a histogram whose parts are split).
    std::vector<PartitionState> parts;
    for (uint32_t p = 0; p < partitions; ++p) parts.emplace_back(p, small_config());
    parts[entries[0].partition].apply(entries[0].bytes, 1);
    std::vector<AggregatorPart> views;
    for (PartitionState& p : parts) views.push_back(AggregatorPart{&p.aggregator(), clock_of(1)});
    shm::SnapshotBuilder b;
    CHECK_NOTHROW(build_parts(b, views));
  }
}
