// tests/server/e2e_util.cc: helpers of the end-to-end tests (see e2e_util.h).
#include "e2e_util.h"

#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <poll.h>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

namespace e2e {

std::string telemetryd_bin() { return TELEMETRYD_BIN; }
std::string telemetryctl_bin() { return TELEMETRYCTL_BIN; }

TempDir::TempDir() {
  char tmpl[] = "/tmp/telemetryd-e2e-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  path = tmpl;
}
TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

void write_file(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  std::ofstream(tmp) << text;
  std::rename(tmp.c_str(), path.c_str());  // atomic: the writer never reads half a file
}

bool file_exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

// A port the kernel just handed out and took back may be handed out again at once: a
// test that asks for two ports before binding either (listen and otlp-listen) got the
// same one twice. So a port is given once per process.
uint16_t free_port() {
  static std::mutex lock;
  static std::set<uint16_t> given;
  std::lock_guard hold(lock);
  for (;;) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    close(fd);
    if (given.insert(ntohs(a.sin_port)).second) return ntohs(a.sin_port);
  }
}

bool wait_for(std::function<bool()> pred, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(20ms);
  }
}

namespace {

std::string read_fd(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, size_t(n));
  return out;
}

// Reads until EOF or the deadline (ms).
std::string read_until_close(int fd, int limit_ms) {
  std::string out;
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(limit_ms);
  char buf[65536];
  for (;;) {
    int left = int(std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()).count());
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, left) <= 0) break;
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, size_t(n));
  }
  return out;
}

int connect_tcp(uint16_t port, int* err) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    *err = errno;
    close(fd);
    return -1;
  }
  return fd;
}

bool send_all(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    ssize_t n = send(fd, s.data() + done, s.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += size_t(n);
  }
  return true;
}

HttpResponse parse_response(const std::string& raw) {
  HttpResponse r;
  size_t head_end = raw.find("\r\n\r\n");
  if (raw.compare(0, 9, "HTTP/1.1 ") != 0 || head_end == std::string::npos) return r;
  r.status = std::atoi(raw.c_str() + 9);
  std::istringstream head(raw.substr(0, head_end));
  std::string line;
  std::getline(head, line);
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (char& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
    size_t v = line.find_first_not_of(' ', colon + 1);
    r.headers[name] = v == std::string::npos ? "" : line.substr(v);
  }
  r.body = raw.substr(head_end + 4);
  if (auto it = r.headers.find("content-length"); it != r.headers.end()) {
    size_t len = std::stoul(it->second);
    if (r.body.size() < len) r.status = 0;  // cut short: a failed request
    r.body.resize(std::min(len, r.body.size()));
  }
  return r;
}

}  // namespace

RunResult run(const std::vector<std::string>& argv) {
  int out[2], err[2];
  if (pipe(out) != 0 || pipe(err) != 0) throw std::runtime_error("pipe failed");
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(err[1], 2);
    for (int fd : {out[0], out[1], err[0], err[1]}) close(fd);  // else a daemon keeps our pipe open
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  RunResult r;
  // Both pipes are small here; reading one then the other cannot deadlock for them.
  r.out = read_fd(out[0]);
  r.err = read_fd(err[0]);
  close(out[0]);
  close(err[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

HttpResponse http_get(uint16_t port, const std::string& target, const std::string& extra_headers,
                      const std::string& method) {
  int err = 0;
  int fd = connect_tcp(port, &err);
  if (fd < 0) {
    HttpResponse r;
    r.connect_errno = err;
    return r;
  }
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + extra_headers + "\r\n";
  HttpResponse r;
  if (send_all(fd, req)) r = parse_response(read_until_close(fd, 5000));
  close(fd);
  return r;
}

std::string http_raw(uint16_t port, const std::string& bytes) {
  int err = 0;
  int fd = connect_tcp(port, &err);
  if (fd < 0) return "";
  send_all(fd, bytes);
  std::string out = read_until_close(fd, 5000);
  close(fd);
  return out;
}

KeepAliveClient::~KeepAliveClient() {
  if (fd_ >= 0) close(fd_);
}

KeepAliveClient::Outcome KeepAliveClient::get(const std::string& target, int* status) {
  if (status) *status = 0;
  if (fd_ < 0) {
    int err = 0;
    fd_ = connect_tcp(port_, &err);
    if (fd_ < 0) return Outcome::refused;
  }
  auto fail = [&] {
    close(fd_);
    fd_ = -1;
    return Outcome::failed;
  };
  if (!send_all(fd_, "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n\r\n")) return fail();
  // Head, then Content-Length bytes of body; 10s per read bounds a hung server.
  std::string raw;
  size_t head_end = std::string::npos, need = std::string::npos;
  char buf[16384];
  while (need == std::string::npos || raw.size() < need) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 10000) <= 0) return fail();
    ssize_t n = read(fd_, buf, sizeof buf);
    if (n <= 0) return fail();  // EOF or reset before the whole response: failed
    raw.append(buf, size_t(n));
    if (head_end == std::string::npos && (head_end = raw.find("\r\n\r\n")) != std::string::npos) {
      HttpResponse head = parse_response(raw.substr(0, head_end + 4));
      auto it = head.headers.find("content-length");
      if (head.headers.empty() || it == head.headers.end()) return fail();  // every answer here has a length
      need = head_end + 4 + std::stoul(it->second);
    }
  }
  HttpResponse r = parse_response(raw);
  if (status) *status = r.status;
  if (r.status == 0) return fail();
  auto conn = r.headers.find("connection");
  if (conn != r.headers.end() && conn->second == "close") {
    close(fd_);
    fd_ = -1;
    return Outcome::close;
  }
  return Outcome::ok;
}

std::string url_encode(const std::string& text) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '.' || c == '_' || c == '-' || c == '~') {
      out += char(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------
// Upstream
// ---------------------------------------------------------------------------------

Upstream::Upstream(std::string body) : body_(std::move(body)) {
  fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd_, 64) != 0)
    throw std::runtime_error("upstream: bind failed");
  socklen_t len = sizeof a;
  getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  thread_ = std::thread([this] {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      std::string req;
      char buf[4096];
      while (req.find("\r\n\r\n") == std::string::npos) {
        pollfd q{c, POLLIN, 0};
        if (poll(&q, 1, 2000) <= 0) break;
        ssize_t n = read(c, buf, sizeof buf);
        if (n <= 0) break;
        req.append(buf, size_t(n));
      }
      std::string resp = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " +
                         std::to_string(body_.size()) + "\r\n\r\n" + body_;
      send_all(c, resp);
      close(c);
    }
  });
}

Upstream::~Upstream() {
  stop_ = true;
  thread_.join();
  close(fd_);
}

std::string Upstream::url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/metrics.json"; }

// ---------------------------------------------------------------------------------
// Service
// ---------------------------------------------------------------------------------

Service::Service(std::vector<std::string> extra, bool wait_ready) {
  static std::atomic<int> counter{0};
  port_ = free_port();
  socket_ = dir_.file("admin.sock");
  shm_ = "tmd-e2e-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
  std::vector<std::string> argv = {telemetryd_bin(),
                                   "--listen", "127.0.0.1:" + std::to_string(port_),
                                   "--shm-name", shm_,
                                   "--admin-socket", socket_,
                                   "--log-file", dir_.file("telemetryd.log")};
  // The reader engine under test (tests/server/server_thread.h, with_engine).
  const char* engine = std::getenv("TELEMETRYD_TEST_READER_ENGINE");
  if (engine && *engine) argv.insert(argv.end(), {"--reader-engine", engine});
  argv.insert(argv.end(), extra.begin(), extra.end());
  pid_ = fork();
  if (pid_ == 0) {
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  if (!wait_ready) return;
  bool up = wait_for([&] { return running() && info_number("generation") >= 1 && field(admin("show info"), "state") == "ready"; }, 20s);
  if (!up) throw std::runtime_error("telemetryd did not become ready; log:\n" + log());
  if (!engine || !*engine || std::string_view(engine) == "auto") return;
  std::string running;
  wait_for([&] { return (running = field(admin("show info"), "reader_engines_running").value_or("-")) != "-"; }, 10s);
  if (running == engine) return;
  if (std::string_view(engine) == "io_uring" && running == "epoll") {  // fell back: the log says why
    std::fprintf(stderr, "SKIPPED: the io_uring reader engine is unavailable here; log:\n%s\n", log().c_str());
    stop();  // a graceful stop removes the shared memory
    std::_Exit(77);
  }
  throw std::runtime_error(std::string("the readers run engine '") + running + "', not " + engine);
}

Service::~Service() {
  if (pid_ > 0 && running()) {
    kill(pid_, SIGKILL);
    int status;
    waitpid(pid_, &status, 0);
  }
  // A killed supervisor leaves its children to die of PR_SET_PDEATHSIG, and its
  // segments and socket behind: remove them for the next test.
  if (DIR* d = opendir("/dev/shm")) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n == shm_ || n.rfind(shm_ + ".", 0) == 0) unlink(("/dev/shm/" + n).c_str());
    }
    closedir(d);
  }
  // ... and the writer's default state dir (/dev/shm/NAME.state), a directory.
  const std::string state = "/dev/shm/" + shm_ + ".state";
  if (DIR* d = opendir(state.c_str())) {
    while (dirent* e = readdir(d)) unlink((state + "/" + e->d_name).c_str());
    closedir(d);
    rmdir(state.c_str());
  }
}

bool Service::running() {
  if (pid_ <= 0) return false;
  if (exit_status_ >= 0) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  return true;
}

int Service::stop(int sig, std::chrono::milliseconds limit) {
  if (running()) kill(pid_, sig);
  wait_for([&] { return !running(); }, limit);
  return exit_status_;
}

std::string Service::admin(const std::string& line) const {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, socket_.c_str(), sizeof a.sun_path - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return "";
  }
  send_all(fd, line + "\n");
  shutdown(fd, SHUT_WR);
  std::string out = read_until_close(fd, 15000);
  close(fd);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::optional<std::string> Service::field(const std::string& reply, const std::string& name) {
  std::istringstream in(reply);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(name + ": ", 0) == 0) return line.substr(name.size() + 2);
  return std::nullopt;
}

uint64_t Service::info_number(const std::string& name) const {
  auto v = field(admin("show info"), name);
  return v ? std::strtoull(v->c_str(), nullptr, 10) : 0;
}

std::vector<pid_t> Service::reader_pids() const {
  std::string w = admin("show workers");
  std::vector<pid_t> pids;
  for (int i = 0; i < 300; ++i) {
    std::string prefix = "worker." + std::to_string(i) + ".";
    auto role = field(w, prefix + "role");
    if (!role) break;
    auto state = field(w, prefix + "state");
    auto pid = field(w, prefix + "pid");
    if (*role == "reader" && state == "running" && pid) pids.push_back(pid_t(std::stoi(*pid)));
  }
  return pids;
}

pid_t Service::writer_pid() const { return pid_t(info_number("writer_pid")); }

std::string Service::log() const {
  std::ifstream f(dir_.file("telemetryd.log"));
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

bool Service::shm_left() const {
  bool found = false;
  if (DIR* d = opendir("/dev/shm")) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n == shm_ || n.rfind(shm_ + ".", 0) == 0) found = true;
    }
    closedir(d);
  }
  return found;
}

}  // namespace e2e
