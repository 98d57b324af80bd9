// server/reader.h: the reader process of telemetryd. A reader serves the HTTP read API
// from the current shm snapshot on a libevent loop, with its
// own minimal HTTP/1.1 handling (server/http.h) instead of evhttp: evhttp allocates
// several objects per request, and the reader's CPU per request is the point of the
// project.
//
// Two connection engines do the socket I/O, chosen at start (ReaderOptions::engine):
// io_uring (multishot accept and receive into a ring of provided buffers, sends and
// everything else batched into one io_uring_enter per loop turn), and epoll (one
// libevent event per connection and direction, recv/send system calls). Both share the
// request handling, timeouts, limits and drain; the libevent loop runs the timers and
// signals in both, and with io_uring it watches the ring's descriptor.
//
// The supervisor calls run_reader() in a forked child. Tests drive an HttpServer on an
// event_base of their own.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "shm/shm.h"

struct event_base;

namespace server {

// The connection engine of a reader. automatic: io_uring when the kernel offers what the
// engine needs (io_uring_unavailable_reason() is ""), else epoll.
enum class ReaderEngine { automatic, io_uring, epoll };

// "auto", "io_uring" or "epoll"; nullopt for anything else.
std::optional<ReaderEngine> parse_reader_engine(std::string_view text);
std::string_view reader_engine_name(ReaderEngine engine);

// "" when this process may run the io_uring engine (a ring can be created, and the
// kernel has multishot receive and ring-mapped provided buffers: Linux 6.0), else why
// not ("io_uring_queue_init: Operation not permitted", ...). Probed once, then cached.
const std::string& io_uring_unavailable_reason();

struct ReaderOptions {
  int listen_fd = -1;  // already bound+listening, non-blocking, shared by all readers (inherited across fork)
  uint32_t slot = 0;   // this reader's shm slot
  std::chrono::milliseconds idle_timeout{60000};     // keep-alive idle close
  std::chrono::milliseconds request_timeout{10000};  // slow client: headers must arrive within this
  std::chrono::milliseconds healthz_max_age{10000};  // /healthz 503 if the snapshot is older
  std::chrono::milliseconds shutdown_grace{5000};    // SIGTERM: finish in-flight within this
  std::chrono::milliseconds heartbeat_every{100};    // Reader::heartbeat() period
  size_t max_header_bytes = 8192;                    // 431 beyond
  size_t max_connections = 10000;  // open at once; also capped by RLIMIT_NOFILE (see connection_limit())
  size_t prom_series_limit = 10000;
  size_t query_max_scanned = 100000;                 // /v1/query: series looked at per request
  // A partitioned node: how long a read waits for the other nodes' parts before it
  // answers without the missing ones (marked partial).
  std::chrono::milliseconds fanout_deadline{1000};
  std::string state_dir;  // the writer's state dir, for /metrics; "" for a cluster node
  // io_uring asked for but unavailable falls back to epoll with a warning (automatic:
  // an info line); the reader's kReaderEngine counter says which one runs.
  ReaderEngine engine = ReaderEngine::automatic;
};

// Runs the reader's event loop in this (forked) process until SIGTERM/SIGINT (graceful:
// HttpServer::shutdown's drain, bounded by shutdown_grace) and returns the process exit
// code (server::kExitOk, or kExitFailure when the loop cannot run). Raises the soft
// RLIMIT_NOFILE to the hard limit first and logs the connection limit it got. Installs
// its own signal handling on a fresh event_base. `store` is the opened shm store; the reader
// claims options.slot in it for its lifetime.
int run_reader(shm::Store& store, const ReaderOptions& options);

// The HTTP server of one reader, on a caller's event_base (one thread: the base's).
// run_reader() is a thin wrapper around it; tests drive it directly.
class HttpServer {
 public:
  // Starts accepting on options.listen_fd at once. `reader` is this process's slot in
  // the store; both must outlive the server. Throws std::runtime_error when the
  // listening socket cannot be watched.
  HttpServer(event_base* base, shm::Reader& reader, shm::Store& store, const ReaderOptions& options);
  ~HttpServer();  // closes every connection
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Graceful stop (drain): stop accepting, keep every open connection, answer each
  // one's next request (and any pipelined before it) with `Connection: close` and then
  // close it, and break the loop of `base` once none is left or after
  // options.shutdown_grace (whichever comes first); connections still idle then are
  // closed by the destructor.
  void shutdown();

  size_t open_connections() const;
  uint64_t connections_accepted() const;
  // options.max_connections, lowered to what RLIMIT_NOFILE (when the server was built)
  // leaves after the reader's own descriptors. At the limit the server stops accepting
  // (connections wait in the shared queue, for a peer or for a close here).
  size_t connection_limit() const;
  // The engine that runs: io_uring or epoll, never automatic.
  ReaderEngine engine() const;

  // Runs the loop of the server's event_base until it is exited or broken (as shutdown's
  // drain does when it ends). epoll: event_base_dispatch. io_uring: the reader waits in
  // io_uring_enter, which also submits the turn's operations, so a turn costs one
  // system call; libevent's timers, signals and any other event of the base run in a
  // non-blocking pass between waits (at least every millisecond while busy, after a
  // signal interrupted the wait, and at the latest every heartbeat_every when idle).
  // Returns false when the loop failed.
  bool run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace server
