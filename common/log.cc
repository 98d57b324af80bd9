// common/log.cc: formatting and writing log lines (see log.h).
#include "common/log.h"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <stdexcept>
#include <unistd.h>

namespace common::log {

namespace {

std::string g_role = "telemetryd";
std::atomic<uint64_t> g_local_level{uint64_t(Level::info)};
std::atomic<uint64_t>* g_level = &g_local_level;
std::string g_path;
int g_fd = -1;

int open_append(const std::string& path) {
  return ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
}

}  // namespace

std::string_view level_name(Level level) {
  switch (level) {
    case Level::debug: return "debug";
    case Level::info: return "info";
    case Level::warn: return "warn";
    case Level::error: return "error";
  }
  return "info";
}

std::optional<Level> parse_level(std::string_view text) {
  if (text == "debug") return Level::debug;
  if (text == "info") return Level::info;
  if (text == "warn" || text == "warning") return Level::warn;
  if (text == "error") return Level::error;
  return std::nullopt;
}

void set_role(std::string role) { g_role = std::move(role); }
void set_level_source(std::atomic<uint64_t>* level) { g_level = level ? level : &g_local_level; }
void set_level(Level level) { g_level->store(uint64_t(level), std::memory_order_relaxed); }

Level level() {
  uint64_t v = g_level->load(std::memory_order_relaxed);
  return v > uint64_t(Level::error) ? Level::info : Level(v);
}

void open_file(const std::string& path) {
  if (path.empty()) {
    if (g_fd >= 0) ::close(g_fd);
    g_fd = -1;
    g_path.clear();
    return;
  }
  int fd = open_append(path);
  if (fd < 0) throw std::runtime_error(fmt::format("cannot open log file {}: {}", path, std::strerror(errno)));
  if (g_fd >= 0) ::close(g_fd);
  g_fd = fd;
  g_path = path;
}

bool reopen_file() {
  if (g_path.empty()) return true;
  int fd = open_append(g_path);
  if (fd < 0) return false;
  // dup2 keeps the fd number, so a child that was told "keep fd N open" still logs.
  ::dup2(fd, g_fd);
  ::close(fd);
  return true;
}

int file_fd() { return g_fd; }

void write(Level level, std::string_view message) {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm utc;
  gmtime_r(&ts.tv_sec, &utc);
  char when[32];
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &utc);
  std::string line = fmt::format("{}.{:03d}Z {:<5} {}[{}] {}\n", when, ts.tv_nsec / 1000000,
                                 level_name(level), g_role, getpid(), message);
  // One write(2) per line: with O_APPEND, lines of concurrent processes do not interleave.
  int fd = g_fd >= 0 ? g_fd : STDERR_FILENO;
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::write(fd, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += size_t(n);
  }
}

}  // namespace common::log
