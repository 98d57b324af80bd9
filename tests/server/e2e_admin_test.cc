// tests/server/e2e_admin_test.cc: the admin socket of a real telemetryd under floods:
// a line of many commands and many pipelined lines must neither kill the supervisor
// (it serves the socket on its own loop) nor stop it answering.
#include <catch2/catch.hpp>

#include <string>

#include "e2e_util.h"

using namespace e2e;

namespace {

std::string repeat(const std::string& s, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += s;
  return out;
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

}  // namespace

TEST_CASE("a 13,000-command admin line is refused and the supervisor lives on", "[e2e]") {
  Service svc({"--workers", "2"});
  std::string reply = svc.admin(repeat("ping;", 13000));
  CHECK(reply.rfind("Error: too many commands on one line", 0) == 0);
  REQUIRE(svc.running());
  CHECK(svc.admin("ping") == "ping: pong");
}

TEST_CASE("20,000 admin commands queued behind a reload are all answered and the supervisor lives on", "[e2e]") {
  Service svc({"--workers", "2"});
  // The reload waits for the writer, so the lines after it pile up, then run at once.
  const size_t lines = 320, per_line = 64;
  std::string reply = svc.admin("reload\n" + repeat(repeat("ping;", per_line) + "\n", lines));
  CHECK(reply.rfind("reload: ok", 0) == 0);
  CHECK(count(reply, "ping: pong") == lines * per_line);
  REQUIRE(svc.running());
  CHECK(svc.admin("ping") == "ping: pong");
}
