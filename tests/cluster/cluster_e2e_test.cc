// tests/cluster/cluster_e2e_test.cc: three real telemetryd nodes over a real
// redis-server (each test starts its own on a free loopback port): identical bytes at
// the same generation, failover after SIGKILL, fencing of a SIGSTOPped leader, Redis
// killed and restarted, a late node joining from a checkpoint, a follower-only node,
// OTLP pushes taken by the leader only.
// The source is synthetic://, which gives every series one sample per tick: at
// generation g (the log's seq) every series' count is exactly g on every node, across
// failovers, which is the reference the counts are checked against.
#include <csignal>
#include <map>
#include <memory>
#include <regex>
#include <set>

#include <catch2/catch.hpp>

#include "tests/cluster/redis_server.h"
#include "tests/otlp/otlp_util.h"
#include "tests/server/e2e_util.h"

using namespace std::chrono_literals;
using cluster_test::Client;
using cluster_test::RedisServer;
using e2e::Service;

namespace {

constexpr auto kLease = 1500ms;

std::unique_ptr<Service> start_node(const RedisServer& redis, std::vector<std::string> extra = {},
                                    bool wait_ready = true) {
  std::vector<std::string> args = {"--workers", "2", "--interval", "200ms", "--cluster", redis.url(),
                                   "--cluster-name", "e2e", "--lease", "1500ms", "--checkpoint-every", "10"};
  args.insert(args.end(), extra.begin(), extra.end());
  return std::make_unique<Service>(args, wait_ready);
}

std::string cluster_field(const Service& s, const std::string& name) {
  return Service::field(s.admin("show cluster"), name).value_or("");
}

uint64_t number(const std::string& text) { return text.empty() ? 0 : std::strtoull(text.c_str(), nullptr, 10); }

uint64_t generation_of(const e2e::HttpResponse& r) {
  auto it = r.headers.find("x-snapshot-generation");
  return it == r.headers.end() ? 0 : std::stoull(it->second);
}

// Every process of the node: supervisor, writer, readers (its "process group").
std::vector<pid_t> processes(const Service& s) {
  std::vector<pid_t> pids = s.reader_pids();
  pids.push_back(s.writer_pid());
  pids.push_back(s.pid());
  return pids;
}

void signal_all(const std::vector<pid_t>& pids, int sig) {
  for (pid_t p : pids)
    if (p > 0) kill(p, sig);
}
void signal_all(const Service& s, int sig) { signal_all(processes(s), sig); }

Service* leader_of(const std::vector<Service*>& nodes) {
  for (Service* s : nodes)
    if (s->running() && cluster_field(*s, "role") == "leader") return s;
  return nullptr;
}

// The counts in a /v1/snapshot body: every series' count must be its generation.
bool counts_match_generation(const std::string& body, uint64_t generation, size_t* series = nullptr) {
  static const std::regex count(R"("count":(\d+))");
  size_t n = 0;
  for (auto it = std::sregex_iterator(body.begin(), body.end(), count); it != std::sregex_iterator(); ++it, ++n)
    if (std::stoull((*it)[1]) != generation) return false;
  if (series) *series = n;
  return n > 0;
}

// Fetches `target` from every node until `want` generations were seen on all of them
// at once; every such set must hold the same bytes and ETag.
size_t compare_bodies(const std::vector<Service*>& nodes, const std::string& target, size_t want,
                      std::chrono::milliseconds limit = 20s) {
  size_t same = 0;
  std::set<uint64_t> seen;
  e2e::wait_for([&] {
    std::vector<e2e::HttpResponse> rs;
    for (Service* s : nodes) rs.push_back(e2e::http_get(s->port(), target));
    uint64_t g = generation_of(rs[0]);
    for (const auto& r : rs)
      if (r.status != 200 || generation_of(r) != g) return false;
    if (!seen.insert(g).second) return false;
    for (const auto& r : rs) {
      CHECK(r.body == rs[0].body);
      CHECK(r.headers.count("etag") == rs[0].headers.count("etag"));
      if (r.headers.count("etag")) CHECK(r.headers.at("etag") == rs[0].headers.at("etag"));
    }
    return ++same >= want;
  }, limit);
  return same;
}

}  // namespace

TEST_CASE("three nodes serve byte-identical bodies at the same generation") {
  RedisServer redis;
  auto a = start_node(redis), b = start_node(redis), c = start_node(redis);
  std::vector<Service*> nodes{a.get(), b.get(), c.get()};
  REQUIRE(e2e::wait_for([&] {
    for (Service* s : nodes)
      if (e2e::http_get(s->port(), "/healthz").status != 200) return false;
    return true;
  }));
  for (const std::string& target : std::vector<std::string>{"/v1/snapshot", "/v1/metrics", "/v1/metrics/cpu.usage_percent",
                             "/v1/query?metric=cpu.usage_percent&host=host-00001", "/v1/series/" + e2e::url_encode("cpu.usage_percent{dc=\"us-east\",host=\"host-00001\",service=\"api\"}")})
    CHECK(compare_bodies(nodes, target, 3) >= 3);
  // Exactly one leader; the others follow it.
  Service* leader = leader_of(nodes);
  REQUIRE(leader);
  for (Service* s : nodes)
    if (s != leader) CHECK(cluster_field(*s, "leader_id") == cluster_field(*leader, "node_id"));
  std::string json = a->admin("show cluster json");
  CHECK(json.find("\"node_id\"") != std::string::npos);
  CHECK(json.find("\"replication_lag_ms\"") != std::string::npos);
  auto metrics = e2e::http_get(a->port(), "/metrics").body;
  CHECK(metrics.find("telemetryd_cluster_term ") != std::string::npos);
  CHECK(metrics.find("telemetryd_cluster_entries_applied_total ") != std::string::npos);
}

TEST_CASE("the leader's processes SIGKILLed: a follower publishes the next generation within two lease periods") {
  RedisServer redis;
  auto a = start_node(redis), b = start_node(redis), c = start_node(redis);
  std::vector<Service*> nodes{a.get(), b.get(), c.get()};
  Service* leader = nullptr;
  REQUIRE(e2e::wait_for([&] { return (leader = leader_of(nodes)) != nullptr; }));
  REQUIRE(e2e::wait_for([&] { return generation_of(e2e::http_get(leader->port(), "/v1/metrics")) >= 10; }));
  std::vector<Service*> rest;
  for (Service* s : nodes)
    if (s != leader) rest.push_back(s);
  uint64_t before = 0;
  for (Service* s : rest) before = std::max(before, generation_of(e2e::http_get(s->port(), "/v1/metrics")));
  auto killed = std::chrono::steady_clock::now();
  signal_all(*leader, SIGKILL);
  // A survivor publishes a generation the dead leader had not appended.
  uint64_t dead_top = 0;
  for (Service* s : rest) dead_top = std::max<uint64_t>(dead_top, number(cluster_field(*s, "log_end")));
  REQUIRE(e2e::wait_for([&] {
    for (Service* s : rest)
      if (generation_of(e2e::http_get(s->port(), "/v1/metrics")) > std::max(before, dead_top) + 1) return true;
    return false;
  }, 10s));
  auto took = std::chrono::steady_clock::now() - killed;
  CHECK(took <= 2 * kLease);
  INFO("failover took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << "ms");
  // Counts continue: at every generation each series counted exactly one sample per
  // entry of the log, before and after the failover, on both survivors.
  for (Service* s : rest) {
    for (int i = 0; i < 3; ++i) {
      auto r = e2e::http_get(s->port(), "/v1/snapshot");
      size_t series = 0;
      CHECK(counts_match_generation(r.body, generation_of(r), &series));
      CHECK(series >= 10);
      std::this_thread::sleep_for(200ms);
    }
  }
  CHECK(compare_bodies(rest, "/v1/snapshot", 3) >= 3);
}

TEST_CASE("a leader stopped past its lease is fenced off and follows the new leader") {
  RedisServer redis;
  auto a = start_node(redis), b = start_node(redis), c = start_node(redis);
  std::vector<Service*> nodes{a.get(), b.get(), c.get()};
  Service* old = nullptr;
  REQUIRE(e2e::wait_for([&] { return (old = leader_of(nodes)) != nullptr; }));
  REQUIRE(e2e::wait_for([&] { return generation_of(e2e::http_get(old->port(), "/v1/metrics")) >= 5; }));
  std::string old_term = cluster_field(*old, "term");
  std::vector<pid_t> old_pids = processes(*old);  // asked before: a stopped node answers nothing
  signal_all(old_pids, SIGSTOP);
  std::vector<Service*> rest;
  for (Service* s : nodes)
    if (s != old) rest.push_back(s);
  Service* fresh = nullptr;
  REQUIRE(e2e::wait_for([&] { return (fresh = leader_of(rest)) != nullptr; }, 10s));
  std::this_thread::sleep_for(500ms);
  auto resumed = std::chrono::steady_clock::now();
  signal_all(old_pids, SIGCONT);
  // Within one renew period (a third of the lease) it knows it does not lead.
  INFO(old->log());
  REQUIRE(e2e::wait_for([&] { return cluster_field(*old, "role") != "leader"; }, 5s));
  CHECK(std::chrono::steady_clock::now() - resumed <= kLease / 3 + 500ms);
  CHECK(cluster_field(*fresh, "role") == "leader");
  // In the log, terms never go back: nothing of the old term after the new one began.
  Client redis_client(redis.port());
  auto flat = redis_client.list({"XRANGE", "e2e:log", "-", "+"});
  uint64_t highest = 0;
  for (size_t i = 0; i + 1 < flat.size(); ++i)
    if (flat[i] == "t") {
      uint64_t t = std::stoull(flat[i + 1]);
      CHECK(t >= highest);
      highest = std::max<uint64_t>(highest, t);
    }
  CHECK(highest > std::stoull(old_term));
  // And it serves the cluster's bytes again.
  CHECK(compare_bodies(nodes, "/v1/snapshot", 3) >= 3);
  auto r = e2e::http_get(old->port(), "/v1/snapshot");
  CHECK(counts_match_generation(r.body, generation_of(r)));
}

TEST_CASE("Redis killed and restarted: nodes keep serving and the cluster re-forms with generations going on") {
  RedisServer redis;
  auto a = start_node(redis), b = start_node(redis), c = start_node(redis);
  std::vector<Service*> nodes{a.get(), b.get(), c.get()};
  REQUIRE(compare_bodies(nodes, "/v1/metrics", 2) >= 2);
  std::map<Service*, uint64_t> last;
  auto check_monotonic = [&] {
    for (Service* s : nodes) {
      uint64_t g = generation_of(e2e::http_get(s->port(), "/v1/metrics"));
      CHECK(g >= last[s]);
      last[s] = g;
    }
  };
  check_monotonic();
  redis.kill_now();
  for (int i = 0; i < 10; ++i) {
    for (Service* s : nodes) CHECK(e2e::http_get(s->port(), "/healthz").status == 200);
    check_monotonic();
    std::this_thread::sleep_for(200ms);
  }
  redis.start();
  REQUIRE(e2e::wait_for([&] {
    check_monotonic();
    return leader_of(nodes) != nullptr;
  }, 15s));
  CHECK(compare_bodies(nodes, "/v1/snapshot", 3) >= 3);
  check_monotonic();
  Client redis_client(redis.port());
  CHECK(redis_client.run({"LLEN", "e2e:checkpoints"}) != "0");
}

TEST_CASE("a node started late loads the newest checkpoint, is syncing until it caught up, then serves the same bytes") {
  RedisServer redis;
  auto a = start_node(redis), b = start_node(redis);
  REQUIRE(e2e::wait_for([&] { return generation_of(e2e::http_get(a->port(), "/v1/metrics")) >= 25; }));
  Client redis_client(redis.port());
  REQUIRE(e2e::wait_for([&] {
    auto m = redis_client.run({"LINDEX", "e2e:checkpoints", "0"});
    return m != "(nil)" && std::stoull(m) >= 10;
  }));
  auto late = start_node(redis, {}, false);
  bool saw_syncing = false;
  REQUIRE(e2e::wait_for([&] {
    auto r = e2e::http_get(late->port(), "/healthz");
    if (r.status == 503 && r.body.find("syncing") != std::string::npos) saw_syncing = true;
    return r.status == 200;
  }, 20s));
  (void)saw_syncing;  // it may catch up before the first poll
  CHECK(late->log().find("restored from the checkpoint") != std::string::npos);
  std::vector<Service*> nodes{a.get(), b.get(), late.get()};
  CHECK(compare_bodies(nodes, "/v1/snapshot", 3) >= 3);
  auto r = e2e::http_get(late->port(), "/v1/snapshot");
  CHECK(counts_match_generation(r.body, generation_of(r)));
}

TEST_CASE("a follower-only node never leads, and follows whoever does") {
  RedisServer redis;
  auto a = start_node(redis);
  auto f = start_node(redis, {"--role", "follower"});
  REQUIRE(e2e::wait_for([&] { return cluster_field(*a, "role") == "leader"; }));
  REQUIRE(e2e::wait_for([&] { return cluster_field(*f, "role") == "follower"; }));
  signal_all(*a, SIGKILL);
  INFO(f->log());
  for (int i = 0; i < 15; ++i) {
    CHECK(cluster_field(*f, "role") == "follower");
    std::this_thread::sleep_for(200ms);
  }
  auto b = start_node(redis);
  REQUIRE(e2e::wait_for([&] { return cluster_field(*b, "role") == "leader"; }));
  std::vector<Service*> nodes{f.get(), b.get()};
  CHECK(compare_bodies(nodes, "/v1/snapshot", 2) >= 2);
  CHECK(cluster_field(*f, "role") == "follower");
}

TEST_CASE("OTLP pushes: a node that does not lead answers 503 with Retry-After, the leader's reach every node") {
  RedisServer redis;
  const uint16_t otlp_a = e2e::free_port(), otlp_f = e2e::free_port();
  auto a = start_node(redis, {"--otlp-listen", "127.0.0.1:" + std::to_string(otlp_a)});
  REQUIRE(e2e::wait_for([&] { return cluster_field(*a, "role") == "leader"; }));
  auto f = start_node(redis, {"--role", "follower", "--otlp-listen", "127.0.0.1:" + std::to_string(otlp_f)});
  REQUIRE(e2e::wait_for([&] { return cluster_field(*f, "role") == "follower"; }));
  auto push = [](uint16_t port, double value) {
    const std::string body =
        R"({"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"pushed_temp","gauge":{"dataPoints":[{"asDouble":)" +
        std::to_string(value) + "}]}}]}]}]}";
    return otlp_test::exchange(port, otlp_test::post("/v1/metrics", "application/json", body));
  };
  otlp_test::Reply refused = push(otlp_f, 1);
  CHECK(refused.status == 503);
  CHECK(refused.headers.count("retry-after") == 1);
  CHECK(refused.body.find("does not lead") != std::string::npos);
  REQUIRE(push(otlp_a, 42).status == 200);
  // The leader's next entry carries the point to the follower.
  CHECK(e2e::wait_for([&] {
    e2e::HttpResponse r = e2e::http_get(f->port(), "/v1/series/pushed_temp");
    return r.status == 200 && r.body.find("\"last\":42") != std::string::npos;
  }));
}
