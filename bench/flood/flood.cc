// flood: the connection floods of bench/flood.sh, against a server on 127.0.0.1.
//
//   flood burst --port P [--conns 4000] [--path /healthz] [--hold 0]
//     Opens CONNS connections as fast as it can (non-blocking connects, one request sent
//     on each as soon as it is connected) and records, per connection, the time from
//     its connect() to its complete response. Prints one RESULT line: how long the
//     whole burst took, the rate at which connections got answered, and the time to
//     first response p50 / p99 / max. Then keeps the connections open for --hold
//     seconds (so the caller can look at how the server split them) and closes them.
//
//   flood hold --port P [--idle 10000] [--slowloris 500] [--duration 30]
//     Holds IDLE connections that never send a byte, and SLOWLORIS connections that
//     send a request head one byte a second and never finish it. A connection the
//     server closes (idle timeout, 408) is opened again, so the flood stays the same
//     size. Prints READY once every connection is open, then a RESULT line at the end.
//
// Responses must carry Content-Length (telemetryd's do).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "bench/measure.h"

namespace {

using bench::monotonic_ns;
[[noreturn]] void die(const std::string& what) { bench::die_errno("flood", what); }

struct Options {
  std::string mode, path = "/healthz";
  int port = 0, conns = 4000, idle = 10000, slowloris = 500;
  double hold = 0, duration = 30;
};

Options parse_options(int argc, char** argv) {
  Options o;
  if (argc >= 2) o.mode = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string_view k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--port") o.port = std::atoi(v);
    else if (k == "--conns") o.conns = std::atoi(v);
    else if (k == "--path") o.path = v;
    else if (k == "--hold") o.hold = std::atof(v);
    else if (k == "--idle") o.idle = std::atoi(v);
    else if (k == "--slowloris") o.slowloris = std::atoi(v);
    else if (k == "--duration") o.duration = std::atof(v);
    else {
      std::fprintf(stderr, "flood: unknown option %s\n", argv[i]);
      std::exit(2);
    }
  }
  if ((o.mode != "burst" && o.mode != "hold") || o.port <= 0 || o.conns <= 0 || o.idle < 0 || o.slowloris < 0) {
    std::fprintf(stderr, "usage: flood burst --port P [--conns N] [--path /healthz] [--hold S]\n"
                         "       flood hold --port P [--idle N] [--slowloris N] [--duration S]\n");
    std::exit(2);
  }
  return o;
}

sockaddr_in server_address(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// Length of a complete response at the front of in, 0 while incomplete.
size_t complete_response(const std::string& in) {
  size_t end = in.find("\r\n\r\n");
  if (end == std::string::npos) return 0;
  size_t length = 0;
  for (size_t p = in.find("\r\n"); p < end; p = in.find("\r\n", p + 2)) {
    constexpr std::string_view kName = "content-length:";
    if (end - (p + 2) < kName.size()) continue;
    bool match = true;
    for (size_t i = 0; i < kName.size() && match; ++i)
      match = std::tolower(static_cast<unsigned char>(in[p + 2 + i])) == kName[i];
    if (match) {
      length = std::strtoul(in.c_str() + p + 2 + kName.size(), nullptr, 10);
      break;
    }
  }
  return in.size() >= end + 4 + length ? end + 4 + length : 0;
}

// ---------------------------------------------------------------------------------
// burst
// ---------------------------------------------------------------------------------

struct BurstConn {
  int fd = -1;
  int64_t started = 0, answered = 0;
  bool sent = false, failed = false;
  std::string in;
};

// Long as one piece: the burst read top to bottom (open all, one epoll loop, report) over `conns`.
int burst(const Options& o) {
  const sockaddr_in addr = server_address(o.port);
  const std::string request = "GET " + o.path + " HTTP/1.1\r\nHost: flood\r\n\r\n";
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  std::vector<BurstConn> conns(static_cast<size_t>(o.conns));
  auto try_send = [&](BurstConn& c) {
    ssize_t n = send(c.fd, request.data(), request.size(), MSG_NOSIGNAL);
    // Not connected yet: EAGAIN or ENOTCONN, sent once writable. A short send of a
    // request this small into an empty socket buffer does not happen: counted as failed.
    if (n == static_cast<ssize_t>(request.size())) c.sent = true;
    else if (n >= 0 || (errno != EAGAIN && errno != ENOTCONN)) c.failed = true;
  };
  const int64_t start = monotonic_ns();
  for (size_t i = 0; i < conns.size(); ++i) {
    BurstConn& c = conns[i];
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) die("socket");
    c.started = monotonic_ns();
    if (connect(c.fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0 && errno != EINPROGRESS)
      die("connect");
    try_send(c);
    epoll_event ev{};
    ev.events = c.sent ? uint32_t{EPOLLIN} : uint32_t{EPOLLIN | EPOLLOUT};
    ev.data.u64 = i;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev) < 0) die("epoll_ctl");
  }
  const int64_t opened = monotonic_ns();
  size_t done = 0;
  std::vector<epoll_event> events(1024);
  char buf[16384];
  const int64_t give_up = monotonic_ns() + 60'000'000'000LL;
  while (done < conns.size() && monotonic_ns() < give_up) {
    int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), 100);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int e = 0; e < n; ++e) {
      BurstConn& c = conns[events[static_cast<size_t>(e)].data.u64];
      if (c.answered || c.failed) continue;
      if (!c.sent) {
        try_send(c);
        if (c.sent) {
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.u64 = events[static_cast<size_t>(e)].data.u64;
          epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
        }
        if (!c.failed) continue;
      }
      ssize_t got = c.failed ? -1 : recv(c.fd, buf, sizeof buf, 0);
      if (got < 0 && !c.failed && (errno == EAGAIN || errno == EINTR)) continue;
      if (got > 0) {
        c.in.append(buf, static_cast<size_t>(got));
        if (!complete_response(c.in)) continue;
        c.answered = monotonic_ns();
      } else {
        c.failed = true;
      }
      ++done;
      epoll_ctl(ep, EPOLL_CTL_DEL, c.fd, nullptr);
    }
  }
  std::vector<int64_t> ttfr;
  int64_t last = start;
  size_t failed = 0;
  for (const BurstConn& c : conns) {
    if (c.answered) {
      ttfr.push_back(c.answered - c.started);
      last = std::max(last, c.answered);
    } else {
      ++failed;
    }
  }
  std::sort(ttfr.begin(), ttfr.end());
  auto q = [&](double p) -> double {
    if (ttfr.empty()) return 0;
    return static_cast<double>(ttfr[std::min(ttfr.size() - 1, static_cast<size_t>(p * static_cast<double>(ttfr.size())))]) / 1e6;
  };
  const double seconds = static_cast<double>(last - start) / 1e9;
  std::printf("RESULT conns=%zu answered=%zu failed=%zu open_s=%.3f seconds=%.3f rate=%.0f ttfr_p50_ms=%.1f "
              "ttfr_p99_ms=%.1f ttfr_max_ms=%.1f\n",
              conns.size(), ttfr.size(), failed, static_cast<double>(opened - start) / 1e9, seconds,
              seconds > 0 ? static_cast<double>(ttfr.size()) / seconds : 0.0, q(0.5), q(0.99),
              ttfr.empty() ? 0.0 : static_cast<double>(ttfr.back()) / 1e6);
  std::fflush(stdout);
  if (o.hold > 0) {
    timespec ts{static_cast<time_t>(o.hold), static_cast<long>((o.hold - static_cast<double>(static_cast<time_t>(o.hold))) * 1e9)};
    nanosleep(&ts, nullptr);
  }
  for (const BurstConn& c : conns) close(c.fd);
  return failed == 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------
// hold
// ---------------------------------------------------------------------------------

constexpr std::string_view kSlowHead = "GET /healthz HTTP/1.1\r\nHost: flood\r\nX-Slow: ";

struct HeldConn {
  int fd = -1;
  bool slow = false;
  size_t sent = 0;  // slowloris: bytes of the endless head sent so far
};

int hold(const Options& o) {
  const sockaddr_in addr = server_address(o.port);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  std::vector<HeldConn> conns(static_cast<size_t>(o.idle + o.slowloris));
  uint64_t reopened = 0, answered = 0;
  // Blocking connect: on loopback it returns once the kernel has queued the connection,
  // and it waits (SYN retransmits) instead of failing when the accept queue is full.
  auto open_conn = [&](size_t i) {
    HeldConn& c = conns[i];
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c.fd < 0) die("socket");
    if (connect(c.fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0) die("connect");
    c.sent = 0;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = i;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev) < 0) die("epoll_ctl");
  };
  const int64_t start = monotonic_ns();
  for (size_t i = 0; i < conns.size(); ++i) {
    conns[i].slow = i >= static_cast<size_t>(o.idle);
    open_conn(i);
  }
  std::printf("READY idle=%d slowloris=%d open_s=%.3f\n", o.idle, o.slowloris, static_cast<double>(monotonic_ns() - start) / 1e9);
  std::fflush(stdout);

  // The slowloris connections send one byte each per second, spread over the second.
  const int64_t stop = monotonic_ns() + static_cast<int64_t>(o.duration * 1e9);
  const int64_t step = o.slowloris > 0 ? 1'000'000'000LL / o.slowloris : 1'000'000'000LL;
  int64_t next_byte = monotonic_ns();
  size_t next_slow = static_cast<size_t>(o.idle);
  std::vector<epoll_event> events(1024);
  char buf[4096];
  while (monotonic_ns() < stop) {
    int64_t now = monotonic_ns();
    while (o.slowloris > 0 && next_byte <= now) {
      HeldConn& c = conns[next_slow];
      char byte = c.sent < kSlowHead.size() ? kSlowHead[c.sent] : 'a';
      if (send(c.fd, &byte, 1, MSG_NOSIGNAL) == 1) ++c.sent;
      next_slow = next_slow + 1 < conns.size() ? next_slow + 1 : static_cast<size_t>(o.idle);
      next_byte += step;
    }
    int wait_ms = static_cast<int>(std::clamp<int64_t>((next_byte - now) / 1'000'000, 0, 100));
    int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), wait_ms);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int e = 0; e < n; ++e) {
      size_t i = events[static_cast<size_t>(e)].data.u64;
      ssize_t got = recv(conns[i].fd, buf, sizeof buf, 0);
      if (got > 0) {
        ++answered;  // a 408: the close follows
        continue;
      }
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      epoll_ctl(ep, EPOLL_CTL_DEL, conns[i].fd, nullptr);
      close(conns[i].fd);
      ++reopened;
      open_conn(i);
    }
  }
  std::printf("RESULT idle=%d slowloris=%d seconds=%.1f reopened=%lu responses=%lu\n", o.idle, o.slowloris,
              static_cast<double>(monotonic_ns() - start) / 1e9, static_cast<unsigned long>(reopened),
              static_cast<unsigned long>(answered));
  for (const HeldConn& c : conns) close(c.fd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse_options(argc, argv);
  return o.mode == "burst" ? burst(o) : hold(o);
}
