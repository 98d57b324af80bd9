// tests/server/ui_test.cc: the reader's web view (/ui) and status document (/v1/status),
// in-process: a store this test creates and fills, an HttpServer on its own event_base
// in a thread, and a blocking client over 127.0.0.1 (the shape of http_test.cc).
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <simdjson.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "ingest/ingest.h"
#include "server/reader.h"
#include "shm/shm.h"
#include "http_client.h"
#include "http_fixture.h"
#include "server_thread.h"

namespace {

using namespace std::chrono_literals;
using test_http::Response;

shm::SnapshotBuilder small_snapshot() {
  shm::SnapshotBuilder b;
  const std::string key = R"(cpu{host="a"})";
  b.add(ingest::series_record_key(key), R"({"key":"cpu{host=\"a\"}","count":1})");
  b.add(ingest::metric_record_key("cpu"), R"({"metric":"cpu","series_count":1,"series":["cpu{host=\"a\"}"]})");
  b.add_list(ingest::metric_record_key("cpu"), std::vector<std::string>{ingest::series_record_key(key)});
  b.add(ingest::kMetricsRecord, R"({"metrics":[{"metric":"cpu","series_count":1}]})");
  return b;
}

std::string unique_name() {
  static int n = 0;
  return "tdui-" + std::to_string(getpid()) + "-" + std::to_string(++n);
}

// A store (published or not) and one reader's HttpServer on slot 1, on a thread.
struct Fixture : http_fixture::StoreSite {
  explicit Fixture(bool publish = true, server::ReaderOptions opt = {}) : StoreSite(unique_name(), 64) {
    if (publish) generation = writer->publish(small_snapshot());

    opt.listen_fd = listen_fd;
    opt.slot = 1;
    server = std::make_unique<test_server::ServerThread>(*store, opt);
  }
  ~Fixture() { server.reset(); }

  uint64_t generation = 0;
  std::unique_ptr<test_server::ServerThread> server;
};

// One request on a fresh connection (Connection: close).
Response request(uint16_t port, const std::string& method, const std::string& target, const std::string& extra = "") {
  int fd = test_server::connect_loopback(port);
  test_http::send_all(fd, method + " " + target + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + extra + "\r\n");
  std::string buf;
  std::optional<Response> r = test_http::read_response(fd, buf, method == "HEAD");
  close(fd);
  REQUIRE(r);
  return *r;
}

Response get(uint16_t port, const std::string& target, const std::string& extra = "") {
  return request(port, "GET", target, extra);
}

std::string source_file(const std::string& name) {
  std::ifstream f(std::string(UI_SOURCE_DIR) + "/" + name, std::ios::binary);
  REQUIRE(f);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// The value of ?v= in the page's reference to /ui/NAME.
std::string version_in_page(const std::string& page, const std::string& name) {
  const std::string ref = "\"/ui/" + name + "?v=";
  size_t at = page.find(ref);
  REQUIRE(at != std::string::npos);
  at += ref.size();
  return page.substr(at, page.find('"', at) - at);
}

}  // namespace

TEST_CASE("/ui: the page, with a strong ETag, no-cache and a CSP of 'self' only", "[ui]") {
  Fixture f;
  Response r = get(f.port, "/ui");
  CHECK(r.status == 200);
  CHECK(r.header("content-type") == "text/html; charset=utf-8");
  CHECK(r.header("cache-control") == "no-cache");
  const std::string etag = r.header("etag");
  CHECK(etag.size() == 18);
  CHECK(etag.front() == '"');
  const std::string csp = r.header("content-security-policy");
  CHECK(csp.find("default-src 'self'") != std::string::npos);
  CHECK(csp.find("unsafe") == std::string::npos);
  CHECK(csp.find("http") == std::string::npos);
  CHECK(r.header("x-content-type-options") == "nosniff");
  CHECK(r.body.find("<title>telemetryd</title>") != std::string::npos);
  CHECK(r.body.find("<script src=\"/ui/app.js?v=") != std::string::npos);
  CHECK(r.body.find("<script>") == std::string::npos);  // nothing inline: the CSP would refuse it
  CHECK(r.body.find("style=") == std::string::npos);

  CHECK(get(f.port, "/ui/").body == r.body);
  CHECK(get(f.port, "/ui/index.html").body == r.body);
  Response head = request(f.port, "HEAD", "/ui");
  CHECK(head.status == 200);
  CHECK(head.body.empty());
  CHECK(head.header("content-length") == std::to_string(r.body.size()));

  Response again = get(f.port, "/ui", "If-None-Match: " + etag + "\r\n");
  CHECK(again.status == 304);
  CHECK(again.body.empty());
  CHECK(again.header("etag") == etag);
  CHECK(again.header("cache-control") == "no-cache");
  CHECK(get(f.port, "/ui", "If-None-Match: \"0000000000000000\"\r\n").status == 200);
}

TEST_CASE("/ui: served before the first snapshot too", "[ui]") {
  Fixture f(false);
  Response r = get(f.port, "/ui");
  CHECK(r.status == 200);
  CHECK(r.header("x-snapshot-generation") == "0");
  CHECK(get(f.port, "/ui/app.js").status == 200);
}

TEST_CASE("/ui: the script and stylesheet, byte for byte, versioned and cached for long", "[ui]") {
  Fixture f;
  const std::string page = get(f.port, "/ui").body;
  const std::map<std::string, std::string> types = {{"app.js", "text/javascript; charset=utf-8"},
                                                    {"style.css", "text/css; charset=utf-8"}};
  for (const auto& [name, type] : types) {
    INFO(name);
    Response r = get(f.port, "/ui/" + name + "?v=" + version_in_page(page, name));
    CHECK(r.status == 200);
    CHECK(r.header("content-type") == type);
    CHECK(r.header("cache-control") == "public, max-age=31536000, immutable");
    CHECK(r.header("content-security-policy").find("default-src 'self'") != std::string::npos);
    CHECK(r.body == source_file(name));
    // The version in the page and the ETag are the same content hash.
    const std::string etag = r.header("etag");
    CHECK(etag.substr(1, 12) == version_in_page(page, name));
    Response again = get(f.port, "/ui/" + name, "If-None-Match: " + etag + "\r\n");
    CHECK(again.status == 304);
    CHECK(again.body.empty());
    CHECK(again.header("cache-control") == "public, max-age=31536000, immutable");
  }
  CHECK(get(f.port, "/ui/favicon.svg").header("content-type") == "image/svg+xml");
}

TEST_CASE("/ui: unknown files and other methods", "[ui]") {
  Fixture f;
  for (const char* target : {"/ui/x", "/uix", "/ui/app.js/x", "/ui/../etc/passwd", "/ui//app.js", "/ui/APP.JS"}) {
    INFO(target);
    Response r = get(f.port, target);
    CHECK(r.status == 404);
    CHECK(r.header("content-type") == "application/json");
  }
  CHECK(request(f.port, "POST", "/ui").status == 405);
  CHECK(request(f.port, "DELETE", "/v1/status").status == 405);
}

TEST_CASE("/v1/status: the service's state, with the sources the writer set", "[ui]") {
  Fixture f;
  f.writer->set_source_count(2);
  shm::SourceStatus good;
  good.url = "http://10.0.0.5:9100/metrics.json";
  good.format = "native";
  good.last_status = 200;
  good.last_fetch_ns = shm::realtime_ns();
  good.samples = 1234;
  good.bytes = 99;
  f.writer->set_source_status(0, good);
  shm::SourceStatus bad;
  bad.url = "file:///var/lib/app/metrics.json";
  bad.format = "native";
  bad.last_fetch_ns = shm::realtime_ns();
  bad.errors = 3;
  bad.dropped = 7;
  // An error cut inside a character (as the writer's fixed-size slot may cut it).
  bad.last_error = "parse: invalid JSON near \"caf\xC3";
  bad.last_error_ns = bad.last_fetch_ns;
  f.writer->set_source_status(1, bad);

  Response r = get(f.port, "/v1/status");
  REQUIRE(r.status == 200);
  CHECK(r.header("content-type") == "application/json");
  CHECK(r.header("cache-control") == "no-store");
  CHECK(r.header("x-snapshot-generation") == std::to_string(f.generation));
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  REQUIRE(parser.parse(r.body).get(doc) == simdjson::SUCCESS);  // valid JSON and UTF-8

  CHECK(std::string_view(doc["status"]) == "ok");
  CHECK(uint64_t(doc["generation"]) == f.generation);
  CHECK(std::string_view(doc["built_at"]).size() == 24);  // 2026-11-27T16:39:07.123Z
  CHECK(double(doc["age_s"]) >= 0);
  CHECK(double(doc["age_s"]) < 60);
  CHECK(double(doc["healthz_max_age_s"]) == 10.0);
  CHECK(doc["interval_s"].is_null());  // no writer has said its interval yet
  CHECK(uint64_t(doc["publishes"]) == 1);
  CHECK(uint64_t(doc["publish_skipped"]) == 0);
  CHECK(uint64_t(doc["snapshot_records"]) == 3);
  CHECK(doc["cluster"].is_null());

  CHECK(int64_t(doc["writer"]["pid"]) == getpid());  // the Writer of this process
  CHECK(std::string_view(doc["writer"]["state"]) == "running");
  simdjson::dom::array readers = doc["readers"];
  REQUIRE(readers.size() == 1);
  CHECK(uint64_t(readers.at(0)["slot"]) == 1);
  CHECK(int64_t(readers.at(0)["pid"]) == getpid());
  CHECK(std::string_view(readers.at(0)["state"]) == "running");
  CHECK(uint64_t(readers.at(0)["connections_open"]) == 1);  // this request's
  CHECK(uint64_t(readers.at(0)["heartbeat_age_ms"]) < 5000);
  for (const char* k : {"writer", "reader"}) {
    CHECK(uint64_t(doc["restarts"][k]) == 0);
    CHECK(uint64_t(doc["watchdog_kills"][k]) == 0);
  }

  simdjson::dom::array sources = doc["sources"];
  REQUIRE(sources.size() == 2);
  simdjson::dom::element s0 = sources.at(0), s1 = sources.at(1);
  CHECK(std::string_view(s0["url"]) == good.url);
  CHECK(std::string_view(s0["format"]) == "native");
  CHECK(std::string_view(s0["state"]) == "ok");
  CHECK(int64_t(s0["last_status"]) == 200);
  CHECK(s0["last_error"].is_null());
  CHECK(s0["last_error_at"].is_null());
  CHECK(uint64_t(s0["samples"]) == 1234);
  CHECK(uint64_t(s0["errors"]) == 0);
  CHECK(std::string_view(s0["last_fetch"]).ends_with("Z"));
  CHECK(std::string_view(s1["state"]) == "failing");
  CHECK(std::string_view(s1["last_error"]) == "parse: invalid JSON near \"caf\xEF\xBF\xBD");
  CHECK(uint64_t(s1["errors"]) == 3);
  CHECK(uint64_t(s1["dropped"]) == 7);
  CHECK(int64_t(s1["last_status"]) == 0);

  // The next fetch of the failing source succeeds: the state follows.
  bad.last_error.clear();
  f.writer->set_source_status(1, bad);
  simdjson::dom::element again;
  REQUIRE(parser.parse(get(f.port, "/v1/status").body).get(again) == simdjson::SUCCESS);
  CHECK(std::string_view(again["sources"].at(1)["state"]) == "ok");
  CHECK(uint64_t(again["readers"].at(0)["requests"]) >= 1);  // the first status request
}

TEST_CASE("/v1/status: no snapshot yet, and a snapshot older than healthz-max-age", "[ui]") {
  {
    Fixture f(false);
    Response r = get(f.port, "/v1/status");
    REQUIRE(r.status == 200);
    simdjson::dom::parser parser;
    simdjson::dom::element doc = parser.parse(r.body);
    CHECK(std::string_view(doc["status"]) == "no snapshot");
    CHECK(uint64_t(doc["generation"]) == 0);
    CHECK(doc["built_at"].is_null());
    CHECK(doc["age_s"].is_null());
    CHECK(simdjson::dom::array(doc["sources"]).size() == 0);
  }
  server::ReaderOptions opt;
  opt.healthz_max_age = 0ms;
  Fixture f(true, opt);
  simdjson::dom::parser parser;
  simdjson::dom::element doc = parser.parse(get(f.port, "/v1/status").body);
  CHECK(std::string_view(doc["status"]) == "stale");
  CHECK(double(doc["healthz_max_age_s"]) == 0.0);
}
