// server/reader.cc: the reader process's HTTP server. One libevent event per connection
// direction on a raw non-blocking socket, a fixed per-connection input buffer parsed in
// place, and one output string per connection that a response is appended to and
// written with send(). The shape follows Redis's networking.c: read what is there,
// answer every complete pipelined request, write, and only ask the loop for
// write-readiness when the socket pushed back. That is the epoll engine; the io_uring
// engine (reader_uring.cc) takes over the socket I/O where `ring` is set (accept,
// release_conn, set_events, flush) and leaves everything else here.
//
// The shm read guard is taken once per batch of requests (one read() worth) and
// released before the callback returns, so a reader never keeps a snapshot alive across
// event-loop iterations; responses are copied into the output buffer while it is held.
//
// Timeouts are enforced by one periodic tick (every heartbeat_every) that also beats the
// slot's heartbeat: per-request timer bookkeeping would cost more than the sweep.
#include "server/reader.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <optional>
#include <stdexcept>
#include <string>

#include "common/log.h"
#include "server/reader_impl.h"
#include "shm/layout.h"  // the slot table: peers' pid and heartbeat, for accept balancing

namespace server {

namespace log = common::log;
namespace {

constexpr size_t kOutHighWater = 256 * 1024;      // stop answering pipelined requests beyond
constexpr int kAcceptBatch = 16;                  // accepts per wakeup: leaves some for peers
constexpr uint64_t kMaxLingerMs = 2000;           // drain a closing client's input this long
constexpr uint64_t kAcceptSlack = 1;              // connections above a peer before stepping aside,
constexpr uint64_t kAcceptSlackShare = 8;         // or this fraction of the peer's, when more
constexpr timeval kStepAside{0, 1000};            // how long a loaded reader leaves the accept set
// Descriptors a reader needs besides its connections: stdio, the listening socket,
// epoll, libevent's signal pipe, the log file (and its reopen), a shm buffer being
// re-mapped after it grew. Kept free so that running out is never the connections' doing.
constexpr rlim_t kReservedFds = 32;

uint64_t monotonic_ms() { return shm::monotonic_ns() / 1'000'000; }

size_t limit_by_descriptors(size_t wanted) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return wanted;
  const rlim_t usable = rl.rlim_cur > kReservedFds ? rl.rlim_cur - kReservedFds : 1;
  return static_cast<size_t>(std::min<rlim_t>(wanted, usable));
}

}  // namespace

// =====================================================================================
// Setup
// =====================================================================================

void HttpServer::Impl::start() {
  for (uint32_t i = 0; i < shm::kReaderCounters; ++i) ctr[i] = &reader.counter(i);
  max_conns = std::max<size_t>(1, limit_by_descriptors(opt.max_connections));
  ctr[kReaderStartedAtNs]->store(shm::realtime_ns(), std::memory_order_relaxed);
  ctr[kConnectionsOpen]->store(0, std::memory_order_relaxed);
  refresh_clock();

  if (opt.engine != ReaderEngine::epoll) {
    std::string why = io_uring_unavailable_reason();
    if (why.empty()) why = start_ring();
    if (!why.empty()) {
      if (opt.engine == ReaderEngine::io_uring) log::warn("reader engine io_uring unavailable ({}): running epoll", why);
      else log::info("reader engine: epoll (io_uring unavailable: {})", why);
    }
  }
  ctr[kReaderEngine]->store(ring ? 2 : 1, std::memory_order_relaxed);

  // Accept distribution: every reader watches the shared listening socket (plain
  // level-triggered epoll, so all are woken) and should_step_aside() balances. libevent
  // 2.1 cannot ask for EPOLLEXCLUSIVE; a private epoll set holding the socket with it
  // was tried and measured: alone it gave one reader 65 of 65 connections under wrk.
  // With the step-aside rule it split evenly too, but an exclusive wakeup taken by a
  // reader that steps aside is not handed on (it re-joins after 1 ms and may step aside
  // again), so a queued connection could wait for the next arrival: dropped. Readers
  // are few and connections long-lived, so waking them all is cheap.
  // The io_uring engine's multishot accept is woken the same way (a poll on the socket).
  if (!ring) event_assign(&accept_ev, base, opt.listen_fd, EV_READ | EV_PERSIST, &Impl::on_accept, this);
  update_accept();

  evtimer_assign(&step_aside_ev, base, [](evutil_socket_t, short, void* arg) {
    auto* s = static_cast<Impl*>(arg);
    s->stepped_aside = false;
    s->update_accept();
    s->ring_submit();
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
  if (ring) {
    accept_on = on;
    return ring_sync_accept();
  }
  if (on ? event_add(&accept_ev, nullptr) : event_del(&accept_ev)) throw std::runtime_error("reader: cannot watch the listening socket");
  accept_on = on;
}

// The one place that decides whether this reader takes new connections. Not while
// draining, out of descriptors, stepped aside for a peer, or at the connection limit:
// then the connections wait in the shared queue for a peer, or for us to come back.
// kAccepting tells the peers' should_step_aside() whether we would take a connection
// they leave us; a step-aside is momentary and does not count.
void HttpServer::Impl::update_accept() {
  const bool can = !shutting_down && !accept_paused && conns.size() < max_conns;
  ctr[kAccepting]->store(can, std::memory_order_relaxed);
  watch_listen(can && !stepped_aside);
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
  for (int i = 0; i < kAcceptBatch && conns.size() < max_conns; ++i) {
    if (should_step_aside()) {
      stepped_aside = true;
      bump(kAcceptStepAsides);
      evtimer_add(&step_aside_ev, &kStepAside);
      break;
    }
    int fd = accept4(opt.listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      // Out of descriptors or memory: stop watching (level-triggered readiness would
      // spin) and let the peers take the queue; retried when one of our connections
      // closes, or at the next tick. The connection waits in the queue rather than
      // being accepted only to be refused: a peer may well have room for it.
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) accept_paused = true;
      break;
    }
    add_conn(fd);
  }
  update_accept();
}

void HttpServer::Impl::add_conn(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  auto* c = new Conn;
  c->server = this;
  c->fd = fd;
  c->index = conns.size();
  c->last_active_ms = now_ms;
  if (!ring) {
    event_assign(&c->rev, base, fd, EV_READ | EV_PERSIST, &Impl::on_read, c);
    event_assign(&c->wev, base, fd, EV_WRITE | EV_PERSIST, &Impl::on_write, c);
  }
  conns.push_back(c);
  set_events(*c, true, false);
  ++accepted;
  bump(kConnectionsAccepted);
  ctr[kConnectionsOpen]->store(conns.size(), std::memory_order_relaxed);
}

// Accept balancing. The kernel wakes whichever reader's wait it finds first, and a
// reader that is running accepts before a sleeping one gets the CPU, so without help
// one reader takes nearly every connection (measured: 65 of 65, docs/performance.md).
// A reader holding more than a slack above a peer therefore leaves the accept set for
// kStepAside and lets that peer be woken. The peer must be live (a heartbeat within a
// few periods, so a stuck or dead one never makes us refuse work) and accepting
// (kAccepting: not draining, full or out of descriptors; stepping aside for such a peer
// would repeat every kStepAside while new connections wait, until its drain ends). The
// slack grows with the load, an eighth of the peer's connections: with a slack of one,
// readers in a burst of connections take turns stepping aside every couple of accepts,
// and 4,000 connections took 2.5 s instead of 0.4 s with a single reader
// (docs/performance.md, Floods).
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
    if (store.reader_counter(s, kAccepting) == 0) continue;
    const uint64_t theirs = store.reader_counter(s, kConnectionsOpen);
    if (theirs + std::max(kAcceptSlack, theirs / kAcceptSlackShare) < mine) return true;
  }
  return false;
}

void HttpServer::Impl::close_conn(Conn& c) {
  if (c.waiting) drop_fanout(c);
  Conn* last = conns.back();
  conns[c.index] = last;
  last->index = c.index;
  conns.pop_back();
  ctr[kConnectionsOpen]->store(conns.size(), std::memory_order_relaxed);
  release_conn(c);
  if (shutting_down && conns.empty()) event_base_loopexit(base, nullptr);
  accept_paused = false;  // a descriptor is free again
  update_accept();
}

// Closes the socket and frees the connection (io_uring: once its operations ended).
void HttpServer::Impl::release_conn(Conn& c) {
  if (ring) return ring_release(c);
  if (c.rev_on) event_del(&c.rev);
  if (c.wev_on) event_del(&c.wev);
  ::close(c.fd);
  delete &c;
}

// io_uring: a send in flight is the wait for write-readiness, and reading stops only
// when the input reached its cap (ring_want_read), so only want_read matters.
void HttpServer::Impl::set_events(Conn& c, bool want_read, bool want_write) {
  if (ring) {
    if (want_read) ring_want_read(c);
    return;
  }
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
  if (c.in.empty()) c.in.resize(opt.max_header_bytes + kReadSlack);
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
  if (ring) {  // the send's completion goes on where this returns (after_io)
    ring_send(c);
    return true;
  }
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
  if (s->accept_paused) {
    s->accept_paused = false;
    s->update_accept();
  }
  s->sweep();
  s->ring_submit();
}

// Closes connections past their deadlines. Walks backwards because close_conn moves
// the last connection into the closed one's place.
void HttpServer::Impl::sweep() {
  const uint64_t idle = opt.idle_timeout.count(), request = opt.request_timeout.count();
  for (size_t i = conns.size(); i-- > 0;) {
    Conn& c = *conns[i];
    if (c.waiting) continue;  // its fanout's deadline bounds it
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
  update_accept();
  if (conns.empty()) {
    ring_submit();
    event_base_loopexit(base, nullptr);
    return;
  }
  evtimer_assign(&grace_ev, base, &Impl::on_grace, this);
  timeval tv{static_cast<time_t>(opt.shutdown_grace.count() / 1000),
             static_cast<suseconds_t>(opt.shutdown_grace.count() % 1000 * 1000)};
  evtimer_add(&grace_ev, &tv);
  grace_on = true;
  ring_submit();
}

// =====================================================================================
// Requests
// =====================================================================================

void HttpServer::Impl::process_input(Conn& c) {
  size_t off = 0;
  uint64_t served = 0;
  std::optional<shm::Reader::Guard> guard;
  bool entered = false, store_failed = false;
  while (!c.close_after_flush && !c.stream && !c.waiting && c.pending() < kOutHighWater) {
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
  s.ctr[kAccepting]->store(0, std::memory_order_relaxed);
  event_del(&s.tick_ev);
  event_del(&s.step_aside_ev);
  if (s.grace_on) event_del(&s.grace_ev);
  if (s.ring) s.stop_ring();
}

void HttpServer::shutdown() { impl_->begin_shutdown(); }
size_t HttpServer::open_connections() const { return impl_->conns.size(); }
uint64_t HttpServer::connections_accepted() const { return impl_->accepted; }
size_t HttpServer::connection_limit() const { return impl_->max_conns; }
ReaderEngine HttpServer::engine() const { return impl_->ring ? ReaderEngine::io_uring : ReaderEngine::epoll; }
bool HttpServer::run() { return impl_->ring ? impl_->ring_loop() : event_base_dispatch(impl_->base) >= 0; }

namespace {

void on_stop_signal(evutil_socket_t, short, void* arg) { static_cast<HttpServer*>(arg)->shutdown(); }

// Every connection is a descriptor, and the usual soft default (1024) would cap a
// reader far below max-connections-per-reader; the hard limit is the operator's word.
void raise_descriptor_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max) return;
  const rlim_t before = rl.rlim_cur;
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
    log::warn("cannot raise the descriptor limit from {} to {}: {}", before, rl.rlim_max, std::strerror(errno));
}

}  // namespace

int run_reader(shm::Store& store, const ReaderOptions& options) {
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGHUP, SIG_IGN);  // reload is the writer's business
  raise_descriptor_limit();
  try {
    shm::Reader reader(store, options.slot);
    std::unique_ptr<event_base, void (*)(event_base*)> base(event_base_new(), &event_base_free);
    if (!base) throw std::runtime_error("event_base_new failed");
    int rc = kExitOk;
    {
      HttpServer server(base.get(), reader, store, options);
      rlimit rl{};
      getrlimit(RLIMIT_NOFILE, &rl);
      if (server.connection_limit() < options.max_connections)
        log::warn("accepting at most {} connections, not max-connections-per-reader {}: the descriptor limit is {} "
                  "(raise LimitNOFILE / ulimit -n)", server.connection_limit(), options.max_connections, rl.rlim_cur);
      else
        log::info("accepting up to {} connections (descriptor limit {}), engine {}", server.connection_limit(),
                  rl.rlim_cur, reader_engine_name(server.engine()));
      event* term = evsignal_new(base.get(), SIGTERM, &on_stop_signal, &server);
      event* intr = evsignal_new(base.get(), SIGINT, &on_stop_signal, &server);
      if (!term || !intr || evsignal_add(term, nullptr) != 0 || evsignal_add(intr, nullptr) != 0)
        throw std::runtime_error("cannot install SIGTERM/SIGINT handlers");
      if (!server.run()) rc = kExitFailure;
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
