// tests/server/e2e_util.h: what the end-to-end tests share: a running telemetryd
// (the built binary, started on a free loopback port with its own shm name and admin
// socket), a tiny HTTP client, an admin-socket client, and a local upstream HTTP
// server. Every wait is a bounded poll; no test passes or fails on timing except the
// bounds the spec sets.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>

namespace e2e {

using namespace std::chrono_literals;

std::string telemetryd_bin();
std::string telemetryctl_bin();

// A fresh scratch directory under /tmp, removed by the destructor.
struct TempDir {
  TempDir();
  ~TempDir();
  std::string path;
  std::string file(const std::string& name) const { return path + "/" + name; }
};

void write_file(const std::string& path, const std::string& text);
bool file_exists(const std::string& path);
uint16_t free_port();
// Polls pred every 20ms until it holds or `limit` passes.
bool wait_for(std::function<bool()> pred, std::chrono::milliseconds limit = 10s);

// Runs a program, returns its exit status (or 128+signal) and what it printed.
struct RunResult {
  int status = -1;
  std::string out, err;
};
RunResult run(const std::vector<std::string>& argv);

struct HttpResponse {
  int status = 0;  // 0: no response (connection refused, reset, closed)
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  int connect_errno = 0;
};
// One request on a fresh connection (Connection: close).
HttpResponse http_get(uint16_t port, const std::string& target, const std::string& extra_headers = "",
                      const std::string& method = "GET");
// Sends raw bytes, returns everything until the server closes (bounded by 5s).
std::string http_raw(uint16_t port, const std::string& bytes);
std::string url_encode(const std::string& text);

// A client that keeps one connection and reuses it, the way wrk and curl do: it
// reconnects only after a response that said `Connection: close` (or before the first
// request). A request counts as failed when it was sent and no complete response came
// back (reset, EOF, cut short): exactly what a draining server must never cause.
class KeepAliveClient {
 public:
  enum class Outcome { ok, close, refused, failed };  // close: answered with Connection: close
  explicit KeepAliveClient(uint16_t port) : port_(port) {}
  ~KeepAliveClient();
  KeepAliveClient(const KeepAliveClient&) = delete;
  KeepAliveClient& operator=(const KeepAliveClient&) = delete;
  // One GET; `status` gets the response status (0 without one).
  Outcome get(const std::string& target, int* status = nullptr);
  bool connected() const { return fd_ >= 0; }

 private:
  uint16_t port_;
  int fd_ = -1;
};

// A local upstream serving one body at every path.
class Upstream {
 public:
  explicit Upstream(std::string body);
  ~Upstream();
  uint16_t port() const { return port_; }
  std::string url() const;

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  std::string body_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// telemetryd under test.
class Service {
 public:
  // extra: more flags. Waits until the admin socket answers and a snapshot exists.
  explicit Service(std::vector<std::string> extra = {}, bool wait_ready = true);
  ~Service();  // SIGKILL if still running, then removes what it left

  pid_t pid() const { return pid_; }
  uint16_t port() const { return port_; }
  const std::string& socket() const { return socket_; }
  const std::string& shm_name() const { return shm_; }
  const TempDir& dir() const { return dir_; }

  // The reply to one admin line, without the final empty line ("" if no answer).
  std::string admin(const std::string& line) const;
  // `name: value` from a text reply.
  static std::optional<std::string> field(const std::string& reply, const std::string& name);
  uint64_t info_number(const std::string& name) const;
  std::vector<pid_t> reader_pids() const;
  pid_t writer_pid() const;

  // Sends sig; for SIGTERM waits for the exit. Returns the exit status (or -1).
  int stop(int sig = 15, std::chrono::milliseconds limit = 20s);
  bool running();
  std::string log() const;
  bool shm_left() const;  // any /dev/shm segment of this service

 private:
  TempDir dir_;
  uint16_t port_ = 0;
  std::string socket_, shm_;
  pid_t pid_ = -1;
  int exit_status_ = -1;
};

}  // namespace e2e
