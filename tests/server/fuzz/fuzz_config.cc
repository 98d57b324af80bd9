// fuzz_config: server::load_options_from_text on arbitrary TOML bytes. The loader
// either returns Options that pass the service's own check again, unchanged, and lie
// in the ranges the service can start with, or throws std::invalid_argument with a
// one-line reason (what telemetryd prints before exiting 2). Anything else (another
// exception type, a crash, a reason that breaks the log line) is a finding.
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "server/config.h"
#include "common/log.h"
#include "shm/shm.h"

namespace {

void require(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  server::Options o;
  try {
    o = server::load_options_from_text(text, "fuzz.toml");
  } catch (const std::invalid_argument& e) {
    std::string_view why = e.what();
    require(!why.empty());
    for (char c : why) require(c != '\n' && c != '\r');
    return 0;
  } catch (...) {
    std::abort();
  }
  using std::chrono::hours;
  using std::chrono::milliseconds;
  require(o.workers >= 2 && o.store_slots() <= shm::kMaxReaders);
  require(o.max_header_bytes >= 256 && o.max_header_bytes <= (1u << 20));
  require(o.stuck_timeout >= milliseconds(100));
  for (milliseconds d : {o.stuck_timeout, o.shutdown_timeout, o.restart_backoff_max, o.crash_loop_window,
                         o.idle_timeout, o.request_timeout, o.healthz_max_age})
    require(d >= milliseconds(0) && d <= hours(24));
  require(!o.ingest.sources.empty() && o.ingest.sources.size() <= shm::kMaxSources);
  require(common::log::parse_level(o.log_level).has_value());
  require(!o.admin_socket.empty() && !o.shm_name.empty());
  server::parse_listen(o.listen);  // throws (a finding) if the check let a bad one by
  server::Options again = o;
  try {
    server::check_options(again);
  } catch (...) {
    std::abort();
  }
  require(again.workers == o.workers && again.admin_socket == o.admin_socket && again.listen == o.listen &&
          again.ingest.sources == o.ingest.sources && again.ingest.interval == o.ingest.interval &&
          again.ingest.stale_after == o.ingest.stale_after && again.ingest.expire_after == o.ingest.expire_after);
  return 0;
}
