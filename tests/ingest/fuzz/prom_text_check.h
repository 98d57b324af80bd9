// prom_text_check.h: what the fuzz targets require of the snapshot's Prometheus text,
// whatever the input: what Prometheus needs to take a scrape whole and keep every
// sample, and the naming promtool checks. Each family is `# HELP`, `# TYPE`, then its
// samples, and appears once; a sample's name is its family's; label names are valid,
// not reserved (`__`), never twice in a sample, no `le` (no histograms here) and
// `quantile` only in a summary; values are escaped; no two samples of a family have the
// same labels; numbers are finite; the text is UTF-8; a gauge's name does not end in a suffix of another
// type.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <simdjson.h>

#include "ingest/ingest.h"

namespace prom_text_check {

inline bool name_char(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!first && c >= '0' && c <= '9');
}

inline bool valid_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (!name_char(name[i], i == 0)) return false;
  return true;
}

// Takes a name from the front of line.
inline std::string_view take_name(std::string_view& line) {
  size_t n = 0;
  while (n < line.size() && name_char(line[n], n == 0)) ++n;
  std::string_view name = line.substr(0, n);
  line.remove_prefix(n);
  return name;
}

// Checks one sample line of family `family` of type `type`; records its label set in seen.
inline bool check_sample(std::string_view line, std::string_view family, std::string_view type,
                         std::set<std::string>& seen) {
  if (take_name(line) != family || line.empty()) return false;
  std::vector<std::pair<std::string_view, std::string_view>> labels;
  if (line[0] == '{') {
    line.remove_prefix(1);
    while (!line.empty() && line[0] != '}') {
      std::string_view name = take_name(line);
      if (!valid_name(name) || name.starts_with("__") || name == "le") return false;
      if (name == "quantile" && type != "summary") return false;
      if (line.size() < 2 || line[0] != '=' || line[1] != '"') return false;
      line.remove_prefix(2);
      size_t i = 0;
      while (i < line.size() && line[i] != '"') {
        if (line[i] == '\n') return false;
        if (line[i] == '\\') {
          if (i + 1 >= line.size() || (line[i + 1] != '\\' && line[i + 1] != '"' && line[i + 1] != 'n'))
            return false;
          ++i;
        }
        ++i;
      }
      if (i >= line.size()) return false;
      labels.emplace_back(name, line.substr(0, i));
      line.remove_prefix(i + 1);
      if (!line.empty() && line[0] == ',') line.remove_prefix(1);
    }
    if (line.empty()) return false;
    line.remove_prefix(1);
  }
  std::sort(labels.begin(), labels.end());
  for (size_t i = 1; i < labels.size(); ++i)
    if (labels[i].first == labels[i - 1].first) return false;
  std::string set;
  for (auto [name, value] : labels) set.append(name).append("=\"").append(value).append("\",");
  if (!seen.insert(std::move(set)).second) return false;
  if (line.size() < 2 || line[0] != ' ') return false;
  std::string number(line.substr(1));
  char* end = nullptr;
  double v = std::strtod(number.c_str(), &end);
  return end == number.c_str() + number.size() && std::isfinite(v);
}

inline bool check(std::string_view text) {
  if (!text.empty() && text.back() != '\n') return false;
  if (!simdjson::validate_utf8(text.data(), text.size())) return false;
  std::set<std::string> families;
  std::string family, type;
  std::set<std::string> seen;  // label sets of the current family
  bool expect_type = false;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl + 1);
    if (line.starts_with("# HELP ")) {
      if (expect_type) return false;
      line.remove_prefix(7);
      family = std::string(take_name(line));
      if (!valid_name(family) || line.size() < 2 || line[0] != ' ') return false;
      if (!families.insert(family).second) return false;  // a family twice
      expect_type = true;
      seen.clear();
    } else if (line.starts_with("# TYPE ")) {
      line.remove_prefix(7);
      if (!expect_type || take_name(line) != family || line.empty() || line[0] != ' ') return false;
      type = std::string(line.substr(1));
      if (type != "gauge" && type != "counter" && type != "summary") return false;
      if (type != "counter" && std::string_view(family).ends_with("_total")) return false;
      for (std::string_view suffix : {"_count", "_sum", "_bucket"})
        if (std::string_view(family).ends_with(suffix)) return false;
      expect_type = false;
    } else {
      if (expect_type || family.empty() || !check_sample(line, family, type, seen)) return false;
    }
  }
  return !expect_type;
}

// Builds agg's snapshot at `now` and aborts unless its Prometheus text passes check()
// and every series key in it parses (with `known`: and is one of agg's series).
inline void check_snapshot(ingest::Aggregator& agg, int64_t now, bool known) {
  shm::SnapshotBuilder builder;
  agg.build(builder, now);
  std::vector<std::byte> bytes = builder.serialize(1, 0);
  shm::SnapshotView view(bytes);
  auto prom = view.find(ingest::kPromRecord);
  if (!prom || !check(*prom)) std::abort();
  for (const shm::Record& rec : view.list(ingest::kSeriesList)) {
    std::string_view key = rec.key.substr(ingest::kSeriesPrefix.size());
    if (!ingest::parse_series_key(key)) std::abort();
    if (known && !agg.series(key)) std::abort();
  }
}

}  // namespace prom_text_check
