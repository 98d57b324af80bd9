// server/telemetryctl.cc: the operator's client for the admin socket.
//   telemetryctl [-s PATH] COMMAND...
// Sends one command (the words joined by spaces; ';' joins several), prints the reply
// without its terminating empty line. Exit status, as unbound-control does: 0 success,
// 1 an error reply, 3 the service is not running (no socket, or nobody listening),
// 2 bad usage.
#include <cerrno>
#include <cstring>
#include <iostream>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "server/config.h"

namespace {

constexpr int kOk = 0, kErrorReply = 1, kUsage = 2, kNotRunning = 3;

int usage() {
  std::cerr << "usage: telemetryctl [-s SOCKET] COMMAND...   (try: telemetryctl help)\n"
               "  default socket: " << server::default_admin_socket() << "\n";
  return kUsage;
}

bool send_all(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += size_t(n);
  }
  return true;
}

// Reads replies until the server closes: it does so after answering everything we
// sent (we shut down our side after the command).
bool read_all(int fd, std::string& out) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) return true;
    out.append(buf, size_t(n));
  }
}

bool is_error(const std::string& reply) {
  // Any reply of a ';'-joined line may be the error: each starts after an empty line.
  for (size_t at = 0; at < reply.size();) {
    if (reply.compare(at, 7, "Error: ") == 0 || reply.compare(at, 9, "{\"error\":") == 0) return true;
    size_t next = reply.find("\n\n", at);
    if (next == std::string::npos) break;
    at = next + 2;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  std::string path = server::default_admin_socket();
  int i = 1;
  if (i < argc && (std::strcmp(argv[i], "-h") == 0 || std::strcmp(argv[i], "--help") == 0)) return usage(), kOk;
  if (i + 1 < argc && std::strcmp(argv[i], "-s") == 0) {
    path = argv[i + 1];
    i += 2;
  }
  if (i >= argc) return usage();
  std::string command;
  for (; i < argc; ++i) {
    if (!command.empty()) command += ' ';
    command += argv[i];
  }

  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    std::cerr << "telemetryctl: socket path too long: " << path << "\n";
    return kUsage;
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    std::cerr << "telemetryctl: telemetryd is not running (" << path << ": " << std::strerror(errno) << ")\n";
    return kNotRunning;
  }
  std::string reply;
  if (!send_all(fd, command + "\n") || shutdown(fd, SHUT_WR) != 0 || !read_all(fd, reply)) {
    std::cerr << "telemetryctl: " << path << ": " << std::strerror(errno) << "\n";
    return kNotRunning;
  }
  close(fd);
  if (reply.empty()) {
    std::cerr << "telemetryctl: the service closed the connection without a reply (stopping?)\n";
    return kNotRunning;
  }
  bool error = is_error(reply);
  while (reply.size() >= 2 && reply.ends_with("\n\n")) reply.pop_back();
  std::cout << reply;
  return error ? kErrorReply : kOk;
}
