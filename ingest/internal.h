// internal.h: helpers shared by the ingest implementation files (not public API).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ingest/format/format.h"

namespace ingest {

// Times in replicated state (entries, checkpoints) lie in [0, kMaxTimeNs] (the year
// 2116), so that the aggregator's differences and sums of times cannot overflow.
inline constexpr int64_t kMaxTimeNs = int64_t{1} << 62;

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

// Checks one sample's labels: count, names, value lengths, duplicates. The reason, or
// null when they are sound.
inline const char* check_labels(std::span<const Label> labels) {
  if (labels.size() > kMaxLabels) return "too many labels";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (!valid_name(labels[i].name, kMaxLabelNameBytes)) return "invalid label name";
    if (labels[i].value.size() > kMaxLabelValueBytes) return "label value too long";
    for (size_t j = 0; j < i; ++j)
      if (labels[j].name == labels[i].name) return "duplicate label name";
  }
  return nullptr;
}

// A sample's labels sorted by name, resource labels merged in (a point label wins a
// clash): what its series key is made of. Samples usually arrive sorted and without
// resource labels: that path copies nothing; otherwise the result is in scratch.
inline std::span<const Label> sorted_sample_labels(const Sample& s, std::vector<Label>& scratch) {
  auto by_name = [](const Label& a, const Label& b) { return a.name < b.name; };
  if (s.resource_labels.empty() && std::is_sorted(s.labels.begin(), s.labels.end(), by_name))
    return s.labels;
  scratch.assign(s.labels.begin(), s.labels.end());
  for (const Label& r : s.resource_labels) {
    bool clash = false;
    for (const Label& l : s.labels) clash |= l.name == r.name;
    if (!clash) scratch.push_back(r);
  }
  // Insertion sort: a handful of labels, usually almost in order.
  for (size_t i = 1; i < scratch.size(); ++i)
    for (size_t j = i; j > 0 && by_name(scratch[j], scratch[j - 1]); --j)
      std::swap(scratch[j], scratch[j - 1]);
  return scratch;
}


// Stable storage for label text that is not in the document (OTLP int, double and
// bool attribute values rendered as text, unescaped Prometheus label values). Chunks never move.
class Arena {
 public:
  // Text longer than a chunk is refused (an empty view with a null data pointer).
  std::string_view store(std::string_view text) {
    if (text.size() > kChunk) return {};
    if (chunks_.empty() || used_ + text.size() > kChunk) {
      if (!chunks_.empty()) ++current_;
      if (current_ == chunks_.size()) chunks_.push_back(std::make_unique<char[]>(kChunk));
      used_ = 0;
    }
    char* at = chunks_[current_].get() + used_;
    std::memcpy(at, text.data(), text.size());
    used_ += text.size();
    return {at, text.size()};
  }
  void reset() {
    current_ = 0;
    used_ = chunks_.empty() ? 0 : kChunk + 1;  // forces the first store to chunk 0
    if (!chunks_.empty()) current_ = static_cast<size_t>(-1);
  }
  size_t bytes() const { return chunks_.size() * kChunk; }
  void release() {
    chunks_.clear();
    current_ = 0;
    used_ = 0;
  }

 private:
  static constexpr size_t kChunk = 64 * 1024;
  std::vector<std::unique_ptr<char[]>> chunks_;
  size_t current_ = 0, used_ = 0;
};


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
