// tests/cluster/partitioned_e2e_test.cc: real telemetryd nodes of a partitioned cluster
// (--partitions 8 --replication-factor 2) over a real redis-server: each node serves its
// share of the series and every series is served by R of them, holders of a series converge to the same body, and a node SIGKILLed
// leaves its partitions to the others, which serve every series again.
#include <csignal>
#include <map>
#include <regex>
#include <set>

#include <catch2/catch.hpp>

#include "common/partitions.h"
#include "tests/cluster/redis_server.h"
#include "tests/server/e2e_util.h"

using namespace std::chrono_literals;
using cluster_test::RedisServer;
using e2e::Service;

namespace {

constexpr size_t kSeries = 4 * 5;  // synthetic://?hosts=4&metrics=5

std::unique_ptr<Service> start_node(const std::string& url, const std::string& id) {
  return std::make_unique<Service>(std::vector<std::string>{
      "--workers", "2", "--interval", "200ms", "--cluster", url, "--cluster-name", "pe2e", "--node-id", id,
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
  auto a = start_node(redis.url(), "pa"), b = start_node(redis.url(), "pb"), c = start_node(redis.url(), "pc");
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

// The partitions' keys spread over the masters of a Redis Cluster by their hash tags
// ({pe2e:P}); the master of some of them killed, its replica promoted, the nodes go on.
TEST_CASE("partitioned cluster on a Redis Cluster: the partitions spread over the masters and survive a master's death") {
  cluster_test::RedisCluster rc;
  auto a = start_node(rc.url(), "pa"), b = start_node(rc.url(), "pb");
  std::vector<Service*> nodes = {a.get(), b.get()};
  REQUIRE(e2e::wait_for([&] { return shared_out(nodes, 2); }, 30s));
  // The eight partitions' tags are not all on one master.
  cluster_test::Client c(rc.ports()[0]);
  auto master_of_partition = [&](uint32_t p) {
    return rc.master_of(uint16_t(std::stoul(c.run({"CLUSTER", "KEYSLOT", common::partition_tag("pe2e", p)}))));
  };
  std::set<uint16_t> masters;
  for (uint32_t p = 0; p < 8; ++p) masters.insert(master_of_partition(p));
  CHECK(masters.size() > 1);
  // The master of a series' partition dies: its count goes on on both nodes once the
  // replica took over.
  std::string key = *series_of(*a).begin();
  std::string target = "/v1/series/" + e2e::url_encode(key);
  auto count = [&](Service* s) {
    std::string body = e2e::http_get(s->port(), target).body;
    size_t at = body.find("\"count\":");
    return at == std::string::npos ? 0 : std::stoull(body.substr(at + 8));
  };
  uint64_t before = count(a.get());
  rc.kill_now(master_of_partition(common::partition_of(key, 8)));
  CHECK(e2e::wait_for([&] { return count(a.get()) > before + 5 && count(b.get()) > before + 5; }, 30s));
  CHECK(e2e::wait_for([&] { return shared_out(nodes, 2); }, 30s));
}

// A node holding many partitions (64 here, P up to 4096 is accepted) describes every one of
// them: `show cluster json` is whole JSON, not cut at the status text's size in shared
// memory (16 KB once: it ended mid-object past ~50 partitions).
TEST_CASE("partitioned cluster: show cluster json lists every partition of a node holding 64") {
  cluster_test::require_redis_server();
  RedisServer redis;
  Service node({"--workers", "2", "--interval", "200ms", "--cluster", redis.url(), "--cluster-name", "pe2e64",
                "--node-id", "p64", "--lease", "1500ms", "--partitions", "64", "--replication-factor", "1",
                "--source", "synthetic://?hosts=4&metrics=5"});
  std::string json;
  REQUIRE(e2e::wait_for([&] {
    json = cluster_json(node);
    return json.find(R"("partition":63,"state":"ready")") != std::string::npos;
  }, 30s));
  CHECK(json.back() == '}');
  CHECK(json.find(R"("settings_note":[])") != std::string::npos);
  size_t listed = 0;
  for (size_t at = json.find(R"({"partition":)"); at != std::string::npos; at = json.find(R"({"partition":)", at + 1))
    ++listed;
  CHECK(listed == 64);
}
