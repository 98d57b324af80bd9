// otlp_e2e_test.cc: the OTLP/HTTP receiver inside the real telemetryd (e2e_util.h):
// pushed points in the read API and in `show sources`, the receiver back after the
// writer is killed (it rebinds the address), a taken address as a clear start error,
// and --check-config refusing a bad otlp-listen.
#include <catch2/catch.hpp>

#include <csignal>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include "tests/otlp/otlp_util.h"
#include "tests/server/e2e_util.h"

using namespace std::chrono_literals;

namespace {

int post_json(uint16_t port, const std::string& body) {
  return otlp_test::exchange(port, otlp_test::post("/v1/metrics", "application/json", body)).status;
}

std::string counter_body(double value, int64_t ts) {
  return fmt::format(R"({{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"e2e"}}}}]}},
    "scopeMetrics":[{{"metrics":[{{"name":"jobs","sum":{{"aggregationTemporality":2,"isMonotonic":true,
    "dataPoints":[{{"timeUnixNano":"{}","asDouble":{}}}]}}}}]}}]}}]}})", ts, value);
}

}  // namespace

TEST_CASE("OTLP e2e: pushed points reach the read API and show sources - and survive a writer kill") {
  uint16_t otlp = e2e::free_port();
  e2e::Service svc({"--otlp-listen", fmt::format("127.0.0.1:{}", otlp), "--interval", "200ms",
                    "--source", "synthetic://?hosts=1&metrics=1"});
  int64_t t = int64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count());
  REQUIRE(e2e::wait_for([&] { return post_json(otlp, counter_body(10, t)) == 200; }));
  REQUIRE(post_json(otlp, counter_body(25, t + 500'000'000)) == 200);  // +15 in 0.5 s
  std::string target = "/v1/series/" + e2e::url_encode(R"(jobs{service.name="e2e"})");
  e2e::HttpResponse r;
  REQUIRE(e2e::wait_for([&] {
    r = e2e::http_get(svc.port(), target);
    return r.status == 200 && r.body.find("\"count\":2") != std::string::npos;
  }));
  INFO(r.body);
  CHECK(r.body.find("\"sum\":35") != std::string::npos);
  CHECK(r.body.find("\"last\":25") != std::string::npos);
  CHECK(r.body.find("\"rate\":30") != std::string::npos);  // a counter: 15 / 0.5 s
  std::string sources = svc.admin("show sources");
  CHECK(sources.find(fmt::format("otlp://127.0.0.1:{}", otlp)) != std::string::npos);

  // A new writer binds the address again at once (SO_REUSEADDR) and serves pushes.
  pid_t writer = svc.writer_pid();
  REQUIRE(writer > 0);
  kill(writer, SIGKILL);
  REQUIRE(e2e::wait_for([&] { return svc.writer_pid() > 0 && svc.writer_pid() != writer; }));
  CHECK(e2e::wait_for([&] { return post_json(otlp, counter_body(30, t + 1'000'000'000)) == 200; }));
  CHECK(e2e::wait_for([&] {
    return e2e::http_get(svc.port(), target).body.find("\"last\":30") != std::string::npos;
  }));
}

TEST_CASE("OTLP e2e: an otlp-listen address in use stops the service with a clear error") {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(listen(fd, 1) == 0);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  uint16_t taken = ntohs(a.sin_port);
  e2e::Service svc({"--otlp-listen", fmt::format("127.0.0.1:{}", taken)}, false);
  CHECK(svc.stop(0, 20s) == 2);  // waits for the exit: bad configuration, not restarted
  CHECK(svc.log().find(fmt::format("otlp-listen 127.0.0.1:{}: cannot listen: Address already in use", taken)) !=
        std::string::npos);
  close(fd);
}

TEST_CASE("OTLP e2e: --check-config refuses a bad otlp-listen") {
  auto check = [](const std::string& address) {
    return e2e::run({e2e::telemetryd_bin(), "--check-config", "--otlp-listen", address});
  };
  e2e::RunResult r = check("127.0.0.1:99999");
  CHECK(r.status == 2);
  CHECK(r.err.find("otlp-listen: '127.0.0.1:99999' is not HOST:PORT") != std::string::npos);
  r = check("no-such-host.invalid:4318");
  CHECK(r.status == 2);
  CHECK(r.err.find("otlp-listen: 'no-such-host.invalid'") != std::string::npos);
  r = check("127.0.0.1:8080");
  CHECK(r.status == 2);
  CHECK(r.err.find("is the read API's address") != std::string::npos);
  CHECK(check("127.0.0.1:4318").status == 0);
}
