// ingest/config.h: the settings of ingest (sources, timing, limits) as the writer's
// configuration gives them, resolved and checked before any part of ingest takes them.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace ingest {

// ---------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------

inline constexpr std::string_view kDefaultSource = "synthetic://";
inline constexpr size_t kMaxDefaultWriterThreads = 8;
inline constexpr size_t kMaxWriterThreads = 64;

// "500ms", "2s", "1m", "1h" or a bare number of seconds ("3", "0.5"). Throws
// std::invalid_argument naming the text when it is not a non-negative duration.
std::chrono::milliseconds parse_duration(std::string_view text);

struct Config {
  std::vector<std::string> sources;  // empty: {kDefaultSource}
  std::chrono::milliseconds interval{2000};
  std::chrono::milliseconds window{60000};
  std::chrono::milliseconds stale_after{0};   // 0: 3 intervals
  std::chrono::milliseconds expire_after{0};  // 0: the window
  std::chrono::milliseconds source_timeout{1500};
  size_t max_body_bytes = size_t{64} << 20;
  // Bytes all fetches in flight may hold together (at least max_body_bytes); a fetch
  // that would take the total past it fails.
  size_t fetch_memory_limit = size_t{256} << 20;
  size_t max_series_per_source = 1'000'000;
  size_t max_series = 1'000'000;
  size_t prom_series_limit = 10'000;  // per-series Prometheus gauges only below this
  // Threads that render the series bodies of a build (Aggregator::build); 0: the
  // machine's cores, at most kMaxDefaultWriterThreads. The snapshot's bytes are the same
  // whatever the count. A setting of this node, never replicated.
  size_t writer_threads = 0;

  // The defaults filled in (sources, stale_after, expire_after) and every value
  // checked. Throws std::invalid_argument with the offending setting's name.
  Config resolved() const;
};

// Checks every source URL as a Pipeline would take it (scheme, http URL, absolute file
// path, synthetic parameters), so that a configuration can be refused with the reason
// before it reaches the writer. Throws std::invalid_argument naming the URL.
void check_sources(const Config& config);

}  // namespace ingest
