// tests/server/http_test.cc: the reader's HTTP server (server/reader.h, server/http.h):
// its request parser, and its endpoints against a store this test creates and fills by
// hand with the snapshot key conventions of ingest/window/window.h. The server runs on
// its own event_base in a thread; the test talks to it over 127.0.0.1 (http_fixture.h).
// Connections, errors, timeouts and shutdown: http_connection_test.cc.
#include <catch2/catch.hpp>

#include "http_fixture.h"

using namespace http_fixture;
using namespace std::chrono_literals;


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
  // Complete heads: whether the connection stays open, and whether a body follows.
  const struct {
    const char* head;
    bool keep_alive, has_body;
  } complete[] = {
      {"GET / HTTP/1.0\r\n\r\n", false, false},
      {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true, false},
      {"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", false, false},
      {"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n", true, true},
      {"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", true, false},
      {"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", true, true},
  };
  for (const auto& c : complete) {
    INFO(c.head);
    REQUIRE(parse_request(c.head, 8192, r) == Parse::complete);
    CHECK(r.keep_alive == c.keep_alive);
    CHECK(r.has_body == c.has_body);
  }
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
