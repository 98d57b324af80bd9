// tests/server/http_test.cc: the reader's HTTP server (server/reader.h, server/http.h)
// against a store this test creates and fills by hand with the snapshot key
// conventions of ingest/ingest.h. The server runs on its own event_base in a thread
// (or, for run_reader, in a forked child); the test talks to it over 127.0.0.1.
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <simdjson.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ingest/ingest.h"
#include "server/http.h"
#include "server/reader.h"
#include "server/service.h"
#include "shm/shm.h"
#include "http_client.h"
#include "server_thread.h"

namespace {

using namespace std::chrono_literals;
using test_http::fill;
using test_http::read_response;
using test_http::Response;
using test_http::send_all;

// ---------------------------------------------------------------------------------
// Known data
// ---------------------------------------------------------------------------------

const std::string kCpuEu = R"(cpu{host="a",region="eu"})";
const std::string kCpuUs = R"(cpu{host="b",region="us"})";
const std::string kMem = "mem";
const std::string kOdd = R"(req{path="/a b,c=d",q="x\"y"})";  // space, comma, =, escaped quote

std::string series_body(const std::string& key, int version = 1) {
  std::string quoted;
  ingest::append_json_string(quoted, key);
  return R"({"key":)" + quoted + R"(,"count":)" + std::to_string(version) + "}";
}

// A snapshot with the given series (plus the four fixed ones) in the conventions'
// layout: "s:" records, "m:" rollups and lists, "series", "metrics", "prom".
shm::SnapshotBuilder build_snapshot(size_t extra_series = 0, int version = 1) {
  shm::SnapshotBuilder b;
  std::map<std::string, std::vector<std::string>> by_metric;
  std::vector<std::string> all;
  auto add_series = [&](const std::string& metric, const std::string& key) {
    b.add(ingest::series_record_key(key), series_body(key, version));
    by_metric[metric].push_back(ingest::series_record_key(key));
    all.push_back(ingest::series_record_key(key));
  };
  add_series("cpu", kCpuEu);
  add_series("cpu", kCpuUs);
  add_series("mem", kMem);
  add_series("req", kOdd);
  for (size_t i = 0; i < extra_series; ++i)
    add_series("bulk", "bulk{i=\"" + std::to_string(i) + "\",pad=\"" + std::string(200, 'x') + "\"}");
  std::string metrics = R"({"metrics":[)";
  for (auto& [metric, keys] : by_metric) {
    std::sort(keys.begin(), keys.end());
    b.add(ingest::metric_record_key(metric),
          R"({"metric":")" + metric + R"(","series_count":)" + std::to_string(keys.size()) + "}");
    b.add_list(ingest::metric_record_key(metric), keys);
    if (metrics.back() != '[') metrics += ',';
    metrics += R"({"metric":")" + metric + R"(","series_count":)" + std::to_string(keys.size()) + "}";
  }
  metrics += "]}";
  b.add(ingest::kMetricsRecord, metrics);
  std::sort(all.begin(), all.end());
  b.add_list(ingest::kSeriesList, all);
  b.add(ingest::kPromRecord, "# TYPE cpu_mean gauge\ncpu_mean 1\n");
  return b;
}

// ---------------------------------------------------------------------------------
// A store plus a server on its own thread
// ---------------------------------------------------------------------------------

std::string unique_name() {
  static int n = 0;
  return "tdhttp-" + std::to_string(getpid()) + "-" + std::to_string(++n);
}

struct Fixture {
  explicit Fixture(server::ReaderOptions opt = {}, bool publish = true, size_t extra_series = 0) {
    name = unique_name();
    shm::StoreOptions so;
    so.name = name;
    so.reader_slots = 4;
    store = shm::Store::create(so);
    writer = std::make_unique<shm::Writer>(*store);
    if (publish) generation = writer->publish(build_snapshot(extra_series));
    listen_fd = test_server::listen_loopback(&port);
    opt.listen_fd = listen_fd;
    opt.slot = 1;
    options = opt;
    server = std::make_unique<test_server::ServerThread>(*store, opt);
  }
  ~Fixture() {
    stop();
    close(listen_fd);
    writer.reset();
    store.reset();
    shm::Store::remove(name);
  }
  void stop() { server->stop(); }
  uint64_t counter(uint32_t i) const { return store->reader_counter(options.slot, i); }

  std::string name;
  std::unique_ptr<shm::Store> store;
  std::unique_ptr<shm::Writer> writer;
  uint64_t generation = 0;
  int listen_fd = -1;
  uint16_t port = 0;
  server::ReaderOptions options;
  std::unique_ptr<test_server::ServerThread> server;
};

// ---------------------------------------------------------------------------------
// A tiny blocking HTTP client
// ---------------------------------------------------------------------------------

int connect_to(uint16_t port) {
  int fd = test_server::connect_loopback(port);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

// True when the server closes fd (EOF or reset) within the receive timeout.
bool closed_by_server(int fd) {
  char tmp[4096];
  for (int i = 0; i < 1000; ++i) {
    ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
  }
  return false;
}

Response get(uint16_t port, const std::string& target, const std::string& extra_headers = "") {
  int fd = connect_to(port);
  send_all(fd, "GET " + target + " HTTP/1.1\r\nHost: t\r\n" + extra_headers + "\r\n");
  std::string buf;
  auto r = read_response(fd, buf);
  close(fd);
  REQUIRE(r);
  return *r;
}

size_t json_series_count(const std::string& body, uint64_t* generation = nullptr) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc = parser.parse(body);
  if (generation) *generation = uint64_t(doc["generation"]);
  return simdjson::dom::array(doc["series"]).size();
}

}  // namespace

// =====================================================================================
// Parser unit tests
// =====================================================================================

TEST_CASE("parse_request: a keep-alive GET, parsed in place", "[http]") {
  using namespace server::http;
  Request r;
  std::string in = "GET /v1/series/a%7Bb%7D?x=1 HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"abc\"\r\n\r\nGET /";
  REQUIRE(parse_request(in, 8192, r) == Parse::complete);
  CHECK(r.method == Method::get);
  CHECK(r.path == "/v1/series/a%7Bb%7D");
  CHECK(r.query == "x=1");
  CHECK(r.keep_alive);
  CHECK(r.if_none_match == "\"abc\"");
  CHECK(in.substr(r.head_bytes) == "GET /");
  CHECK(parse_request(in.substr(r.head_bytes), 8192, r) == Parse::incomplete);
}

TEST_CASE("parse_request: versions, Connection, bodies and malformed input", "[http]") {
  using namespace server::http;
  Request r;
  REQUIRE(parse_request("GET / HTTP/1.0\r\n\r\n", 8192, r) == Parse::complete);
  CHECK_FALSE(r.keep_alive);
  REQUIRE(parse_request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 8192, r) == Parse::complete);
  CHECK(r.keep_alive);
  REQUIRE(parse_request("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 8192, r) == Parse::complete);
  CHECK_FALSE(r.keep_alive);
  REQUIRE(parse_request("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n", 8192, r) == Parse::complete);
  CHECK(r.has_body);
  REQUIRE(parse_request("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", 8192, r) == Parse::complete);
  CHECK_FALSE(r.has_body);
  REQUIRE(parse_request("GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", 8192, r) == Parse::complete);
  CHECK(r.has_body);
  CHECK(parse_request("GET / HTTP/1.1\r\n\r\n", 8192, r) == Parse::bad_request);  // no Host
  CHECK(parse_request("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 8192, r) ==
        Parse::bad_request);
  CHECK(parse_request("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 8192, r) == Parse::bad_request);
  CHECK(parse_request("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 8192, r) == Parse::bad_request);
  CHECK(parse_request("GET / HTTP/2.0\r\n\r\n", 8192, r) == Parse::bad_version);
  CHECK(parse_request("hello\r\n", 8192, r) == Parse::bad_request);
  CHECK(parse_request("GET nope HTTP/1.1\r\n", 8192, r) == Parse::bad_request);
  CHECK(parse_request("hello\n", 8192, r) == Parse::bad_request);
  CHECK(parse_request("GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(9000, 'a'), 8192, r) ==
        Parse::header_too_large);
  CHECK(parse_request("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 8192, r) == Parse::complete);
  CHECK(parse_request("POST /x HTTP/1.1\r\nHost: a\r\n\r\n", 8192, r) == Parse::complete);
  CHECK(r.method == Method::other);
}

TEST_CASE("parse_request: a request line longer than the limit, in one read, is header_too_large", "[http]") {
  // Everything arrives at once, so the request line's end lies past the limit: the
  // parser must not compute the rest of the head's length from it (it used to wrap
  // around and hand memmem a huge length).
  using namespace server::http;
  Request r;
  const size_t max = 8192;
  std::string long_target = "GET /" + std::string(max + 100, 'a') + " HTTP/1.1\r\nHost: a\r\n\r\n";
  CHECK(parse_request(long_target, max, r) == Parse::header_too_large);
  CHECK(parse_request("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 8, r) == Parse::header_too_large);
  // Empty lines before the request line count too.
  std::string blank_lines = std::string();
  for (size_t i = 0; i < max; ++i) blank_lines += "\r\n";
  CHECK(parse_request(blank_lines + "GET / HTTP/1.1\r\nHost: a\r\n\r\n", max, r) == Parse::header_too_large);
  // Garbage that only ends past the limit is too large, not judged on bytes never read.
  CHECK(parse_request(std::string(max + 1, 'x') + "\r\n\r\n", max, r) == Parse::header_too_large);

  // The boundary: a head of exactly `max` bytes is complete, one more byte is not.
  const std::string head = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
  REQUIRE(parse_request(head + "GET", head.size(), r) == Parse::complete);
  CHECK(r.head_bytes == head.size());
  CHECK(parse_request(head, head.size() - 1, r) == Parse::header_too_large);
  CHECK(parse_request(head.substr(0, head.size() - 1), head.size(), r) == Parse::incomplete);
  // Request line ending right at the limit, no room for the blank line.
  const std::string line = "GET /x HTTP/1.1\r\n";
  CHECK(parse_request(line + "Host: a\r\n\r\n", line.size(), r) == Parse::header_too_large);
  CHECK(parse_request(line + "Host: a\r\n\r\n", line.size() + 1, r) == Parse::header_too_large);
}

TEST_CASE("percent decoding and entity tags", "[http]") {
  using namespace server::http;
  std::string out;
  CHECK(percent_decode_append("a%7Bb%3D%22c%22%7D+d", out, false));
  CHECK(out == "a{b=\"c\"}+d");
  out.clear();
  CHECK(percent_decode_append("a+b%2B", out, true));
  CHECK(out == "a b+");
  CHECK_FALSE(percent_decode_append("%7", out, false));
  CHECK_FALSE(percent_decode_append("%zz", out, false));
  CHECK(etag_matches("\"a\", W/\"b\"", "\"b\""));
  CHECK(etag_matches("*", "\"b\""));
  CHECK_FALSE(etag_matches("\"a\"", "\"b\""));
}

// =====================================================================================
// Endpoints
// =====================================================================================

TEST_CASE("GET /v1/series: body, headers, encoded keys, 404", "[server]") {
  Fixture f;
  const std::string gen = std::to_string(f.generation);

  Response r = get(f.port, "/v1/series/" + server::http::percent_encode(kCpuEu));
  CHECK(r.status == 200);
  CHECK(r.body == series_body(kCpuEu));
  CHECK(r.header("content-type") == "application/json");
  CHECK(r.header("x-snapshot-generation") == gen);
  CHECK(r.header("etag").size() == 18);
  CHECK(r.header("content-length") == std::to_string(r.body.size()));

  // Braces, quotes, '=' and ',' raw in the path are accepted too; '"' must be encoded
  // by any sane client, but the parser does not insist.
  CHECK(get(f.port, "/v1/series/cpu{host=%22b%22,region=%22us%22}").body == series_body(kCpuUs));
  CHECK(get(f.port, "/v1/series/mem").body == series_body(kMem));
  CHECK(get(f.port, "/v1/series/" + server::http::percent_encode(kOdd)).body == series_body(kOdd));

  Response missing = get(f.port, "/v1/series/" + server::http::percent_encode("cpu{host=\"zzz\"}"));
  CHECK(missing.status == 404);
  CHECK(missing.body == R"({"error":"no such series"})");
  CHECK(missing.header("x-snapshot-generation") == gen);
  CHECK(get(f.port, "/v1/series/%zz").status == 400);

  CHECK(f.counter(server::kReqSeries) == 6);
  CHECK(f.counter(server::kStatus2xx) == 4);
  CHECK(f.counter(server::kStatus404) == 1);
  CHECK(f.counter(server::kConnectionsAccepted) == 6);
}

TEST_CASE("ETag and If-None-Match", "[server]") {
  Fixture f;
  const std::string target = "/v1/series/" + server::http::percent_encode(kCpuEu);
  Response r = get(f.port, target);
  const std::string etag = r.header("etag");
  REQUIRE(!etag.empty());

  Response not_modified = get(f.port, target, "If-None-Match: " + etag + "\r\n");
  CHECK(not_modified.status == 304);
  CHECK(not_modified.body.empty());
  CHECK(not_modified.header("etag") == etag);
  CHECK(get(f.port, target, "If-None-Match: \"0000000000000000\"\r\n").status == 200);

  // Same body in a newer generation: same tag. A changed body: a new tag.
  f.writer->publish(build_snapshot(0, 1));
  CHECK(get(f.port, target, "If-None-Match: " + etag + "\r\n").status == 304);
  f.writer->publish(build_snapshot(0, 2));
  Response changed = get(f.port, target, "If-None-Match: " + etag + "\r\n");
  CHECK(changed.status == 200);
  CHECK(changed.header("etag") != etag);
  CHECK(changed.body == series_body(kCpuEu, 2));

  Response metric = get(f.port, "/v1/metrics/cpu");
  CHECK(get(f.port, "/v1/metrics/cpu", "If-None-Match: " + metric.header("etag") + "\r\n").status == 304);
  CHECK(f.counter(server::kStatus304) == 3);
}

TEST_CASE("GET /v1/query filters by labels", "[server]") {
  Fixture f;
  Response all = get(f.port, "/v1/query?metric=cpu");
  CHECK(all.status == 200);
  CHECK(all.header("content-type") == "application/json");
  CHECK(all.body == "{\"series\":[" + series_body(kCpuEu) + "," + series_body(kCpuUs) + "]}");
  CHECK(get(f.port, "/v1/query?metric=cpu&region=eu").body == "{\"series\":[" + series_body(kCpuEu) + "]}");
  CHECK(get(f.port, "/v1/query?region=us&metric=cpu&host=b").body == "{\"series\":[" + series_body(kCpuUs) + "]}");
  CHECK(get(f.port, "/v1/query?metric=cpu&region=eu&host=b").body == "{\"series\":[]}");
  CHECK(get(f.port, "/v1/query?metric=req&path=" + server::http::percent_encode("/a b,c=d")).body ==
        "{\"series\":[" + series_body(kOdd) + "]}");
  CHECK(get(f.port, "/v1/query?metric=req&q=" + server::http::percent_encode("x\"y")).body == "{\"series\":[" + series_body(kOdd) + "]}");
  CHECK(get(f.port, "/v1/query?metric=nothing").body == "{\"series\":[]}");
  Response bad = get(f.port, "/v1/query?region=eu");
  CHECK(bad.status == 400);
  CHECK(bad.body.find("metric") != std::string::npos);
}

namespace {
struct QueryPage {
  std::vector<std::string> keys;
  std::optional<std::string> next_cursor;
};
QueryPage query_page(const std::string& body) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc = parser.parse(body);
  QueryPage page;
  for (simdjson::dom::element s : simdjson::dom::array(doc["series"]))
    page.keys.emplace_back(std::string_view(s["key"]));
  std::string_view cursor;
  if (doc["next_cursor"].get(cursor) == simdjson::SUCCESS) page.next_cursor = std::string(cursor);
  return page;
}
}  // namespace

TEST_CASE("GET /v1/query pages: limit, next_cursor, every series exactly once", "[server]") {
  constexpr size_t kBulk = 25000;
  Fixture f({}, true, kBulk);
  QueryPage first = query_page(get(f.port, "/v1/query?metric=bulk").body);
  CHECK(first.keys.size() == 1000);  // the default limit
  REQUIRE(first.next_cursor);
  CHECK(*first.next_cursor == first.keys.back());

  std::vector<std::string> seen;
  std::string target = "/v1/query?metric=bulk&limit=7000";
  size_t pages = 0;
  for (;;) {
    Response r = get(f.port, target);
    REQUIRE(r.status == 200);
    QueryPage page = query_page(r.body);
    CHECK(page.keys.size() <= 7000);
    seen.insert(seen.end(), page.keys.begin(), page.keys.end());
    ++pages;
    if (!page.next_cursor) break;
    REQUIRE(pages < 10);
    target = "/v1/query?metric=bulk&limit=7000&cursor=" + server::http::percent_encode(*page.next_cursor);
  }
  CHECK(pages == 4);
  CHECK(seen.size() == kBulk);
  CHECK(std::is_sorted(seen.begin(), seen.end()));
  CHECK(std::adjacent_find(seen.begin(), seen.end()) == seen.end());
  // A cursor past the end: an empty last page.
  QueryPage end = query_page(get(f.port, "/v1/query?metric=bulk&cursor=zzz").body);
  CHECK(end.keys.empty());
  CHECK(!end.next_cursor);
}

TEST_CASE("GET /v1/query: reserved parameters are checked, out-of-range limits are 400", "[server]") {
  Fixture f;
  for (std::string bad : {"limit=0", "limit=10001", "limit=1000000", "limit=abc", "limit=", "limit=5&limit=6",
                          "cursor=a&cursor=b"}) {
    Response r = get(f.port, "/v1/query?metric=cpu&" + bad);
    INFO(bad);
    CHECK(r.status == 400);
    CHECK(r.body.find(bad.starts_with("limit=5") || bad.starts_with("cursor") ? "twice" : "limit") != std::string::npos);
  }
  CHECK(query_page(get(f.port, "/v1/query?metric=cpu&limit=10000").body).keys.size() == 2);
  CHECK(query_page(get(f.port, "/v1/query?metric=cpu&limit=1").body).keys.size() == 1);
  std::string many = "/v1/query?metric=cpu";
  for (int i = 0; i < 100; ++i) many += "&l" + std::to_string(i) + "=x";
  CHECK(get(f.port, many).status == 400);
}

TEST_CASE("GET /v1/query: a filter that matches little scans a bounded number of series per request", "[server]") {
  server::ReaderOptions opt;
  opt.query_max_scanned = 3000;
  Fixture f(opt, true, 10000);
  // Matches one series of 10,000: each request looks at 3,000 at most and says where to go on.
  const std::string want = "&i=9999";
  std::string target = "/v1/query?metric=bulk" + want;
  std::vector<std::string> found;
  size_t pages = 0;
  for (;; ++pages) {
    REQUIRE(pages < 10);
    QueryPage page = query_page(get(f.port, target).body);
    found.insert(found.end(), page.keys.begin(), page.keys.end());
    if (!page.next_cursor) break;
    target = "/v1/query?metric=bulk" + want + "&cursor=" + server::http::percent_encode(*page.next_cursor);
  }
  CHECK(pages + 1 == 4);  // ceil(10,000 / 3,000)
  REQUIRE(found.size() == 1);
  CHECK(found[0].find("i=\"9999\"") != std::string::npos);
}

TEST_CASE("GET /v1/metrics and /v1/metrics/{name}", "[server]") {
  Fixture f;
  Response list = get(f.port, "/v1/metrics");
  CHECK(list.status == 200);
  CHECK(list.body ==
        R"({"metrics":[{"metric":"cpu","series_count":2},{"metric":"mem","series_count":1},{"metric":"req","series_count":1}]})");
  Response cpu = get(f.port, "/v1/metrics/cpu");
  CHECK(cpu.status == 200);
  CHECK(cpu.body == R"({"metric":"cpu","series_count":2})");
  CHECK(!cpu.header("etag").empty());
  CHECK(get(f.port, "/v1/metrics/none").status == 404);
}

TEST_CASE("GET /healthz", "[server]") {
  {
    Fixture f;
    Response r = get(f.port, "/healthz");
    CHECK(r.status == 200);
    CHECK(r.body.starts_with(R"({"status":"ok","generation":)" + std::to_string(f.generation) + R"(,"age_s":)"));
  }
  {
    server::ReaderOptions o;
    o.healthz_max_age = 0ms;  // every snapshot is too old
    Fixture f(o);
    Response r = get(f.port, "/healthz");
    CHECK(r.status == 503);
    CHECK(r.body.starts_with(R"({"status":"stale")"));
  }
  {
    Fixture f({}, /*publish=*/false);
    CHECK(get(f.port, "/healthz").status == 503);
    Response r = get(f.port, "/v1/series/mem");
    CHECK(r.status == 503);
    CHECK(r.header("x-snapshot-generation") == "0");
  }
}

TEST_CASE("GET /metrics: the snapshot's text plus the service's own metrics", "[server]") {
  Fixture f;
  get(f.port, "/v1/series/mem");
  get(f.port, "/v1/series/nothing");
  shm::SourceStatus s;
  s.url = "file:///tmp/a\"b";
  s.samples = 42;
  s.errors = 3;
  f.writer->set_source_count(1);
  f.writer->set_source_status(0, s);
  f.store->service_counter(server::kRestartsReader).store(5);

  Response r = get(f.port, "/metrics");
  CHECK(r.status == 200);
  CHECK(r.header("content-type").starts_with("text/plain; version=0.0.4"));
  CHECK(r.body.starts_with("# TYPE cpu_mean gauge\ncpu_mean 1\n"));
  CHECK(r.body.find("telemetryd_http_requests_total{endpoint=\"series\"} 2\n") != std::string::npos);
  CHECK(r.body.find("telemetryd_http_requests_total{endpoint=\"prometheus\"} 1\n") != std::string::npos);
  CHECK(r.body.find("telemetryd_http_responses_total{status=\"404\"} 1\n") != std::string::npos);
  CHECK(r.body.find("telemetryd_snapshot_generation " + std::to_string(f.generation) + "\n") != std::string::npos);
  CHECK(r.body.find("telemetryd_snapshot_age_seconds ") != std::string::npos);
  CHECK(r.body.find("telemetryd_source_samples_total{source=\"file:///tmp/a\\\"b\"} 42\n") != std::string::npos);
  CHECK(r.body.find("telemetryd_source_errors_total{source=\"file:///tmp/a\\\"b\"} 3\n") != std::string::npos);
  CHECK(r.body.find("telemetryd_restarts_total{role=\"reader\"} 5\n") != std::string::npos);
  CHECK(r.body.back() == '\n');
}

TEST_CASE("GET /v1/snapshot streams a large snapshot as one JSON document", "[server]") {
  Fixture f({}, true, 20000);
  Response r = get(f.port, "/v1/snapshot");
  CHECK(r.status == 200);
  CHECK(r.header("transfer-encoding") == "chunked");
  uint64_t generation = 0;
  CHECK(json_series_count(r.body, &generation) == 20004);
  CHECK(generation == f.generation);

  // HTTP/1.0: no chunked encoding, the body ends with the connection.
  int fd = connect_to(f.port);
  send_all(fd, "GET /v1/snapshot HTTP/1.0\r\n\r\n");
  std::string buf;
  auto old = read_response(fd, buf);
  close(fd);
  REQUIRE(old);
  CHECK(old->header("transfer-encoding").empty());
  CHECK(json_series_count(old->body) == 20004);
}

TEST_CASE("pipelined requests are answered in order on one connection", "[server]") {
  Fixture f({}, true, 3000);
  int fd = connect_to(f.port);
  std::string reqs;
  const std::vector<std::string> targets = {"/v1/series/mem", "/v1/snapshot", "/v1/series/" + server::http::percent_encode(kCpuUs),
                                            "/nope", "/v1/metrics/cpu"};
  for (const auto& t : targets) reqs += "GET " + t + " HTTP/1.1\r\nHost: t\r\n\r\n";
  for (int i = 0; i < 100; ++i) reqs += "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n";
  send_all(fd, reqs);
  std::string buf;
  auto a = read_response(fd, buf), b = read_response(fd, buf), c = read_response(fd, buf), d = read_response(fd, buf),
       e = read_response(fd, buf);
  REQUIRE((a && b && c && d && e));
  CHECK(a->body == series_body(kMem));
  CHECK(json_series_count(b->body) == 3004);
  CHECK(c->body == series_body(kCpuUs));
  CHECK(d->status == 404);
  CHECK(e->body == R"({"metric":"cpu","series_count":2})");
  for (int i = 0; i < 100; ++i) {
    auto r = read_response(fd, buf);
    REQUIRE(r);
    CHECK(r->body == series_body(kMem));
  }
  close(fd);
}

TEST_CASE("HTTP/1.0 with and without keep-alive, and HEAD", "[server]") {
  Fixture f;
  int fd = connect_to(f.port);
  send_all(fd, "GET /v1/series/mem HTTP/1.0\r\n\r\n");
  std::string buf;
  auto r = read_response(fd, buf);
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->header("connection") == "close");
  CHECK(closed_by_server(fd));
  close(fd);

  fd = connect_to(f.port);
  buf.clear();
  for (int i = 0; i < 2; ++i) {
    send_all(fd, "GET /v1/series/mem HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    r = read_response(fd, buf);
    REQUIRE(r);
    CHECK(r->header("connection") == "keep-alive");
    CHECK(r->body == series_body(kMem));
  }
  send_all(fd, "HEAD /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
  r = read_response(fd, buf, /*head_request=*/true);
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->header("content-length") == std::to_string(series_body(kMem).size()));
  send_all(fd, "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");  // HEAD sent no body
  r = read_response(fd, buf);
  REQUIRE(r);
  CHECK(r->body == series_body(kMem));
  close(fd);
}

TEST_CASE("errors: 404 keeps the connection, 405 400 431 413 close only theirs", "[server]") {
  Fixture f;
  int bystander = connect_to(f.port);
  std::string bystander_buf;
  auto bystander_ok = [&] {
    send_all(bystander, "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
    auto r = read_response(bystander, bystander_buf);
    return r && r->status == 200;
  };
  REQUIRE(bystander_ok());

  {
    int fd = connect_to(f.port);
    std::string buf;
    send_all(fd, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\nGET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
    auto r = read_response(fd, buf);
    REQUIRE(r);
    CHECK(r->status == 404);
    CHECK(r->header("content-type") == "application/json");
    r = read_response(fd, buf);
    REQUIRE(r);
    CHECK(r->status == 200);
    close(fd);
  }
  {
    int fd = connect_to(f.port);
    std::string buf;
    send_all(fd, "DELETE /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
    auto r = read_response(fd, buf);
    REQUIRE(r);
    CHECK(r->status == 405);
    CHECK(r->header("allow") == "GET, HEAD");
    close(fd);
  }
  struct Case {
    std::string request;
    int status;
  };
  const std::vector<Case> cases = {
      {"BLAH\r\n\r\n", 400},
      {"GET /v1/series/mem HTTP/1.1\r\n\r\n", 400},  // no Host
      {"GET /v1/series/mem HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(10000, 'a') + "\r\n\r\n", 431},
      {"GET /v1/series/mem HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", 413},
      {"GET /v1/series/mem HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 413},
      {"POST /v1/series/mem HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", 413},
  };
  for (const auto& c : cases) {
    INFO(c.request.substr(0, 60));
    int fd = connect_to(f.port);
    std::string buf;
    send_all(fd, c.request);
    auto r = read_response(fd, buf);
    REQUIRE(r);
    CHECK(r->status == c.status);
    CHECK(r->header("connection") == "close");
    CHECK(r->body.starts_with("{\"error\":"));
    CHECK(closed_by_server(fd));
    close(fd);
    CHECK(bystander_ok());
  }
  close(bystander);
}

TEST_CASE("idle and slow clients time out", "[server]") {
  server::ReaderOptions o;
  o.idle_timeout = 200ms;
  o.request_timeout = 300ms;
  o.heartbeat_every = 20ms;
  Fixture f(o);

  int idle = connect_to(f.port);
  std::string buf;
  send_all(idle, "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
  REQUIRE(read_response(idle, buf));
  CHECK(closed_by_server(idle));  // within the 10 s receive timeout
  close(idle);

  int silent = connect_to(f.port);  // never sends a byte
  CHECK(closed_by_server(silent));
  close(silent);

  int slow = connect_to(f.port);
  send_all(slow, "GET /v1/series/mem HTTP/1.1\r\nHo");  // and then nothing
  buf.clear();
  auto r = read_response(slow, buf);
  REQUIRE(r);
  CHECK(r->status == 408);
  CHECK(closed_by_server(slow));
  close(slow);
}

TEST_CASE("a client that never reads does not stall the others", "[server]") {
  server::ReaderOptions o;
  o.idle_timeout = 2000ms;
  o.heartbeat_every = 20ms;
  Fixture f(o, true, 20000);

  int hog = connect_to(f.port);
  int small = 4096;
  setsockopt(hog, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  std::string reqs;
  for (int i = 0; i < 20; ++i) reqs += "GET /v1/snapshot HTTP/1.1\r\nHost: t\r\n\r\n";
  send_all(hog, reqs);  // ~100 MB of answers that nobody reads

  for (int i = 0; i < 50; ++i) {
    Response r = get(f.port, "/v1/series/mem");
    REQUIRE(r.status == 200);
  }
  Response whole = get(f.port, "/v1/snapshot");
  CHECK(json_series_count(whole.body) == 20004);
  // The stalled one is dropped after idle_timeout (reset: recv fails or sees EOF).
  for (int i = 0; i < 500 && f.counter(server::kConnectionsOpen) > 0; ++i) std::this_thread::sleep_for(20ms);
  CHECK(f.counter(server::kConnectionsOpen) == 0);
  close(hog);
}

TEST_CASE("a snapshot stream cut by a new generation ends in a truncated transfer", "[server]") {
  Fixture f({}, true, 60000);  // ~16 MB: more than the socket buffers hold
  int fd = connect_to(f.port);
  int small = 65536;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  send_all(fd, "GET /v1/snapshot HTTP/1.1\r\nHost: t\r\n\r\n");
  std::string buf;
  REQUIRE(fill(fd, buf));  // the stream has started
  f.writer->publish(build_snapshot(0, 2));
  f.writer->publish(build_snapshot(0, 3));
  auto r = read_response(fd, buf);
  CHECK_FALSE(r);  // no terminating chunk: the client knows it is incomplete
  close(fd);
  CHECK(get(f.port, "/v1/series/mem").body == series_body(kMem, 3));
}

TEST_CASE("shutdown drains: open connections get their next answer with Connection: close", "[server]") {
  server::ReaderOptions o;
  o.shutdown_grace = 20s;  // long: the loop must end because every connection closed
  Fixture f(o);
  int a = connect_to(f.port), b = connect_to(f.port);
  std::string abuf, bbuf;
  for (int fd : {a, b}) send_all(fd, "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
  REQUIRE(read_response(a, abuf));
  REQUIRE(read_response(b, bbuf));
  f.server->request_shutdown();  // no join

  // Idle when the drain began, `a` stays open: its next request is answered (not
  // reset) and says Connection: close. Until the server thread sees the stop, the
  // answers are keep-alive ones, hence the bounded loop.
  bool told_to_close = false;
  for (int i = 0; i < 1000 && !told_to_close; ++i) {
    send_all(a, "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
    auto r = read_response(a, abuf);
    REQUIRE(r);
    CHECK(r->status == 200);
    told_to_close = r->header("connection") == "close";
    if (!told_to_close) std::this_thread::sleep_for(1ms);
  }
  CHECK(told_to_close);
  CHECK(closed_by_server(a));

  // Requests already pipelined are all answered; only the last one closes.
  send_all(b, "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\nGET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
  auto first = read_response(b, bbuf);
  auto second = read_response(b, bbuf);
  REQUIRE(first);
  REQUIRE(second);
  CHECK(first->header("connection").empty());
  CHECK(second->header("connection") == "close");
  CHECK(closed_by_server(b));
  f.stop();  // joins: the loop ended with the last connection, well before the grace
  close(a);
  close(b);
}

TEST_CASE("shutdown: a connection idle for the whole grace is closed, the loop ends", "[server]") {
  server::ReaderOptions o;
  o.shutdown_grace = 300ms;
  Fixture f(o);
  int fd = connect_to(f.port);
  std::string buf;
  send_all(fd, "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
  REQUIRE(read_response(fd, buf));
  f.stop();  // joins the server thread: the grace timer must end the loop
  CHECK(closed_by_server(fd));
  close(fd);
}

TEST_CASE("run_reader in a forked child: serves, then exits 0 on SIGTERM", "[server]") {
  const std::string name = unique_name();
  shm::StoreOptions so;
  so.name = name;
  so.reader_slots = 4;
  auto store = shm::Store::create(so);
  auto writer = std::make_unique<shm::Writer>(*store);
  writer->publish(build_snapshot());
  uint16_t port = 0;
  int lfd = test_server::listen_loopback(&port);

  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int rc = server::kExitFailure;
    try {
      auto child_store = shm::Store::open(name);
      server::ReaderOptions o;
      o.listen_fd = lfd;
      o.slot = 2;
      rc = server::run_reader(*child_store, o);
    } catch (...) {
    }
    _exit(rc);
  }
  Response r = get(port, "/v1/series/mem");
  CHECK(r.status == 200);
  CHECK(store->reader_counter(2, server::kReqSeries) == 1);
  CHECK(store->reader_counter(2, server::kReaderStartedAtNs) > 0);
  kill(pid, SIGTERM);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  INFO("wait status " << status);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == server::kExitOk);
  close(lfd);
  writer.reset();
  store.reset();
  shm::Store::remove(name);
}

TEST_CASE("two readers on one listening socket share the connections", "[server]") {
  Fixture f;  // reader in slot 1
  server::ReaderOptions o = f.options;
  o.slot = 2;
  int stop2[2];
  REQUIRE(pipe(stop2) == 0);
  std::atomic<bool> ready2{false};
  std::thread second([&] {
    shm::Reader reader(*f.store, o.slot);
    event_base* base = event_base_new();
    {
      server::HttpServer server(base, reader, *f.store, o);
      event* stop_ev = event_new(
          base, stop2[0], EV_READ, [](evutil_socket_t, short, void* s) { static_cast<server::HttpServer*>(s)->shutdown(); },
          &server);
      event_add(stop_ev, nullptr);
      ready2 = true;
      event_base_dispatch(base);
      event_free(stop_ev);
    }
    event_base_free(base);
  });
  while (!ready2.load()) std::this_thread::sleep_for(1ms);

  std::vector<int> fds;
  for (int i = 0; i < 20; ++i) {
    int fd = connect_to(f.port);
    send_all(fd, "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
    std::string buf;
    REQUIRE(read_response(fd, buf));  // accepted and answered before the next connects
    fds.push_back(fd);
  }
  const uint64_t one = f.store->reader_counter(1, server::kConnectionsAccepted);
  const uint64_t two = f.store->reader_counter(2, server::kConnectionsAccepted);
  CHECK(one + two == 20);
  CHECK(one >= 8);
  CHECK(two >= 8);
  for (int fd : fds) close(fd);
  char b = 1;
  (void)!write(stop2[1], &b, 1);
  second.join();
  close(stop2[0]);
  close(stop2[1]);
}
