// tests/server/flood_test.cc: the reader's connection engine (server/reader.cc) under
// connection floods: the per-reader connection limit, running out of descriptors, idle
// connections' memory, and accept balancing between readers that share one listening
// socket. Servers run in-process on event_bases of their own threads, or in forked
// children where a process-wide limit (RLIMIT_NOFILE) or the process's CPU time and
// memory are what is checked, or in the real telemetryd for the setting; clients are
// real sockets on 127.0.0.1.
#include <arpa/inet.h>
#include <dirent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "server/reader.h"
#include "server/service.h"
#include "shm/shm.h"
#include "e2e_util.h"
#include "http_fixture.h"
#include "server_thread.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::string unique_name() {
  static int n = 0;
  return "tdflood-" + std::to_string(getpid()) + "-" + std::to_string(++n);
}

// Polls pred every 5 ms until it holds or `limit` passes.
bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds limit = 10s) {
  for (auto end = Clock::now() + limit; Clock::now() < end; std::this_thread::sleep_for(5ms))
    if (pred()) return true;
  return pred();
}

// A store with one published snapshot and a listening socket on 127.0.0.1, which the
// servers of a test share.
struct Site : http_fixture::StoreSite {
  Site() : StoreSite(unique_name(), 4096) {
    shm::SnapshotBuilder b;
    b.add("x", "y");
    writer->publish(b);
  }
  uint64_t counter(uint32_t slot, uint32_t i) const { return store->reader_counter(slot, i); }
  server::ReaderOptions options(uint32_t slot) const {
    server::ReaderOptions o;
    o.listen_fd = listen_fd;
    o.slot = slot;
    o.heartbeat_every = 20ms;
    return o;
  }
};

// One HttpServer of the site's store on its own thread.
struct ServerThread : test_server::ServerThread {
  ServerThread(Site& site, server::ReaderOptions o) : test_server::ServerThread(*site.store, o) {}
};

int connect_to(uint16_t port) { return test_server::connect_loopback(port); }

void send_request(int fd) {
  const std::string req = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
  REQUIRE(send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
}

// Reads one whole response (head + Content-Length body); false on EOF, error or timeout.
bool read_response(int fd) {
  std::string in;
  char buf[4096];
  for (;;) {
    size_t end = in.find("\r\n\r\n");
    if (end != std::string::npos) {
      size_t cl = in.find("Content-Length: ");
      if (cl == std::string::npos || cl > end) return false;
      if (in.size() >= end + 4 + std::stoul(in.substr(cl + 16))) return true;
    }
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return false;
    in.append(buf, static_cast<size_t>(n));
  }
}

bool answered(int fd) {
  send_request(fd);
  return read_response(fd);
}

// Nothing to read on fd within `ms`: the request sent on it is not being answered.
bool silent_for(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, ms) == 0;
}

// utime + stime of a process, in seconds (/proc/PID/stat fields 14 and 15).
double cpu_seconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// A line of /proc/PID/status ("RssAnon:") as a number (kB).
long status_kb(pid_t pid, const std::string& name) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind(name, 0) == 0) return std::stol(line.substr(name.size()));
  return -1;
}

// Fills every unused descriptor number below the highest open one (with /dev/null) and
// returns that highest number: the process then has exactly `limit - (it + 1)` numbers
// free under an RLIMIT_NOFILE of `limit`.
int fill_descriptor_holes() {
  int top = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    const int own = dirfd(d);  // closed below: not one the caller holds
    while (dirent* e = readdir(d)) {
      const int fd = std::atoi(e->d_name);
      if (fd != own) top = std::max(top, fd);
    }
    closedir(d);
  }
  for (;;) {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fd >= top) {
      if (fd >= 0) close(fd);
      return top;
    }
  }
}

// Forks a reader on `site`'s socket in slot `slot`: `before(options)` runs in the child
// first, then run_reader. Returns the child's pid; the caller SIGTERMs and reaps it.
pid_t fork_reader(Site& site, uint32_t slot, const std::function<void(server::ReaderOptions&)>& before = {}) {
  return http_fixture::fork_reader(site.name, site.options(slot), before);
}

int stop_child(pid_t pid) {
  kill(pid, SIGTERM);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  return status;
}

}  // namespace

TEST_CASE("at its connection limit a reader leaves new connections queued, and takes them when one closes", "[flood]") {
  Site site;
  server::ReaderOptions o = site.options(1);
  o.max_connections = 3;
  ServerThread reader(site, o);

  std::vector<int> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(connect_to(site.port));
    REQUIRE(answered(held.back()));
  }
  // The kernel completes the fourth handshake (the queue has room), so the client is not
  // refused; the reader does not accept it.
  int waiting = connect_to(site.port);
  send_request(waiting);
  CHECK(silent_for(waiting, 300));
  CHECK(site.counter(1, server::kConnectionsAccepted) == 3);
  CHECK(site.counter(1, server::kConnectionsOpen) == 3);
  CHECK(answered(held[1]));  // the open ones are still served

  close(held[0]);
  CHECK(read_response(waiting));
  CHECK(site.counter(1, server::kConnectionsAccepted) == 4);
  for (size_t i = 1; i < held.size(); ++i) close(held[i]);
  close(waiting);
}

TEST_CASE("a full reader leaves the queue to its peer, which does not step aside for it", "[flood]") {
  Site site;
  server::ReaderOptions full = site.options(1);
  full.max_connections = 2;
  ServerThread a(site, full);
  std::vector<int> fds;
  for (int i = 0; i < 2; ++i) {  // a is alone: it takes both and is full
    fds.push_back(connect_to(site.port));
    REQUIRE(answered(fds.back()));
  }
  REQUIRE(site.counter(1, server::kConnectionsOpen) == 2);
  CHECK(site.counter(1, server::kAccepting) == 0);
  ServerThread b(site, site.options(2));
  for (int i = 0; i < 40; ++i) {
    fds.push_back(connect_to(site.port));
    REQUIRE(answered(fds.back()));
  }
  CHECK(site.counter(1, server::kConnectionsOpen) == 2);
  CHECK(site.counter(2, server::kConnectionsOpen) == 40);
  // b holds far more than a slack above a, but a is not accepting: b never waits for it.
  CHECK(site.counter(2, server::kAcceptStepAsides) == 0);
  for (int fd : fds) close(fd);
}

TEST_CASE("a draining peer does not hold up new connections", "[flood]") {
  Site site;
  ServerThread busy(site, site.options(1));
  std::vector<int> fds;
  for (int i = 0; i < 4; ++i) {  // alone: busy takes all four
    fds.push_back(connect_to(site.port));
    REQUIRE(answered(fds.back()));
  }
  server::ReaderOptions o = site.options(2);
  o.shutdown_grace = 60s;  // the drain outlasts the test unless its idle connection closes
  ServerThread draining(site, o);
  // busy steps aside for the newcomer, which takes a connection (if it is too slow to,
  // busy takes it and we try again).
  for (int i = 0; i < 200 && site.counter(2, server::kConnectionsOpen) == 0; ++i) {
    fds.push_back(connect_to(site.port));
    REQUIRE(answered(fds.back()));
  }
  REQUIRE(site.counter(2, server::kConnectionsOpen) == 1);
  const size_t before = fds.size();
  draining.request_shutdown();  // it stops accepting, keeps its connection
  REQUIRE(wait_for([&] { return site.counter(2, server::kAccepting) == 0; }));
  // busy holds more than a slack above the draining reader, whose heartbeat is fresh.
  // Each new connection must still be answered at once, not when the drain ends.
  for (int i = 0; i < 10; ++i) {
    const auto start = Clock::now();
    fds.push_back(connect_to(site.port));
    REQUIRE(answered(fds.back()));
    CHECK(Clock::now() - start < 5s);
  }
  CHECK(site.counter(1, server::kConnectionsOpen) == before + 9);  // all but the draining one's
  CHECK(site.counter(2, server::kConnectionsOpen) == 1);
  for (int fd : fds) close(fd);  // the drain ends with its connection
}

TEST_CASE("the connection limit is capped by RLIMIT_NOFILE, whose soft limit run_reader raises to the hard one",
          "[flood]") {
  Site site;
  rlimit ours{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &ours) == 0);
  const rlim_t hard = std::min<rlim_t>(ours.rlim_max, 300);  // the children may only lower it
  REQUIRE(hard >= 150);
  pid_t pid = fork_reader(site, 1, [hard](server::ReaderOptions&) {
    rlimit rl{hard - 100, hard};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(3);
  });
  // The reader runs once it answers.
  int fd = connect_to(site.port);
  REQUIRE(answered(fd));
  std::ifstream limits("/proc/" + std::to_string(pid) + "/limits");
  std::string line;
  while (std::getline(limits, line) && line.rfind("Max open files", 0) != 0) {
  }
  std::istringstream fields(line.substr(std::strlen("Max open files")));
  unsigned long got_soft = 0, got_hard = 0;
  fields >> got_soft >> got_hard;
  CHECK(got_soft == hard);
  CHECK(got_hard == hard);
  close(fd);
  int status = stop_child(pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == server::kExitOk);

  // And in-process: the limit leaves the reserve free.
  pid = http_fixture::fork_child([&] {
    rlimit rl{hard, hard};
    setrlimit(RLIMIT_NOFILE, &rl);
    auto store = shm::Store::open(site.name);
    shm::Reader reader(*store, 2);
    event_base* base = event_base_new();
    int rc = 4;
    {
      server::HttpServer s(base, reader, *store, test_server::with_engine(site.options(2)));  // max_connections 10000
      rc = s.connection_limit() < hard && s.connection_limit() + 64 >= hard ? 0 : 4;  // a few kept back
    }
    event_base_free(base);
    return rc;
  });
  status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("out of descriptors: the reader backs off accept without spinning, serves its connections, resumes",
          "[flood]") {
  Site site;
  constexpr int kRoom = 4;  // connections the child has descriptors for
  // The child: a reader whose connection limit is far away (built with the usual
  // RLIMIT_NOFILE), then the limit lowered to just above what it holds, so accept
  // itself fails with EMFILE.
  pid_t pid = http_fixture::fork_child([&] {
    auto store = shm::Store::open(site.name);
    shm::Reader reader(*store, 1);
    event_base* base = event_base_new();
    int rc = server::kExitFailure;
    {
      server::HttpServer s(base, reader, *store, test_server::with_engine(site.options(1)));
      event* term = evsignal_new(
          base, SIGTERM, [](evutil_socket_t, short, void* p) { static_cast<server::HttpServer*>(p)->shutdown(); },
          &s);
      evsignal_add(term, nullptr);
      const rlim_t used = static_cast<rlim_t>(fill_descriptor_holes()) + 1;
      rlimit rl{used + kRoom, used + kRoom};
      if (setrlimit(RLIMIT_NOFILE, &rl) == 0 && s.run()) rc = server::kExitOk;
      event_free(term);
    }
    event_base_free(base);
    return rc;
  });

  std::vector<int> held;
  for (int i = 0; i < kRoom; ++i) {
    held.push_back(connect_to(site.port));
    REQUIRE(answered(held.back()));
  }
  int waiting = connect_to(site.port);  // queued by the kernel: not refused
  send_request(waiting);
  // One second with a connection pending that accept() cannot take: a reader that
  // spins on the readable listening socket would burn most of that second.
  const double cpu_before = cpu_seconds(pid);
  CHECK(silent_for(waiting, 1000));
  const double cpu_used = cpu_seconds(pid) - cpu_before;
  INFO("reader CPU over 1 s with accept failing: " << cpu_used << " s");
  CHECK(cpu_used < 0.1);  // backing off costs a few ms; a spin costs what the scheduler gives it
  CHECK(kill(pid, 0) == 0);
  CHECK(answered(held[2]));  // the open connections are still served

  close(held[0]);  // frees a descriptor in the reader
  CHECK(read_response(waiting));
  CHECK(site.counter(1, server::kConnectionsAccepted) == kRoom + 1);
  for (size_t i = 1; i < held.size(); ++i) close(held[i]);
  close(waiting);
  int status = stop_child(pid);
  INFO("wait status " << status);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == server::kExitOk);
}

TEST_CASE("idle connections cost the reader no input buffer", "[flood]") {
  Site site;
  pid_t pid = fork_reader(site, 1);
  int probe = connect_to(site.port);
  REQUIRE(answered(probe));  // running, and one connection's buffer exists
  const long before = status_kb(pid, "RssAnon:");
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);  // this process holds the client ends
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  const int idle_count = static_cast<int>(std::min<rlim_t>(2000, rl.rlim_cur - 100));
  std::vector<int> idle;
  for (int i = 0; i < idle_count; ++i) idle.push_back(connect_to(site.port));
  REQUIRE(wait_for([&] { return site.counter(1, server::kConnectionsOpen) == static_cast<uint64_t>(idle_count) + 1; }));
  const long after = status_kb(pid, "RssAnon:");
  INFO("RssAnon " << before << " -> " << after << " kB for " << idle_count << " idle connections");
  CHECK(after - before < idle_count * 4);  // kB: a 24 KB input buffer each would be 6x that
  CHECK(answered(probe));
  for (int fd : idle) close(fd);
  close(probe);
  CHECK(WIFEXITED(stop_child(pid)));
}

TEST_CASE("telemetryd --max-connections-per-reader: the reader queues connections beyond it", "[flood][e2e]") {
  CHECK(e2e::run({e2e::telemetryd_bin(), "--max-connections-per-reader", "0", "--check-config"}).status == 2);
  e2e::Service svc({"--workers", "2", "--max-connections-per-reader", "2", "--source", "synthetic://"});  // 1 reader
  std::vector<int> held;
  for (int i = 0; i < 2; ++i) {
    held.push_back(connect_to(svc.port()));
    REQUIRE(answered(held.back()));
  }
  int waiting = connect_to(svc.port());
  send_request(waiting);
  CHECK(silent_for(waiting, 300));
  close(held[0]);
  CHECK(read_response(waiting));
  CHECK(svc.log().find("accepting up to 2 connections") != std::string::npos);
  close(held[1]);
  close(waiting);
}
