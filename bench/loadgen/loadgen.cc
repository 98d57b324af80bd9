// loadgen: an open-loop HTTP/1.1 load generator for latency at a constant request rate,
// and the client of bench/chaos.sh that checks what each connection was answered.
//
// wrk is closed-loop (a connection sends its next request when the last one is answered)
// and, paced from Lua, spends most of a core on the script: at 30,000 requests/s on one
// core its own event-loop queueing shows up in the latencies it reports. This tool does
// one thing with little CPU: requests arrive as a Poisson process of the given rate
// (deterministic seed), each goes out on an idle keep-alive connection, and its latency
// is counted from the moment it was *scheduled*, not sent. A request that finds every
// connection busy waits for one, and that wait is part of its latency, so a server that
// falls behind cannot hide it (no coordinated omission). Idle connections take turns
// (first idle, first used), so every connection carries requests.
//
//   loadgen --port P --keys FILE [--host 127.0.0.1] [--conns 64] [--rate 10000]
//           [--duration 10] [--seed 1] [--check-generation]
//
// FILE holds one URL path per line; each request picks one at random. Prints the same
// RESULT line as bench/wrk/random_series.lua (latencies in microseconds), then what
// happened to the connections. Responses must carry Content-Length (telemetryd, nginx
// and Uvicorn all do).
//
// A connection the server breaks is counted, not fatal. Closed or reset while a request
// is in flight: `broken`, and the request is sent again on a new connection (`retried`;
// its latency still runs from its scheduled time). Closed while idle (an idle timeout, a
// reader that exited between requests): `closed_idle`. A response with `Connection:
// close` is followed by a new connection (`server_closed`). `socket_errors` counts failed
// connects (retried every 10 ms) and unexpected socket errors; `unanswered` the requests
// still without an answer 5 s after the end.
//
// SIGINT or SIGTERM ends the run early, as if the duration ended then: no new requests,
// the ones in flight are awaited, and the RESULT line is printed (bench/cluster_chaos.sh
// stops the load on a node this way before it kills the node).
//
// --check-generation reads every response's X-Snapshot-Generation and counts, per
// connection, responses whose generation is lower than the previous one on the same
// connection (`gen_violations`, each also printed to stderr). Per connection because a
// connection is served by one reader for its whole life, and one reader must never go
// back to an older snapshot; two readers may serve different generations at the same
// instant. A new connection starts a new sequence. Responses without the header are
// `gen_missing`. 503s answered with generation 0 before any response carried a
// generation (the service has no snapshot yet) are `no_snapshot_503`, not non-2xx.
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
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "bench/measure.h"

namespace {

constexpr int64_t kReconnectDelayNs = 10'000'000;
volatile std::sig_atomic_t g_stop_early = 0;
void stop_early(int) { g_stop_early = 1; }

constexpr int64_t kGraceNs = 5'000'000'000;  // answers still missing this long after the end: given up

using bench::monotonic_ns;
[[noreturn]] void die(const std::string& what) { bench::die_errno("loadgen", what); }

struct Options {
  std::string host = "127.0.0.1", keys;
  int port = 0, conns = 64;
  double rate = 10000, duration = 10;
  unsigned seed = 1;
  bool check_generation = false;
};

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view k = argv[i];
    if (k == "--check-generation") {
      o.check_generation = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "loadgen: %s needs a value\n", argv[i]);
      std::exit(2);
    }
    const char* v = argv[++i];
    if (k == "--host") o.host = v;
    else if (k == "--port") o.port = std::atoi(v);
    else if (k == "--keys") o.keys = v;
    else if (k == "--conns") o.conns = std::atoi(v);
    else if (k == "--rate") o.rate = std::atof(v);
    else if (k == "--duration") o.duration = std::atof(v);
    else if (k == "--seed") o.seed = static_cast<unsigned>(std::atoi(v));
    else {
      std::fprintf(stderr, "loadgen: unknown option %s\n", argv[i - 1]);
      std::exit(2);
    }
  }
  if (o.port <= 0 || o.keys.empty() || o.conns <= 0 || o.rate <= 0 || o.duration <= 0) {
    std::fprintf(stderr, "usage: loadgen --port P --keys FILE [--host H] [--conns N] "
                         "[--rate R] [--duration S] [--seed N] [--check-generation]\n");
    std::exit(2);
  }
  return o;
}

struct Response {
  size_t length = 0;  // bytes of the whole response at the front of the buffer
  int status = 0;
  bool close = false;  // Connection: close
  bool has_generation = false;
  uint64_t generation = 0;
};

bool name_is(std::string_view line, std::string_view lower_name) {
  if (line.size() <= lower_name.size() || line[lower_name.size()] != ':') return false;
  for (size_t i = 0; i < lower_name.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(line[i])) != lower_name[i]) return false;
  return true;
}

// The response at the front of in; false while it is not complete.
bool parse_response(const std::string& in, Response* r) {
  size_t end = in.find("\r\n\r\n");
  if (end == std::string::npos || end < 12) return false;
  *r = Response{};
  r->status = std::atoi(in.c_str() + 9);
  size_t body = 0;
  for (size_t p = in.find("\r\n"); p < end; p = in.find("\r\n", p + 2)) {
    std::string_view line(in.data() + p + 2, std::min(in.find("\r\n", p + 2), end) - (p + 2));
    auto value = [&](std::string_view name) { return std::string(line.substr(name.size() + 1)); };
    if (name_is(line, "content-length")) {
      body = std::strtoul(value("content-length").c_str(), nullptr, 10);
    } else if (name_is(line, "x-snapshot-generation")) {
      r->has_generation = true;
      r->generation = std::strtoull(value("x-snapshot-generation").c_str(), nullptr, 10);
    } else if (name_is(line, "connection")) {
      std::string v = value("connection");
      for (char& ch : v) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      r->close = v.find("close") != std::string::npos;
    }
  }
  r->length = end + 4 + body;
  return in.size() >= r->length;
}

struct Connection {
  int fd = -1;
  std::string in;             // response bytes not yet consumed
  int64_t scheduled = 0;      // of the request in flight (or waiting for a reconnect); 0 when idle
  std::string path;           // of that request, to send it again after a break
  bool has_generation = false;
  uint64_t generation = 0;    // of the last response on this connection
  int64_t reconnect_at = 0;   // while fd < 0
};

struct Counters {
  uint64_t non2xx = 0, socket_errors = 0, broken = 0, retried = 0, closed_idle = 0, server_closed = 0;
  uint64_t gen_checked = 0, gen_missing = 0, gen_violations = 0, max_generation = 0, no_snapshot_503 = 0;
};

class Client {
 public:
  Client(Options o, std::vector<std::string> keys)
      : o_(std::move(o)), keys_(std::move(keys)), conns_(static_cast<size_t>(o_.conns)), rng_(o_.seed),
        gap_(o_.rate), pick_(0, keys_.size() - 1) {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) die("epoll_create1");
    if (inet_pton(AF_INET, o_.host.c_str(), &addr_.sin_addr) != 1) die("bad host " + o_.host);
    addr_.sin_family = AF_INET;
    addr_.sin_port = htons(static_cast<uint16_t>(o_.port));
    latency_us_.reserve(static_cast<size_t>(o_.rate * o_.duration * 1.1));
  }

  void run();
  void print_result(double seconds);

 private:
  // Blocking connect: on loopback it completes at once (or fails at once), and requests
  // go out only on open sockets.
  bool open(size_t c) {
    Connection& conn = conns_[c];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr_), sizeof addr_) < 0) {
      ++n_.socket_errors;
      close(fd);
      conn.reconnect_at = monotonic_ns() + kReconnectDelayNs;
      down_.push_back(c);
      return false;
    }
    if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0) die("fcntl");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = c;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    conn.fd = fd;
    conn.in.clear();
    conn.has_generation = false;
    return true;
  }

  // A new connection for c: its pending request (if any) goes out on it.
  void reopen(size_t c) {
    if (!open(c)) return;
    if (conns_[c].scheduled != 0) {
      ++n_.retried;
      send_request(c);
    } else {
      next_for(c);
    }
  }

  void drop(size_t c) {
    Connection& conn = conns_[c];
    epoll_ctl(ep_, EPOLL_CTL_DEL, conn.fd, nullptr);
    close(conn.fd);
    conn.fd = -1;
  }

  // The peer closed or reset c (or a socket call failed on it).
  void broke(size_t c) {
    drop(c);
    if (conns_[c].scheduled != 0) ++n_.broken;
    else {
      ++n_.closed_idle;
      idle_.erase(std::remove(idle_.begin(), idle_.end(), c), idle_.end());
    }
    reopen(c);
  }

  void start_request(size_t c, int64_t scheduled) {
    conns_[c].scheduled = scheduled;
    conns_[c].path = keys_[pick_(rng_)];
    send_request(c);
  }

  // Requests are small: one send() on an idle connection's empty socket buffer.
  void send_request(size_t c) {
    Connection& conn = conns_[c];
    request_.assign("GET ").append(conn.path).append(" HTTP/1.1\r\nHost: bench\r\n\r\n");
    ssize_t sent = send(conn.fd, request_.data(), request_.size(), MSG_NOSIGNAL);
    if (sent == static_cast<ssize_t>(request_.size())) return;
    if (sent >= 0 || (errno != EPIPE && errno != ECONNRESET)) ++n_.socket_errors;
    broke(c);
  }

  void on_readable(size_t c);
  void on_response(size_t c, const Response& r);

  // The next request of a free connection: a waiting one, or it goes idle.
  void next_for(size_t c) {
    if (!waiting_.empty()) {
      start_request(c, waiting_.front());
      waiting_.pop_front();
    } else {
      idle_.push_back(c);
    }
  }

  size_t in_flight() const {
    return static_cast<size_t>(std::count_if(conns_.begin(), conns_.end(), [](const Connection& c) { return c.scheduled != 0; }));
  }

  Options o_;
  std::vector<std::string> keys_;
  std::vector<Connection> conns_;
  sockaddr_in addr_{};
  int ep_ = -1;
  std::deque<size_t> idle_;
  std::vector<size_t> down_;      // connections waiting for their reconnect_at
  std::deque<int64_t> waiting_;   // scheduled times of requests no connection was free for
  std::mt19937_64 rng_;
  std::exponential_distribution<double> gap_;  // seconds between arrivals
  std::uniform_int_distribution<size_t> pick_;
  std::vector<uint32_t> latency_us_;
  std::string request_;
  Counters n_;
  bool seen_snapshot_ = false;
  uint64_t unanswered_ = 0;
};

void Client::on_readable(size_t c) {
  char buf[65536];
  Connection& conn = conns_[c];
  ssize_t got = recv(conn.fd, buf, sizeof buf, 0);
  if (got < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (got <= 0) {
    if (got < 0 && errno != ECONNRESET) ++n_.socket_errors;
    return broke(c);
  }
  if (conn.scheduled == 0) return;  // nothing asked: not the answer to the next request
  conn.in.append(buf, static_cast<size_t>(got));
  Response r;
  while (conn.scheduled != 0 && parse_response(conn.in, &r)) {
    conn.in.erase(0, r.length);
    on_response(c, r);
    if (r.close) {
      ++n_.server_closed;
      drop(c);
      return reopen(c);
    }
  }
}

void Client::on_response(size_t c, const Response& r) {
  Connection& conn = conns_[c];
  latency_us_.push_back(static_cast<uint32_t>((monotonic_ns() - conn.scheduled) / 1000));
  conn.scheduled = 0;
  bool counted = false;
  if (o_.check_generation) {
    if (!r.has_generation) {
      ++n_.gen_missing;
    } else {
      ++n_.gen_checked;
      if (conn.has_generation && r.generation < conn.generation) {
        if (++n_.gen_violations <= 20)
          std::fprintf(stderr, "loadgen: connection %zu: generation %lu after %lu\n", c,
                       static_cast<unsigned long>(r.generation), static_cast<unsigned long>(conn.generation));
      }
      conn.has_generation = true;
      conn.generation = r.generation;
      n_.max_generation = std::max(n_.max_generation, r.generation);
      if (r.generation > 0) seen_snapshot_ = true;
      if (r.status == 503 && r.generation == 0 && !seen_snapshot_) {
        ++n_.no_snapshot_503;
        counted = true;
      }
    }
  }
  if (!counted && (r.status < 200 || r.status > 299)) ++n_.non2xx;
  if (!r.close) next_for(c);
}

void Client::run() {
  for (size_t c = 0; c < conns_.size(); ++c)
    if (open(c)) idle_.push_back(c);
  const int64_t start = monotonic_ns();
  int64_t stop = start + static_cast<int64_t>(o_.duration * 1e9);
  int64_t next = start;
  std::vector<epoll_event> events(conns_.size());
  for (;;) {
    int64_t now = monotonic_ns();
    if (g_stop_early && now < stop) stop = now;
    int64_t next_reconnect = INT64_MAX;
    for (size_t i = 0; i < down_.size();) {  // reopen() may append to down_ again
      size_t c = down_[i];
      if (conns_[c].reconnect_at > now) {
        next_reconnect = std::min(next_reconnect, conns_[c].reconnect_at);
        ++i;
        continue;
      }
      down_.erase(down_.begin() + static_cast<std::ptrdiff_t>(i));
      reopen(c);
    }
    while (next <= now && next < stop) {  // arrivals due: start them or queue them
      if (!idle_.empty()) {
        size_t c = idle_.front();
        idle_.pop_front();
        start_request(c, next);
      } else {
        waiting_.push_back(next);
      }
      next += static_cast<int64_t>(gap_(rng_) * 1e9) + 1;
    }
    bool arrivals_done = next >= stop;
    if (arrivals_done && waiting_.empty() && in_flight() == 0) break;
    if (now > stop + kGraceNs) {
      unanswered_ = in_flight() + waiting_.size();
      break;
    }
    int64_t until = std::min(arrivals_done ? now + 100'000'000 : next, next_reconnect);
    int64_t wait = std::max<int64_t>(0, until - now);
    timespec timeout{static_cast<time_t>(wait / 1'000'000'000), static_cast<long>(wait % 1'000'000'000)};
    int n = epoll_pwait2(ep_, events.data(), static_cast<int>(events.size()), &timeout, nullptr);
    if (n < 0 && errno != EINTR) die("epoll_pwait2");
    for (int e = 0; e < n; ++e) {
      size_t c = events[static_cast<size_t>(e)].data.u64;
      if (conns_[c].fd >= 0) on_readable(c);
    }
  }
  print_result(static_cast<double>(monotonic_ns() - start) / 1e9);
}

void Client::print_result(double seconds) {
  std::sort(latency_us_.begin(), latency_us_.end());
  auto q = [&](double p) -> uint32_t {
    if (latency_us_.empty()) return 0;
    return latency_us_[std::min(latency_us_.size() - 1, static_cast<size_t>(p * static_cast<double>(latency_us_.size())))];
  };
  auto u = [](uint64_t v) { return static_cast<unsigned long>(v); };
  std::printf("RESULT requests=%zu duration_s=%.3f rps=%.1f p50_us=%u p99_us=%u p999_us=%u "
              "max_us=%u non2xx=%lu socket_errors=%lu broken=%lu retried=%lu closed_idle=%lu "
              "server_closed=%lu unanswered=%lu",
              latency_us_.size(), seconds, static_cast<double>(latency_us_.size()) / o_.duration, q(0.5), q(0.99),
              q(0.999), latency_us_.empty() ? 0 : latency_us_.back(), u(n_.non2xx), u(n_.socket_errors),
              u(n_.broken), u(n_.retried), u(n_.closed_idle), u(n_.server_closed), u(unanswered_));
  if (o_.check_generation)
    std::printf(" gen_checked=%lu gen_missing=%lu gen_violations=%lu max_generation=%lu no_snapshot_503=%lu",
                u(n_.gen_checked), u(n_.gen_missing), u(n_.gen_violations), u(n_.max_generation),
                u(n_.no_snapshot_503));
  std::printf("\n");
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
  struct sigaction sa = {};
  sa.sa_handler = stop_early;  // no SA_RESTART: the wait returns at once
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  prctl(PR_SET_TIMERSLACK, 1UL);  // wake-ups to the microsecond, not the default 50 us
  Client client(std::move(o), std::move(keys));
  client.run();
  return 0;
}
