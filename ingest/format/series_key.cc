// series_key.cc: the canonical series key `metric{k="v",...}` and its inverse.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "ingest/format/format.h"
#include "ingest/internal.h"

namespace ingest {

void append_escaped_label_value(std::string& out, std::string_view value) {
  const char* p = value.data();
  const char* end = p + value.size();
  while (p < end) {
    const char* run = p;  // values rarely need escaping: append whole stretches
    while (p < end && *p != '\\' && *p != '"' && *p != '\n') ++p;
    out.append(run, p);
    if (p == end) break;
    char c = *p++;
    out += '\\';
    out += c == '\n' ? 'n' : c;
  }
}

void append_series_key(std::string& out, std::string_view metric, std::string_view suffix,
                       std::span<const Label> sorted_labels) {
  out.append(metric).append(suffix);
  if (sorted_labels.empty()) return;
  out += '{';
  for (size_t i = 0; i < sorted_labels.size(); ++i) {
    if (i) out += ',';
    out.append(sorted_labels[i].name).append("=\"");
    append_escaped_label_value(out, sorted_labels[i].value);
    out += '"';
  }
  out += '}';
}

namespace {

// Removes part from the front of key when key starts with it. Inline, 8 bytes at a
// time: the parts are a few bytes long, where a call to memcmp per part costs more than
// the compare.
inline bool consume(std::string_view& key, std::string_view part) {
  const size_t n = part.size();
  if (key.size() < n) return false;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t a, b;
    std::memcpy(&a, key.data() + i, 8);
    std::memcpy(&b, part.data() + i, 8);
    if (a != b) return false;
  }
  for (; i < n; ++i)
    if (key[i] != part[i]) return false;
  key.remove_prefix(n);
  return true;
}

// Removes value, escaped as append_escaped_label_value() would, from the front of key.
bool consume_escaped(std::string_view& key, std::string_view value) {
  const char* p = value.data();
  const char* end = p + value.size();
  while (p < end) {
    const char* run = p;
    while (p < end && *p != '\\' && *p != '"' && *p != '\n') ++p;
    if (!consume(key, std::string_view(run, static_cast<size_t>(p - run)))) return false;
    if (p == end) break;
    char c = *p++;
    const char escaped[2] = {'\\', c == '\n' ? 'n' : c};
    if (!consume(key, std::string_view(escaped, 2))) return false;
  }
  return true;
}

}  // namespace

bool series_key_equals(std::string_view key, std::string_view metric, std::string_view suffix,
                       std::span<const Label> sorted_labels) {
  if (!consume(key, metric) || !consume(key, suffix)) return false;
  if (sorted_labels.empty()) return key.empty();
  if (!consume(key, "{")) return false;
  for (size_t i = 0; i < sorted_labels.size(); ++i) {
    if (i && !consume(key, ",")) return false;
    if (!consume(key, sorted_labels[i].name) || !consume(key, "=\"") ||
        !consume_escaped(key, sorted_labels[i].value) || !consume(key, "\""))
      return false;
  }
  return key == "}";
}

std::string make_series_key(std::string_view metric, std::span<const Label> labels) {
  std::vector<Label> sorted(labels.begin(), labels.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const Label& a, const Label& b) { return a.name < b.name; });
  std::string key;
  append_series_key(key, metric, "", sorted);
  return key;
}

std::optional<SeriesKey> parse_series_key(std::string_view key) {
  SeriesKey out;
  size_t brace = key.find('{');
  out.metric = std::string(key.substr(0, brace));
  if (!valid_name(out.metric, kMaxMetricNameBytes + 16)) return std::nullopt;
  if (brace == std::string_view::npos) return out;
  if (key.back() != '}') return std::nullopt;
  std::string_view rest = key.substr(brace + 1, key.size() - brace - 2);
  while (!rest.empty()) {
    size_t eq = rest.find("=\"");
    if (eq == std::string_view::npos) return std::nullopt;
    std::string name(rest.substr(0, eq));
    if (!valid_name(name, kMaxLabelNameBytes)) return std::nullopt;
    if (!out.labels.empty() && out.labels.back().first >= name) return std::nullopt;
    std::string value;
    size_t i = eq + 2;
    for (;; ++i) {
      if (i >= rest.size()) return std::nullopt;
      char c = rest[i];
      if (c == '"') break;
      if (c == '\n') return std::nullopt;  // canonical keys escape it
      if (c != '\\') { value += c; continue; }
      if (++i >= rest.size()) return std::nullopt;
      char e = rest[i];
      if (e == '\\') value += '\\';
      else if (e == '"') value += '"';
      else if (e == 'n') value += '\n';
      else return std::nullopt;
    }
    out.labels.emplace_back(std::move(name), std::move(value));
    rest = rest.substr(i + 1);
    if (rest.empty()) break;
    if (rest[0] != ',' || rest.size() == 1) return std::nullopt;
    rest = rest.substr(1);
  }
  if (out.labels.empty()) return std::nullopt;  // `metric{}` is not canonical
  return out;
}

}  // namespace ingest
