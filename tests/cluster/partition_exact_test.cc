// tests/cluster/partition_exact_test.cc: exactly once across pullers, end to end through
// a real Redis: sources split by partition (ingest's PartitionWriter), appended through
// the partition append script by two pullers per source that hand the source over, lose
// replies, send again and keep going after losing it; every partition's log applied by
// a PartitionState. The checker: each series' aggregate equals one aggregator's fed every
// tick the log holds for its source and partition once, each tick at most once, and every
// tick a puller was told is in the log is there.
#include <map>
#include <random>
#include <set>

#include <catch2/catch.hpp>

#include "cluster/scripts.h"
#include "common/partitions.h"
#include "ingest/replica/replica.h"
#include "tests/cluster/redis_server.h"
#include "tests/ingest/partition_util.h"
#include "tests/ingest/test_util.h"

using namespace cluster_test;
using namespace ingest_test;

namespace {

constexpr uint32_t kPartitions = 4;
constexpr int kSources = 3;
constexpr int kSeries = 40;
int64_t clock_of(uint64_t tick) { return kT0 + int64_t(tick) * kSec; }
std::string url_of(int source) { return "http://source-" + std::to_string(source) + "/"; }

struct Puller {
  std::unique_ptr<ingest::PartitionWriter> writer;  // null: never had the source
  uint64_t next_tick = 1;
};

}  // namespace

TEST_CASE("partitioned log: pullers handing sources over with lost replies count every tick once") {
  RedisServer redis;
  Client c(redis.port());
  uint32_t seed = getenv("TEST_SEED") ? uint32_t(std::stoul(getenv("TEST_SEED"))) : std::random_device{}();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  std::vector<cluster::Keys> keys;
  for (uint32_t p = 0; p < kPartitions; ++p) keys.emplace_back(common::partition_tag("exact", p));

  // (source, partition) -> ticks a puller was told are in the log.
  std::map<std::pair<int, uint32_t>, std::set<uint64_t>> confirmed;
  uint64_t epoch = 0;
  for (int s = 0; s < kSources; ++s) {
    Puller pullers[2];
    int owner = 0;
    pullers[0].writer = std::make_unique<ingest::PartitionWriter>(url_of(s), ++epoch, kPartitions);
    for (int step = 0; step < 60; ++step) {
      if (rng() % 12 == 0) {  // the other puller takes the source over, a tick or two back or ahead
        owner = 1 - owner;
        pullers[owner].writer = std::make_unique<ingest::PartitionWriter>(url_of(s), ++epoch, kPartitions);
        pullers[owner].next_tick = std::max<uint64_t>(1, pullers[1 - owner].next_tick + rng() % 3 - 1);
      }
      int who = rng() % 5 == 0 ? 1 - owner : owner;  // the old owner, paused, goes on a while
      Puller& pl = pullers[who];
      if (!pl.writer) continue;
      uint64_t tick = pl.next_tick++;
      SourceTick t = source_tick(s, tick, kSeries, clock_of(tick));
      for (auto& e : pl.writer->encode(tick, clock_of(tick), t.samples, small_config(), shm::SourceStatus{})) {
        const cluster::Keys& k = keys[e.partition];
        auto send = [&] {
          try {
            return c.list({"EVAL", cluster::kPartitionAppendScript, "4", k.log, k.log_end, k.checkpoints, k.sources,
                           url_of(s), std::to_string(pl.writer->epoch()), std::to_string(tick), "0", e.bytes, "100000"})
                .at(0);
          } catch (const std::runtime_error& err) {
            std::string what = err.what();
            CHECK((what.find("OLD") != std::string::npos || what.find("STALE") != std::string::npos));
            return std::string("refused");
          }
        };
        std::string outcome = send();
        if (rng() % 4 == 0) {
          // The reply was lost: settled as unknown, sent again later or never.
          pl.writer->settle(e.partition, tick, false);
          if (rng() % 2) outcome = send();
          else continue;
        }
        bool in_log = outcome == "OK" || outcome == "DUP";
        if (in_log) confirmed[{s, e.partition}].insert(tick);
        pl.writer->settle(e.partition, tick, in_log);
      }
    }
  }

  // Every partition's log, applied; the reference fed each (source, tick) its log holds.
  for (uint32_t p = 0; p < kPartitions; ++p) {
    INFO("partition " << p);
    std::vector<std::string> flat = c.list({"XRANGE", keys[p].log, "-", "+"});
    REQUIRE(flat.size() % 15 == 0);
    ingest::PartitionState state(p, small_config());
    ingest::Aggregator reference(small_config());
    std::map<int, std::set<uint64_t>> in_log;
    std::map<int, uint64_t> last_tick;
    for (size_t i = 0; i < flat.size(); i += 15) {
      std::map<std::string, std::string> f;
      for (size_t j = i + 1; j < i + 15; j += 2) f[flat[j]] = flat[j + 1];
      int s = std::stoi(f["s"].substr(std::string("http://source-").size()));
      uint64_t tick = std::stoull(f["k"]);
      CHECK(tick > last_tick[s]);  // rising: never a tick twice
      last_tick[s] = tick;
      in_log[s].insert(tick);
      REQUIRE(state.apply(f["e"], std::stoull(flat[i])) == ingest::PartitionState::Applied::applied);
      SourceTick t = source_tick(s, tick, kSeries, clock_of(tick));
      std::vector<ingest::Sample> mine;
      for (const ingest::Sample& sample : t.samples) {
        std::string key = fmt::format("{}{{host=\"{}\",src=\"{}\"}}", sample.metric, sample.labels[0].value,
                                      sample.labels[1].value);
        if (common::partition_of(key, kPartitions) == p) mine.push_back(sample);
      }
      reference.apply(uint32_t(s), mine, clock_of(tick));
      reference.expire(state.clock());
    }
    for (int s = 0; s < kSources; ++s)
      for (uint64_t tick : confirmed[{s, p}]) CHECK(in_log[s].count(tick) == 1);
    CHECK(state.aggregator().series_count() == reference.series_count());
    for (int s = 0; s < kSources; ++s)
      for (int j = 0; j < kSeries; ++j) {
        std::string key = fmt::format("m{}{{host=\"h{}\",src=\"s{}\"}}", j % 5, j, s);
        std::optional<ingest::Aggregate> want = reference.series(key), got = state.aggregator().series(key);
        REQUIRE(bool(want) == bool(got));
        if (!want) continue;
        CHECK(got->count == want->count);
        CHECK(got->sum == want->sum);
        CHECK(got->last == want->last);
        CHECK(got->p90 == want->p90);
      }
  }
}
