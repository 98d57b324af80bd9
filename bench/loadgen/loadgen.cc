// loadgen: an open-loop HTTP/1.1 load generator for latency at a constant request rate.
//
// wrk is closed-loop (a connection sends its next request when the last one is answered)
// and, paced from Lua, spends most of a core on the script: at 30,000 requests/s on one
// core its own event-loop queueing shows up in the latencies it reports. This tool does
// one thing with little CPU: requests arrive as a Poisson process of the given rate
// (deterministic seed), each goes out on an idle keep-alive connection, and its latency
// is counted from the moment it was *scheduled*, not sent. A request that finds every
// connection busy waits for one, and that wait is part of its latency, so a server that
// falls behind cannot hide it (no coordinated omission).
//
//   loadgen --port P --keys FILE [--host 127.0.0.1] [--conns 64] [--rate 10000]
//           [--duration 10] [--seed 1]
//
// FILE holds one URL path per line; each request picks one at random. Prints the same
// RESULT line as bench/wrk/random_series.lua (latencies in microseconds). Responses must
// carry Content-Length (telemetryd, nginx and Uvicorn all do).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1'000'000'000 + ts.tv_nsec;
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "loadgen: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

struct Options {
  std::string host = "127.0.0.1", keys;
  int port = 0, conns = 64;
  double rate = 10000, duration = 10;
  unsigned seed = 1;
};

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--host") o.host = v;
    else if (k == "--port") o.port = std::atoi(v);
    else if (k == "--keys") o.keys = v;
    else if (k == "--conns") o.conns = std::atoi(v);
    else if (k == "--rate") o.rate = std::atof(v);
    else if (k == "--duration") o.duration = std::atof(v);
    else if (k == "--seed") o.seed = static_cast<unsigned>(std::atoi(v));
    else {
      std::fprintf(stderr, "loadgen: unknown option %s\n", argv[i]);
      std::exit(2);
    }
  }
  if (o.port <= 0 || o.keys.empty() || o.conns <= 0 || o.rate <= 0 || o.duration <= 0) {
    std::fprintf(stderr, "usage: loadgen --port P --keys FILE [--host H] [--conns N] "
                         "[--rate R] [--duration S] [--seed N]\n");
    std::exit(2);
  }
  return o;
}

struct Connection {
  int fd = -1;
  std::string in;             // response bytes not yet consumed
  int64_t scheduled = 0;      // of the request in flight; 0 when idle
};

// Length of a complete response at the front of in (0: not complete yet), and its status.
size_t complete_response(const std::string& in, int* status) {
  size_t end = in.find("\r\n\r\n");
  if (end == std::string::npos) return 0;
  if (in.size() < 12) return 0;
  *status = std::atoi(in.c_str() + 9);
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
  size_t total = end + 4 + length;
  return in.size() >= total ? total : 0;
}

int connect_to(const Options& o) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(o.port));
  if (inet_pton(AF_INET, o.host.c_str(), &addr.sin_addr) != 1) die("bad host " + o.host);
  // Blocking: on loopback it completes at once, and requests go out only on open sockets.
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) die("connect");
  if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0) die("fcntl");
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse_options(argc, argv);
  std::vector<std::string> keys;
  {
    std::ifstream in(o.keys);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) keys.push_back(line);
  }
  if (keys.empty()) {
    std::fprintf(stderr, "loadgen: no keys in %s\n", o.keys.c_str());
    return 1;
  }
  prctl(PR_SET_TIMERSLACK, 1UL);  // wake-ups to the microsecond, not the default 50 us

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  std::vector<Connection> conns(static_cast<size_t>(o.conns));
  std::vector<size_t> idle;
  for (size_t i = 0; i < conns.size(); ++i) {
    conns[i].fd = connect_to(o);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0) die("epoll_ctl");
    idle.push_back(i);
  }

  std::mt19937_64 rng(o.seed);
  std::exponential_distribution<double> gap(o.rate);  // seconds between arrivals
  std::uniform_int_distribution<size_t> pick(0, keys.size() - 1);
  std::deque<int64_t> waiting;  // scheduled times of requests no connection was free for
  std::vector<uint32_t> latency_us;
  latency_us.reserve(static_cast<size_t>(o.rate * o.duration * 1.1));
  uint64_t non2xx = 0, socket_errors = 0;
  std::string request;

  auto send_request = [&](size_t c, int64_t scheduled) {
    request.assign("GET ").append(keys[pick(rng)]).append(" HTTP/1.1\r\nHost: bench\r\n\r\n");
    conns[c].scheduled = scheduled;
    // Requests are small: one send() on an idle connection's empty socket buffer.
    if (send(conns[c].fd, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size()))
      die("send");
  };

  const int64_t start = now_ns();
  const int64_t stop = start + static_cast<int64_t>(o.duration * 1e9);
  int64_t next = start;
  std::vector<epoll_event> events(conns.size());
  char buf[65536];
  for (;;) {
    int64_t now = now_ns();
    while (next <= now && next < stop) {  // arrivals due: start them or queue them
      if (!idle.empty()) {
        size_t c = idle.back();
        idle.pop_back();
        send_request(c, next);
      } else {
        waiting.push_back(next);
      }
      next += static_cast<int64_t>(gap(rng) * 1e9) + 1;
    }
    bool arrivals_done = next >= stop;
    if (arrivals_done && waiting.empty() && idle.size() == conns.size()) break;
    if (now > stop + 5'000'000'000LL) break;  // answers missing for 5 s: give up on them
    int64_t wait = arrivals_done ? 100'000'000 : std::max<int64_t>(0, next - now);
    timespec timeout{static_cast<time_t>(wait / 1'000'000'000), static_cast<long>(wait % 1'000'000'000)};
    int n = epoll_pwait2(ep, events.data(), static_cast<int>(events.size()), &timeout, nullptr);
    if (n < 0 && errno != EINTR) die("epoll_pwait2");
    for (int e = 0; e < n; ++e) {
      size_t c = events[static_cast<size_t>(e)].data.u64;
      Connection& conn = conns[c];
      ssize_t got = recv(conn.fd, buf, sizeof buf, 0);
      if (got <= 0) {
        if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        ++socket_errors;  // closed or reset: reconnect, the request in flight is lost
        epoll_ctl(ep, EPOLL_CTL_DEL, conn.fd, nullptr);
        close(conn.fd);
        conn = Connection{};
        conn.fd = connect_to(o);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = c;
        epoll_ctl(ep, EPOLL_CTL_ADD, conn.fd, &ev);
        idle.push_back(c);
        continue;
      }
      conn.in.append(buf, static_cast<size_t>(got));
      int status = 0;
      size_t length = complete_response(conn.in, &status);
      if (length == 0 || conn.scheduled == 0) continue;
      int64_t done = now_ns();
      latency_us.push_back(static_cast<uint32_t>((done - conn.scheduled) / 1000));
      if (status < 200 || status > 299) ++non2xx;
      conn.in.erase(0, length);
      conn.scheduled = 0;
      if (!waiting.empty()) {
        send_request(c, waiting.front());
        waiting.pop_front();
      } else {
        idle.push_back(c);
      }
    }
  }
  double seconds = static_cast<double>(now_ns() - start) / 1e9;
  std::sort(latency_us.begin(), latency_us.end());
  auto q = [&](double p) -> uint32_t {
    if (latency_us.empty()) return 0;
    return latency_us[std::min(latency_us.size() - 1,
                               static_cast<size_t>(p * static_cast<double>(latency_us.size())))];
  };
  std::printf("RESULT requests=%zu duration_s=%.3f rps=%.1f p50_us=%u p99_us=%u p999_us=%u "
              "max_us=%u non2xx=%lu socket_errors=%lu\n",
              latency_us.size(), seconds, static_cast<double>(latency_us.size()) / o.duration,
              q(0.5), q(0.99), q(0.999), latency_us.empty() ? 0 : latency_us.back(),
              static_cast<unsigned long>(non2xx), static_cast<unsigned long>(socket_errors));
  return 0;
}
