// tests/cluster/tcp_proxy.cc: see tcp_proxy.h. One thread polls every socket; a cut
// simply stops polling the relayed sockets and the listening one, so the kernel keeps
// the bytes (and the new connections, in the accept backlog) exactly as a lost link
// would, and heal() picks up where it stopped.
#include "tests/cluster/tcp_proxy.h"

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace cluster_test {

namespace {

constexpr size_t kBuffer = 64 * 1024;  // per direction: a full one stops reading its source

// One relayed connection: the client's socket, its upstream socket, and the bytes read
// from one side not yet written to the other.
struct Link {
  int client = -1;
  int upstream = -1;
  bool connecting = false;
  std::string to_upstream, to_client;
  bool client_eof = false, upstream_eof = false;
  bool upstream_shut = false, client_shut = false;

  ~Link() {
    if (client >= 0) close(client);
    if (upstream >= 0) close(upstream);
  }
};

sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}

// Starts the upstream connection; false when it failed at once.
bool connect_upstream(Link& link, uint16_t port) {
  link.upstream = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (link.upstream < 0) return false;
  sockaddr_in a = loopback(port);
  if (connect(link.upstream, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return true;
  link.connecting = errno == EINPROGRESS;
  return link.connecting;
}

// Reads what fits into `into`; false when the link must close (an error).
bool read_side(int fd, std::string& into, bool& eof) {
  char buf[16384];
  size_t room = kBuffer - into.size();
  if (room == 0) return true;  // a hang-up polled while the buffer is full: read it later
  ssize_t n = read(fd, buf, room < sizeof buf ? room : sizeof buf);
  if (n > 0) into.append(buf, size_t(n));
  else if (n == 0) eof = true;
  else if (errno != EAGAIN && errno != EINTR) return false;
  return true;
}

bool write_side(int fd, std::string& from) {
  ssize_t n = send(fd, from.data(), from.size(), MSG_NOSIGNAL);
  if (n > 0) from.erase(0, size_t(n));
  else if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
  return true;
}

short events_for(bool eof, const std::string& read_into, const std::string& write_from) {
  short e = 0;
  if (!eof && read_into.size() < kBuffer) e |= POLLIN;
  if (!write_from.empty()) e |= POLLOUT;
  return e;
}

// Handles what poll reported for one link; false when the link is done (closed by a
// side, or an error).
bool serve(Link& link, short client_revents, short upstream_revents) {
  if ((client_revents | upstream_revents) & (POLLERR | POLLNVAL)) return false;
  if (link.connecting) {
    if (!(upstream_revents & (POLLOUT | POLLHUP))) return true;
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(link.upstream, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return false;
    link.connecting = false;
    return true;
  }
  if (client_revents & POLLOUT && !write_side(link.client, link.to_client)) return false;
  if (upstream_revents & POLLOUT && !write_side(link.upstream, link.to_upstream)) return false;
  if (client_revents & (POLLIN | POLLHUP) && !read_side(link.client, link.to_upstream, link.client_eof))
    return false;
  if (upstream_revents & (POLLIN | POLLHUP) && !read_side(link.upstream, link.to_client, link.upstream_eof))
    return false;
  // A side that ended has its end passed on once its bytes are through.
  if (link.client_eof && link.to_upstream.empty() && !link.upstream_shut) {
    shutdown(link.upstream, SHUT_WR);
    link.upstream_shut = true;
  }
  if (link.upstream_eof && link.to_client.empty() && !link.client_shut) {
    shutdown(link.client, SHUT_WR);
    link.client_shut = true;
  }
  return !(link.upstream_shut && link.client_shut);
}

}  // namespace

TcpProxy::TcpProxy(uint16_t upstream_port) {
  settings_.upstream = upstream_port;
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in a = loopback(0);
  socklen_t len = sizeof a;
  if (listen_fd_ < 0 || bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      listen(listen_fd_, SOMAXCONN) != 0 || getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0 ||
      pipe2(wake_, O_NONBLOCK | O_CLOEXEC) != 0)
    throw std::runtime_error(std::string("tcp proxy: cannot listen: ") + std::strerror(errno));
  port_ = ntohs(a.sin_port);
  thread_ = std::thread([this] { run(); });
}

TcpProxy::~TcpProxy() {
  change([](Settings& s) { s.stop = true; });
  thread_.join();
  close(listen_fd_);
  close(wake_[0]);
  close(wake_[1]);
}

void TcpProxy::cut() {
  change([](Settings& s) { s.cut = true; });
}

void TcpProxy::heal() {
  change([](Settings& s) { s.cut = false; });
}

void TcpProxy::retarget(uint16_t upstream_port) {
  change([&](Settings& s) {
    s.upstream = upstream_port;
    ++s.retargets;
  });
}

void TcpProxy::change(const std::function<void(Settings&)>& edit) {
  std::unique_lock lock(mutex_);
  edit(settings_);
  uint64_t mine = ++changes_;
  char byte = 0;
  (void)!write(wake_[1], &byte, 1);
  taken_.wait(lock, [&] { return changes_taken_ >= mine || settings_.stop; });
}

void TcpProxy::run() {
  std::vector<std::unique_ptr<Link>> links;
  uint64_t retargets = 0;
  std::vector<pollfd> fds;
  for (;;) {
    // The settings are taken only here, between two rounds of relaying, so once a
    // caller is told its change was taken no byte moves under the old settings.
    Settings s;
    uint64_t changes;
    {
      std::lock_guard lock(mutex_);
      s = settings_;
      changes = changes_;
    }
    if (s.retargets != retargets) {
      links.clear();
      retargets = s.retargets;
    }
    {
      std::lock_guard lock(mutex_);
      changes_taken_ = changes;
    }
    taken_.notify_all();
    if (s.stop) return;

    fds.assign(1, pollfd{wake_[0], POLLIN, 0});
    if (!s.cut) {
      fds.push_back(pollfd{listen_fd_, POLLIN, 0});
      for (const auto& l : links) {
        short c = l->connecting ? 0 : events_for(l->client_eof, l->to_upstream, l->to_client);
        short u = l->connecting ? POLLOUT : events_for(l->upstream_eof, l->to_client, l->to_upstream);
        fds.push_back(pollfd{l->client, c, 0});
        fds.push_back(pollfd{l->upstream, u, 0});
      }
    }
    if (poll(fds.data(), fds.size(), -1) < 0) continue;
    if (fds[0].revents & POLLIN) {
      char buf[64];
      while (read(wake_[0], buf, sizeof buf) > 0) {
      }
    }
    if (s.cut) continue;

    std::vector<std::unique_ptr<Link>> kept;
    for (size_t i = 0; i < links.size(); ++i)
      if (serve(*links[i], fds[2 + 2 * i].revents, fds[3 + 2 * i].revents)) kept.push_back(std::move(links[i]));
    links = std::move(kept);
    if (fds[1].revents & POLLIN) {
      for (int fd; (fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
        auto link = std::make_unique<Link>();
        link->client = fd;
        if (connect_upstream(*link, s.upstream)) links.push_back(std::move(link));
      }
    }
  }
}

}  // namespace cluster_test
