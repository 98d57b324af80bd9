// tests/ingest/pipeline_fixture.h: what the pipeline tests (pipeline_test.cc,
// pipeline_file_test.cc, pipeline_prometheus_test.cc) share: local HTTP upstreams on
// 127.0.0.1 (an evhttp server, and a plain-socket one for what evhttp will not send),
// bodies and responses to serve, and a recorder of what the pipeline publishes.
#pragma once

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

namespace pipeline_fixture {

using namespace ingest;
using namespace ingest_test;


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

inline std::string http_response(std::string_view body) {
  return fmt::format("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n"
                     "Connection: close\r\n\r\n{}",
                     body.size(), body);
}

// The body as one chunk of chunked transfer encoding: evhttp holds a chunk until it has
// all of it.
inline std::string one_chunk_response(std::string_view body) {
  return fmt::format("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     "{:x}\r\n{}\r\n0\r\n\r\n",
                     body.size(), body);
}

// A native body of at least `bytes` bytes, every sample of metric `metric`{src=src}.
inline std::string samples_body(std::string_view metric, std::string_view src, size_t bytes) {
  std::string sample = fmt::format(R"({{"metric":"{}","labels":{{"src":"{}"}},"value":1}})", metric, src);
  std::string body = "[" + sample;
  while (body.size() < bytes) body.append(",").append(sample);
  return body + "]";
}

// A loopback port nothing listens on: bound, then closed.
inline int refused_port() {
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

inline PublishFn recorder(Published& p) {
  return [&p](const shm::SnapshotBuilder& b, const std::vector<shm::SourceStatus>& s, uint64_t) {
    ++p.count;
    p.snapshot = b.serialize(static_cast<uint64_t>(p.count), 0);
    p.statuses = s;
  };
}

inline const shm::SourceStatus& status_of(const Published& p, const std::string& url) {
  for (const auto& s : p.statuses)
    if (s.url == url) return s;
  FAIL("no status for " << url);
  return p.statuses.front();
}

}  // namespace pipeline_fixture
