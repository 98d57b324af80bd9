// render.cc: JSON and Prometheus text rendering of window aggregates.
//
// Numbers go through fmt's shortest round-trip formatting (Dragonbox), so a reader
// parsing a body gets back exactly the double the writer computed; a non-finite result
// (an overflowed sum, say) renders as null in JSON and is left out of Prometheus text.
#include "ingest/window/render.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <cmath>
#include <unordered_map>
#include <vector>

#include <fmt/compile.h>
#include <fmt/format.h>

#include "ingest/internal.h"

namespace ingest {

// Literals appended as string_views: their length is known at compile time, where a
// const char* costs a strlen() call per append, several per series at every build.
using namespace std::string_view_literals;

namespace {

// Bytes a JSON string adds to escape each byte: 1 for '"', '\\' and the controls with
// a short escape (\n \r \t), 5 for the other controls (\u00XX), 0 for the rest.
constexpr auto kJsonEscapeExtra = [] {
  std::array<uint8_t, 256> t{};
  for (int c = 0; c < 0x20; ++c) t[c] = 5;
  t['"'] = t['\\'] = t['\n'] = t['\r'] = t['\t'] = 1;
  return t;
}();

}  // namespace

// Two passes, sizing the output first: keys are short and escaped in a few places (the
// quotes around label values), so counting and then writing through a pointer beats
// appending stretch by stretch; this runs several times per series at every build.
void append_json_string(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  size_t extra = 0;
  for (char c : text) extra += kJsonEscapeExtra[static_cast<unsigned char>(c)];
  size_t at = out.size();
  out.resize(at + text.size() + extra + 2);
  char* o = out.data() + at;
  *o++ = '"';
  if (extra == 0) {
    std::memcpy(o, text.data(), text.size());
    o += text.size();
  } else {
    for (char ch : text) {
      auto c = static_cast<unsigned char>(ch);
      if (!kJsonEscapeExtra[c]) {
        *o++ = ch;
        continue;
      }
      *o++ = '\\';
      switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        default:
          *o++ = 'u';
          *o++ = '0';
          *o++ = '0';
          *o++ = kHex[c >> 4];
          *o++ = kHex[c & 15];
      }
    }
  }
  *o = '"';
}

void append_json_number(std::string& out, double value) {
  if (!std::isfinite(value)) {
    out += "null"sv;
    return;
  }
  char buf[32];
  // Compiled format: no format-string parsing per number, only Dragonbox.
  char* end = fmt::format_to(buf, FMT_COMPILE("{}"), value);
  out.append(buf, end);
}

double ns_to_seconds(int64_t ns) {
  // Whole seconds plus the fraction: the nearest double to the exact decimal, which a
  // single ns / 1e9 would miss (ns does not fit a double's 53 bits).
  int64_t whole = ns / 1'000'000'000;
  int64_t frac = ns % 1'000'000'000;
  return static_cast<double>(whole) + static_cast<double>(frac) / 1e9;
}

bool seconds_to_ns(double seconds, int64_t* ns) {
  if (!(seconds > 0 && seconds < 9e9)) return false;  // int64 ns end in 2262
  double whole = std::floor(seconds);
  double frac = seconds - whole;  // exact: both are close doubles
  // A double of today's Unix seconds resolves about 0.2 us, so digits past the
  // microsecond are representation noise: rounding there gives 1732700000.123 back as
  // ...123000000 ns, not ...122999907.
  *ns = static_cast<int64_t>(whole) * 1'000'000'000 + std::llround(frac * 1e6) * 1000;
  return true;
}

namespace {

void append_uint(std::string& out, uint64_t n) {
  fmt::format_int text(n);
  out.append(text.data(), text.size());
}

// Remembers the last number rendered: within one aggregate, min, max, first, last and
// the quantiles are often the same double, and formatting is most of the build's cost.
struct NumberCache {
  double value = 0;
  char text[32];
  size_t size = 0;
  void append(std::string& out, double v) {
    if (size == 0 || std::memcmp(&v, &value, sizeof v) != 0) {
      if (!std::isfinite(v)) {
        out += "null"sv;
        return;
      }
      size = static_cast<size_t>(fmt::format_to(text, FMT_COMPILE("{}"), v) - text);
      value = v;
    }
    out.append(text, size);
  }
};

void render_aggregate(std::string& out, const Aggregate& a, double window_s) {
  NumberCache cache;
  auto append_optional = [&](std::string& o, bool present, double v) {
    if (present) cache.append(o, v);
    else o += "null";
  };
  bool any = a.count > 0;
  // The same in every body of a build: formatted once, not once per series.
  thread_local NumberCache window_text;
  out += "\"window_s\":"sv;
  window_text.append(out, window_s);
  out += ",\"count\":"sv;
  append_uint(out, a.count);
  out += ",\"sum\":"sv;
  append_json_number(out, a.sum);
  out += ",\"min\":"sv;
  append_optional(out, any, a.min);
  out += ",\"max\":"sv;
  append_optional(out, any, a.max);
  out += ",\"mean\":"sv;
  append_optional(out, any, a.mean());
  out += ",\"first\":"sv;
  append_optional(out, any, a.first);
  out += ",\"last\":"sv;
  append_optional(out, any, a.last);
  out += ",\"first_ts\":"sv;
  append_optional(out, any, ns_to_seconds(a.first_ts_ns));
  out += ",\"last_ts\":"sv;
  append_optional(out, any, ns_to_seconds(a.last_ts_ns));
  out += ",\"rate\":"sv;
  std::optional<double> rate = a.rate();
  append_optional(out, rate.has_value(), rate.value_or(0));
  out += ",\"p50\":"sv;
  append_optional(out, any, a.p50);
  out += ",\"p90\":"sv;
  append_optional(out, any, a.p90);
  out += ",\"p99\":"sv;
  append_optional(out, any, a.p99);
}

// Calls fn(name, escaped_value) for each label of a canonical key; the value is still
// in the key's Prometheus escaping (\\, \", \n).
template <typename Fn>
void for_each_key_label(std::string_view key, Fn&& fn) {
  size_t brace = key.find('{');
  if (brace == std::string_view::npos) return;
  size_t i = brace + 1;
  while (i < key.size() && key[i] != '}') {
    size_t eq = key.find('=', i);
    std::string_view name = key.substr(i, eq - i);
    size_t start = eq + 2, j = start;
    while (key[j] != '"') j += key[j] == '\\' ? 2 : 1;
    fn(name, key.substr(start, j - start));
    i = j + 1;
    if (key[i] == ',') ++i;
  }
}

// Prometheus-escaped text to a JSON string body: \\ \" \n are JSON escapes already;
// other control characters still need escaping.
void append_json_from_prom_escaped(std::string& out, std::string_view escaped) {
  out += '"';
  for (size_t i = 0; i < escaped.size(); ++i) {
    char c = escaped[i];
    if (c == '\\') {
      out += c;
      out += escaped[++i];
      continue;
    }
    if (static_cast<unsigned char>(c) < 0x20) {
      std::string one;
      append_json_string(one, std::string_view(&c, 1));
      out.append(one, 1, one.size() - 2);
      continue;
    }
    out += c;
  }
  out += '"';
}

}  // namespace

void render_series(std::string& out, std::string_view key, std::string_view key_json,
                   std::string_view metric_json, const Aggregate& a, double window_s,
                   bool stale) {
  out += "{\"key\":"sv;
  out += key_json;
  out += ",\"metric\":"sv;
  out += metric_json;
  out += ",\"labels\":{"sv;
  bool first = true;
  for_each_key_label(key, [&](std::string_view name, std::string_view value) {
    if (!first) out += ',';
    first = false;
    out += '"';
    out.append(name);  // names are [A-Za-z0-9_.:/-]: nothing to escape
    out += "\":"sv;
    append_json_from_prom_escaped(out, value);
  });
  out += "},"sv;
  render_aggregate(out, a, window_s);
  out += stale ? ",\"stale\":true}"sv : ",\"stale\":false}"sv;
}

void render_metric(std::string& out, std::string_view metric, const Aggregate& a,
                   double window_s, const SeriesKeyList& series) {
  out += "{\"metric\":"sv;
  append_json_string(out, metric);
  out += ',';
  render_aggregate(out, a, window_s);
  out += ",\"series_count\":"sv;
  append_uint(out, series.count);
  out += ",\"series\":["sv;
  out += series.json;
  out += "]}"sv;
}

void render_metrics(std::string& out, std::span<const MetricCount> metrics) {
  out += "{\"metrics\":["sv;
  for (size_t i = 0; i < metrics.size(); ++i) {
    if (i) out += ',';
    out += "{\"metric\":"sv;
    append_json_string(out, metrics[i].metric);
    out += ",\"series_count\":"sv;
    append_uint(out, metrics[i].series_count);
    out += '}';
  }
  out += "]}"sv;
}

// --- Prometheus --------------------------------------------------------------------

namespace {

bool prom_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// Prometheus label names must match [a-zA-Z_][a-zA-Z0-9_]*; ours may hold . : / -, which
// become _, and may start with a digit, which gets a leading _. A name that means
// something else to Prometheus gets the conventional "exported_" prefix: "metric" (ours),
// "le" (a histogram's bucket bound), "quantile" (a summary's) and the names that would
// start with "__", which Prometheus reserves ("__name__" would clash with the family name).
void append_prom_label_name(std::string& out, std::string_view name) {
  bool reserved = name.size() >= 2 && !prom_name_char(name[0]) && !prom_name_char(name[1]);
  if (reserved || name == "metric" || name == "le" || name == "quantile")
    out += "exported_"sv;
  else if (!name.empty() && name[0] >= '0' && name[0] <= '9')
    out += '_';
  for (char c : name) out += prom_name_char(c) ? c : '_';
}

// Appends `metric="M",name="value",...` for one series. Two labels whose names become the
// same Prometheus name (host.name and host_name) would make Prometheus reject the whole
// scrape (a label name twice in a sample); as OpenTelemetry's Prometheus exporter does,
// they become one label whose value is theirs joined by ';', in the order of the
// original names (the key's order, which the stable sort keeps). with_key adds the label
// series_key, the series' own key, for series whose labels alone would be another's.
void append_series_prom_labels(std::string& out, std::string_view metric, std::string_view key,
                               bool with_key) {
  struct Label {
    std::string name;
    std::string_view value;  // in Prometheus escaping already, as the key holds it
  };
  thread_local std::vector<Label> labels;
  labels.clear();
  for_each_key_label(key, [&](std::string_view name, std::string_view value) {
    Label& l = labels.emplace_back();
    append_prom_label_name(l.name, name);
    l.value = value;
  });
  std::string escaped_key;
  if (with_key) {
    append_escaped_label_value(escaped_key, key);
    labels.push_back({"series_key", escaped_key});
  }
  std::stable_sort(labels.begin(), labels.end(),
                   [](const Label& a, const Label& b) { return a.name < b.name; });
  out += "metric=\""sv;
  append_escaped_label_value(out, metric);
  out += '"';
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i == 0 || labels[i].name != labels[i - 1].name) {
      if (i) out += '"';
      out += ',';
      out += labels[i].name;
      out += "=\""sv;
    } else {
      out += ';';
    }
    out.append(labels[i].value);
  }
  if (!labels.empty()) out += '"';
}

struct Family {
  const char* name;
  const char* help;
  // Writes the value; false when there is none (empty window, non-finite result).
  bool (*value)(const Aggregate&, double* out);
};

bool finite(double v, double* out) {
  *out = v;
  return std::isfinite(v);
}

constexpr Family kFamilies[] = {
    {"samples", "Samples in the window.",
     [](const Aggregate& a, double* v) { return finite(static_cast<double>(a.count), v); }},
    {"sum_of_samples", "Sum of the samples in the window.",
     [](const Aggregate& a, double* v) { return finite(a.sum, v); }},
    {"min", "Smallest sample in the window.",
     [](const Aggregate& a, double* v) { return a.count && finite(a.min, v); }},
    {"max", "Largest sample in the window.",
     [](const Aggregate& a, double* v) { return a.count && finite(a.max, v); }},
    {"mean", "Mean of the samples in the window.",
     [](const Aggregate& a, double* v) { return a.count && finite(a.mean(), v); }},
    {"last", "Latest sample in the window.",
     [](const Aggregate& a, double* v) { return a.count && finite(a.last, v); }},
    {"rate", "Per-second change over the window (counters: resets count from 0).",
     [](const Aggregate& a, double* v) { return a.rate() && finite(*a.rate(), v); }},
};

void append_prom_number(std::string& out, double v) {
  char buf[32];
  char* end = fmt::format_to(buf, FMT_COMPILE("{}"), v);
  out.append(buf, end);
}

}  // namespace

// Families and names follow Prometheus' rules as promtool checks them: gauges, since
// every value describes the window and may go down; no gauge name ends in _count, _sum,
// _bucket or _total, which belong to summaries, histograms and counters. The quantiles
// are a summary without _sum and _count: those are counters in a summary (OpenMetrics),
// and the window's count and sum are not.
// Long as one piece: the exposition's families in the order they are written, a short loop each.
void render_prometheus(std::string& out, std::span<const PromMetric> metrics,
                       std::span<const PromSeries> series) {
  out += "# HELP telemetry_metric_series Series of the metric in the window.\n"
         "# TYPE telemetry_metric_series gauge\n";
  for (const PromMetric& m : metrics) {
    out += "telemetry_metric_series{metric=\""sv;
    append_escaped_label_value(out, m.metric);
    out += "\"} "sv;
    append_prom_number(out, static_cast<double>(m.series_count));
    out += '\n';
  }
  for (const Family& f : kFamilies) {
    fmt::format_to(std::back_inserter(out),
                   "# HELP telemetry_metric_{0} {1}\n# TYPE telemetry_metric_{0} gauge\n",
                   f.name, f.help);
    for (const PromMetric& m : metrics) {
      double v;
      if (!f.value(*m.aggregate, &v)) continue;
      fmt::format_to(std::back_inserter(out), "telemetry_metric_{}{{metric=\"", f.name);
      append_escaped_label_value(out, m.metric);
      out += "\"} "sv;
      append_prom_number(out, v);
      out += '\n';
    }
  }
  out += "# HELP telemetry_metric_quantile Quantiles of the samples in the window (1% relative accuracy).\n"
         "# TYPE telemetry_metric_quantile summary\n";
  for (const PromMetric& m : metrics) {
    const Aggregate& a = *m.aggregate;
    if (!a.count) continue;
    const std::pair<const char*, double> qs[] = {{"0.5", a.p50}, {"0.9", a.p90}, {"0.99", a.p99}};
    for (auto [q, v] : qs) {
      if (!std::isfinite(v)) continue;
      out += "telemetry_metric_quantile{metric=\""sv;
      append_escaped_label_value(out, m.metric);
      fmt::format_to(std::back_inserter(out), "\",quantile=\"{}\"}} ", q);
      append_prom_number(out, v);
      out += '\n';
    }
  }
  if (series.empty()) return;
  // Each series' labels are rendered once and used by every family.
  std::string labels;
  std::vector<size_t> ends;
  auto render_labels = [&](const std::vector<bool>& with_key) {
    labels.clear();
    ends.clear();
    for (size_t i = 0; i < series.size(); ++i) {
      append_series_prom_labels(labels, series[i].metric, series[i].key, with_key[i]);
      ends.push_back(labels.size());
    }
  };
  auto labels_of = [&](size_t i) {
    size_t begin = i ? ends[i - 1] : 0;
    return std::string_view(labels).substr(begin, ends[i] - begin);
  };
  std::vector<bool> with_key(series.size(), false);
  render_labels(with_key);
  // Series of one metric whose labels differ only in what made them valid (a.b and a_b)
  // come out alike, and Prometheus would keep one of their samples without a word: each
  // of them gets its key as a label.
  std::unordered_map<std::string_view, size_t> first_with;
  first_with.reserve(series.size());
  bool alike = false;
  for (size_t i = 0; i < series.size(); ++i) {
    auto [it, fresh] = first_with.emplace(labels_of(i), i);
    if (!fresh) with_key[i] = with_key[it->second] = alike = true;
  }
  if (alike) render_labels(with_key);
  for (const Family& f : kFamilies) {
    fmt::format_to(std::back_inserter(out),
                   "# HELP telemetry_series_{0} {1}\n# TYPE telemetry_series_{0} gauge\n",
                   f.name, f.help);
    for (size_t i = 0; i < series.size(); ++i) {
      double v;
      if (!f.value(*series[i].aggregate, &v)) continue;
      fmt::format_to(std::back_inserter(out), "telemetry_series_{}{{", f.name);
      out += labels_of(i);
      out += "} "sv;
      append_prom_number(out, v);
      out += '\n';
    }
  }
}

}  // namespace ingest
