// tests/server/e2e_config_test.cc: telemetryd --check-config accepts exactly what the
// service starts with: an out-of-range value is refused by both, with the same
// one-line reason and the bad-configuration exit status.
#include <catch2/catch.hpp>

#include <string>
#include <unistd.h>

#include "e2e_util.h"

using namespace e2e;

TEST_CASE("workers beyond the store's reader slots fail --check-config and start alike", "[e2e]") {
  TempDir dir;
  auto check = run({telemetryd_bin(), "--workers", "256", "--check-config"});
  CHECK(check.status == 2);
  CHECK(check.err.find("workers: 256 is out of range 2..255") != std::string::npos);

  auto start = run({telemetryd_bin(), "--workers", "256", "--shm-name", "e2e_config_" + std::to_string(getpid()),
                    "--admin-socket", dir.file("a.sock"), "--listen", "127.0.0.1:0"});
  CHECK(start.status == 2);
  CHECK(start.err == check.err);

  auto ok = run({telemetryd_bin(), "--workers", "255", "--check-config"});
  CHECK(ok.status == 0);
  CHECK(ok.out.find("255 workers") != std::string::npos);
}
