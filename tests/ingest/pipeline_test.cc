// pipeline_test.cc: the fetch loop against a local HTTP upstream on 127.0.0.1 (an evhttp
// server on the same event base): good bodies, error statuses, refused connections,
// hanging and trickling upstreams, oversized bodies; file:// and synthetic:// sources;
// reconfiguration.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>

#include <fmt/format.h>

#include "ingest/ingest.h"
#include "test_util.h"

using namespace ingest;
using namespace ingest_test;

namespace {

// A body that arrives one byte every 50 ms, for ever (until the client hangs up).
struct Trickle {
  evhttp_request* req = nullptr;
  event* timer = nullptr;
  bool closed = false;
};

class Upstream {
 public:
  explicit Upstream(event_base* base) : base_(base), http_(evhttp_new(base)) {
    handle_ = evhttp_bind_socket_with_handle(http_, "127.0.0.1", 0);
    REQUIRE(handle_);
    sockaddr_in addr{};
    socklen_t len = sizeof addr;
    getsockname(evhttp_bound_socket_get_fd(handle_), reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    evhttp_set_gencb(http_, &Upstream::handle, this);
  }
  ~Upstream() {
    for (auto& t : trickles_) {
      if (t->timer) event_free(t->timer);
    }
    evhttp_free(http_);
  }
  std::string url(std::string_view path) const {
    return fmt::format("http://127.0.0.1:{}{}", port_, path);
  }
  std::string native_body = R"({"samples":[{"metric":"up","labels":{"src":"http"},"value":1}]})";
  std::string otlp_body = read_file(data_path("good/otlp.json"));
  int hits = 0;
  std::string last_host;
  int port() const { return port_; }

 private:
  static void handle(evhttp_request* req, void* arg) {
    auto* self = static_cast<Upstream*>(arg);
    ++self->hits;
    std::string_view path = evhttp_request_get_uri(req);
    evbuffer* out = evbuffer_new();
    const char* host = evhttp_find_header(evhttp_request_get_input_headers(req), "Host");
    self->last_host = host ? host : "";
    if (path == "/native") {
      evbuffer_add(out, self->native_body.data(), self->native_body.size());
      evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                        "application/json");
      evhttp_send_reply(req, 200, "OK", out);
    } else if (path == "/otlp") {
      evbuffer_add(out, self->otlp_body.data(), self->otlp_body.size());
      evhttp_send_reply(req, 200, "OK", out);
    } else if (path == "/broken") {
      evbuffer_add_printf(out, "{\"samples\":[{\"metric\":\"x\",\"value\":");
      evhttp_send_reply(req, 200, "OK", out);
    } else if (path == "/big") {
      std::string big(4096, ' ');
      big.insert(0, "[]");
      evbuffer_add(out, big.data(), big.size());
      evhttp_send_reply(req, 200, "OK", out);
    } else if (path == "/error") {
      evhttp_send_reply(req, 503, "Unavailable", out);
    } else if (path == "/hang") {
      // never answered
    } else if (path == "/trickle") {
      self->start_trickle(req);
    } else {
      evhttp_send_reply(req, 404, "Not Found", out);
    }
    evbuffer_free(out);
  }

  void start_trickle(evhttp_request* req) {
    auto t = std::make_unique<Trickle>();
    t->req = req;
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), &Upstream::closed,
                                  t.get());
    evhttp_send_reply_start(req, 200, "OK");
    t->timer = event_new(base_, -1, EV_PERSIST, &Upstream::drip, t.get());
    timeval tv{0, 50'000};
    event_add(t->timer, &tv);
    trickles_.push_back(std::move(t));
  }
  static void drip(evutil_socket_t, short, void* arg) {
    auto* t = static_cast<Trickle*>(arg);
    if (t->closed) {
      event_del(t->timer);
      return;
    }
    evbuffer* chunk = evbuffer_new();
    evbuffer_add(chunk, " ", 1);
    evhttp_send_reply_chunk(t->req, chunk);
    evbuffer_free(chunk);
  }
  static void closed(evhttp_connection*, void* arg) { static_cast<Trickle*>(arg)->closed = true; }

  event_base* base_;
  evhttp* http_;
  evhttp_bound_socket* handle_ = nullptr;
  int port_ = 0;
  std::vector<std::unique_ptr<Trickle>> trickles_;
};

// A loopback port nothing listens on: bound, then closed.
int refused_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

struct Base {
  event_base* base = event_base_new();
  ~Base() { event_base_free(base); }
};

struct Published {
  int count = 0;
  std::vector<std::byte> snapshot;
  std::vector<shm::SourceStatus> statuses;
};

PublishFn recorder(Published& p) {
  return [&p](const shm::SnapshotBuilder& b, const std::vector<shm::SourceStatus>& s) {
    ++p.count;
    p.snapshot = b.serialize(static_cast<uint64_t>(p.count), 0);
    p.statuses = s;
  };
}

const shm::SourceStatus& status_of(const Published& p, const std::string& url) {
  for (const auto& s : p.statuses)
    if (s.url == url) return s;
  FAIL("no status for " << url);
  return p.statuses.front();
}

}  // namespace

TEST_CASE("one tick fetches every source - bad ones fail alone and within the timeout") {
  Base b;
  auto upstream = std::make_unique<Upstream>(b.base);
  Config c;
  c.source_timeout = std::chrono::milliseconds(300);
  c.max_body_bytes = 1024;
  const std::string refused = fmt::format("http://127.0.0.1:{}/native", refused_port());
  c.sources = {upstream->url("/native"), upstream->url("/otlp"),   upstream->url("/error"),
               upstream->url("/hang"),   upstream->url("/trickle"), upstream->url("/big"),
               upstream->url("/broken"), refused,
               "file://" + data_path("good/native.json"),
               "file:///nonexistent/telemetryd.json",
               "synthetic://?hosts=3&metrics=4&seed=9"};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  auto started = std::chrono::steady_clock::now();
  pipeline.run_once();
  auto took = std::chrono::steady_clock::now() - started;
  CHECK(took < std::chrono::seconds(10));  // generous: bounded by the 300 ms deadlines
  REQUIRE(pub.count == 1);
  REQUIRE(pub.statuses.size() == c.sources.size());

  const auto& native = status_of(pub, upstream->url("/native"));
  CHECK(native.last_status == 200);
  CHECK(native.format == "native");
  CHECK(native.samples == 1);
  CHECK(native.errors == 0);
  CHECK(native.last_error.empty());
  CHECK(native.bytes == upstream->native_body.size());
  CHECK(upstream->last_host == fmt::format("127.0.0.1:{}", upstream->port()));

  // The test files' timestamps are from 2024: older than the window, so dropped.
  const auto& otlp = status_of(pub, upstream->url("/otlp"));
  CHECK(otlp.format == "otlp");
  CHECK(otlp.samples == 1);
  CHECK(otlp.dropped == 4);

  auto failed = [&](const std::string& url, std::string_view text) {
    const auto& s = status_of(pub, url);
    INFO(url << ": " << s.last_error);
    CHECK(s.errors == 1);
    CHECK(s.samples == 0);
    CHECK(s.last_error.find(text) != std::string::npos);
    CHECK(s.last_error_ns > 0);
  };
  failed(upstream->url("/error"), "HTTP status 503");
  CHECK(status_of(pub, upstream->url("/error")).last_status == 503);
  failed(upstream->url("/hang"), "timeout after 300ms");
  failed(upstream->url("/trickle"), "timeout after 300ms");
  failed(upstream->url("/big"), "max_body_bytes");
  failed(upstream->url("/broken"), "parse: ");
  failed(refused, "connection");
  failed("file:///nonexistent/telemetryd.json", "cannot open");

  CHECK(status_of(pub, "file://" + data_path("good/native.json")).samples == 2);
  CHECK(status_of(pub, "file://" + data_path("good/native.json")).dropped == 1);
  CHECK(status_of(pub, "synthetic://?hosts=3&metrics=4&seed=9").samples == 12);

  shm::SnapshotView view(pub.snapshot);
  CHECK(view.find(series_record_key("up{src=\"http\"}")));
  CHECK(view.find(series_record_key("cpu.temp{dc=\"eu\",host=\"h2\"}")));
  CHECK(view.list(kSeriesList).size() == pipeline.aggregator().series_count());
}

TEST_CASE("a failing source keeps its earlier data - recovery counts again") {
  Base b;
  Upstream upstream(b.base);
  Config c;
  c.source_timeout = std::chrono::milliseconds(300);
  c.sources = {upstream.url("/native")};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  pipeline.run_once();
  REQUIRE(pipeline.aggregator().series("up{src=\"http\"}"));
  upstream.native_body = "{\"samples\":[";  // now broken
  pipeline.run_once();
  CHECK(pub.statuses[0].errors == 1);
  CHECK(pub.statuses[0].last_error.find("parse") != std::string::npos);
  CHECK(pipeline.aggregator().series("up{src=\"http\"}")->count == 1);
  CHECK(shm::SnapshotView(pub.snapshot).find(series_record_key("up{src=\"http\"}")));
  upstream.native_body = R"([{"metric":"up","labels":{"src":"http"},"value":1}])";
  pipeline.run_once();
  CHECK(pub.statuses[0].last_error.empty());
  CHECK(pub.statuses[0].errors == 1);  // a total, kept
}

TEST_CASE("start() ticks on the interval - stop() ends it") {
  Base b;
  Config c;
  c.interval = std::chrono::milliseconds(20);
  c.window = std::chrono::milliseconds(1000);
  c.sources = {"synthetic://?hosts=2&metrics=2"};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  pipeline.start();
  CHECK(pub.count == 1);  // the first tick runs at once (synchronous sources)
  for (int i = 0; i < 1000 && pub.count < 4; ++i) event_base_loop(b.base, EVLOOP_ONCE);
  CHECK(pub.count >= 4);
  pipeline.stop();
  int after = pub.count;
  event_base_loop(b.base, EVLOOP_NONBLOCK);
  CHECK(pub.count == after);
}

TEST_CASE("reconfigure keeps unchanged sources / drops removed ones / rejects bad configs") {
  Base b;
  Config c = small_config();
  const std::string file = "file://" + data_path("good/native.json");
  const std::string synth = "synthetic://?hosts=2&metrics=3";
  c.sources = {file, synth};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  pipeline.run_once();
  CHECK(pipeline.aggregator().series_count() == 2 + 6);  // the file's 2024 sample is too old

  Config bad = c;
  bad.sources = {file, "gopher://x"};
  CHECK_THROWS_AS(pipeline.reconfigure(bad), std::invalid_argument);
  Config bad_interval = c;
  bad_interval.interval = std::chrono::milliseconds(0);
  CHECK_THROWS_AS(pipeline.reconfigure(bad_interval), std::invalid_argument);
  CHECK(pipeline.config().sources.size() == 2);

  Config next = c;
  next.sources = {"synthetic://?hosts=1&metrics=1", file};
  next.window = std::chrono::milliseconds(20000);
  pipeline.reconfigure(next);
  CHECK(pipeline.aggregator().series_count() == 2);  // the old synthetic series are gone
  CHECK(pipeline.aggregator().series("up")->count == 1);  // the file's series kept
  pipeline.run_once();
  REQUIRE(pub.statuses.size() == 2);
  CHECK(pub.statuses[0].url == "synthetic://?hosts=1&metrics=1");
  CHECK(pub.statuses[1].url == file);
  CHECK(pub.statuses[1].samples == 2 + 2);  // counters kept; 2 new samples without ts
  CHECK(pipeline.config().window == std::chrono::milliseconds(20000));
}

TEST_CASE("bad source URLs are refused when the pipeline is made") {
  Base b;
  for (const char* url : {"ftp://x", "file://relative", "http://", "synthetic://?hosts=0",
                          "synthetic://?bogus=1", "synthetic://?hosts=abc"}) {
    INFO(url);
    Config c;
    c.sources = {url};
    CHECK_THROWS_AS(Pipeline(b.base, c, nullptr), std::invalid_argument);
  }
}

TEST_CASE("the synthetic source is deterministic for a seed and realistic in shape") {
  Base b;
  auto run = [&](const char* url) {
    Config c;
    c.sources = {url};
    Published pub;
    Pipeline p(b.base, c, recorder(pub));
    p.run_once();
    shm::SnapshotView view(pub.snapshot);
    std::vector<std::string> bodies;
    for (const auto& r : view.list(kSeriesList)) {
      std::string body(r.value);
      bodies.push_back(body.substr(0, body.find("\"first_ts\"")));  // ts differ per run
    }
    return bodies;
  };
  auto a = run("synthetic://?hosts=5&metrics=12&seed=3");
  auto again = run("synthetic://?hosts=5&metrics=12&seed=3");
  auto other = run("synthetic://?hosts=5&metrics=12&seed=4");
  CHECK(a.size() == 60);
  CHECK(a == again);
  CHECK(a != other);
  CHECK(a[0].find("\"labels\":{\"dc\":") != std::string::npos);
}
