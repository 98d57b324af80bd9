// tests/cluster/partitioned_query_test.cc: any node of a partitioned cluster answers any
// query for the whole cluster. Real telemetryd nodes (--partitions 16
// --replication-factor 2) over a real Redis Cluster and one standalone node read the same
// file of timestamped samples; every node's answer to every series, list, page and
// rollup equals the standalone node's, through a holder SIGSTOPped (answers in time,
// never missing series without saying so) and a node SIGKILLed under queries.
#include <csignal>
#include <map>
#include <regex>
#include <set>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "tests/cluster/redis_server.h"
#include "tests/server/e2e_util.h"

using namespace std::chrono_literals;
using cluster_test::RedisServer;
using e2e::Service;

namespace {

constexpr int kMetrics = 3, kHosts = 24;
const std::string kPartialFalse = R"(,"partial":false,"missing_partitions":[])";

// Samples of every series at ts `at` (Unix seconds), value `base` + host number.
std::string samples_at(double at, int base) {
  std::string body = R"({"samples":[)";
  for (int m = 0; m < kMetrics; ++m)
    for (int h = 0; h < kHosts; ++h) {
      if (m || h) body += ',';
      body += "{\"metric\":\"q" + std::to_string(m) + "\",\"labels\":{\"host\":\"h" + std::to_string(h) +
              "\",\"dc\":\"" + (h % 2 ? "east" : "west") + "\"},\"value\":" + std::to_string(base + h + m) +
              ",\"ts\":" + std::to_string(at) + "}";
    }
  return body + "]}";
}

std::unique_ptr<Service> start_partitioned(const std::string& redis, const std::string& id, const std::string& source,
                                           const std::string& replication = "2", const std::string& partitions = "16") {
  return std::make_unique<Service>(std::vector<std::string>{
      "--workers", "2", "--interval", "200ms", "--cluster", redis, "--cluster-name", "pq", "--node-id", id, "--lease",
      "1500ms", "--checkpoint-every", "10", "--partitions", partitions, "--replication-factor", replication,
      "--query-deadline", "700ms", "--source", source});
}

// A JSON string's text (the escapes our bodies use: \" and \\).
std::string json_text(std::string_view quoted) {
  std::string out;
  for (size_t i = 1; i + 1 < quoted.size(); ++i) out += quoted[i] == '\\' ? quoted[++i] : quoted[i];
  return out;
}

std::string strip_partial(std::string body) {
  size_t at = body.find(kPartialFalse);
  if (at != std::string::npos) body.erase(at, kPartialFalse.size());
  return body;
}

// The targets whose answers are compared: the lists, each rollup, pages of a metric
// (followed by cursor) and a filter, and every series.
std::vector<std::string> targets(const Service& standalone) {
  std::vector<std::string> out = {"/v1/metrics", "/v1/query?metric=q2&dc=east", "/v1/query?metric=q1&limit=1000"};
  for (int m = 0; m < kMetrics; ++m) out.push_back("/v1/metrics/q" + std::to_string(m));
  static const std::regex key(R"re("key":("(?:[^"\\]|\\.)*"))re");
  for (int m = 0; m < kMetrics; ++m) {
    std::string body = e2e::http_get(standalone.port(), "/v1/query?metric=q" + std::to_string(m)).body;
    for (auto it = std::sregex_iterator(body.begin(), body.end(), key); it != std::sregex_iterator(); ++it)
      out.push_back("/v1/series/" + e2e::url_encode(json_text((*it)[1].str())));
  }
  return out;
}

// The pages of /v1/query?metric=q0&limit=5 followed to the end, joined.
std::string all_pages(uint16_t port) {
  std::string joined, cursor;
  for (int page = 0; page < 100; ++page) {
    e2e::HttpResponse r = e2e::http_get(
        port, "/v1/query?metric=q0&limit=5" + (cursor.empty() ? "" : "&cursor=" + e2e::url_encode(cursor)));
    if (r.status != 200) return "status " + std::to_string(r.status);
    std::string body = strip_partial(r.body);
    const std::string head = R"({"series":[)", next = R"(],"next_cursor":)";
    if (!body.starts_with(head)) return "unreadable page " + body;
    size_t at = body.rfind(next);
    if (at == std::string::npos) return joined + body.substr(head.size(), body.size() - head.size() - 2);
    joined += body.substr(head.size(), at - head.size()) + "|";
    cursor = json_text(std::string_view(body).substr(at + next.size(), body.size() - 1 - at - next.size()));
  }
  return "too many pages";
}

// Every target answers on `node` as on `standalone` (the partial fields aside).
bool same_answers(const Service& node, const Service& standalone, const std::vector<std::string>& all,
                  std::string* diff) {
  for (const std::string& t : all) {
    e2e::HttpResponse x = e2e::http_get(node.port(), t), y = e2e::http_get(standalone.port(), t);
    if (x.status != y.status || strip_partial(x.body) != y.body || x.headers["telemetryd-partial"] != "false") {
      *diff = t + "\n node: " + std::to_string(x.status) + " " + x.body + "\n standalone: " + y.body;
      return false;
    }
  }
  return true;
}

// A series count of a full answer to /v1/query?metric=q0 and whether it said partial.
std::pair<size_t, bool> count_q0(uint16_t port, int* status) {
  e2e::HttpResponse r = e2e::http_get(port, "/v1/query?metric=q0");
  *status = r.status;
  size_t n = 0;
  for (size_t at = r.body.find("\"key\":"); at != std::string::npos; at = r.body.find("\"key\":", at + 1)) ++n;
  return {n, r.body.find("\"partial\":true") != std::string::npos};
}

}  // namespace

TEST_CASE("partitioned queries: every node answers every query as one standalone node does, through a stop and a kill") {
  cluster_test::require_redis_server();
  cluster_test::RedisCluster redis;  // three masters with a replica each
  e2e::TempDir dir;
  const std::string file = dir.file("samples.json");
  const double t0 = double(std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch()).count()) / 1000 - 6;
  e2e::write_file(file, samples_at(t0, 10));
  const std::string source = "file://" + file;
  Service standalone({"--workers", "2", "--interval", "200ms", "--source", source});
  std::vector<std::unique_ptr<Service>> nodes;
  for (const char* id : {"qa", "qb", "qc", "qd"}) nodes.push_back(start_partitioned(redis.url(), id, source));
  for (auto& n : nodes)
    REQUIRE(e2e::wait_for([&] { return e2e::http_get(n->port(), "/healthz").status == 200; }, 30s));

  // Three versions of the file: both sides see each (a sample already taken is a duplicate).
  std::vector<std::string> all;
  std::string diff;
  for (int version = 0; version < 3; ++version) {
    if (version) e2e::write_file(file, samples_at(t0 + version, 10 * (version + 1)));
    REQUIRE(e2e::wait_for([&] {
      return e2e::http_get(standalone.port(), "/v1/metrics/q0").body.find(
                 "\"count\":" + std::to_string(kHosts * (version + 1))) != std::string::npos;
    }, 10s));
    all = targets(standalone);
    for (auto& n : nodes) {
      INFO(diff);
      CHECK(e2e::wait_for([&] { return same_answers(*n, standalone, all, &diff); }, 10s));
    }
  }
  REQUIRE(all.size() == 6 + kMetrics * kHosts);
  for (const std::string& t : all) {
    INFO(t);
    CHECK(e2e::http_get(standalone.port(), t).status == 200);
  }

  // Answers say what they were built from: 16 partitions for a list, one for a series.
  e2e::HttpResponse list = e2e::http_get(nodes[0]->port(), "/v1/metrics");
  CHECK(std::count(list.headers["telemetryd-generations"].begin(), list.headers["telemetryd-generations"].end(), ',') ==
        15);
  e2e::HttpResponse one = e2e::http_get(nodes[1]->port(), all.back());
  CHECK(std::regex_match(one.headers["telemetryd-generations"], std::regex(R"(\d+:\d+)")));
  // The same query from two nodes at the same generations: the same bytes and ETag, and a 304.
  e2e::HttpResponse x = e2e::http_get(nodes[0]->port(), "/v1/metrics/q1"), y = e2e::http_get(nodes[2]->port(), "/v1/metrics/q1");
  if (x.headers["telemetryd-generations"] == y.headers["telemetryd-generations"]) {
    CHECK(x.body == y.body);
    CHECK(x.headers["etag"] == y.headers["etag"]);
  }
  CHECK(e2e::http_get(nodes[2]->port(), "/v1/metrics/q1", "If-None-Match: " + y.headers["etag"] + "\r\n").status == 304);
  // Pages followed by cursor give every series once, the same on every node.
  const std::string pages = all_pages(standalone.port());
  CHECK(std::count(pages.begin(), pages.end(), '|') == kHosts / 5);
  for (auto& n : nodes) CHECK(all_pages(n->port()) == pages);

  // /metrics: each node exports the series of the partitions it is primary for, so a
  // scrape of every node has each series once, and no node exports a partial rollup.
  std::string scraped;
  const bool exported_once = e2e::wait_for([&] {
    std::multiset<std::string> lines;
    scraped.clear();
    for (auto& n : nodes) {
      std::string text = e2e::http_get(n->port(), "/metrics").body;
      if (text.find("telemetry_metric_samples{") != std::string::npos) {
        scraped = "a rollup line on " + std::to_string(n->port()) + ":\n" + text;
        return false;
      }
      for (size_t at = text.find("\ntelemetry_series_samples{metric=\"q0\""); at != std::string::npos;
           at = text.find("\ntelemetry_series_samples{metric=\"q0\"", at + 1))
        lines.insert(text.substr(at + 1, text.find('\n', at + 1) - at - 1));
    }
    scraped.clear();
    for (const std::string& l : lines) scraped += l + "\n";
    return lines.size() == size_t(kHosts) && std::set<std::string>(lines.begin(), lines.end()).size() == lines.size();
  }, 10s);
  if (!exported_once) FAIL_CHECK("/metrics of every node:\n" << scraped);

  // A holder stopped: answers come within the deadline; one that lacks series says so.
  kill(nodes[3]->writer_pid(), SIGSTOP);
  for (pid_t p : nodes[3]->reader_pids()) kill(p, SIGSTOP);
  kill(nodes[3]->pid(), SIGSTOP);
  bool complete_again = false, silent_loss = false, slow = false;
  for (int i = 0; i < 60 && !complete_again; ++i) {
    const auto start = std::chrono::steady_clock::now();
    int status = 0;
    auto [n, partial] = count_q0(nodes[0]->port(), &status);
    if (std::chrono::steady_clock::now() - start > 2s) slow = true;
    if (status != 200 || (!partial && n != size_t(kHosts))) silent_loss = true;
    complete_again = i > 0 && status == 200 && !partial && n == size_t(kHosts);
    std::this_thread::sleep_for(100ms);
  }
  CHECK_FALSE(slow);
  CHECK_FALSE(silent_loss);
  CHECK(complete_again);
  kill(nodes[3]->pid(), SIGCONT);
  kill(nodes[3]->writer_pid(), SIGCONT);
  for (pid_t p : nodes[3]->reader_pids()) kill(p, SIGCONT);

  // A node killed while two others are queried: every answer is whole or says it is not.
  for (pid_t p : nodes[2]->reader_pids()) kill(p, SIGKILL);
  kill(nodes[2]->writer_pid(), SIGKILL);
  kill(nodes[2]->pid(), SIGKILL);
  size_t failed = 0, partials = 0;
  std::string failures;
  for (int i = 0; i < 40; ++i) {
    for (int k : {0, 1}) {
      int status = 0;
      auto [n, partial] = count_q0(nodes[k]->port(), &status);
      if (status != 200 || (!partial && n != size_t(kHosts))) {
        ++failed;
        failures += fmt::format("node {} request {}: status {}, {} series, partial {}\n", k, i, status, n, partial);
      }
      partials += partial;
    }
    std::this_thread::sleep_for(50ms);
  }
  INFO(failures);
  INFO((failed ? nodes[1]->log() : std::string()));
  CHECK(failed == 0);
  // And once the others hold its partitions again, every answer is whole and exact.
  all = targets(standalone);
  for (int k : {0, 1, 3}) {
    INFO(diff);
    CHECK(e2e::wait_for([&] { return same_answers(*nodes[k], standalone, all, &diff); }, 20s));
  }
}

// With one holder per partition, a series whose holder is stopped has no ready holder:
// 503 with Retry-After and the partial flag, never a 404.
TEST_CASE("partitioned queries: a series without a ready holder is a 503 that says partial, not a 404") {
  cluster_test::require_redis_server();
  RedisServer redis;
  auto a = start_partitioned(redis.url(), "ra", "synthetic://?hosts=4&metrics=3", "1", "4");
  auto b = start_partitioned(redis.url(), "rb", "synthetic://?hosts=4&metrics=3", "1", "4");
  for (Service* s : {a.get(), b.get()})
    REQUIRE(e2e::wait_for([&] { return e2e::http_get(s->port(), "/healthz").status == 200; }, 30s));
  // A series only b holds: a's answer for it comes from b.
  auto keys_of = [](const Service& s) {
    static const std::regex key(R"re("key":("(?:[^"\\]|\\.)*"))re");
    std::set<std::string> keys;
    std::string body = e2e::http_get(s.port(), "/v1/snapshot").body;
    for (auto it = std::sregex_iterator(body.begin(), body.end(), key); it != std::sregex_iterator(); ++it)
      keys.insert(json_text((*it)[1].str()));
    return keys;
  };
  std::string target;
  REQUIRE(e2e::wait_for([&] {
    std::set<std::string> mine = keys_of(*a);
    for (const std::string& k : keys_of(*b))
      if (!mine.contains(k)) {
        target = "/v1/series/" + e2e::url_encode(k);
        return e2e::http_get(a->port(), target).status == 200;
      }
    return false;
  }, 20s));
  kill(b->writer_pid(), SIGSTOP);
  for (pid_t p : b->reader_pids()) kill(p, SIGSTOP);
  e2e::HttpResponse r = e2e::http_get(a->port(), target);
  CHECK(r.status == 503);
  CHECK(r.headers["retry-after"] == "1");
  CHECK(r.headers["telemetryd-partial"] == "true");
  CHECK(r.body.find("\"partial\":true") != std::string::npos);
  for (pid_t p : b->reader_pids()) kill(p, SIGCONT);
  kill(b->writer_pid(), SIGCONT);
}

// A planned leave: the drained node hands each partition over and lets it go only once
// its new holders have it ready, so queries never lose a partition meanwhile; then it is
// stopped, and nothing changes for the readers of the others.
TEST_CASE("partitioned queries: a node drained, then one joining, under queries: never a partial answer") {
  cluster_test::require_redis_server();
  RedisServer redis;
  const std::string source = "synthetic://?hosts=4&metrics=2";  // 8 series, metrics synthetic.*
  std::vector<std::unique_ptr<Service>> nodes;
  for (const char* id : {"da", "db", "dc"}) nodes.push_back(start_partitioned(redis.url(), id, source, "2", "8"));
  for (auto& n : nodes)
    REQUIRE(e2e::wait_for([&] { return e2e::http_get(n->port(), "/healthz").status == 200; }, 30s));
  const std::string metric = [&] {
    std::string body = e2e::http_get(nodes[0]->port(), "/v1/metrics").body;
    size_t at = body.find("\"metric\":\"");
    return at == std::string::npos ? std::string() : body.substr(at + 10, body.find('"', at + 10) - at - 10);
  }();
  REQUIRE(!metric.empty());
  auto series_of_metric = [&](uint16_t port, bool* partial, int* status) {
    e2e::HttpResponse r = e2e::http_get(port, "/v1/query?metric=" + e2e::url_encode(metric));
    *status = r.status;
    *partial = r.headers["telemetryd-partial"] != "false";
    size_t n = 0;
    for (size_t at = r.body.find("\"key\":"); at != std::string::npos; at = r.body.find("\"key\":", at + 1)) ++n;
    return n;
  };
  bool partial = false;
  int status = 0;
  const size_t whole = series_of_metric(nodes[0]->port(), &partial, &status);
  REQUIRE(whole == 4);
  REQUIRE_FALSE(partial);

  // A page taken before the moves, its cursor followed after them: the pages join into
  // the whole list, each series once (a cursor is a series key, not a place in a node).
  auto page = [&](uint16_t port, const std::string& cursor, std::string* next) {
    e2e::HttpResponse r = e2e::http_get(port, "/v1/query?limit=2&metric=" + e2e::url_encode(metric) +
                                                  (cursor.empty() ? "" : "&cursor=" + e2e::url_encode(cursor)));
    static const std::regex key(R"re("key":("(?:[^"\\]|\\.)*"))re"), cursor_field(R"re("next_cursor":("(?:[^"\\]|\\.)*"))re");
    std::vector<std::string> keys;
    for (auto it = std::sregex_iterator(r.body.begin(), r.body.end(), key); it != std::sregex_iterator(); ++it)
      keys.push_back(json_text((*it)[1].str()));
    std::smatch m;
    *next = std::regex_search(r.body, m, cursor_field) ? json_text(m[1].str()) : "";
    return keys;
  };
  std::string cursor;
  std::vector<std::string> paged = page(nodes[0]->port(), "", &cursor);
  REQUIRE(paged.size() == 2);
  REQUIRE(!cursor.empty());

  CHECK(nodes[2]->admin("drain").find("started") != std::string::npos);
  size_t bad = 0, asked = 0;
  std::string why;
  const bool drained = e2e::wait_for([&] {
    for (int k : {0, 1}) {
      size_t n = series_of_metric(nodes[k]->port(), &partial, &status);
      ++asked;
      if (status != 200 || partial || n != whole) {
        ++bad;
        why = fmt::format("node {}: status {}, partial {}, {} series", k, status, partial, n);
      }
    }
    return nodes[2]->admin("show cluster json").find("\"drained\":true") != std::string::npos;
  }, 30s);
  INFO(why);
  CHECK(drained);
  CHECK(bad == 0);
  CHECK(asked > 0);
  // The others hold every partition now, and say what the moves cost.
  for (int k : {0, 1}) {
    std::string metrics;
    CHECK(e2e::wait_for([&] {
      metrics = e2e::http_get(nodes[k]->port(), "/metrics").body;
      return metrics.find("telemetryd_partitions_held{state=\"ready\"} 8\n") != std::string::npos;
    }, 5s));
    INFO(metrics.substr(metrics.find("telemetryd_partitions_held")));
    INFO(nodes[k]->admin("show cluster"));
    CHECK(metrics.find("telemetryd_partition_move_bytes_total 0\n") == std::string::npos);
  }
  CHECK(e2e::http_get(nodes[2]->port(), "/metrics").body.find("telemetryd_partition_draining 1\n") !=
        std::string::npos);
  for (int i = 0; !cursor.empty() && i < 10; ++i)
    for (const std::string& k : page(nodes[1]->port(), cursor, &cursor)) paged.push_back(k);
  CHECK(paged.size() == whole);
  CHECK(std::set<std::string>(paged.begin(), paged.end()).size() == whole);
  CHECK(std::is_sorted(paged.begin(), paged.end()));
  CHECK(nodes[2]->stop() == 0);
  for (int i = 0; i < 10; ++i) {
    CHECK(series_of_metric(nodes[i % 2]->port(), &partial, &status) == whole);
    CHECK_FALSE(partial);
  }

  // A node joins under queries: it takes its share, and the others' answers stay whole.
  nodes.push_back(start_partitioned(redis.url(), "dd", source, "2", "8"));
  bad = 0;
  const bool joined = e2e::wait_for([&] {
    for (int k : {0, 1}) {
      size_t n = series_of_metric(nodes[k]->port(), &partial, &status);
      if (status != 200 || partial || n != whole) {
        ++bad;
        why = fmt::format("node {}: status {}, partial {}, {} series", k, status, partial, n);
      }
    }
    return e2e::http_get(nodes[3]->port(), "/healthz").status == 200 &&
           nodes[3]->admin("show cluster json").find("\"state\":\"ready\"") != std::string::npos;
  }, 30s);
  INFO(why);
  CHECK(joined);
  CHECK(bad == 0);
  CHECK(series_of_metric(nodes[3]->port(), &partial, &status) == whole);
  CHECK_FALSE(partial);
}
