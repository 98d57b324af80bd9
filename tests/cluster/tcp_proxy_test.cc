// tests/cluster/tcp_proxy_test.cc: the partition proxy itself, in front of a real
// redis-server: it relays, a cut is silent (no reply, no EOF, no reset) on connections
// old and new, heal() delivers what waited, retarget() closes and moves connections.
#include <chrono>
#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "tests/cluster/redis_server.h"
#include "tests/cluster/tcp_proxy.h"

using namespace std::chrono_literals;
using cluster_test::Client;
using cluster_test::RedisServer;
using cluster_test::TcpProxy;

namespace {

// A raw connection, to see exactly what arrives and whether the socket ended.
struct Raw {
  explicit Raw(uint16_t port) {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }
  ~Raw() { close(fd); }
  void send_text(const std::string& text) const {
    REQUIRE(send(fd, text.data(), text.size(), MSG_NOSIGNAL) == ssize_t(text.size()));
  }
  // What arrives within `limit` until `want` bytes came; "EOF" or "ERROR" when the
  // socket ended instead.
  std::string receive(size_t want, std::chrono::milliseconds limit) const {
    std::string got;
    auto end = std::chrono::steady_clock::now() + limit;
    while (got.size() < want) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, int(left.count())) <= 0) continue;
      char buf[256];
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n == 0) return got + "EOF";
      if (n < 0) return got + "ERROR";
      got.append(buf, size_t(n));
    }
    return got;
  }
  int fd = -1;
};

}  // namespace

TEST_CASE("tcp proxy: relays, cuts silently, heals where it stopped, retargets") {
  RedisServer redis;
  TcpProxy proxy(redis.port());
  CHECK(proxy.url() == "redis://127.0.0.1:" + std::to_string(proxy.port()));
  Client(proxy.port()).run({"SET", "where", "first"});

  Raw before(proxy.port());
  before.send_text("PING\r\n");
  CHECK(before.receive(7, 5s) == "+PONG\r\n");

  proxy.cut();
  before.send_text("GET where\r\n");
  Raw during(proxy.port());  // the kernel accepts it; nothing is relayed
  during.send_text("PING\r\n");
  // Nothing at all arrives during the cut: no reply, no EOF, no reset.
  CHECK(before.receive(1, 500ms).empty());
  CHECK(during.receive(1, 100ms).empty());

  proxy.heal();
  CHECK(before.receive(11, 5s) == "$5\r\nfirst\r\n");
  CHECK(during.receive(7, 5s) == "+PONG\r\n");

  RedisServer other;
  Client(other.port()).run({"SET", "where", "second"});
  proxy.retarget(other.port());
  CHECK(before.receive(1, 5s) == "EOF");
  CHECK(during.receive(1, 5s) == "EOF");
  CHECK(Client(proxy.port()).run({"GET", "where"}) == "second");
}
