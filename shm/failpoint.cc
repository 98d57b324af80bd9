// shm/failpoint.cc: the failpoints of shm/shm.h. Test-only behaviour compiled into every
// build, because the end-to-end tests drive the release binaries: without the
// environment variable nothing here does anything.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "shm/shm.h"

namespace shm {
namespace {

using Table = std::vector<std::pair<std::string, std::string>>;

Table parse_failpoints(const char* spec) {
  Table table;
  std::string_view rest = spec;
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    size_t eq = item.find('=');
    if (eq == std::string_view::npos) continue;
    table.emplace_back(std::string(item.substr(0, eq)), std::string(item.substr(eq + 1)));
  }
  return table;
}

// nullptr when the variable is unset: the common case returns after one load.
const Table* failpoint_table() {
  static const Table* table = [] {
    const char* spec = std::getenv("TELEMETRYD_FAILPOINTS");
    return spec && *spec ? new Table(parse_failpoints(spec)) : nullptr;
  }();
  return table;
}

}  // namespace

bool failpoint(std::string_view name) {
  const Table* table = failpoint_table();
  if (!table) return false;
  for (const auto& [point, spec] : *table) {
    if (point != name) continue;
    // `action@FILE`: armed while FILE exists; the process that unlinks it is the one
    // that fails, so a replacement process started afterwards runs normally.
    std::string_view action = spec;
    if (size_t at = action.find('@'); at != std::string_view::npos) {
      if (::unlink(spec.c_str() + at + 1) != 0) return false;
      action = action.substr(0, at);
    }
    if (action == "kill") ::kill(::getpid(), SIGKILL);
    if (action == "stop") ::kill(::getpid(), SIGSTOP);
    if (action == "spin")
      for (;;) asm volatile("" ::: "memory");
    return action == "error";
  }
  return false;
}

}  // namespace shm
