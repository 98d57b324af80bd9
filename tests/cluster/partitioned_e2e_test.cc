// tests/cluster/partitioned_e2e_test.cc: real telemetryd nodes of a partitioned cluster
// (--partitions 8 --replication-factor 2) over a real redis-server: each node serves its
// share of the series and every series is served by R of them, holders of a series converge to the same body, and a node SIGKILLed
// leaves its partitions to the others, which serve every series again.
#include <csignal>
#include <map>
#include <regex>
#include <set>

#include <catch2/catch.hpp>

#include "tests/cluster/redis_server.h"
#include "tests/server/e2e_util.h"

using namespace std::chrono_literals;
using cluster_test::RedisServer;
using e2e::Service;

namespace {

constexpr size_t kSeries = 4 * 5;  // synthetic://?hosts=4&metrics=5

std::unique_ptr<Service> start_node(const RedisServer& redis, const std::string& id) {
  return std::make_unique<Service>(std::vector<std::string>{
      "--workers", "2", "--interval", "200ms", "--cluster", redis.url(), "--cluster-name", "pe2e", "--node-id", id,
      "--lease", "1500ms", "--checkpoint-every", "10", "--partitions", "8", "--replication-factor", "2", "--source",
      "synthetic://?hosts=4&metrics=5"});
}

// The series keys a node serves (the "key" of each series body in its /v1/snapshot).
std::set<std::string> series_of(const Service& s) {
  static const std::regex key(R"re("key":"((?:[^"\\]|\\.)*)")re");
  std::set<std::string> keys;
  e2e::HttpResponse r = e2e::http_get(s.port(), "/v1/snapshot");
  if (r.status != 200) return keys;
  std::string body = r.body;
  for (auto it = std::sregex_iterator(body.begin(), body.end(), key); it != std::sregex_iterator(); ++it) {
    std::string k = (*it)[1];
    std::string plain;
    for (size_t i = 0; i < k.size(); ++i) plain += k[i] == '\\' && i + 1 < k.size() ? k[++i] : k[i];
    keys.insert(plain);
  }
  return keys;
}

std::string cluster_json(const Service& s) { return s.admin("show cluster json"); }

// Every node serves its share, every series is served by `replication` of them.
bool shared_out(const std::vector<Service*>& nodes, size_t replication) {
  std::map<std::string, size_t> holders;
  for (Service* s : nodes)
    for (const std::string& k : series_of(*s)) ++holders[k];
  if (holders.size() != kSeries) return false;
  for (const auto& [k, n] : holders)
    if (n != replication) return false;
  return true;
}

}  // namespace

TEST_CASE("partitioned cluster: each node serves its share, holders converge, a killed node's partitions move") {
  cluster_test::require_redis_server();
  RedisServer redis;
  auto a = start_node(redis, "pa"), b = start_node(redis, "pb"), c = start_node(redis, "pc");
  std::vector<Service*> nodes = {a.get(), b.get(), c.get()};
  REQUIRE(e2e::wait_for([&] { return shared_out(nodes, 2); }, 30s));
  auto healthy = [](Service* s) {
    return e2e::wait_for([s] { return e2e::http_get(s->port(), "/healthz").status == 200; }, 10s);
  };
  for (Service* s : nodes) {
    CHECK(healthy(s));
    std::string json = cluster_json(*s);
    CHECK(json.find("\"partitioning\":{\"partitions\":8,\"replication_factor\":2,") != std::string::npos);
    size_t held = series_of(*s).size();
    CHECK(held > 0);
    CHECK(held < kSeries);  // a share, not everything
  }
  // A series' two holders converge to the same body (they apply the same log).
  std::map<std::string, std::vector<Service*>> by_key;
  for (Service* s : nodes)
    for (const std::string& k : series_of(*s)) by_key[k].push_back(s);
  size_t compared = 0;
  for (const auto& [key, holders] : by_key) {
    if (compared == 4) break;
    REQUIRE(holders.size() == 2);
    std::string target = "/v1/series/" + e2e::url_encode(key);
    bool same = e2e::wait_for([&] {
      e2e::HttpResponse x = e2e::http_get(holders[0]->port(), target), y = e2e::http_get(holders[1]->port(), target);
      return x.status == 200 && x.body == y.body;
    }, 10s);
    CHECK(same);
    ++compared;
  }

  // pa SIGKILLed, supervisor and children: its partitions are held again by pb and pc.
  for (pid_t p : a->reader_pids()) kill(p, SIGKILL);
  kill(a->writer_pid(), SIGKILL);
  kill(a->pid(), SIGKILL);
  std::vector<Service*> left = {b.get(), c.get()};
  REQUIRE(e2e::wait_for([&] { return shared_out(left, 2); }, 30s));
  for (Service* s : left) {
    INFO(s->admin("show cluster"));
    CHECK(healthy(s));
    CHECK(series_of(*s).size() == kSeries);
    // Both come to hold all 8 (R = N = 2), partitions without series included.
    std::string metrics;
    CHECK(e2e::wait_for([&] {
      metrics = e2e::http_get(s->port(), "/metrics").body;
      return metrics.find("telemetryd_partitions_held{state=\"ready\"} 8\n") != std::string::npos;
    }, 10s));
    CHECK(metrics.find("telemetryd_partition_moves_total{direction=\"in\"} ") != std::string::npos);
  }
}
