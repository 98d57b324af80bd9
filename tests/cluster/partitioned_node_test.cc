// tests/cluster/partitioned_node_test.cc: partitioned nodes (cluster/partitioned.h) on a
// real redis-server, in one process on one loop, each with real partition states
// (ingest's PartitionState) and pullers (PartitionWriter) fed by a deterministic source:
// the holder map is covered with R ready holders, holders of a partition hold the same
// bytes, and every partition's state is its log applied, through a node killed and a
// node added, with each tick of a source counted at most once.
#include <map>
#include <set>

#include <catch2/catch.hpp>
#include <event2/event.h>

#include "cluster/partitioned.h"
#include "cluster/scripts.h"
#include "common/partitions.h"
#include "ingest/replica/replica.h"
#include "tests/cluster/redis_server.h"
#include "tests/cluster/test_node.h"
#include "tests/ingest/partition_util.h"
#include "tests/ingest/test_util.h"

using namespace cluster_test;
using namespace ingest_test;

namespace {

constexpr uint32_t kPartitions = 8;
constexpr int kSeries = 30;
const std::vector<std::string> kSources = {"http://s0/", "http://s1/", "http://s2/"};
int64_t clock_of(uint64_t tick) { return kT0 + int64_t(tick) * kSec; }
int source_index(const std::string& url) { return url[8] - '0'; }

// A node's state: a PartitionState per held partition; as a puller, a PartitionWriter
// per source it pulls, fed at every tick the test gives.
struct Host : cluster::PartitionHost {
  void hold(uint32_t p) override { held.hold(p); }
  void release(uint32_t p) override { held.release(p); }
  uint64_t applied_seq(uint32_t p) const override { return held.applied_seq(p); }
  bool apply(uint32_t p, uint64_t seq, std::string_view entry, std::string* error) override {
    return held.apply(p, seq, entry, error);
  }
  void show_applied() override {}
  std::string checkpoint(uint32_t p) const override { return held.checkpoint(p); }
  void restore(uint32_t p, std::string_view bytes) override { held.restore(p, bytes); }
  void pull(std::vector<std::pair<std::string, uint64_t>> sources) override {
    std::map<std::string, std::unique_ptr<ingest::PartitionWriter>> next;
    for (const auto& [url, epoch] : sources) {
      auto it = writers.find(url);
      if (it != writers.end() && it->second->epoch() == epoch) next[url] = std::move(it->second);
      else next[url] = std::make_unique<ingest::PartitionWriter>(url, epoch, kPartitions);
    }
    writers = std::move(next);
  }
  std::vector<std::string> sources() const override { return kSources; }

  // The puller's tick: every source this node pulls, split and appended.
  void tick(uint64_t t) {
    for (auto& [url, writer] : writers) {
      SourceTick st = source_tick(source_index(url), t, kSeries, clock_of(t));
      ingest::PartitionWriter* w = writer.get();
      for (auto& e : w->encode(t, clock_of(t), st.samples, small_config(), shm::SourceStatus{})) {
        uint32_t p = e.partition;
        std::string src = url;
        node->append(p, url, w->epoch(), t, std::move(e.bytes), [this, src, p, t, epoch = w->epoch()](bool in_log, const std::string&) {
          auto it = writers.find(src);
          if (it != writers.end() && it->second->epoch() == epoch) it->second->settle(p, t, in_log);
        });
      }
    }
  }

  ingest::HeldPartitions held{small_config()};
  std::map<uint32_t, ingest::PartitionState>& parts = held.states();
  std::map<std::string, std::unique_ptr<ingest::PartitionWriter>> writers;
  cluster::PartitionedNode* node = nullptr;
};

struct Member {
  Member(event_base* base, const RedisServer& redis, const std::string& id) {
    cluster::PartitionedSettings s;
    s.redis = cluster::parse_address(redis.url());
    s.name = "ptest";
    s.node_id = id;
    s.partitions = kPartitions;
    s.replication = 2;
    s.lease = kLease;
    s.checkpoint_every = 5;
    node = std::make_unique<cluster::PartitionedNode>(base, s, host);
    host.node = node.get();
    node->start();
  }
  Host host;
  std::unique_ptr<cluster::PartitionedNode> node;
};

// Every partition has `replication` ready holders among the members, by their own word.
bool covered(const std::vector<std::unique_ptr<Member>>& members, uint32_t replication) {
  std::map<uint32_t, int> ready;
  for (const auto& m : members) {
    cluster::PartitionedStatus s = m->node->status();
    if (!s.ready || s.partitions != kPartitions) return false;
    for (const cluster::HeldPartition& h : s.held) ready[h.partition] += h.state == cluster::HoldState::ready;
  }
  for (uint32_t p = 0; p < kPartitions; ++p)
    if (ready[p] < int(replication)) return false;
  return true;
}

// Each partition's log read back: per source its ticks rising, and the reference state
// (a PartitionState fed the log from its start, where the log is whole).
void check_exact(Client& c, const std::vector<std::unique_ptr<Member>>& members) {
  for (uint32_t p = 0; p < kPartitions; ++p) {
    INFO("partition " << p);
    cluster::Keys k(common::partition_tag("ptest", p));
    std::vector<std::string> flat = c.list({"XRANGE", k.log, "-", "+"});
    REQUIRE(flat.size() % 15 == 0);
    std::map<std::string, uint64_t> last;
    uint64_t end = 0;
    for (size_t i = 0; i < flat.size(); i += 15) {
      std::map<std::string, std::string> f;
      for (size_t j = i + 1; j < i + 15; j += 2) f[flat[j]] = flat[j + 1];
      uint64_t tick = std::stoull(f["k"]);
      CHECK(tick > last[f["s"]]);
      last[f["s"]] = tick;
      end = std::stoull(flat[i]);
    }
    // Every ready holder at the log's end holds the same bytes.
    std::set<std::string> states;
    int holders = 0;
    for (const auto& m : members) {
      auto it = m->host.parts.find(p);
      if (it == m->host.parts.end() || it->second.applied_seq() != end) continue;
      ++holders;
      states.insert(it->second.checkpoint());
    }
    CHECK(holders >= 2);
    CHECK(states.size() == 1);
  }
}

}  // namespace

TEST_CASE("partitioned nodes: R ready holders per partition, one puller per source, holders equal, through a kill and a join") {
  RedisServer redis;
  Client c(redis.port());
  Loop loop;
  std::vector<std::unique_ptr<Member>> members;
  for (const char* id : {"n1", "n2", "n3"}) members.push_back(std::make_unique<Member>(loop.base, redis, id));
  REQUIRE(loop.until([&] { return covered(members, 2); }, 20s));

  // Each node holds about P*R/N; each source has one puller.
  for (const auto& m : members) {
    size_t held = m->node->status().held.size();
    CHECK(held >= 3);
    CHECK(held <= 8);
  }
  uint64_t tick = 1;
  auto run_ticks = [&](int n) {
    for (int i = 0; i < n; ++i, ++tick) {
      for (auto& m : members) m->host.tick(tick);
      loop.run_for(60ms);
    }
  };
  auto pullers = [&](const std::string& url) {
    int n = 0;
    for (const auto& m : members) n += m->host.writers.count(url);
    return n;
  };
  REQUIRE(loop.until([&] { return pullers(kSources[0]) == 1 && pullers(kSources[1]) == 1 && pullers(kSources[2]) == 1; }));
  run_ticks(20);
  // Settled: every holder has applied its log to the end.
  auto caught_up = [&] {
    for (uint32_t p = 0; p < kPartitions; ++p) {
      cluster::Keys k(common::partition_tag("ptest", p));
      std::string end_text = c.run({"GET", k.log_end});
      uint64_t end = end_text == "(nil)" ? 0 : std::stoull(end_text);
      int at_end = 0;
      for (const auto& m : members) {
        auto it = m->host.parts.find(p);
        at_end += it != m->host.parts.end() && it->second.applied_seq() == end;
      }
      if (at_end < 2) return false;
    }
    return true;
  };
  REQUIRE(loop.until(caught_up));
  check_exact(c, members);
  CHECK(c.list({"LRANGE", cluster::Keys(common::partition_tag("ptest", 0)).checkpoints, "0", "-1"}).size() >= 1);

  SECTION("a node killed: its partitions are held again by the others, its sources pulled again") {
    members.erase(members.begin());  // n1 gone without a word: its membership expires
    REQUIRE(loop.until([&] { return covered(members, 2); }, 20s));
    REQUIRE(loop.until([&] { return pullers(kSources[0]) == 1 && pullers(kSources[1]) == 1 && pullers(kSources[2]) == 1; }));
    run_ticks(15);
    REQUIRE(loop.until(caught_up));
    check_exact(c, members);
    for (const auto& m : members) CHECK(m->node->status().held.size() == kPartitions);  // R = N = 2
  }
  SECTION("Redis restarted empty: the primaries carry each log on from their state, the sources from a higher epoch") {
    std::map<uint32_t, uint64_t> before;
    for (const auto& m : members)
      for (const auto& [p, state] : m->host.parts) before[p] = std::max(before[p], state.applied_seq());
    redis.kill_now();
    redis.start();
    run_ticks(25);
    REQUIRE(loop.until([&] { return covered(members, 2) && caught_up(); }, 20s));
    check_exact(c, members);
    // Generations went on from the state, not from 0.
    for (uint32_t p = 0; p < kPartitions; ++p) {
      cluster::Keys k(common::partition_tag("ptest", p));
      std::string end = c.run({"GET", k.log_end});
      if (end != "(nil)") CHECK(std::stoull(end) > before[p]);
    }
  }
  SECTION("a node joining takes its share, and the old holders let go once it is ready") {
    members.push_back(std::make_unique<Member>(loop.base, redis, "n4"));
    REQUIRE(loop.until([&] { return covered(members, 2) && members.back()->node->status().held.size() >= 2; }, 20s));
    run_ticks(15);
    REQUIRE(loop.until([&] {
      size_t total = 0;
      for (const auto& m : members) total += m->node->status().held.size();
      return total == kPartitions * 2 && caught_up();
    }, 20s));
    check_exact(c, members);
    uint64_t moved_out = 0;
    for (const auto& m : members) moved_out += m->node->status().moves_out;
    CHECK(moved_out >= 1);
  }
}
