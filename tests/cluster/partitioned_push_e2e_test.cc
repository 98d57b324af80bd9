// tests/cluster/partitioned_push_e2e_test.cc: OTLP/HTTP pushes into a partitioned cluster
// (--partitions 8 --replication-factor 2) of real telemetryd nodes over a real
// redis-server: a push to any node reaches each of its series' R holders (a histogram's
// parts together), counted once however many nodes took it; a push answered 200 is counted; with Redis down a push is
// answered 503, and with Redis stopped mid-push the 503s whose entries reached the log
// after all count nothing twice when the client sends them again.
#include <atomic>
#include <map>
#include <optional>
#include <regex>
#include <thread>

#include <catch2/catch.hpp>

#include "tests/cluster/redis_server.h"
#include "tests/otlp/otlp_util.h"
#include "tests/server/e2e_util.h"

using namespace std::chrono_literals;
using cluster_test::RedisServer;
using e2e::Service;

namespace {

constexpr uint32_t kPartitions = 8;
constexpr int kSeries = 16;

struct Node {
  uint16_t otlp = e2e::free_port();
  std::unique_ptr<Service> service;
};

std::unique_ptr<Node> start_node(const std::string& url, const std::string& id) {
  auto n = std::make_unique<Node>();
  n->service = std::make_unique<Service>(std::vector<std::string>{
      "--workers", "2", "--interval", "200ms", "--cluster", url, "--cluster-name", "ppush", "--node-id", id,
      "--lease", "1500ms", "--checkpoint-every", "10", "--partitions", std::to_string(kPartitions),
      "--replication-factor", "2", "--source", "synthetic://?hosts=2&metrics=2", "--otlp-listen",
      "127.0.0.1:" + std::to_string(n->otlp)});
  return n;
}

std::string name_of(int series) { return "pushed_" + std::to_string(series); }
double value_of(int series, int round) { return series * 100 + round; }

int64_t now_ns() {
  return int64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                     std::chrono::system_clock::now().time_since_epoch()).count());
}

// Round `round` of every series: one gauge point each, at start + round ms.
otlp_test::Reply push(uint16_t port, int64_t start, int round) {
  std::string metrics;
  for (int i = 0; i < kSeries; ++i) {
    if (i) metrics += ',';
    metrics += R"({"name":")" + name_of(i) + R"(","gauge":{"dataPoints":[{"timeUnixNano":")" +
               std::to_string(start + round * 1'000'000) + R"(","asDouble":)" + std::to_string(value_of(i, round)) +
               "}]}}";
  }
  // And a cumulative histogram: 4 observations a round, 1.5 their sum.
  metrics += R"(,{"name":"pushed_hist","histogram":{"aggregationTemporality":2,"dataPoints":[{"attributes":[)"
             R"({"key":"r","value":{"stringValue":"x"}}],"timeUnixNano":")" +
             std::to_string(start + round * 1'000'000) + R"(","count":")" + std::to_string(4 * round) +
             R"(","sum":)" + std::to_string(1.5 * round) + R"(,"bucketCounts":[")" + std::to_string(round) + R"(",")" +
             std::to_string(2 * round) + R"(",")" + std::to_string(round) + R"("],"explicitBounds":[0.1,0.5]}]}})";
  const std::string body = R"({"resourceMetrics":[{"scopeMetrics":[{"metrics":[)" + metrics + "]}]}]}";
  return otlp_test::exchange(port, otlp_test::post("/v1/metrics", "application/json", body));
}

// Sends round `round` until it is answered 200, as an exporter retries a 503.
bool push_until_ok(uint16_t port, int64_t start, int round, int* refused = nullptr) {
  return e2e::wait_for([&] {
    int status = push(port, start, round).status;
    if (status != 200 && refused) ++*refused;
    return status == 200;
  }, 20s);
}

struct Seen {
  uint64_t count = 0;
  double sum = 0;
};

// The series a node holds itself, by key, with their count and sum: its /v1/snapshot
// (its /v1/series/ answers any series, from another node when it does not hold it).
std::map<std::string, Seen> held_on(const Service& s) {
  std::map<std::string, Seen> held;
  e2e::HttpResponse r = e2e::http_get(s.port(), "/v1/snapshot");
  if (r.status != 200) return held;
  const std::string& body = r.body;
  const std::string key_field = "\"key\":\"";
  for (size_t at = body.find(key_field); at != std::string::npos;) {
    std::string key;
    size_t i = at + key_field.size();
    for (; i < body.size() && body[i] != '"'; ++i) key += body[i] == '\\' && i + 1 < body.size() ? body[++i] : body[i];
    size_t next = body.find(key_field, i);
    size_t count = body.find("\"count\":", i), sum = body.find("\"sum\":", i);
    if (count < next && sum < next)
      held[key] = Seen{std::stoull(body.substr(count + 8)), std::stod(body.substr(sum + 6))};
    at = next;
  }
  return held;
}

// Every series is held by exactly `holders` of the nodes, each with `rounds` samples
// (rounds 1..rounds) and their sum, and the histogram with the observations since round
// 1 (its buckets, sum and count went to one partition together); `why` says what differs.
bool counted(const std::vector<Node*>& nodes, int rounds, size_t holders, std::string* why) {
  std::vector<std::map<std::string, Seen>> held;
  for (Node* n : nodes) held.push_back(held_on(*n->service));
  auto check = [&](const std::string& key, uint64_t count, double sum) {
    size_t on = 0;
    for (size_t n = 0; n < nodes.size(); ++n) {
      auto it = held[n].find(key);
      if (it == held[n].end()) continue;
      ++on;
      if (it->second.count != count || it->second.sum != sum) {
        *why = key + " on port " + std::to_string(nodes[n]->service->port()) + ": count " +
               std::to_string(it->second.count) + " sum " + std::to_string(it->second.sum) + ", expected " +
               std::to_string(count) + " and " + std::to_string(sum);
        return false;
      }
    }
    if (on != holders) *why = key + " is held by " + std::to_string(on) + " nodes";
    return on == holders;
  };
  for (int i = 0; i < kSeries; ++i) {
    double expected = 0;
    for (int j = 1; j <= rounds; ++j) expected += value_of(i, j);
    if (!check(name_of(i), uint64_t(rounds), expected)) return false;
  }
  return check(R"(pushed_hist{r="x"})", uint64_t(4 * (rounds - 1)), 1.5 * (rounds - 1));
}

bool all_healthy(const std::vector<Node*>& nodes) {
  for (Node* n : nodes)
    if (e2e::http_get(n->service->port(), "/healthz").status != 200) return false;
  return true;
}

}  // namespace

TEST_CASE("OTLP pushes to any node of a partitioned cluster reach each series' holders, counted once") {
  cluster_test::require_redis_server();
  RedisServer redis;
  auto a = start_node(redis.url(), "qa"), b = start_node(redis.url(), "qb"), c = start_node(redis.url(), "qc");
  std::vector<Node*> nodes = {a.get(), b.get(), c.get()};
  REQUIRE(e2e::wait_for([&] { return all_healthy(nodes); }, 30s));
  const int64_t start = now_ns();
  // Rounds 1-6, each to another node, each answered 200 before the next is sent.
  for (int round = 1; round <= 6; ++round) REQUIRE(push_until_ok(nodes[round % 3]->otlp, start, round));
  std::string why;
  bool exact = e2e::wait_for([&] { return counted(nodes, 6, 2, &why); }, 10s);
  INFO(why);
  REQUIRE(exact);
  // Round 7 to all three nodes at once (a client that sent it again elsewhere): each
  // node appends it as its own source, and the holders count it once.
  std::vector<std::thread> senders;
  std::vector<int> status(3);
  for (size_t i = 0; i < 3; ++i)
    senders.emplace_back([&, i] { status[i] = push_until_ok(nodes[i]->otlp, start, 7) ? 200 : 0; });
  for (std::thread& t : senders) t.join();
  CHECK(status == std::vector<int>{200, 200, 200});
  exact = e2e::wait_for([&] { return counted(nodes, 7, 2, &why); }, 10s);
  INFO(why);
  CHECK(exact);
  // A delta counter pushed to one node becomes its running total on the holders.
  auto push_delta = [&](uint16_t port, int i) {
    const std::string body =
        R"({"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"pushed_delta","sum":{"isMonotonic":true,)"
        R"("aggregationTemporality":1,"dataPoints":[{"asDouble":100,"startTimeUnixNano":")" +
        std::to_string(start + (i - 1) * 1'000'000) + R"(","timeUnixNano":")" + std::to_string(start + i * 1'000'000) +
        "\"}]}}]}]}]}";
    return otlp_test::exchange(port, otlp_test::post("/v1/metrics", "application/json", body)).status == 200;
  };
  for (int i = 1; i <= 3; ++i) REQUIRE(push_delta(b->otlp, i));
  // Its two holders have the 0 before the first delta and the totals 100, 200, 300.
  auto totals = [&] {
    size_t holders = 0;
    for (Node* n : nodes) {
      std::map<std::string, Seen> held = held_on(*n->service);
      auto it = held.find("pushed_delta");
      holders += it != held.end() && it->second.count == 4 && it->second.sum == 600;
    }
    return holders;
  };
  CHECK(e2e::wait_for([&] { return totals() == 2; }));
  for (Node* n : nodes)  // any node answers for it
    CHECK(e2e::http_get(n->service->port(), "/v1/series/pushed_delta").body.find("\"last\":300") != std::string::npos);
  // Each node's pushes are a source of their own, listed with the holders' sources.
  CHECK(e2e::wait_for([&] {
    std::string status = e2e::http_get(a->service->port(), "/v1/status").body;
    return status.find("otlp-push:qa") != std::string::npos && status.find("otlp-push:qb") != std::string::npos;
  }));
}

TEST_CASE("OTLP pushes into a partitioned cluster with Redis down are answered 503, and what was answered 200 stays counted") {
  cluster_test::require_redis_server();
  RedisServer redis;
  auto a = start_node(redis.url(), "ra"), b = start_node(redis.url(), "rb");
  std::vector<Node*> nodes = {a.get(), b.get()};
  REQUIRE(e2e::wait_for([&] { return all_healthy(nodes); }, 30s));
  const int64_t start = now_ns();
  for (int round = 1; round <= 3; ++round) REQUIRE(push_until_ok(nodes[round % 2]->otlp, start, round));
  std::string why;
  REQUIRE(e2e::wait_for([&] { return counted(nodes, 3, 2, &why); }, 10s));

  redis.kill_now();
  for (Node* n : nodes) {
    otlp_test::Reply r = push(n->otlp, start, 4);
    CHECK(r.status == 503);
    CHECK(r.headers.count("retry-after") == 1);
  }
  CHECK(counted(nodes, 3, 2, &why));

  // Redis back, empty, and the refused round sent again at once: each partition's
  // primary writes a checkpoint of its state before the log goes on, and an append to a
  // log Redis lost is refused until then (appended before it, it would never be applied:
  // answered 200 and lost).
  redis.start();
  int refused = 0;
  REQUIRE(push_until_ok(a->otlp, start, 4, &refused));
  REQUIRE(push_until_ok(b->otlp, start, 5, &refused));
  bool exact = e2e::wait_for([&] { return counted(nodes, 5, 2, &why); }, 10s);
  INFO(why << " (" << refused << " pushes refused after Redis came back)");
  CHECK(exact);
}

// A Redis that stops answering (SIGSTOP past the 3 s reply deadline) while pushes are in
// flight: their requests are answered 503, yet the entries sent before it stopped reach
// the log once it goes on. The client sends each refused round again until it is
// answered 200; every round counts once.
TEST_CASE("OTLP pushes into a partitioned cluster, Redis stopped mid-push: refused pushes whose entries reached the log count once") {
  cluster_test::require_redis_server();
  RedisServer redis;
  auto a = start_node(redis.url(), "sa"), b = start_node(redis.url(), "sb");
  std::vector<Node*> nodes = {a.get(), b.get()};
  REQUIRE(e2e::wait_for([&] { return all_healthy(nodes); }, 30s));
  const int64_t start = now_ns();
  std::atomic<int> rounds{0}, refused{0};
  std::atomic<bool> stop{false};
  std::thread client([&] {
    for (int round = 1; round <= 200 && !stop.load(std::memory_order_relaxed); ++round) {
      int r = 0;
      if (!push_until_ok(nodes[round % 2]->otlp, start, round, &r)) return;
      refused.fetch_add(r, std::memory_order_relaxed);
      rounds.store(round, std::memory_order_relaxed);
    }
  });
  REQUIRE(e2e::wait_for([&] { return rounds.load() >= 3; }, 10s));
  redis.stop_process(true);
  std::this_thread::sleep_for(4s);
  redis.stop_process(false);
  REQUIRE(e2e::wait_for([&] { return refused.load() > 0 && rounds.load() >= 3; }, 30s));
  std::this_thread::sleep_for(1s);
  stop.store(true, std::memory_order_relaxed);
  client.join();
  const int sent = rounds.load();
  std::string why;
  bool exact = e2e::wait_for([&] { return counted(nodes, sent, 2, &why); }, 20s);
  INFO(why << " after " << sent << " rounds, " << refused.load() << " answers 503");
  CHECK(exact);
}
