// config.cc: duration parsing and validation of ingest::Config.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <string>
#include <thread>

#include "ingest/ingest.h"

namespace ingest {

namespace {

[[noreturn]] void bad_duration(std::string_view text, const char* why) {
  throw std::invalid_argument("invalid duration '" + std::string(text) + "': " + why +
                              " (expected e.g. 500ms, 2s, 1m, 1h or a number of seconds)");
}

}  // namespace

std::chrono::milliseconds parse_duration(std::string_view text) {
  if (text.empty()) bad_duration(text, "empty");
  size_t unit_at = text.find_first_not_of("0123456789.");
  std::string_view number = text.substr(0, unit_at);
  std::string_view unit = unit_at == std::string_view::npos ? "" : text.substr(unit_at);
  if (number.empty() || number == "." || number.find('.') != number.rfind('.'))
    bad_duration(text, "no number");
  double scale_ms;
  if (unit.empty() || unit == "s") scale_ms = 1e3;
  else if (unit == "ms") scale_ms = 1;
  else if (unit == "m") scale_ms = 60e3;
  else if (unit == "h") scale_ms = 3600e3;
  else bad_duration(text, "unknown unit");
  // strtod needs a terminator; number is short and already checked to be digits.
  std::string digits(number);
  errno = 0;
  double value = std::strtod(digits.c_str(), nullptr);
  double ms = value * scale_ms;
  if (errno != 0 || !std::isfinite(ms) || ms > 1e15) bad_duration(text, "out of range");
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(ms)));
}

Config Config::resolved() const {
  Config c = *this;
  if (c.sources.empty()) c.sources.emplace_back(kDefaultSource);
  auto require = [](bool ok, const char* what) {
    if (!ok) throw std::invalid_argument(std::string("invalid ingest setting: ") + what);
  };
  require(c.interval.count() >= 10, "interval must be at least 10ms");
  require(c.window >= c.interval, "window must be at least one interval");
  require(c.window.count() / c.interval.count() <= 100'000, "window / interval too large");
  require(c.stale_after.count() >= 0, "stale_after must not be negative");
  require(c.expire_after.count() >= 0, "expire_after must not be negative");
  if (c.stale_after.count() == 0) c.stale_after = 3 * c.interval;
  if (c.expire_after.count() == 0) c.expire_after = c.window;
  require(c.source_timeout.count() > 0, "source_timeout must be positive");
  require(c.max_body_bytes > 0, "max_body_bytes must be positive");
  require(c.fetch_memory_limit >= c.max_body_bytes,
          "fetch_memory_limit must be at least max_body_bytes");
  require(c.max_series > 0, "max_series must be positive");
  require(c.max_series_per_source > 0, "max_series_per_source must be positive");
  require(c.max_series <= (size_t{1} << 31), "max_series too large");
  require(c.writer_threads <= kMaxWriterThreads, "writer_threads must be at most 64");
  if (c.writer_threads == 0)
    c.writer_threads = std::clamp<size_t>(std::thread::hardware_concurrency(), 1,
                                          kMaxDefaultWriterThreads);
  for (size_t i = 0; i < c.sources.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (c.sources[i] == c.sources[j])
        throw std::invalid_argument("invalid ingest setting: source listed twice: " +
                                    c.sources[i]);
  return c;
}

}  // namespace ingest
