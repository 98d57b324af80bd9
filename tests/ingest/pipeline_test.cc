// pipeline_test.cc: the fetch loop against local HTTP upstreams on 127.0.0.1 (an evhttp
// server, and a plain-socket one for what evhttp will not send, on the same event
// base): good bodies, error statuses, refused connections, hanging and trickling
// upstreams, oversized bodies and heads, many large bodies at once; file:// sources
// (a FIFO nobody writes) and synthetic:// ones; reconfiguration.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>

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
  std::string prom_body = "# TYPE prom_up gauge\nprom_up{job=\"a\"} 1\nprom_up{job=\"b\"} 0\n";
  int hits = 0;
  std::string last_host;
  std::map<std::string, std::string> accept;  // by request target
  int port() const { return port_; }

 private:
  static void handle(evhttp_request* req, void* arg) {
    auto* self = static_cast<Upstream*>(arg);
    ++self->hits;
    std::string_view path = evhttp_request_get_uri(req);
    evbuffer* out = evbuffer_new();
    const char* host = evhttp_find_header(evhttp_request_get_input_headers(req), "Host");
    self->last_host = host ? host : "";
    const char* accept = evhttp_find_header(evhttp_request_get_input_headers(req), "Accept");
    self->accept[std::string(path)] = accept ? accept : "";
    if (path == "/native") {
      evbuffer_add(out, self->native_body.data(), self->native_body.size());
      evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                        "application/json");
      evhttp_send_reply(req, 200, "OK", out);
    } else if (path == "/prom" || path.rfind("/octet", 0) == 0) {
      // Each /octet target its own series, so that sources do not share them.
      std::string body = path == "/prom" ? self->prom_body
                                         : fmt::format("octet_up{{uri=\"{0}\"}} 1\n"
                                                       "octet_up{{uri=\"{0}\",n=\"2\"}} 0\n",
                                                       path);
      evbuffer_add(out, body.data(), body.size());
      evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                        path == "/prom" ? "text/plain; version=0.0.4; charset=utf-8"
                                        : "application/octet-stream");
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

// A plain-socket upstream, for what an evhttp server cannot be made to send. Each
// connection gets `response` (or by_path[its request's path]) once its request has
// arrived, then, when `repeat` is not empty, `repeat` again and again until the client
// hangs up; then it is closed. Nothing is answered until `hold_until` requests are
// waiting, so that the answers stream at the same time.
class RawUpstream {
 public:
  explicit RawUpstream(event_base* base) : base_(base) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(listen(listen_fd_, 64) == 0);
    socklen_t len = sizeof addr;
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    accept_ = event_new(base, listen_fd_, EV_READ | EV_PERSIST, &RawUpstream::on_accept, this);
    event_add(accept_, nullptr);
  }
  ~RawUpstream() {
    for (auto& c : conns_) close_conn(*c);
    event_free(accept_);
    close(listen_fd_);
  }
  std::string url(std::string_view path = "/") const {
    return fmt::format("http://127.0.0.1:{}{}", port_, path);
  }

  std::string response, repeat;
  std::map<std::string, std::string, std::less<>> by_path;
  size_t hold_until = 1;

 private:
  struct Conn {
    RawUpstream* owner;
    int fd = -1;
    event* ev = nullptr;
    std::string request, out;
    size_t sent = 0;
    bool requested = false, answering = false;
  };

  static void on_accept(evutil_socket_t fd, short, void* arg) {
    auto* self = static_cast<RawUpstream*>(arg);
    int c = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0) return;
    auto conn = std::make_unique<Conn>();
    conn->owner = self;
    conn->fd = c;
    conn->ev = event_new(self->base_, c, EV_READ | EV_PERSIST, &RawUpstream::on_io, conn.get());
    event_add(conn->ev, nullptr);
    self->conns_.push_back(std::move(conn));
  }

  static void on_io(evutil_socket_t, short, void* arg) {
    auto& c = *static_cast<Conn*>(arg);
    RawUpstream& self = *c.owner;
    if (!c.answering) {
      char buf[4096];
      ssize_t n = recv(c.fd, buf, sizeof buf, 0);
      if (n <= 0 || c.request.size() > 65536) return close_conn(c);
      c.request.append(buf, static_cast<size_t>(n));
      if (!c.requested && c.request.find("\r\n\r\n") != std::string::npos) {
        c.requested = true;
        if (++self.requests_ >= self.hold_until)
          for (auto& other : self.conns_)
            if (other->requested && !other->answering && other->fd >= 0) self.answer(*other);
      }
      return;
    }
    while (c.sent < c.out.size()) {
      ssize_t n = send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EAGAIN) return;
      if (n <= 0) return close_conn(c);
      c.sent += static_cast<size_t>(n);
      if (c.sent == c.out.size() && !self.repeat.empty()) {
        c.out = self.repeat;
        c.sent = 0;
      }
    }
    close_conn(c);
  }

  void answer(Conn& c) {
    c.answering = true;
    std::string_view target(c.request);  // "GET /path HTTP/1.1"
    target = target.substr(target.find(' ') + 1);
    auto it = by_path.find(target.substr(0, target.find(' ')));
    c.out = it == by_path.end() ? response : it->second;
    event_del(c.ev);
    event_assign(c.ev, base_, c.fd, EV_WRITE | EV_PERSIST, &RawUpstream::on_io, &c);
    event_add(c.ev, nullptr);
  }

  static void close_conn(Conn& c) {
    if (c.fd < 0) return;
    event_free(c.ev);
    close(c.fd);
    c.fd = -1;
    std::string().swap(c.out);
  }

  event_base* base_;
  int listen_fd_ = -1;
  int port_ = 0;
  event* accept_ = nullptr;
  size_t requests_ = 0;
  std::vector<std::unique_ptr<Conn>> conns_;
};

std::string http_response(std::string_view body) {
  return fmt::format("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n"
                     "Connection: close\r\n\r\n{}",
                     body.size(), body);
}

// The body as one chunk of chunked transfer encoding: evhttp holds a chunk until it has
// all of it.
std::string one_chunk_response(std::string_view body) {
  return fmt::format("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     "{:x}\r\n{}\r\n0\r\n\r\n",
                     body.size(), body);
}

// A native body of at least `bytes` bytes, every sample of metric `metric`{src=src}.
std::string samples_body(std::string_view metric, std::string_view src, size_t bytes) {
  std::string sample = fmt::format(R"({{"metric":"{}","labels":{{"src":"{}"}},"value":1}})", metric, src);
  std::string body = "[" + sample;
  while (body.size() < bytes) body.append(",").append(sample);
  return body + "]";
}

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
  return [&p](const shm::SnapshotBuilder& b, const std::vector<shm::SourceStatus>& s, uint64_t) {
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

TEST_CASE("a response head that never ends is cut off at kMaxResponseHeaderBytes") {
  Base b;
  RawUpstream endless_headers(b.base);
  endless_headers.response = "HTTP/1.1 200 OK\r\n";
  endless_headers.repeat = "X-Filler: " + std::string(1000, 'a') + "\r\n";
  RawUpstream endless_status(b.base);
  endless_status.response = "HTTP/1.1 200 ";
  endless_status.repeat = std::string(4096, 'a');
  Upstream good(b.base);
  Config c;
  c.source_timeout = std::chrono::milliseconds(3000);  // generous: the limit comes first
  c.max_body_bytes = 1 << 20;
  c.sources = {endless_headers.url(), endless_status.url(), good.url("/native")};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  pipeline.run_once();
  for (const std::string& url : {endless_headers.url(), endless_status.url()}) {
    const auto& s = status_of(pub, url);
    INFO(url << ": " << s.last_error);
    CHECK(s.errors == 1);
    CHECK(s.last_error == fmt::format("response headers over {} bytes", kMaxResponseHeaderBytes));
  }
  CHECK(status_of(pub, good.url("/native")).last_error.empty());
  CHECK(status_of(pub, good.url("/native")).samples == 1);
  // Each stopped at the limit plus one socket read, not at the deadline.
  CHECK(pipeline.fetch_memory_peak() < 4 * kMaxResponseHeaderBytes);
}

TEST_CASE("a large body leaves no large buffer behind once its tick is over") {
  Base b;
  RawUpstream sized(b.base), chunked(b.base);
  sized.response = http_response(samples_body("big", "sized", 8 << 20));
  chunked.response = one_chunk_response(samples_body("big", "chunked", 8 << 20));
  Config c;
  c.source_timeout = std::chrono::milliseconds(30000);
  c.max_body_bytes = 16 << 20;
  c.fetch_memory_limit = 64 << 20;
  c.sources = {sized.url(), chunked.url()};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  pipeline.run_once();
  for (const auto& s : pub.statuses) {
    INFO(s.url << ": " << s.last_error);
    CHECK(s.last_error.empty());
    CHECK(s.bytes > (8 << 20));
  }
  CHECK(pipeline.aggregator().series("big{src=\"sized\"}"));
  CHECK(pipeline.aggregator().series("big{src=\"chunked\"}"));
  // Kept between ticks: at most 1 MiB per source body, 8 MiB of parser buffers.
  CHECK(pipeline.buffer_bytes() <= (2 << 20) + (8 << 20));
  CHECK(pipeline.fetch_memory_peak() > (8 << 20));
}

TEST_CASE("fetches in flight together hold at most fetch_memory_limit - a fetch that would pass it fails alone") {
  Base b;
  constexpr size_t kLimit = 4 << 20;
  RawUpstream upstream(b.base);
  Config c;
  c.source_timeout = std::chrono::milliseconds(30000);
  c.max_body_bytes = kLimit;
  c.fetch_memory_limit = kLimit;
  for (int i = 0; i < 4; ++i) {
    std::string path = fmt::format("/{}", i);
    upstream.by_path[path] =
        http_response(fmt::format(R"([{{"metric":"up","labels":{{"src":"{}"}},"value":1}}])", i));
    c.sources.push_back(upstream.url(path));
  }
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  pipeline.run_once();
  for (const auto& s : pub.statuses) CHECK(s.last_error.empty());

  // Now four bodies of 3 MiB, answered together: 12 MiB against a limit of 4. Two come
  // with a Content-Length, two as one chunk each (which evhttp holds until it is
  // complete: counted all the same).
  for (int i = 0; i < 4; ++i) {
    std::string body = samples_body("big", std::to_string(i), 3 << 20);
    upstream.by_path[fmt::format("/{}", i)] = i % 2 ? one_chunk_response(body) : http_response(body);
  }
  upstream.hold_until = 4 + 4;  // the four requests of this tick
  pipeline.run_once();
  int failed = 0;
  for (int i = 0; i < 4; ++i) {
    const auto& s = pub.statuses[i];
    INFO(s.url << ": " << s.last_error);
    std::string up = fmt::format("up{{src=\"{}\"}}", i);
    std::string big = fmt::format("big{{src=\"{}\"}}", i);
    if (s.last_error.empty()) {
      CHECK(pipeline.aggregator().series(big));
    } else {
      ++failed;
      CHECK(s.last_error.rfind("over fetch_memory_limit: ", 0) == 0);
      CHECK_FALSE(pipeline.aggregator().series(big));
    }
    // The last good data of every source is kept, failed or not.
    CHECK(shm::SnapshotView(pub.snapshot).find(series_record_key(up)));
  }
  CHECK(failed >= 1);  // they stream at once, and 3 MiB + 3 MiB never fit in 4
  CHECK(pipeline.fetch_memory_peak() <= kLimit);
  CHECK(pipeline.fetch_memory_peak() > kLimit / 2);
}

namespace {

// A FIFO in a directory of its own, removed with it.
struct Fifo {
  std::string dir, path;
  Fifo() {
    char name[] = "/tmp/telemetryd-fifo-XXXXXX";
    REQUIRE(mkdtemp(name));
    dir = name;
    path = dir + "/fifo";
    REQUIRE(mkfifo(path.c_str(), 0600) == 0);
  }
  ~Fifo() {
    unlink(path.c_str());
    rmdir(dir.c_str());
  }
  std::string url() const { return "file://" + path; }
};

// Bounds how long a reader that blocks on a FIFO can hang a test: unless stopped
// within `after`, it opens the FIFO for writing and closes it again (an end of file
// for whoever waits to read it), over and over until it is stopped.
class FifoWatchdog {
 public:
  FifoWatchdog(const std::string& path, std::chrono::seconds after)
      : thread_([this, path, after] {
          std::unique_lock lock(mu_);
          if (cv_.wait_for(lock, after, [this] { return stop_; })) return;
          while (!stop_) {
            lock.unlock();
            int fd = open(path.c_str(), O_WRONLY | O_NONBLOCK);  // ENXIO while nobody reads
            if (fd >= 0) close(fd);
            lock.lock();
            cv_.wait_for(lock, std::chrono::milliseconds(10), [this] { return stop_; });
          }
        }) {}
  ~FifoWatchdog() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace

TEST_CASE("a file source on a FIFO nobody writes times out alone - the others are fetched and published every tick") {
  Fifo fifo;
  FifoWatchdog watchdog(fifo.path, std::chrono::seconds(30));
  Base b;
  Upstream upstream(b.base);
  const std::string synthetic = "synthetic://?hosts=2&metrics=2";
  Config c;
  c.source_timeout = std::chrono::milliseconds(300);
  c.sources = {fifo.url(), upstream.url("/native"), synthetic};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  for (int tick = 1; tick <= 3; ++tick) {
    pipeline.run_once();
    REQUIRE(pub.count == tick);
    const auto& read = status_of(pub, fifo.url());
    INFO(read.last_error);
    CHECK(read.last_error == "timeout after 300ms");
    CHECK(read.errors == static_cast<uint64_t>(tick));
    CHECK(status_of(pub, upstream.url("/native")).last_error.empty());
    CHECK(status_of(pub, upstream.url("/native")).samples == static_cast<uint64_t>(tick));
    CHECK(status_of(pub, synthetic).samples == static_cast<uint64_t>(4 * tick));
  }
}

TEST_CASE("destroying a pipeline does not wait for a file read blocked on a FIFO") {
  Fifo fifo;
  FifoWatchdog watchdog(fifo.path, std::chrono::seconds(30));
  Base b;
  Config c;
  c.source_timeout = std::chrono::milliseconds(60000);
  c.sources = {fifo.url(), "synthetic://?hosts=1&metrics=1"};
  auto started = std::chrono::steady_clock::now();
  {
    Pipeline pipeline(b.base, c, nullptr);
    pipeline.start();  // the FIFO's read is now in flight, for up to a minute
    event_base_loop(b.base, EVLOOP_NONBLOCK);
  }
  // Generous: it takes microseconds; the watchdog ends a blocked test after 30 s.
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(20));
}

// Run by the next test in a process of its own, where every file read spins at its
// start (failpoint ingest.file_read.start=spin), as one stuck in the kernel would.
TEST_CASE("file read stuck - in a child process", "[.]") {
  Base b;
  Config c;
  c.source_timeout = std::chrono::milliseconds(200);
  const std::string path = data_path("good/native.json");
  const std::string synthetic = "synthetic://?hosts=1&metrics=1";
  c.sources = {"file://" + path, synthetic};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  pipeline.run_once();
  CHECK(pub.statuses[0].last_error == "timeout after 200ms");
  pipeline.run_once();
  const std::string& error = pub.statuses[0].last_error;
  INFO(error);
  CHECK(error.rfind("the read of " + path + " started ", 0) == 0);
  CHECK(error.find("ms ago has not ended") != std::string::npos);
  CHECK(pub.statuses[0].errors == 2);
  CHECK(status_of(pub, synthetic).samples == 2);
}

TEST_CASE("a file read that has not ended is reported as such - not started again beside it") {
  int out[2];
  REQUIRE(pipe(out) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    setenv("TELEMETRYD_FAILPOINTS", "ingest.file_read.start=spin", 1);
    execl("/proc/self/exe", "ingest_test", "file read stuck - in a child process", nullptr);
    _exit(127);
  }
  close(out[1]);
  std::string report;
  char buf[4096];
  // The report ends when the child exits (its spinning thread dies with it); it takes
  // two 200 ms ticks, so a minute means it hangs.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    pollfd p{out[0], POLLIN, 0};
    if (poll(&p, 1, 100) == 1) {
      ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      report.append(buf, static_cast<size_t>(n));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      FAIL("the child hangs: " << report);
    }
  }
  close(out[0]);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  INFO(report);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(report.find("All tests passed") != std::string::npos);
}

TEST_CASE("prometheus sources: by Content-Type or by the ?format=prometheus marker - which is not sent upstream") {
  Base b;
  Upstream upstream(b.base);
  Config c = small_config();
  c.source_timeout = std::chrono::milliseconds(300);
  const std::string file =
      "file://" + data_path("prometheus/node_exporter_1.txt") + "?format=prometheus";
  c.sources = {upstream.url("/prom"), upstream.url("/octet?x=1&format=prometheus"),
               upstream.url("/octet?format=prometheus"), upstream.url("/octet"), file};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  pipeline.run_once();
  for (const std::string& url : {upstream.url("/prom"), upstream.url("/octet?x=1&format=prometheus"),
                                upstream.url("/octet?format=prometheus")}) {
    const auto& s = status_of(pub, url);
    INFO(url << ": " << s.last_error);
    CHECK(s.format == "prometheus");
    CHECK(s.samples == 2);
    CHECK(s.errors == 0);
  }
  // Without the marker, an octet-stream body is taken as JSON, which it is not.
  CHECK(status_of(pub, upstream.url("/octet")).last_error.find("parse: invalid JSON") == 0);
  // JSON first, the text formats acceptable too; marked sources ask for text only.
  CHECK(upstream.accept["/prom"] ==
        "application/json, text/plain;version=0.0.4;q=0.5, "
        "application/openmetrics-text;version=1.0.0;q=0.4");
  CHECK(upstream.accept["/octet?x=1"].rfind("text/plain;version=0.0.4", 0) == 0);
  CHECK(upstream.accept.count("/octet"));  // the marker left, nothing else
  CHECK(upstream.accept.size() == 3);
  const auto& f = status_of(pub, file);
  INFO(f.last_error);
  CHECK(f.format == "prometheus");
  CHECK(f.samples > 100);
  CHECK(f.errors == 0);
  CHECK(pipeline.aggregator().series("prom_up{job=\"b\"}")->last == 0);
  CHECK(pipeline.aggregator().series("node_cpu_seconds_total{cpu=\"0\",mode=\"user\"}"));
}

TEST_CASE("a prometheus body with bad lines: line number and reason in last_error - the rest applied - NaN dropped without an error - a repeated series reported") {
  Base b;
  Upstream upstream(b.base);
  Config c = small_config();
  c.source_timeout = std::chrono::milliseconds(300);
  c.sources = {upstream.url("/prom")};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  pipeline.run_once();
  REQUIRE(pub.statuses[0].samples == 2);
  upstream.prom_body = "prom_up{job=\"a\"} 2\nprom_up{job=\"b\"} oops\nprom_nan NaN\n";
  pipeline.run_once();
  const auto& s = pub.statuses[0];
  CHECK(s.last_error == "1 lines rejected, first: line 2: invalid value");
  CHECK(s.errors == 1);
  CHECK(s.samples == 3);
  CHECK(s.dropped == 2);  // the bad line and the NaN
  CHECK(pipeline.aggregator().series("prom_up{job=\"a\"}")->last == 2);
  // The bad line's series keeps what it had.
  CHECK(pipeline.aggregator().series("prom_up{job=\"b\"}")->count == 1);
  CHECK_FALSE(pipeline.aggregator().series("prom_nan"));
  // A series twice in one body: the format allows it once; the second is reported.
  upstream.prom_body = "prom_up{job=\"a\"} 4\nprom_up{job=\"b\"} 4\nprom_up{job=\"a\"} 5\n";
  pipeline.run_once();
  CHECK(pub.statuses[0].last_error ==
        "1 samples repeat a series earlier in the body, first: prom_up{job=\"a\"}");
  CHECK(pipeline.aggregator().series("prom_up{job=\"a\"}")->last == 4);
  // Text after # EOF: the whole body is refused, every series keeps its data.
  upstream.prom_body = "prom_up{job=\"a\"} 3\n# EOF\nprom_up{job=\"b\"} 3\n";
  pipeline.run_once();
  CHECK(pub.statuses[0].last_error == "parse: line 3: text after # EOF");
  CHECK(pipeline.aggregator().series("prom_up{job=\"a\"}")->last == 4);
}
