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

namespace {

// Walks a canonical key: *metric is its metric, on_label(name, value) is called for each
// label, the value as the key holds it (escaped). False, part-way, when key is not
// canonical: labels sorted by distinct names, values escaped as
// append_escaped_label_value() does, at least one label between braces.
template <class OnLabel>
bool walk_series_key(std::string_view key, std::string_view* metric, OnLabel&& on_label) {
  size_t brace = key.find('{');
  *metric = key.substr(0, brace);
  if (!valid_name(*metric, kMaxMetricNameBytes + 16)) return false;
  if (brace == std::string_view::npos) return true;
  if (key.back() != '}') return false;
  std::string_view rest = key.substr(brace + 1, key.size() - brace - 2);
  std::string_view previous;
  bool any = false;
  while (!rest.empty()) {
    size_t eq = rest.find("=\"");
    if (eq == std::string_view::npos) return false;
    std::string_view name = rest.substr(0, eq);
    if (!valid_name(name, kMaxLabelNameBytes)) return false;
    if (any && previous >= name) return false;
    size_t i = eq + 2;
    for (;; ++i) {
      if (i >= rest.size()) return false;
      char c = rest[i];
      if (c == '"') break;
      if (c == '\n') return false;  // canonical keys escape it
      if (c != '\\') continue;
      if (++i >= rest.size()) return false;
      char e = rest[i];
      if (e != '\\' && e != '"' && e != 'n') return false;
    }
    on_label(name, rest.substr(eq + 2, i - eq - 2));
    previous = name;
    any = true;
    rest = rest.substr(i + 1);
    if (rest.empty()) break;
    if (rest[0] != ',' || rest.size() == 1) return false;
    rest = rest.substr(1);
  }
  return any;  // `metric{}` is not canonical
}

}  // namespace

std::optional<SeriesKey> parse_series_key(std::string_view key) {
  SeriesKey out;
  std::string_view metric;
  auto unescape = [&out](std::string_view name, std::string_view escaped) {
    std::string value;
    value.reserve(escaped.size());
    for (size_t i = 0; i < escaped.size(); ++i) {
      char c = escaped[i];
      if (c == '\\') c = escaped[++i] == 'n' ? '\n' : escaped[i];  // walk_series_key checked it
      value += c;
    }
    out.labels.emplace_back(std::string(name), std::move(value));
  };
  if (!walk_series_key(key, &metric, unescape)) return std::nullopt;
  out.metric = std::string(metric);
  return out;
}

bool canonical_series_key(std::string_view key, std::string_view* metric) {
  return walk_series_key(key, metric, [](std::string_view, std::string_view) {});
}

}  // namespace ingest
