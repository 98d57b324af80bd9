// internal.h: helpers shared by the ingest implementation files (not public API).
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "ingest/ingest.h"

namespace ingest {

// Metric and label names: 1..max bytes of [A-Za-z0-9_.:/-]. Restricting the alphabet
// keeps keys unambiguous (no '{', '=', ',', '"') without escaping names.
inline bool valid_name(std::string_view name, size_t max_bytes) {
  if (name.empty() || name.size() > max_bytes) return false;
  for (unsigned char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '/' || c == '-';
    if (!ok) return false;
  }
  return true;
}

void append_escaped_label_value(std::string& out, std::string_view value);
// The canonical key of metric + suffix with labels already sorted by name.
void append_series_key(std::string& out, std::string_view metric, std::string_view suffix,
                       std::span<const Label> sorted_labels);
// key == the canonical key of metric + suffix + sorted_labels, decided without
// rendering it: the aggregator's per-sample check that a sample is the series it
// guessed, which would otherwise build and compare a key string for every sample.
bool series_key_equals(std::string_view key, std::string_view metric, std::string_view suffix,
                       std::span<const Label> sorted_labels);

// JSON output (append_json_string is public, in ingest.h).
// Shortest text that parses back to the same double; `null` when not finite.
void append_json_number(std::string& out, double value);
// Unix seconds from nanoseconds, as the double closest to the exact decimal value.
double ns_to_seconds(int64_t ns);

// Seconds (a JSON number) to nanoseconds, exact for the decimal digits a double keeps.
// False when out of the range 0 < seconds < 9e9 (what int64 nanoseconds can hold).
bool seconds_to_ns(double seconds, int64_t* ns);

}  // namespace ingest
