// server/reader_uring.cc: the reader's io_uring connection engine. The request handling,
// timeouts, limits and drain are reader.cc's; this file replaces its socket I/O:
//   accept   one multishot accept on the shared listening socket, armed exactly while
//            update_accept() wants it (cancelled otherwise);
//   receive  one multishot receive per connection into a ring of provided buffers
//            shared by all connections, each completion copied into the connection's
//            input buffer (requests are parsed in place there, as with epoll) and its
//            buffer handed straight back;
//   send     one send of the connection's output buffer at a time; its completion is
//            where epoll's write-readiness would be (after_io).
// Operations are queued as they arise; HttpServer::run() (ring_loop) waits in
// io_uring_enter, which submits them, so one system call per loop turn carries every
// connection's sends and re-arms, and the ring's task work is deferred to those waits.
// libevent's timers and signals run in non-blocking passes between waits. A caller that
// dispatches the event_base itself gets on_ring instead, woken by an eventfd.
//
// The snapshot protocol: a response's body is copied from the snapshot into the
// connection's output buffer while the batch's read guard is held (process_input), and
// the guard is released before any send is queued, so the kernel never reads snapshot
// memory and a send in flight holds no slot (docs/architecture.md, Connection engines).
#include <liburing.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

#include "common/log.h"
#include "server/reader_impl.h"

namespace server {

namespace log = common::log;
namespace {

constexpr unsigned kSqEntries = 1024;   // operations queued per submission before a forced one
constexpr unsigned kCqEntries = 8192;   // completions between two loop turns (more are kept by the kernel)
constexpr unsigned kBufCount = 512;     // provided receive buffers (a power of two)
constexpr size_t kBufSize = 4096;
constexpr int kBufGroup = 0;
constexpr int kRoundsPerWakeup = 8;     // complete-submit rounds before the loop's timers get a turn

// user_data: the connection's address (16-byte aligned) with the operation in the low bits.
enum Op : uint64_t { op_accept = 1, op_recv = 2, op_send = 3, op_ignore = 4 };
constexpr uint64_t kOpMask = 7;
uint64_t tag(const void* conn, Op op) { return reinterpret_cast<uintptr_t>(conn) | op; }

std::string errno_text(const char* what, int err) { return fmt::format("{}: {}", what, std::strerror(err)); }

std::string probe_io_uring() {
  io_uring ring{};
  int rc = io_uring_queue_init(4, &ring, 0);
  if (rc < 0) return errno_text("io_uring_queue_init", -rc);
  std::string why;
  io_uring_probe* probe = io_uring_get_probe_ring(&ring);
  if (!probe) {
    why = "io_uring cannot be probed (Linux before 5.6)";
  } else {
    // SEND_ZC came in Linux 6.0 together with multishot receive, which the opcode
    // table cannot show: its presence stands for it.
    for (auto [op, name] : {std::pair{IORING_OP_ACCEPT, "accept"}, {IORING_OP_RECV, "recv"},
                            {IORING_OP_SEND, "send"}, {IORING_OP_ASYNC_CANCEL, "cancel"},
                            {IORING_OP_SEND_ZC, "multishot receive (Linux 6.0)"}})
      if (why.empty() && !io_uring_opcode_supported(probe, op)) why = fmt::format("io_uring has no {}", name);
    io_uring_free_probe(probe);
  }
  if (why.empty()) {
    void* mem = nullptr;
    if (posix_memalign(&mem, 4096, 4096) != 0) throw std::bad_alloc();
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uintptr_t>(mem);
    reg.ring_entries = 1;
    reg.bgid = kBufGroup;
    rc = io_uring_register_buf_ring(&ring, &reg, 0);
    if (rc < 0) why = errno_text("ring-mapped provided buffers", -rc);
    else io_uring_unregister_buf_ring(&ring, kBufGroup);
    std::free(mem);
  }
  io_uring_queue_exit(&ring);
  return why;
}

}  // namespace

std::optional<ReaderEngine> parse_reader_engine(std::string_view text) {
  if (text == "auto") return ReaderEngine::automatic;
  if (text == "io_uring") return ReaderEngine::io_uring;
  if (text == "epoll") return ReaderEngine::epoll;
  return std::nullopt;
}

std::string_view reader_engine_name(ReaderEngine engine) {
  switch (engine) {
    case ReaderEngine::automatic: return "auto";
    case ReaderEngine::io_uring: return "io_uring";
    case ReaderEngine::epoll: return "epoll";
  }
  return "auto";
}

const std::string& io_uring_unavailable_reason() {
  static const std::string reason = probe_io_uring();
  return reason;
}

struct HttpServer::Impl::Ring {
  io_uring uring{};
  bool queue_ready = false;
  void* buf_ring_mem = nullptr;  // the ring of buffer descriptors (page-aligned)
  char* buf_mem = nullptr;       // kBufCount buffers of kBufSize
  io_uring_buf_ring* bufs = nullptr;  // registered
  event ring_ev{};
  bool ev_on = false;
  event start_ev{};  // submits the first accept once the loop runs, as epoll starts watching then
  bool start_on = false;
  bool accept_armed = false, accept_cancelled = false;
  std::vector<Conn*> closing;  // released, operations still in flight: freed by reap()
  int event_fd = -1;           // with deferred task work: what a caller's loop watches

  ~Ring() {
    if (ev_on) event_del(&ring_ev);
    if (start_on) event_del(&start_ev);
    if (bufs) io_uring_unregister_buf_ring(&uring, kBufGroup);
    if (queue_ready) io_uring_queue_exit(&uring);
    if (event_fd >= 0) ::close(event_fd);
    std::free(buf_ring_mem);
    std::free(buf_mem);
  }

  // A free submission entry; a full queue is submitted first.
  io_uring_sqe* sqe() {
    io_uring_sqe* e = io_uring_get_sqe(&uring);
    if (!e) {
      io_uring_submit(&uring);
      e = io_uring_get_sqe(&uring);
      if (!e) throw std::runtime_error("reader: io_uring submission queue stuck full");
    }
    return e;
  }
  void cancel(uint64_t user_data) {
    io_uring_sqe* e = sqe();
    io_uring_prep_cancel64(e, user_data, 0);
    io_uring_sqe_set_data64(e, op_ignore);
  }
  void give_back(unsigned bid) {
    io_uring_buf_ring_add(bufs, buf_mem + size_t(bid) * kBufSize, kBufSize, bid, io_uring_buf_ring_mask(kBufCount), 0);
    io_uring_buf_ring_advance(bufs, 1);
  }
};

HttpServer::Impl::Impl(event_base* b, shm::Reader& r, shm::Store& s, const ReaderOptions& o)
    : base(b), reader(r), store(s), opt(o) {}
HttpServer::Impl::~Impl() = default;

std::string HttpServer::Impl::start_ring() {
  auto r = std::make_unique<Ring>();
  // One thread submits (SINGLE_ISSUER: no locking in the kernel), and the task work that
  // posts completions runs when the reader asks for completions (DEFER_TASKRUN, Linux
  // 6.1), in a batch, instead of interrupting it; older kernels get COOP_TASKRUN (no
  // interrupt while the reader runs), then neither.
  io_uring_params p{};
  int rc = -EINVAL;
  for (unsigned flags : {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
                         IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN, 0u}) {
    p = {};
    p.flags = IORING_SETUP_CQSIZE | flags;
    p.cq_entries = kCqEntries;
    rc = io_uring_queue_init_params(kSqEntries, &r->uring, &p);
    if (rc != -EINVAL) break;
  }
  if (rc < 0) return errno_text("io_uring_queue_init", -rc);
  r->queue_ready = true;
  if (!(p.features & IORING_FEAT_NODROP)) return "io_uring drops completions on overflow (Linux before 5.5)";

  if (posix_memalign(&r->buf_ring_mem, 4096, kBufCount * sizeof(io_uring_buf)) != 0 ||
      posix_memalign(reinterpret_cast<void**>(&r->buf_mem), 4096, kBufCount * kBufSize) != 0)
    throw std::bad_alloc();
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uintptr_t>(r->buf_ring_mem);
  reg.ring_entries = kBufCount;
  reg.bgid = kBufGroup;
  rc = io_uring_register_buf_ring(&r->uring, &reg, 0);
  if (rc < 0) return errno_text("ring-mapped provided buffers", -rc);
  r->bufs = static_cast<io_uring_buf_ring*>(r->buf_ring_mem);
  io_uring_buf_ring_init(r->bufs);
  for (unsigned i = 0; i < kBufCount; ++i)
    io_uring_buf_ring_add(r->bufs, r->buf_mem + size_t(i) * kBufSize, kBufSize, i, io_uring_buf_ring_mask(kBufCount), int(i));
  io_uring_buf_ring_advance(r->bufs, kBufCount);

  // For a caller's own event_base_dispatch (run() waits in the ring instead): the loop
  // watches the ring's descriptor, or with deferred task work an eventfd the kernel
  // signals when work is pending (the ring's descriptor only turns readable once the
  // work has run, which only asking for completions does).
  int watched = r->uring.ring_fd;
  if (p.flags & IORING_SETUP_DEFER_TASKRUN) {
    r->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->event_fd < 0) return errno_text("eventfd", errno);
    if ((rc = io_uring_register_eventfd(&r->uring, r->event_fd)) < 0) return errno_text("io_uring eventfd", -rc);
    watched = r->event_fd;
  }
  event_assign(&r->ring_ev, base, watched, EV_READ | EV_PERSIST, &Impl::on_ring, this);
  if (event_add(&r->ring_ev, nullptr) != 0) return "cannot watch the io_uring descriptor";
  r->ev_on = true;
  evtimer_assign(&r->start_ev, base, [](evutil_socket_t, short, void* arg) { static_cast<Impl*>(arg)->ring_submit(); },
                 this);
  static constexpr timeval kNow{0, 0};
  evtimer_add(&r->start_ev, &kNow);
  r->start_on = true;
  ring = std::move(r);
  return "";
}

// Cancels every operation and waits (bounded) for their completions, so that no send
// still reads a connection's buffer or a receive writes a provided one when they are
// freed; then frees the connections the ring was keeping.
void HttpServer::Impl::stop_ring() {
  Ring& r = *ring;
  io_uring_sqe* e = r.sqe();
  io_uring_prep_cancel64(e, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(e, op_ignore);
  io_uring_submit(&r.uring);
  size_t pending = r.accept_armed;
  for (const Conn* c : r.closing) pending += c->ops;
  const uint64_t deadline = shm::monotonic_ns() + 1'000'000'000;
  while (pending > 0 && shm::monotonic_ns() < deadline) {
    __kernel_timespec ts{0, 10'000'000};
    io_uring_cqe* cqe = nullptr;
    if (io_uring_wait_cqe_timeout(&r.uring, &cqe, &ts) != 0) continue;
    while (io_uring_peek_cqe(&r.uring, &cqe) == 0) {
      const io_uring_cqe copy = *cqe;
      io_uring_cqe_seen(&r.uring, cqe);
      const uint64_t op = copy.user_data & kOpMask;
      auto* c = reinterpret_cast<Conn*>(copy.user_data & ~kOpMask);
      const bool more = copy.flags & IORING_CQE_F_MORE;
      if (op == op_accept) {
        if (copy.res >= 0) ::close(copy.res);  // accepted as the loop ended: nobody will serve it
        if (!more) r.accept_armed = false, --pending;
      } else if ((op == op_recv && !more) || op == op_send) {
        --c->ops;
        --pending;
      }
    }
  }
  for (Conn* c : r.closing) delete c;  // after a failed wait too: the ring's exit cancels what is left
  r.closing.clear();
  ring.reset();
}

void HttpServer::Impl::ring_sync_accept() {
  Ring& r = *ring;
  if (accept_on && !r.accept_armed) {
    io_uring_sqe* e = r.sqe();
    io_uring_prep_multishot_accept(e, opt.listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(e, op_accept);
    r.accept_armed = true;
    r.accept_cancelled = false;
  } else if (!accept_on && r.accept_armed && !r.accept_cancelled) {
    r.cancel(op_accept);
    r.accept_cancelled = true;
  }
}

void HttpServer::Impl::ring_release(Conn& c) {
  if (c.recv_on && !c.recv_cancelled) ring->cancel(tag(&c, op_recv));
  if (c.send_on) ring->cancel(tag(&c, op_send));
  ::close(c.fd);  // the operations hold the socket until they end
  c.released = true;
  ring->closing.push_back(&c);
}

// Reading stops only when the input reached its cap (a client pipelining far ahead of
// reading its responses: the kernel's socket buffers then push back on it, as with
// epoll); it resumes once after_io consumed the input.
void HttpServer::Impl::ring_want_read(Conn& c) {
  if (c.released || c.recv_on) return;
  if (!c.lingering && c.in_len >= opt.max_header_bytes + kReadSlack) return;
  io_uring_sqe* e = ring->sqe();
  io_uring_prep_recv_multishot(e, c.fd, nullptr, 0, 0);
  e->flags |= IOSQE_BUFFER_SELECT;
  e->buf_group = kBufGroup;
  io_uring_sqe_set_data64(e, tag(&c, op_recv));
  c.recv_on = true;
  c.recv_cancelled = false;
  ++c.ops;
}

void HttpServer::Impl::ring_send(Conn& c) {
  if (c.released || c.send_on || c.pending() == 0) return;
  io_uring_sqe* e = ring->sqe();
  io_uring_prep_send(e, c.fd, c.out.data() + c.out_off, c.pending(), MSG_NOSIGNAL);
  io_uring_sqe_set_data64(e, tag(&c, op_send));
  c.send_on = true;
  ++c.ops;
}

void HttpServer::Impl::ring_submit() {
  if (!ring) return;
  if (io_uring_sq_ready(&ring->uring) > 0) io_uring_submit(&ring->uring);
  ring_reap();
}

void HttpServer::Impl::ring_reap() {
  std::erase_if(ring->closing, [](Conn* c) {
    if (c->ops > 0) return false;
    delete c;
    return true;
  });
}

// The completion handlers. None touches a connection after a call that may close it;
// a closed one is only freed by ring_submit's reap, after its last completion.

void HttpServer::Impl::ring_accepted(int res, bool more) {
  Ring& r = *ring;
  if (!more) r.accept_armed = r.accept_cancelled = false;
  if (res >= 0) {
    // A connection accepted after the accept was cancelled (the limit, a step-aside,
    // the drain) is served all the same: the limit can be passed by the accepts that
    // were under way when it was reached.
    now_ms = shm::monotonic_ns() / 1'000'000;
    add_conn(res);
    if (!stepped_aside && should_step_aside()) {
      stepped_aside = true;
      bump(kAcceptStepAsides);
      static constexpr timeval kStepAside{0, 1000};
      evtimer_add(&step_aside_ev, &kStepAside);
    }
  } else if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
    // Out of descriptors or memory: as with epoll, the connection stays queued for a
    // peer, and accepting resumes at a close or the next tick.
    accept_paused = true;
  } else if (res != -ECANCELED && res != -EINTR && res != -ECONNABORTED && res != -EAGAIN) {
    log::warn("accept on the listening socket: {}", std::strerror(-res));
  }
  update_accept();
  ring_sync_accept();  // re-arms a multishot accept the kernel ended
}

void HttpServer::Impl::ring_received(Conn& c, int res, uint32_t flags) {
  const bool more = flags & IORING_CQE_F_MORE;
  if (!more) {
    c.recv_on = false;
    --c.ops;
  }
  if (res > 0 && (flags & IORING_CQE_F_BUFFER)) {
    const unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
    if (!c.released) ring_take_input(c, ring->buf_mem + size_t(bid) * kBufSize, size_t(res));
    ring->give_back(bid);
    if (!more && !c.released) ring_want_read(c);
    return;
  }
  if (c.released) return;
  if (res == -ENOBUFS || res == -ECANCELED || res > 0) ring_want_read(c);  // the buffers are back by now
  else close_conn(c);  // EOF or reset: nothing more can be answered
}

// A receive's bytes into the connection's input buffer, then answered as epoll's
// read_conn does, unless a send is in flight (its completion answers them).
void HttpServer::Impl::ring_take_input(Conn& c, const char* data, size_t n) {
  if (c.lingering) return;  // draining until the peer's EOF
  const size_t cap = opt.max_header_bytes + kReadSlack;
  if (c.in.size() < c.in_len + n) c.in.resize(std::max(cap, c.in_len + n));
  std::memcpy(c.in.data() + c.in_len, data, n);
  if (c.in_len == 0) c.request_started_ms = now_ms;
  c.in_len += n;
  c.last_active_ms = now_ms;
  if (c.in_len >= cap && c.recv_on && !c.recv_cancelled) {
    ring->cancel(tag(&c, op_recv));
    c.recv_cancelled = true;
  }
  if (c.send_on || c.stream) return;
  process_input(c);
  if (flush(c)) after_io(c);
}

void HttpServer::Impl::ring_sent(Conn& c, int res) {
  c.send_on = false;
  --c.ops;
  if (c.released) return;
  if (res == -EAGAIN || res == -EINTR) return ring_send(c);
  if (res < 0) return close_conn(c);
  c.out_off += size_t(res);
  c.last_active_ms = now_ms;
  if (c.pending() > 0) return ring_send(c);
  c.out.clear();  // keeps the capacity: steady state allocates nothing
  c.out_off = 0;
  after_io(c);
}

void HttpServer::Impl::ring_complete() {
  Ring& r = *ring;
  io_uring_cqe* cqe = nullptr;
  while (io_uring_peek_cqe(&r.uring, &cqe) == 0) {
    const io_uring_cqe copy = *cqe;
    io_uring_cqe_seen(&r.uring, cqe);
    auto* c = reinterpret_cast<Conn*>(copy.user_data & ~kOpMask);
    switch (copy.user_data & kOpMask) {
      case op_accept: ring_accepted(copy.res, copy.flags & IORING_CQE_F_MORE); break;
      case op_recv: ring_received(*c, copy.res, copy.flags); break;
      case op_send: ring_sent(*c, copy.res); break;
      default: break;  // a cancellation's own completion
    }
  }
}

// The ring's descriptor became readable on the libevent loop (a caller's
// event_base_dispatch rather than run()).
void HttpServer::Impl::on_ring(evutil_socket_t, short, void* arg) {
  auto* s = static_cast<Impl*>(arg);
  Ring& r = *s->ring;
  if (r.event_fd >= 0) {
    uint64_t n;
    (void)!::read(r.event_fd, &n, sizeof n);
    io_uring_get_events(&r.uring);  // runs the deferred task work: posts the completions
  }
  for (int round = 0; round < kRoundsPerWakeup; ++round) {
    s->ring_complete();
    const bool queued = io_uring_sq_ready(&r.uring) > 0;
    s->ring_submit();
    // Sends often complete within the submission: answer what they unblocked now.
    if (!queued || !io_uring_cq_ready(&r.uring)) break;
  }
}

// The reader's own loop with io_uring. Waiting in io_uring_enter rather than in
// epoll_wait on the ring's descriptor matters: a completion is posted by task work run
// in the reader's own context, and a reader asleep in epoll_wait is woken for it with
// EINTR, then sleeps again until the posted completion makes the descriptor readable:
// three system calls per wakeup where waiting in the ring takes one, which also carries
// the turn's submissions.
bool HttpServer::Impl::ring_loop() {
  Ring& r = *ring;
  if (r.ev_on) {
    event_del(&r.ring_ev);
    r.ev_on = false;
  }
  if (r.event_fd >= 0) io_uring_unregister_eventfd(&r.uring);  // nobody watches it now
  uint64_t last_pass_ns = 0;
  bool interrupted = true;  // start with a pass: the first accept is submitted by a timer
  for (;;) {
    const uint64_t now = shm::monotonic_ns();
    // Reads waiting for other nodes: their HTTP client runs in the libevent passes.
    if (interrupted || shutting_down || fanouts_waiting || now - last_pass_ns >= 1'000'000) {
      if (event_base_loop(base, EVLOOP_NONBLOCK) < 0) return false;
      if (event_base_got_exit(base) || event_base_got_break(base)) return true;
      last_pass_ns = now;
    }
    // Idle, the wait ends at the tick (heartbeat, timeouts); a step-aside or the drain
    // needs the loop's timers within a millisecond; a read waiting for another node polls
    // libevent every 50 us (its sockets are libevent's, not the ring's).
    const int64_t wait_ms = stepped_aside || shutting_down ? 1 : std::max<int64_t>(1, opt.heartbeat_every.count());
    __kernel_timespec ts{wait_ms / 1000, wait_ms % 1000 * 1'000'000};
    if (fanouts_waiting) ts = {0, 50'000};
    io_uring_cqe* cqe = nullptr;
    const int rc = io_uring_submit_and_wait_timeout(&r.uring, &cqe, 1, &ts, nullptr);
    interrupted = rc == -EINTR || rc == -ETIME;
    if (rc < 0 && rc != -EINTR && rc != -ETIME && rc != -EAGAIN && rc != -EBUSY) {
      log::error("io_uring_enter: {}", std::strerror(-rc));
      return false;
    }
    ring_complete();
    ring_reap();  // what the completions queued is submitted by the next wait
  }
}

}  // namespace server
