// tests/server/server_thread.h: what the in-process reader tests share: a listening
// socket on 127.0.0.1, one reader's HttpServer on an event_base of its own thread
// (stopped with the drain of HttpServer::shutdown, then joined), and a client socket
// with a receive timeout, so that a hung server fails a test instead of hanging it;
// and the connection engine the suite runs (with_engine).
#pragma once

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <thread>

#include "server/reader.h"
#include "shm/shm.h"

namespace test_server {

// The reader engine under test: ctest registers the HTTP suites once per engine and
// passes TELEMETRYD_TEST_READER_ENGINE (io_uring or epoll; unset: the default, auto).
// io_uring asked for where the kernel or sandbox refuses it: the test says so and exits
// 77, which ctest reports as skipped, never as passed.
inline const char* engine_under_test() {
  const char* e = std::getenv("TELEMETRYD_TEST_READER_ENGINE");
  return e && *e ? e : nullptr;
}
inline void skip_unless_engine_available() {
  const char* e = engine_under_test();
  if (!e || std::string_view(e) != "io_uring") return;
  // Probed on a thread of its own: a ring's teardown leaves task work on the thread that
  // made it, which interrupts that thread's next blocking call (EINTR), and the tests'
  // clients run on the main thread.
  std::thread([] { server::io_uring_unavailable_reason(); }).join();
  if (server::io_uring_unavailable_reason().empty()) return;
  std::fprintf(stderr, "SKIPPED: the io_uring reader engine is unavailable here (%s)\n",
               server::io_uring_unavailable_reason().c_str());
  std::_Exit(77);
}
inline server::ReaderOptions with_engine(server::ReaderOptions o) {
  const char* e = engine_under_test();
  if (!e) return o;
  auto engine = server::parse_reader_engine(e);
  if (!engine) {
    std::fprintf(stderr, "TELEMETRYD_TEST_READER_ENGINE=%s: not auto, io_uring or epoll\n", e);
    std::_Exit(2);
  }
  skip_unless_engine_available();
  o.engine = *engine;
  return o;
}

// A non-blocking listening socket on 127.0.0.1 and a free port.
inline int listen_loopback(uint16_t* port, int backlog = 512) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(listen(fd, backlog) == 0);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

// A blocking client connection to 127.0.0.1:port; reads time out after 10 s.
inline int connect_loopback(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// One reader's HttpServer on its own thread and event_base, serving `store` on
// options.listen_fd from options.slot, run by HttpServer::run() (or, with caller_loop,
// by the thread's own event_base_dispatch). stop() (or the destructor) drains and joins.
class ServerThread {
 public:
  ServerThread(shm::Store& store, server::ReaderOptions given, bool caller_loop = false) {
    const server::ReaderOptions options = with_engine(given);
    REQUIRE(pipe(stop_pipe_) == 0);
    thread_ = std::thread([this, &store, options, caller_loop] {
      shm::Reader reader(store, options.slot);
      event_base* base = event_base_new();
      {
        server::HttpServer server(base, reader, store, options);
        server_ = &server;
        engine_ = server.engine();
        event* stop_ev = event_new(
            base, stop_pipe_[0], EV_READ,
            [](evutil_socket_t, short, void* s) { static_cast<server::HttpServer*>(s)->shutdown(); }, &server);
        event_add(stop_ev, nullptr);
        ready_ = true;
        caller_loop ? (void)event_base_dispatch(base) : (void)server.run();
        event_free(stop_ev);
        server_ = nullptr;
      }
      event_base_free(base);
    });
    while (!ready_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    // The engine asked for runs (with_engine skipped where io_uring is unavailable).
    if (options.engine != server::ReaderEngine::automatic) REQUIRE(engine_.load() == options.engine);
  }
  ~ServerThread() { stop(); }
  ServerThread(const ServerThread&) = delete;
  ServerThread& operator=(const ServerThread&) = delete;

  // HttpServer::shutdown() on the server's thread, without waiting for the loop to end.
  void request_shutdown() {
    char b = 1;
    (void)!write(stop_pipe_[1], &b, 1);
  }
  void stop() {
    if (!thread_.joinable()) return;
    request_shutdown();
    thread_.join();
    close(stop_pipe_[0]);
    close(stop_pipe_[1]);
  }
  // The server while it runs (nullptr once stopped); touch it only from tests that
  // know the loop is idle.
  server::HttpServer* server() const { return server_; }

 private:
  int stop_pipe_[2] = {-1, -1};
  std::atomic<bool> ready_{false};
  std::atomic<server::HttpServer*> server_{nullptr};
  std::atomic<server::ReaderEngine> engine_{server::ReaderEngine::automatic};
  std::thread thread_;
};

}  // namespace test_server
