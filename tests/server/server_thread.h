// tests/server/server_thread.h: what the in-process reader tests share: a listening
// socket on 127.0.0.1, one reader's HttpServer on an event_base of its own thread
// (stopped with the drain of HttpServer::shutdown, then joined), and a client socket
// with a receive timeout, so that a hung server fails a test instead of hanging it.
#pragma once

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "server/reader.h"
#include "shm/shm.h"

namespace test_server {

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
// options.listen_fd from options.slot. stop() (or the destructor) drains and joins.
class ServerThread {
 public:
  ServerThread(shm::Store& store, server::ReaderOptions options) {
    REQUIRE(pipe(stop_pipe_) == 0);
    thread_ = std::thread([this, &store, options] {
      shm::Reader reader(store, options.slot);
      event_base* base = event_base_new();
      {
        server::HttpServer server(base, reader, store, options);
        server_ = &server;
        event* stop_ev = event_new(
            base, stop_pipe_[0], EV_READ,
            [](evutil_socket_t, short, void* s) { static_cast<server::HttpServer*>(s)->shutdown(); }, &server);
        event_add(stop_ev, nullptr);
        ready_ = true;
        event_base_dispatch(base);
        event_free(stop_ev);
        server_ = nullptr;
      }
      event_base_free(base);
    });
    while (!ready_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
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
  std::thread thread_;
};

}  // namespace test_server
