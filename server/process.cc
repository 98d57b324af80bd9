// server/process.cc: the supervisor's process plumbing (see process.h).
#include "server/process.h"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <netdb.h>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include <fmt/format.h>

#include "common/listener.h"
#include "common/log.h"
#include "server/config.h"
#include "shm/shm.h"

namespace server {

namespace log = common::log;

namespace {

constexpr int kSignals[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGCHLD};

// ---------------------------------------------------------------------------------
// Signals: handlers only write the signal number into a pipe the loop reads.
// ---------------------------------------------------------------------------------

int g_signal_pipe[2] = {-1, -1};

void on_signal(int signal) {
  int saved = errno;
  unsigned char byte = static_cast<unsigned char>(signal);
  (void)!::write(g_signal_pipe[1], &byte, 1);
  errno = saved;
}

}  // namespace

void install_signal_pipe() {
  if (pipe2(g_signal_pipe, O_NONBLOCK | O_CLOEXEC) != 0)
    throw std::runtime_error(fmt::format("pipe: {}", std::strerror(errno)));
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  for (int s : kSignals) sigaction(s, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

int signal_pipe_fd() { return g_signal_pipe[0]; }

sigset_t handled_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kSignals) sigaddset(&set, s);
  return set;
}

void restore_default_signals() {
  for (int s : kSignals) signal(s, SIG_DFL);
}

// SIGUSR1 in a reader, before (or instead of) the reader's own handling: open, dup2 and
// close are async-signal-safe, which is all reopen_file() does.
void reopen_log_on_sigusr1() {
  struct sigaction sa{};
  sa.sa_handler = [](int) {
    int saved = errno;
    log::reopen_file();
    errno = saved;
  };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, nullptr);
}

// ---------------------------------------------------------------------------------
// sd_notify, by hand: one datagram to $NOTIFY_SOCKET (systemd, or start-stop-daemon
// --notify-await). An abstract socket is written with a leading '@'.
// ---------------------------------------------------------------------------------

void sd_notify(const std::string& state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (!path || !*path) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  size_t len = std::strlen(path);
  if (len >= sizeof addr.sun_path) return;
  std::memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  socklen_t alen = socklen_t(offsetof(sockaddr_un, sun_path) + len);
  // start-stop-daemon --notify-await listens only until READY=1: a socket gone by
  // STOPPING=1 is expected, anything else is worth a line.
  if (sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), alen) < 0 &&
      errno != ENOENT && errno != ECONNREFUSED)
    log::warn("sd_notify {}: {}", path, std::strerror(errno));
  close(fd);
}

// ---------------------------------------------------------------------------------
// Sockets and files
// ---------------------------------------------------------------------------------

// The one listening socket every reader shares (bound before any fork, so a client is
// never refused while a reader is replaced: the kernel queues it for the others).
int bind_listener(const std::string& listen) {
  auto [host, port] = parse_listen(listen);
  std::string why;
  int fd = common::listen_tcp(host, port, SOMAXCONN, &why);
  if (fd < 0) throw std::runtime_error(fmt::format("listen {}: {}", listen, why));
  return fd;
}

void write_pidfile(const std::string& path) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << getpid() << "\n";
    if (!f) throw std::runtime_error(fmt::format("cannot write pidfile {}", tmp));
  }
  if (rename(tmp.c_str(), path.c_str()) != 0)
    throw std::runtime_error(fmt::format("cannot write pidfile {}: {}", path, std::strerror(errno)));
}

void remove_pidfile(const std::string& path) {
  std::ifstream f(path);
  long pid = 0;
  if (f >> pid && pid == getpid()) unlink(path.c_str());  // not one a newer instance wrote
}

// In a child: close every descriptor the supervisor had open (its loop, the admin
// socket and its clients, the signal pipe) except those the child needs, so that no
// admin client waits on a reply a child holds open.
void close_inherited_fds(std::initializer_list<int> keep) {
  std::vector<int> fds;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) {
      int fd = std::atoi(e->d_name);
      if (fd > 2 && fd != dirfd(d)) fds.push_back(fd);
    }
    closedir(d);
  }
  for (int fd : fds)
    if (std::find(keep.begin(), keep.end(), fd) == keep.end()) close(fd);
}

std::string iso_time(uint64_t unix_ns) {
  if (unix_ns == 0) return "-";
  time_t s = time_t(unix_ns / 1000000000);
  tm utc;
  gmtime_r(&s, &utc);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buf;
}

double age_seconds(uint64_t unix_ns) {
  if (unix_ns == 0) return 0;
  uint64_t now = shm::realtime_ns();
  return now > unix_ns ? double(now - unix_ns) / 1e9 : 0.0;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return fmt::format("killed by signal {} ({}){}", WTERMSIG(status), strsignal(WTERMSIG(status)),
                       WCOREDUMP(status) ? ", core dumped" : "");
  return fmt::format("ended with wait status {}", status);
}

}  // namespace server
