// tests/cluster/tcp_proxy.h: a TCP relay on a free loopback port in front of one
// upstream port, for partition tests: cut() makes the link silent the way a network
// partition does (no RST, no FIN, bytes wait in kernel buffers), heal() resumes it, and
// retarget() drops every relayed connection and sends new ones to another upstream.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace cluster_test {

class TcpProxy {
 public:
  explicit TcpProxy(uint16_t upstream_port);
  ~TcpProxy();  // stops the thread, closes every socket
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  uint16_t port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }

  // Each returns once the relay thread has taken the change: after cut() returns not
  // one more byte is relayed, after retarget() returns the old connections are closed.
  void cut();
  void heal();
  void retarget(uint16_t upstream_port);

 private:
  struct Settings {
    bool cut = false;
    uint16_t upstream = 0;
    uint64_t retargets = 0;  // closes every relayed connection when it changes
    bool stop = false;
  };
  void change(const std::function<void(Settings&)>& edit);
  void run();

  uint16_t port_ = 0;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};  // a pipe: a change of settings wakes the relay thread's poll
  std::mutex mutex_;
  std::condition_variable taken_;
  Settings settings_;
  uint64_t changes_ = 0, changes_taken_ = 0;
  std::thread thread_;
};

}  // namespace cluster_test
