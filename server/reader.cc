// server/reader.cc: the reader process's HTTP server. One libevent event per connection
// direction on a raw non-blocking socket, a fixed per-connection input buffer parsed in
// place, and one output string per connection that a response is appended to and
// written with send(). The shape follows Redis's networking.c: read what is there,
// answer every complete pipelined request, write, and only ask the loop for
// write-readiness when the socket pushed back.
//
// The shm read guard is taken once per batch of requests (one read() worth) and
// released before the callback returns, so a reader never keeps a snapshot alive across
// event-loop iterations; responses are copied into the output buffer while it is held.
//
// Timeouts are enforced by one periodic tick (every heartbeat_every) that also beats the
// slot's heartbeat: per-request timer bookkeeping would cost more than the sweep.
#include "server/reader.h"

#include <event2/event.h>
#include <event2/event_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "ingest/ingest.h"
#include "server/http.h"
#include "server/service.h"
#include "shm/layout.h"  // the slot table: peers' pid and heartbeat, for accept balancing

namespace server {
namespace {

using http::Parse;
using http::Request;

constexpr size_t kReadSlack = 16384;              // input buffer = max_header_bytes + this
constexpr size_t kOutHighWater = 256 * 1024;      // stop answering pipelined requests beyond
constexpr size_t kSnapshotBatchBytes = 256 * 1024;  // /v1/snapshot bytes rendered per guard
constexpr int kSnapshotBatchesPerCall = 4;        // then yield to the other connections
constexpr int kAcceptBatch = 16;                  // accepts per wakeup: leaves some for peers
constexpr uint64_t kMaxLingerMs = 2000;           // drain a closing client's input this long
constexpr uint64_t kAcceptSlack = 1;              // connections above the least-loaded peer
constexpr timeval kStepAside{0, 1000};            // how long a loaded reader leaves the accept set

enum class Endpoint { series, query, metrics_list, metric, snapshot, prom, healthz, other };

uint32_t request_counter(Endpoint e) {
  switch (e) {
    case Endpoint::series: return kReqSeries;
    case Endpoint::query: return kReqQuery;
    case Endpoint::metrics_list: return kReqMetricsList;
    case Endpoint::metric: return kReqMetric;
    case Endpoint::snapshot: return kReqSnapshot;
    case Endpoint::prom: return kReqProm;
    case Endpoint::healthz: return kReqHealthz;
    case Endpoint::other: return kReqOther;
  }
  return kReqOther;
}

uint32_t status_counter(int status) {
  if (status == 304) return kStatus304;
  if (status == 404) return kStatus404;
  if (status >= 500) return kStatus5xx;
  if (status >= 400) return kStatus4xxOther;
  return kStatus2xx;
}

uint64_t monotonic_ms() { return shm::monotonic_ns() / 1'000'000; }

// A /v1/snapshot response in progress. `series` views the buffer of `generation`; those
// bytes stay unchanged exactly as long as `generation` is still the current one (the
// writer only writes non-current buffers, and generations only grow), which each batch
// re-checks under a fresh guard before touching them.
struct SnapshotStream {
  uint64_t generation = 0;
  std::vector<shm::Record> series;
  size_t next = 0;
  bool chunked = true;  // HTTP/1.0 gets a close-delimited body instead
  bool head_only = false;
};

}  // namespace

struct HttpServer::Impl {
  struct Conn;
  Impl(event_base* b, shm::Reader& r, shm::Store& s, const ReaderOptions& o)
      : base(b), reader(r), store(s), opt(o) {}

  event_base* base;
  shm::Reader& reader;
  shm::Store& store;
  ReaderOptions opt;

  event accept_ev{};
  bool accept_on = false;
  bool accept_paused = false;  // out of descriptors: retried on the next tick
  event step_aside_ev{};       // re-joins the accept set after stepping aside
  event tick_ev{};
  event grace_ev{};
  bool grace_on = false;
  bool shutting_down = false;
  bool more_pipelined = false;  // draining: another request follows the one being answered

  std::vector<Conn*> conns;
  uint64_t accepted = 0;
  uint64_t now_ms = 0;  // refreshed by the tick and by accepts: coarse on purpose
  char date[40] = {};
  size_t date_len = 0;
  time_t date_sec = 0;
  std::atomic<uint64_t>* ctr[shm::kReaderCounters] = {};

  std::string key;   // scratch: the record key of a lookup
  std::string body;  // scratch: bodies rendered by the server itself

  // --- setup -----------------------------------------------------------------------
  void start();
  void watch_listen(bool on);
  void refresh_clock();

  // --- connections -----------------------------------------------------------------
  static void on_accept(evutil_socket_t, short, void* arg);
  static void on_read(evutil_socket_t, short, void* arg);
  static void on_write(evutil_socket_t, short, void* arg);
  static void on_tick(evutil_socket_t, short, void* arg);
  static void on_grace(evutil_socket_t, short, void* arg);
  void accept_some();
  bool should_step_aside() const;
  void close_conn(Conn& c);
  void read_conn(Conn& c);
  bool flush(Conn& c);  // false: the connection was closed
  void after_io(Conn& c);
  void set_events(Conn& c, bool want_read, bool want_write);
  void sweep();
  void begin_shutdown();

  // --- requests --------------------------------------------------------------------
  void process_input(Conn& c);
  void handle(Conn& c, const Request& req, const shm::SnapshotView* view, bool store_failed);
  void pump_stream(Conn& c);
  void bump(uint32_t i) {
    auto& a = *ctr[i];
    a.store(a.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // single writer
  }

  // Appends a whole response. etag may be empty; extra is raw header lines.
  void respond(Conn& c, const Request& req, int status, uint64_t generation, std::string_view content_type,
               std::string_view body, std::string_view etag = {}, std::string_view extra = {});
  void respond_json_error(Conn& c, const Request& req, int status, uint64_t generation, std::string_view msg,
                          std::string_view extra = {});
  void respond_with_etag(Conn& c, const Request& req, uint64_t generation, std::string_view body);
  bool keep_alive(const Conn& c, const Request& req) const;

  void serve_query(Conn& c, const Request& req, const shm::SnapshotView& view);
  void serve_prom(Conn& c, const Request& req, const shm::SnapshotView* view);
  void serve_healthz(Conn& c, const Request& req, const shm::SnapshotView* view);
  void start_snapshot(Conn& c, const Request& req, const shm::SnapshotView& view);
};

struct HttpServer::Impl::Conn {
  Impl* server = nullptr;
  int fd = -1;
  size_t index = 0;  // in Impl::conns_
  event rev{}, wev{};
  bool rev_on = false, wev_on = false;

  std::string in;  // fixed capacity; in_len bytes used
  size_t in_len = 0;
  std::string out;  // pending output from out_off
  size_t out_off = 0;

  uint64_t last_active_ms = 0;      // last read or write progress
  uint64_t request_started_ms = 0;  // when the buffered partial request began
  uint64_t linger_deadline_ms = 0;
  bool close_after_flush = false;   // error, Connection: close, HTTP/1.0, shutdown
  bool lingering = false;           // write side shut; draining input until EOF
  std::unique_ptr<SnapshotStream> stream;

  size_t pending() const { return out.size() - out_off; }
};

// While draining, the last request the client has already sent is answered with
// `Connection: close`; the ones pipelined before it keep the connection, so everything
// in flight gets a response rather than being dropped behind the close.
bool HttpServer::Impl::keep_alive(const Conn& c, const Request& req) const {
  return req.keep_alive && (!shutting_down || more_pipelined) && !c.close_after_flush;
}

// =====================================================================================
// Setup
// =====================================================================================

void HttpServer::Impl::start() {
  for (uint32_t i = 0; i < shm::kReaderCounters; ++i) ctr[i] = &reader.counter(i);
  ctr[kReaderStartedAtNs]->store(shm::realtime_ns(), std::memory_order_relaxed);
  ctr[kConnectionsOpen]->store(0, std::memory_order_relaxed);
  refresh_clock();

  // Accept distribution: every reader watches the shared listening socket (plain
  // level-triggered epoll, so all are woken) and should_step_aside() balances. libevent
  // 2.1 cannot ask for EPOLLEXCLUSIVE; a private epoll set holding the socket with it
  // was tried and measured: alone it gave one reader 65 of 65 connections under wrk.
  // With the step-aside rule it split evenly too, but an exclusive wakeup taken by a
  // reader that steps aside is not handed on (it re-joins after 1 ms and may step aside
  // again), so a queued connection could wait for the next arrival: dropped. Readers
  // are few and connections long-lived, so waking them all is cheap.
  event_assign(&accept_ev, base, opt.listen_fd, EV_READ | EV_PERSIST, &Impl::on_accept, this);
  watch_listen(true);

  evtimer_assign(&step_aside_ev, base, [](evutil_socket_t, short, void* arg) {
    auto* s = static_cast<Impl*>(arg);
    if (!s->shutting_down && !s->accept_paused) s->watch_listen(true);
  }, this);
  event_assign(&tick_ev, base, -1, EV_PERSIST, &Impl::on_tick, this);
  timeval tv{static_cast<time_t>(opt.heartbeat_every.count() / 1000),
             static_cast<suseconds_t>(opt.heartbeat_every.count() % 1000 * 1000)};
  if (opt.heartbeat_every.count() <= 0) tv = {0, 100'000};
  event_add(&tick_ev, &tv);
  reader.heartbeat();
}

void HttpServer::Impl::watch_listen(bool on) {
  if (on == accept_on) return;
  if (on ? event_add(&accept_ev, nullptr) : event_del(&accept_ev)) throw std::runtime_error("reader: cannot watch the listening socket");
  accept_on = on;
}

void HttpServer::Impl::refresh_clock() {
  now_ms = monotonic_ms();
  time_t t = time(nullptr);
  if (t == date_sec) return;
  date_sec = t;
  tm g{};
  gmtime_r(&t, &g);
  date_len = strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &g);
}

// =====================================================================================
// Connections
// =====================================================================================

void HttpServer::Impl::on_accept(evutil_socket_t, short, void* arg) { static_cast<Impl*>(arg)->accept_some(); }

void HttpServer::Impl::accept_some() {
  now_ms = monotonic_ms();
  for (int i = 0; i < kAcceptBatch; ++i) {
    if (should_step_aside()) {
      watch_listen(false);
      evtimer_add(&step_aside_ev, &kStepAside);
      return;
    }
    int fd = accept4(opt.listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors or memory: stop watching (level-triggered readiness would
        // spin) and let the others take the queue; the tick retries.
        watch_listen(false);
        accept_paused = true;
      }
      return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto* c = new Conn;
    c->server = this;
    c->fd = fd;
    c->index = conns.size();
    c->in.resize(opt.max_header_bytes + kReadSlack);
    c->last_active_ms = now_ms;
    event_assign(&c->rev, base, fd, EV_READ | EV_PERSIST, &Impl::on_read, c);
    event_assign(&c->wev, base, fd, EV_WRITE | EV_PERSIST, &Impl::on_write, c);
    conns.push_back(c);
    set_events(*c, true, false);
    ++accepted;
    bump(kConnectionsAccepted);
    ctr[kConnectionsOpen]->store(conns.size(), std::memory_order_relaxed);
  }
}

// Accept balancing. The kernel wakes whichever reader's wait it finds first, and a
// reader that is running accepts before a sleeping one gets the CPU, so without help
// one reader takes nearly every connection (measured: 65 of 65, docs/performance.md).
// A reader holding more than kAcceptSlack connections above a live peer therefore
// leaves the accept set for kStepAside and lets that peer be woken. "Live" means a
// heartbeat within a few periods, so a stuck or dead peer never makes us refuse work.
bool HttpServer::Impl::should_step_aside() const {
  const uint64_t mine = conns.size();
  if (mine <= kAcceptSlack) return false;
  const uint64_t now = shm::monotonic_ns();
  const uint64_t fresh = std::max<uint64_t>(4 * opt.heartbeat_every.count(), 500) * 1'000'000;
  const auto& slots = store.control().slots;
  for (uint32_t s = 0; s < store.reader_slots(); ++s) {
    if (s == opt.slot || slots[s].pid.load(std::memory_order_relaxed) == 0) continue;
    const uint64_t beat = slots[s].heartbeat_ns.load(std::memory_order_relaxed);
    if (beat == 0 || now - std::min(now, beat) > fresh) continue;
    if (store.reader_counter(s, kConnectionsOpen) + kAcceptSlack < mine) return true;
  }
  return false;
}

void HttpServer::Impl::close_conn(Conn& c) {
  if (c.rev_on) event_del(&c.rev);
  if (c.wev_on) event_del(&c.wev);
  ::close(c.fd);
  Conn* last = conns.back();
  conns[c.index] = last;
  last->index = c.index;
  conns.pop_back();
  ctr[kConnectionsOpen]->store(conns.size(), std::memory_order_relaxed);
  delete &c;
  if (shutting_down && conns.empty()) event_base_loopexit(base, nullptr);
}

void HttpServer::Impl::set_events(Conn& c, bool want_read, bool want_write) {
  if (want_read != c.rev_on) {
    want_read ? event_add(&c.rev, nullptr) : event_del(&c.rev);
    c.rev_on = want_read;
  }
  if (want_write != c.wev_on) {
    want_write ? event_add(&c.wev, nullptr) : event_del(&c.wev);
    c.wev_on = want_write;
  }
}

void HttpServer::Impl::on_read(evutil_socket_t, short, void* arg) {
  auto* c = static_cast<Conn*>(arg);
  c->server->read_conn(*c);
}

void HttpServer::Impl::read_conn(Conn& c) {
  if (c.lingering) {
    char sink[4096];
    ssize_t n = recv(c.fd, sink, sizeof sink, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) close_conn(c);
    return;
  }
  if (c.in_len == c.in.size()) return;  // cannot happen: a full buffer is answered (431)
  ssize_t n = recv(c.fd, c.in.data() + c.in_len, c.in.size() - c.in_len, 0);
  if (n <= 0) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    close_conn(c);  // EOF or reset: nothing more can be answered
    return;
  }
  if (c.in_len == 0) c.request_started_ms = now_ms;
  c.in_len += static_cast<size_t>(n);
  c.last_active_ms = now_ms;
  process_input(c);
  if (flush(c)) after_io(c);
}

void HttpServer::Impl::on_write(evutil_socket_t, short, void* arg) {
  auto* c = static_cast<Conn*>(arg);
  Impl& s = *c->server;
  if (s.flush(*c)) s.after_io(*c);
}

bool HttpServer::Impl::flush(Conn& c) {
  while (c.pending() > 0) {
    ssize_t n = send(c.fd, c.out.data() + c.out_off, c.pending(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return true;
      close_conn(c);
      return false;
    }
    c.out_off += static_cast<size_t>(n);
    c.last_active_ms = now_ms;
  }
  c.out.clear();  // keeps the capacity: steady state allocates nothing
  c.out_off = 0;
  return true;
}

// Decides what the connection waits for next, once output went out as far as it could.
void HttpServer::Impl::after_io(Conn& c) {
  for (int batches = 0; c.pending() == 0 && c.stream; ++batches) {
    if (batches == kSnapshotBatchesPerCall) {
      set_events(c, false, true);  // the socket took everything: come back next iteration
      return;
    }
    pump_stream(c);
    if (!flush(c)) return;
  }
  if (c.pending() > 0) {
    set_events(c, false, true);  // back-pressure: read no more requests until this goes out
    return;
  }
  if (c.close_after_flush) {
    if (!c.lingering) {
      // Lingering close: shut our side, then read until the peer's EOF, so that unread
      // input (a refused body, pipelined requests) does not make the kernel answer with
      // a reset that could destroy the response before the client reads it.
      ::shutdown(c.fd, SHUT_WR);
      c.lingering = true;
      c.linger_deadline_ms = now_ms + std::min<uint64_t>(kMaxLingerMs, opt.request_timeout.count());
    }
    set_events(c, true, false);
    return;
  }
  // Requests left in the buffer (pipelined behind a snapshot, or beyond the high-water
  // mark) are answered now that the output drained.
  if (c.in_len > 0) {
    size_t before = c.in_len;
    process_input(c);
    if (c.in_len != before || c.pending() > 0) {
      if (flush(c)) after_io(c);
      return;
    }
  }
  set_events(c, true, false);
}

void HttpServer::Impl::on_tick(evutil_socket_t, short, void* arg) {
  auto* s = static_cast<Impl*>(arg);
  s->refresh_clock();
  s->reader.heartbeat();
  if (s->accept_paused && !s->shutting_down) {
    s->accept_paused = false;
    s->watch_listen(true);
  }
  s->sweep();
}

// Closes connections past their deadlines. Walks backwards because close_conn moves
// the last connection into the closed one's place.
void HttpServer::Impl::sweep() {
  const uint64_t idle = opt.idle_timeout.count(), request = opt.request_timeout.count();
  for (size_t i = conns.size(); i-- > 0;) {
    Conn& c = *conns[i];
    if (c.lingering) {
      if (now_ms >= c.linger_deadline_ms) close_conn(c);
    } else if (c.pending() > 0 || c.stream) {
      if (now_ms - c.last_active_ms >= idle) {
        // The client stopped reading: reset instead of closing, or the kernel would keep
        // trickling the unsent socket buffer to it long after we forgot the connection.
        linger abort{1, 0};
        setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
        close_conn(c);
      }
    } else if (c.in_len > 0) {
      if (now_ms - c.request_started_ms >= request) {
        Request none;
        none.keep_alive = false;
        c.in_len = 0;
        c.close_after_flush = true;
        bump(kReqOther);
        respond_json_error(c, none, 408, 0, "request headers not received in time");
        if (flush(c)) after_io(c);
      }
    } else if (now_ms - c.last_active_ms >= idle) {
      close_conn(c);
    }
  }
}

void HttpServer::Impl::on_grace(evutil_socket_t, short, void* arg) {
  event_base_loopexit(static_cast<Impl*>(arg)->base, nullptr);
}

// Drain. Closing an idle keep-alive connection races with the client's next request on
// it: a request sent just as we close gets a reset or EOF instead of a response, and
// clients such as wrk count that as a failure. So nothing is closed here: we only stop
// accepting (the peers on the shared socket take new connections) and every connection
// stays open until it gets its next response, which carries `Connection: close`
// (keep_alive() says no while shutting_down) and ends in the usual lingering close.
// The loop ends when the last connection is gone; a connection that sent nothing for
// the whole shutdown_grace is closed by the grace timer (the destructor closes it),
// which keeps the stop bounded. No earlier "quiet period" cut: a client that sends every
// few seconds would meet the same race at the end of that period instead.
void HttpServer::Impl::begin_shutdown() {
  if (shutting_down) return;
  shutting_down = true;
  watch_listen(false);
  accept_paused = false;
  if (conns.empty()) {
    event_base_loopexit(base, nullptr);
    return;
  }
  evtimer_assign(&grace_ev, base, &Impl::on_grace, this);
  timeval tv{static_cast<time_t>(opt.shutdown_grace.count() / 1000),
             static_cast<suseconds_t>(opt.shutdown_grace.count() % 1000 * 1000)};
  evtimer_add(&grace_ev, &tv);
  grace_on = true;
}

// =====================================================================================
// Requests
// =====================================================================================

void HttpServer::Impl::process_input(Conn& c) {
  size_t off = 0;
  uint64_t served = 0;
  std::optional<shm::Reader::Guard> guard;
  bool entered = false, store_failed = false;
  while (!c.close_after_flush && !c.stream && c.pending() < kOutHighWater) {
    Request req;
    Parse p = http::parse_request(std::string_view(c.in.data() + off, c.in_len - off), opt.max_header_bytes, req);
    if (p == Parse::incomplete) break;
    if (!entered) {
      // One guard for the whole batch: entering costs a fence, not a system call.
      entered = true;
      try {
        if (auto g = reader.enter()) guard.emplace(std::move(*g));
      } catch (const shm::Error&) {
        store_failed = true;  // corrupt buffer: answered with 500 below
      }
    }
    const uint64_t gen = guard ? guard->generation() : 0;
    ++served;
    if (p != Parse::complete) {
      Request none;
      none.keep_alive = false;
      c.close_after_flush = true;  // the stream cannot be trusted past a malformed head
      bump(kReqOther);
      if (p == Parse::header_too_large) respond_json_error(c, none, 431, gen, "request header section too large");
      else if (p == Parse::bad_version) respond_json_error(c, none, 505, gen, "only HTTP/1.x is supported");
      else respond_json_error(c, none, 400, gen, "malformed request");
      off = c.in_len;
      break;
    }
    off += req.head_bytes;
    if (req.has_body) {
      // Nothing here takes a body; reading past it would mean framing it. Refuse and
      // close instead.
      c.close_after_flush = true;
      bump(kReqOther);
      respond_json_error(c, req, 413, gen, "request bodies are not accepted");
      off = c.in_len;
      break;
    }
    if (shutting_down) {
      Request next;
      more_pipelined = http::parse_request(std::string_view(c.in.data() + off, c.in_len - off), opt.max_header_bytes,
                                           next) != Parse::incomplete;
    }
    handle(c, req, guard ? &guard->view() : nullptr, store_failed);
    more_pipelined = false;
  }
  if (served) reader.count_requests(served);
  // Keep the unparsed tail (a partial request) at the front of the buffer.
  if (off > 0) {
    std::memmove(c.in.data(), c.in.data() + off, c.in_len - off);
    c.in_len -= off;
    c.request_started_ms = now_ms;
  }
}

void HttpServer::Impl::handle(Conn& c, const Request& req, const shm::SnapshotView* view, bool store_failed) {
  std::string_view path = req.path;
  Endpoint ep = Endpoint::other;
  std::string_view rest;
  if (path.starts_with("/v1/series/")) {
    ep = Endpoint::series;
    rest = path.substr(11);
  } else if (path == "/v1/query") {
    ep = Endpoint::query;
  } else if (path == "/v1/metrics") {
    ep = Endpoint::metrics_list;
  } else if (path.starts_with("/v1/metrics/")) {
    ep = Endpoint::metric;
    rest = path.substr(12);
  } else if (path == "/v1/snapshot") {
    ep = Endpoint::snapshot;
  } else if (path == "/metrics") {
    ep = Endpoint::prom;
  } else if (path == "/healthz") {
    ep = Endpoint::healthz;
  }
  bump(request_counter(ep));
  const uint64_t gen = view ? view->generation() : 0;

  if (ep == Endpoint::other) return respond_json_error(c, req, 404, gen, "no such endpoint");
  if (req.method == http::Method::other)
    return respond_json_error(c, req, 405, gen, "method not allowed", "Allow: GET, HEAD\r\n");
  if (ep == Endpoint::prom) return serve_prom(c, req, view);
  if (ep == Endpoint::healthz) return serve_healthz(c, req, view);
  if (store_failed) return respond_json_error(c, req, 500, gen, "snapshot unreadable");
  if (!view) return respond_json_error(c, req, 503, gen, "no snapshot yet");

  switch (ep) {
    case Endpoint::series: {
      key.assign(ingest::kSeriesPrefix);
      if (!http::percent_decode_append(rest, key, false))
        return respond_json_error(c, req, 400, gen, "malformed percent-encoding in the series key");
      auto found = view->find(key);
      if (!found) return respond_json_error(c, req, 404, gen, "no such series");
      return respond_with_etag(c, req, gen, *found);
    }
    case Endpoint::metric: {
      key.assign(ingest::kMetricPrefix);
      if (!http::percent_decode_append(rest, key, false))
        return respond_json_error(c, req, 400, gen, "malformed percent-encoding in the metric name");
      auto found = view->find(key);
      if (!found) return respond_json_error(c, req, 404, gen, "no such metric");
      return respond_with_etag(c, req, gen, *found);
    }
    case Endpoint::metrics_list: {
      auto found = view->find(ingest::kMetricsRecord);
      return respond_with_etag(c, req, gen, found ? *found : std::string_view(R"({"metrics":[]})"));
    }
    case Endpoint::query: return serve_query(c, req, *view);
    case Endpoint::snapshot: return start_snapshot(c, req, *view);
    default: return respond_json_error(c, req, 404, gen, "no such endpoint");
  }
}

void HttpServer::Impl::respond(Conn& c, const Request& req, int status, uint64_t generation,
                               std::string_view content_type, std::string_view body, std::string_view etag,
                               std::string_view extra) {
  bump(status_counter(status));
  const bool keep = keep_alive(c, req);
  std::string& o = c.out;
  o.append("HTTP/1.1 ");
  http::append_uint(o, static_cast<uint64_t>(status));
  o += ' ';
  o.append(http::reason_phrase(status));
  o.append("\r\nServer: telemetryd\r\nDate: ");
  o.append(date, date_len);
  if (status != 304) {
    o.append("\r\nContent-Type: ").append(content_type);
    o.append("\r\nContent-Length: ");
    http::append_uint(o, body.size());
  }
  o.append("\r\nX-Snapshot-Generation: ");
  http::append_uint(o, generation);
  o.append("\r\n");
  if (!etag.empty()) o.append("ETag: ").append(etag).append("\r\n");
  o.append(extra);
  if (!keep) o.append("Connection: close\r\n");
  else if (req.minor_version == 0) o.append("Connection: keep-alive\r\n");
  o.append("\r\n");
  if (status != 304 && req.method != http::Method::head) o.append(body);
  if (!keep) c.close_after_flush = true;
}

void HttpServer::Impl::respond_json_error(Conn& c, const Request& req, int status, uint64_t generation,
                                          std::string_view msg, std::string_view extra) {
  body.assign(R"({"error":)");
  ingest::append_json_string(body, msg);
  body.append("}");
  respond(c, req, status, generation, "application/json", body, {}, extra);
}

void HttpServer::Impl::respond_with_etag(Conn& c, const Request& req, uint64_t generation, std::string_view data) {
  static constexpr char kHex[] = "0123456789abcdef";
  char etag[18];
  uint64_t h = shm::hash_bytes(data.data(), data.size());
  etag[0] = etag[17] = '"';
  for (int i = 16; i >= 1; --i, h >>= 4) etag[i] = kHex[h & 15];
  const std::string_view tag(etag, sizeof etag);
  if (!req.if_none_match.empty() && http::etag_matches(req.if_none_match, tag))
    return respond(c, req, 304, generation, {}, {}, tag);
  respond(c, req, 200, generation, "application/json", data, tag);
}

// /v1/query: the metric's series whose labels include every given pair.
void HttpServer::Impl::serve_query(Conn& c, const Request& req, const shm::SnapshotView& view) {
  const uint64_t gen = view.generation();
  std::string metric;
  bool have_metric = false;
  std::vector<std::pair<std::string, std::string>> want;
  for (std::string_view q = req.query; !q.empty();) {
    size_t amp = q.find('&');
    std::string_view param = q.substr(0, amp);
    q.remove_prefix(amp == std::string_view::npos ? q.size() : amp + 1);
    if (param.empty()) continue;
    size_t eq = param.find('=');
    std::string name, value;
    if (!http::percent_decode_append(param.substr(0, eq), name, true) ||
        (eq != std::string_view::npos && !http::percent_decode_append(param.substr(eq + 1), value, true)))
      return respond_json_error(c, req, 400, gen, "malformed percent-encoding in the query");
    if (name == "metric" && !have_metric) {
      metric = std::move(value);
      have_metric = true;
    } else {
      want.emplace_back(std::move(name), std::move(value));
    }
  }
  if (!have_metric || metric.empty()) return respond_json_error(c, req, 400, gen, "missing query parameter: metric");

  std::string out = R"({"series":[)";
  bool first = true;
  for (const shm::Record& r : view.list(ingest::metric_record_key(metric))) {
    if (!want.empty()) {
      std::string_view k = r.key;
      if (k.starts_with(ingest::kSeriesPrefix)) k.remove_prefix(ingest::kSeriesPrefix.size());
      auto parsed = ingest::parse_series_key(k);
      if (!parsed) continue;
      bool all = std::all_of(want.begin(), want.end(), [&](const auto& w) {
        return std::find(parsed->labels.begin(), parsed->labels.end(), w) != parsed->labels.end();
      });
      if (!all) continue;
    }
    if (!first) out += ',';
    first = false;
    out.append(r.value);
  }
  out.append("]}");
  respond_with_etag(c, req, gen, out);
}

void HttpServer::Impl::serve_healthz(Conn& c, const Request& req, const shm::SnapshotView* view) {
  const uint64_t gen = view ? view->generation() : 0;
  if (!view) {
    body.assign(R"({"status":"no snapshot","generation":0})");
    return respond(c, req, 503, 0, "application/json", body);
  }
  const uint64_t now = shm::realtime_ns(), built = view->built_at_ns();
  const uint64_t age_ns = now > built ? now - built : 0;
  const bool fresh = age_ns <= static_cast<uint64_t>(opt.healthz_max_age.count()) * 1'000'000;
  char age[32];
  auto [p, ec] = std::to_chars(age, age + sizeof age, static_cast<double>(age_ns) / 1e9, std::chars_format::fixed, 3);
  body.assign(fresh ? R"({"status":"ok","generation":)" : R"({"status":"stale","generation":)");
  http::append_uint(body, gen);
  body.append(R"(,"age_s":)").append(age, p).append("}");
  respond(c, req, fresh ? 200 : 503, gen, "application/json", body);
}

// /metrics: the writer's rendering of the snapshot, then the service's own metrics.
void HttpServer::Impl::serve_prom(Conn& c, const Request& req, const shm::SnapshotView* view) {
  const uint64_t gen = view ? view->generation() : 0;
  std::string out;
  if (view)
    if (auto prom = view->find(ingest::kPromRecord)) out.append(*prom);
  auto sum = [&](uint32_t counter) {
    uint64_t total = 0;
    for (uint32_t s = 0; s < store.reader_slots(); ++s) total += store.reader_counter(s, counter);
    return total;
  };
  auto line = [&](std::string_view name, std::string_view labels, uint64_t v) {
    out.append(name);
    if (!labels.empty()) out.append("{").append(labels).append("}");
    out += ' ';
    http::append_uint(out, v);
    out += '\n';
  };
  auto help = [&](std::string_view name, std::string_view type, std::string_view text) {
    out.append("# HELP ").append(name).append(" ").append(text).append("\n# TYPE ");
    out.append(name).append(" ").append(type).append("\n");
  };

  help("telemetryd_http_requests_total", "counter", "HTTP requests answered by all readers, by endpoint.");
  static constexpr std::pair<const char*, uint32_t> kEndpoints[] = {
      {"series", kReqSeries},   {"query", kReqQuery}, {"metrics", kReqMetricsList}, {"metric", kReqMetric},
      {"snapshot", kReqSnapshot}, {"prometheus", kReqProm}, {"healthz", kReqHealthz}, {"other", kReqOther}};
  for (auto [name, i] : kEndpoints) line("telemetryd_http_requests_total", std::string("endpoint=\"") + name + "\"", sum(i));
  help("telemetryd_http_responses_total", "counter", "HTTP responses of all readers, by status (class).");
  static constexpr std::pair<const char*, uint32_t> kStatuses[] = {
      {"2xx", kStatus2xx}, {"304", kStatus304}, {"404", kStatus404}, {"4xx", kStatus4xxOther}, {"5xx", kStatus5xx}};
  for (auto [name, i] : kStatuses) line("telemetryd_http_responses_total", std::string("status=\"") + name + "\"", sum(i));
  help("telemetryd_http_connections_accepted_total", "counter", "Connections accepted by all readers.");
  line("telemetryd_http_connections_accepted_total", {}, sum(kConnectionsAccepted));
  help("telemetryd_http_connections_open", "gauge", "Connections open in all readers.");
  line("telemetryd_http_connections_open", {}, sum(kConnectionsOpen));

  help("telemetryd_snapshot_generation", "gauge", "Generation of the snapshot being served.");
  line("telemetryd_snapshot_generation", {}, gen);
  help("telemetryd_snapshot_age_seconds", "gauge", "Age of the snapshot being served.");
  out.append("telemetryd_snapshot_age_seconds ");
  if (view) {
    const uint64_t now = shm::realtime_ns(), built = view->built_at_ns();
    char age[32];
    auto [p, ec] = std::to_chars(age, age + sizeof age, now > built ? (now - built) / 1e9 : 0.0,
                                 std::chars_format::fixed, 3);
    out.append(age, p);
  } else {
    out.append("NaN");
  }
  out += '\n';

  const std::vector<shm::SourceStatus> sources = store.sources();
  auto per_source = [&](std::string_view name, std::string_view text, uint64_t shm::SourceStatus::*field) {
    help(name, "counter", text);
    for (const auto& s : sources) {
      std::string labels = "source=\"";
      http::append_prom_label_value(labels, s.url);
      labels += '"';
      line(name, labels, s.*field);
    }
  };
  per_source("telemetryd_source_samples_total", "Samples accepted per source.", &shm::SourceStatus::samples);
  per_source("telemetryd_source_dropped_total", "Samples dropped per source.", &shm::SourceStatus::dropped);
  per_source("telemetryd_source_errors_total", "Failed fetches or parses per source.", &shm::SourceStatus::errors);

  help("telemetryd_restarts_total", "counter", "Children restarted by the supervisor, by role.");
  line("telemetryd_restarts_total", "role=\"writer\"", store.service_counter(kRestartsWriter).load(std::memory_order_relaxed));
  line("telemetryd_restarts_total", "role=\"reader\"", store.service_counter(kRestartsReader).load(std::memory_order_relaxed));
  respond(c, req, 200, gen, "text/plain; version=0.0.4; charset=utf-8", out);
}

// /v1/snapshot: headers and the document's opening now, the series in batches as the
// socket drains (pump_stream), each batch under its own short guard.
void HttpServer::Impl::start_snapshot(Conn& c, const Request& req, const shm::SnapshotView& view) {
  auto s = std::make_unique<SnapshotStream>();
  s->generation = view.generation();
  s->chunked = req.minor_version >= 1;
  s->head_only = req.method == http::Method::head;
  if (!s->head_only) s->series = view.list(ingest::kSeriesList);

  bump(kStatus2xx);
  const bool keep = keep_alive(c, req) && s->chunked;
  std::string& o = c.out;
  o.append("HTTP/1.1 200 OK\r\nServer: telemetryd\r\nDate: ").append(date, date_len);
  o.append("\r\nContent-Type: application/json\r\nX-Snapshot-Generation: ");
  http::append_uint(o, s->generation);
  o.append(s->chunked ? "\r\nTransfer-Encoding: chunked\r\n" : "\r\n");
  if (!keep) o.append("Connection: close\r\n");
  o.append("\r\n");
  if (!keep) c.close_after_flush = true;
  if (s->head_only) return;

  std::string open = R"({"generation":)";
  http::append_uint(open, s->generation);
  open.append(R"(,"built_at":)");
  http::append_uint(open, view.built_at_ns() / 1'000'000'000);
  open.append(R"(,"series":[)");
  if (s->chunked) {
    char hex[16];
    auto [p, ec] = std::to_chars(hex, hex + sizeof hex, open.size(), 16);
    o.append(hex, p).append("\r\n").append(open).append("\r\n");
  } else {
    o.append(open);
  }
  c.stream = std::move(s);
}

// Renders the next batch of the snapshot stream into the (empty) output buffer. If the
// snapshot is no longer current the bytes we were streaming may be rewritten, so the
// response is cut short: the connection closes without the final chunk, which a client
// sees as a truncated transfer and retries (documented in docs/performance.md).
void HttpServer::Impl::pump_stream(Conn& c) {
  SnapshotStream& s = *c.stream;
  std::optional<shm::Reader::Guard> guard;
  try {
    if (auto g = reader.enter()) guard.emplace(std::move(*g));
  } catch (const shm::Error&) {
  }
  if (!guard || guard->generation() != s.generation) {
    c.stream.reset();
    c.close_after_flush = true;
    c.in_len = 0;
    return;
  }
  size_t end = s.next, bytes = 0;
  while (end < s.series.size() && bytes < kSnapshotBatchBytes) bytes += s.series[end++].value.size() + 1;
  const bool last = end == s.series.size();
  std::string& o = c.out;
  if (s.chunked) {
    char hex[16];
    auto [p, ec] = std::to_chars(hex, hex + sizeof hex, bytes - (s.next == 0 && end > 0 ? 1 : 0) + (last ? 2 : 0), 16);
    o.append(hex, p).append("\r\n");
  }
  for (size_t i = s.next; i < end; ++i) {
    if (i > 0) o += ',';
    o.append(s.series[i].value);
  }
  s.next = end;
  if (last) o.append("]}");
  if (s.chunked) o.append(last ? "\r\n0\r\n\r\n" : "\r\n");
  if (last) c.stream.reset();
}

// =====================================================================================
// Public surface
// =====================================================================================

HttpServer::HttpServer(event_base* base, shm::Reader& reader, shm::Store& store, const ReaderOptions& options)
    : impl_(std::make_unique<Impl>(base, reader, store, options)) {
  impl_->start();
}

HttpServer::~HttpServer() {
  Impl& s = *impl_;
  while (!s.conns.empty()) s.close_conn(*s.conns.back());
  if (s.accept_on) s.watch_listen(false);
  event_del(&s.tick_ev);
  event_del(&s.step_aside_ev);
  if (s.grace_on) event_del(&s.grace_ev);
}

void HttpServer::shutdown() { impl_->begin_shutdown(); }
size_t HttpServer::open_connections() const { return impl_->conns.size(); }
uint64_t HttpServer::connections_accepted() const { return impl_->accepted; }

namespace {
void on_stop_signal(evutil_socket_t, short, void* arg) { static_cast<HttpServer*>(arg)->shutdown(); }
}  // namespace

int run_reader(shm::Store& store, const ReaderOptions& options) {
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGHUP, SIG_IGN);  // reload is the writer's business
  try {
    shm::Reader reader(store, options.slot);
    std::unique_ptr<event_base, void (*)(event_base*)> base(event_base_new(), &event_base_free);
    if (!base) throw std::runtime_error("event_base_new failed");
    int rc = kExitOk;
    {
      HttpServer server(base.get(), reader, store, options);
      event* term = evsignal_new(base.get(), SIGTERM, &on_stop_signal, &server);
      event* intr = evsignal_new(base.get(), SIGINT, &on_stop_signal, &server);
      if (!term || !intr || evsignal_add(term, nullptr) != 0 || evsignal_add(intr, nullptr) != 0)
        throw std::runtime_error("cannot install SIGTERM/SIGINT handlers");
      if (event_base_dispatch(base.get()) < 0) rc = kExitFailure;
      event_free(term);
      event_free(intr);
    }
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "telemetryd reader (slot %u): %s\n", options.slot, e.what());
    return kExitFailure;
  }
}

}  // namespace server
