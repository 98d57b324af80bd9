// parser.cc: native JSON and OTLP/JSON metrics bodies -> samples, with simdjson On
// Demand; Prometheus text bodies go to prometheus.cc.
//
// Two kinds of error, because they call for different handling:
//  - body errors (invalid JSON or UTF-8, truncation, a wrong top-level shape): the body
//    cannot be trusted, so nothing of it is kept. Samples are staged in this parser and
//    only handed out once the whole document has been walked, which is what makes this
//    all-or-nothing even though On Demand reports some syntax errors late.
//  - sample errors (a wrong type, a number out of range, a bad name or label): only
//    that sample is refused; the JSON around it is sound, so its neighbours are kept.
//
// On Demand never recurses into values this parser does not read (it skips them by
// counting brackets), so deep nesting in unknown fields costs no stack; the walker
// itself descends at most the fixed depth of each format.
#include <simdjson.h>

#include <charconv>
#include <utility>
#include <cstring>

#include <fmt/format.h>

#include "ingest/ingest.h"
#include "ingest/internal.h"
#include "ingest/prometheus.h"

namespace ingest {

namespace od = simdjson::ondemand;
using simdjson::error_code;

namespace {

// A sample before the parse is known to be good: labels as offsets into a vector that
// may still grow.
struct RawSample {
  std::string_view metric;
  std::string_view suffix;
  uint32_t label_begin = 0, label_count = 0;
  uint32_t resource_begin = 0, resource_count = 0;
  uint32_t index = 0;  // position in the body, for error messages
  double value = 0;
  int64_t ts_ns = 0;
};

// Errors after which the document is still positioned on a whole value, so the walk
// can go on with the next sample.
bool sample_level(error_code e) {
  return e == simdjson::INCORRECT_TYPE || e == simdjson::NUMBER_ERROR ||
         e == simdjson::NUMBER_OUT_OF_RANGE;
}

bool parse_decimal_u64(std::string_view text, uint64_t* out) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

bool parse_decimal_i64(std::string_view text, int64_t* out) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace

struct Parser::Impl {
  od::parser json;
  std::string copy;  // the padded copy of bodies given without padding
  std::vector<RawSample> raw;
  std::vector<Label> labels;
  std::vector<Sample> samples;
  Arena arena;
  PrometheusParser prometheus;
  ParseResult result;
  bool format_known = false;
  size_t sample_index = 0;  // position in the body, for error messages

  ParseResult run(std::string_view body, size_t capacity, std::string_view content_type);

  bool fail(error_code e, std::string_view where) {
    result.error = fmt::format("{}: {}", where, simdjson::error_message(e));
    return false;
  }
  bool fail(std::string message) {
    result.error = std::move(message);
    return false;
  }
  void reject(size_t index, std::string_view why, size_t samples_lost = 1) {
    result.rejected += samples_lost;
    if (result.error.empty()) result.error = fmt::format("sample {}: {}", index, why);
  }
  void set_format(Format f) {
    if (!format_known) result.format = f;
    format_known = true;
  }

  bool top(od::document& doc);
  bool native_array(od::value v);
  bool native_sample(od::value v);
  bool native_labels(od::value v, const char** why);
  bool otlp_resource_metrics(od::value v);
  bool otlp_resource(od::value v, uint32_t* begin, uint32_t* count, const char** why);
  bool otlp_scope_metrics(od::value v);
  bool otlp_metric(od::value v);
  bool otlp_points(od::value v, bool histogram);
  bool otlp_point(od::value v, bool histogram);
  bool otlp_attributes(od::value v, const char** why);
  bool otlp_attribute(od::value v, const char** why);
  bool otlp_any_value(od::value v, std::string_view* text, const char** why);
  // Reads a uint64 given as a JSON number or a decimal string.
  bool u64_field(od::value v, uint64_t* out, const char** why, const char* what);
  void finish_labels(size_t begin, const char** why);
};

namespace {

// The size of the union of a point's labels and its resource's (each without
// duplicates): what the series will carry.
size_t merged_label_count(std::span<const Label> own, std::span<const Label> resource) {
  if (own.size() + resource.size() <= kMaxLabels) return own.size() + resource.size();
  size_t count = own.size();
  for (const Label& r : resource) {
    bool clash = false;
    for (const Label& l : own) clash |= l.name == r.name;
    count += !clash;
  }
  return count;
}

}  // namespace

void Parser::Impl::finish_labels(size_t begin, const char** why) {
  if (*why) return;
  *why = check_labels(std::span<const Label>(labels).subspan(begin));
}

ParseResult Parser::Impl::run(std::string_view body, size_t capacity,
                              std::string_view content_type) {
  raw.clear();
  labels.clear();
  samples.clear();
  arena.reset();
  result = ParseResult{};
  format_known = false;
  sample_index = 0;

  if (content_type.find("protobuf") != std::string_view::npos) {
    fail("protobuf bodies are not supported: send OTLP/JSON (application/json)");
    return result;
  }
  bool openmetrics = false;
  if (is_prometheus_text(content_type, body, &openmetrics)) {
    result = prometheus.parse(body, openmetrics, samples);
    return result;
  }
  if (content_type.find("otlp") != std::string_view::npos) set_format(Format::otlp);
  od::document doc;
  simdjson::padded_string_view input(body.data(), body.size(), capacity);
  if (auto e = json.iterate(input).get(doc)) {
    fail(e, "invalid JSON");
    return result;
  }
  bool ok = top(doc);
  // A location still inside the input after the walk means trailing bytes.
  const char* rest = nullptr;
  if (ok && doc.current_location().get(rest) == simdjson::SUCCESS)
    ok = fail("invalid JSON: content after the document");
  if (!ok) {
    raw.clear();
    result.rejected = 0;
    return result;
  }
  result.ok = true;
  samples.reserve(raw.size());
  for (const RawSample& r : raw) {
    Sample s;
    s.metric = r.metric;
    s.suffix = r.suffix;
    s.labels = std::span<const Label>(labels).subspan(r.label_begin, r.label_count);
    s.resource_labels =
        std::span<const Label>(labels).subspan(r.resource_begin, r.resource_count);
    s.value = r.value;
    s.ts_ns = r.ts_ns;
    samples.push_back(s);
  }
  return result;
}

bool Parser::Impl::top(od::document& doc) {
  od::json_type type;
  if (auto e = doc.type().get(type)) return fail(e, "invalid JSON");
  if (type == od::json_type::array) {
    set_format(Format::native);
    od::array arr;
    if (auto e = doc.get_array().get(arr)) return fail(e, "invalid JSON");
    for (auto element : arr) {
      od::value v;
      if (auto e = element.get(v)) return fail(e, "invalid JSON in samples");
      if (!native_sample(v)) return false;
    }
    return true;
  }
  if (type != od::json_type::object)
    return fail("body is neither a JSON object nor an array of samples");
  od::object obj;
  if (auto e = doc.get_object().get(obj)) return fail(e, "invalid JSON");
  bool found = false;
  for (auto f : obj) {
    od::field field;
    if (auto e = std::move(f).get(field)) return fail(e, "invalid JSON");
    if (field.key() == "samples") {
      set_format(Format::native);
      found = true;
      if (!native_array(field.value())) return false;
    } else if (field.key() == "resourceMetrics") {
      set_format(Format::otlp);
      found = true;
      od::array arr;
      if (auto e = field.value().get_array().get(arr)) return fail(e, "resourceMetrics");
      for (auto element : arr) {
        od::value v;
        if (auto e = element.get(v)) return fail(e, "invalid JSON in resourceMetrics");
        if (!otlp_resource_metrics(v)) return false;
      }
    }
  }
  if (!found) return fail("body has neither \"samples\" nor \"resourceMetrics\"");
  return true;
}

bool Parser::Impl::native_array(od::value v) {
  od::array arr;
  if (auto e = v.get_array().get(arr)) return fail(e, "\"samples\" is not an array");
  for (auto element : arr) {
    od::value sample;
    if (auto e = element.get(sample)) return fail(e, "invalid JSON in samples");
    if (!native_sample(sample)) return false;
  }
  return true;
}

bool Parser::Impl::native_sample(od::value v) {
  size_t index = sample_index++;
  od::object obj;
  if (auto e = v.get_object().get(obj)) {
    if (!sample_level(e)) return fail(e, "invalid JSON in samples");
    reject(index, "not an object");
    return true;
  }
  RawSample s;
  size_t label_begin = labels.size();
  const char* why = nullptr;
  bool have_metric = false, have_value = false;
  auto note = [&why](error_code e, const char* message) {
    if (!why) why = message;
    return sample_level(e);
  };
  for (auto f : obj) {
    od::field field;
    if (auto e = std::move(f).get(field)) return fail(e, "invalid JSON in samples");
    auto key = field.key();
    if (key == "metric") {
      if (auto e = field.value().get_string().get(s.metric)) {
        if (!note(e, "\"metric\" is not a string")) return fail(e, "invalid JSON in samples");
      }
      have_metric = true;
    } else if (key == "value") {
      if (auto e = field.value().get_double().get(s.value)) {
        if (!note(e, "\"value\" is not a finite number"))
          return fail(e, "invalid JSON in samples");
      }
      have_value = true;
    } else if (key == "ts") {
      od::json_type type;
      if (auto e = field.value().type().get(type)) return fail(e, "invalid JSON in samples");
      if (type == od::json_type::null) continue;
      double seconds = 0;
      if (auto e = field.value().get_double().get(seconds)) {
        if (!note(e, "\"ts\" is not a number")) return fail(e, "invalid JSON in samples");
      } else if (!seconds_to_ns(seconds, &s.ts_ns) && !why) {
        why = "\"ts\" out of range (Unix seconds expected)";
      }
    } else if (key == "labels") {
      if (!native_labels(field.value(), &why)) return false;
    }
  }
  if (!why && !have_metric) why = "no \"metric\"";
  if (!why && !valid_name(s.metric, kMaxMetricNameBytes))
    why = "invalid metric name (1-255 bytes of A-Z a-z 0-9 _ . : / -)";
  if (!why && !have_value) why = "no \"value\"";
  if (!why && !std::isfinite(s.value)) why = "\"value\" is not finite";
  finish_labels(label_begin, &why);
  if (why) {
    labels.resize(label_begin);
    reject(index, why);
    return true;
  }
  s.label_begin = static_cast<uint32_t>(label_begin);
  s.label_count = static_cast<uint32_t>(labels.size() - label_begin);
  s.index = static_cast<uint32_t>(index);
  raw.push_back(s);
  return true;
}

bool Parser::Impl::native_labels(od::value v, const char** why) {
  od::json_type type;
  if (auto e = v.type().get(type)) return fail(e, "invalid JSON in samples");
  if (type == od::json_type::null) return true;
  od::object obj;
  if (auto e = v.get_object().get(obj)) {
    if (!sample_level(e)) return fail(e, "invalid JSON in samples");
    if (!*why) *why = "\"labels\" is not an object";
    return true;
  }
  for (auto f : obj) {
    od::field field;
    if (auto e = std::move(f).get(field)) return fail(e, "invalid JSON in samples");
    Label label;
    if (auto e = field.unescaped_key().get(label.name)) return fail(e, "invalid JSON in labels");
    if (auto e = field.value().get_string().get(label.value)) {
      if (!sample_level(e)) return fail(e, "invalid JSON in labels");
      if (!*why) *why = "label value is not a string";
      continue;
    }
    labels.push_back(label);
  }
  return true;
}

// --- OTLP/JSON -------------------------------------------------------------------

bool Parser::Impl::otlp_resource_metrics(od::value v) {
  od::object obj;
  if (auto e = v.get_object().get(obj)) return fail(e, "resourceMetrics element");
  size_t first = raw.size();
  uint32_t rbegin = 0, rcount = 0;
  const char* resource_why = nullptr;
  for (auto f : obj) {
    od::field field;
    if (auto e = std::move(f).get(field)) return fail(e, "invalid JSON in resourceMetrics");
    if (field.key() == "resource") {
      if (!otlp_resource(field.value(), &rbegin, &rcount, &resource_why)) return false;
    } else if (field.key() == "scopeMetrics") {
      if (!otlp_scope_metrics(field.value())) return false;
    }
  }
  // The resource may come after its metrics in the body; its labels are attached now.
  if (resource_why) {
    reject(sample_index, std::string("resource: ") + resource_why, raw.size() - first);
    raw.resize(first);
    return true;
  }
  // The label limit holds for the series' whole label set: each point's own labels
  // plus the resource's, a name in both counted once.
  std::span<const Label> resource = std::span<const Label>(labels).subspan(rbegin, rcount);
  size_t kept = first;
  for (size_t i = first; i < raw.size(); ++i) {
    RawSample& s = raw[i];
    auto own = std::span<const Label>(labels).subspan(s.label_begin, s.label_count);
    if (merged_label_count(own, resource) > kMaxLabels) {
      reject(s.index, fmt::format("more than {} labels with the resource attributes", kMaxLabels));
      continue;
    }
    s.resource_begin = rbegin;
    s.resource_count = rcount;
    raw[kept++] = s;
  }
  raw.resize(kept);
  return true;
}

bool Parser::Impl::otlp_resource(od::value v, uint32_t* begin, uint32_t* count,
                                 const char** why) {
  od::object obj;
  if (auto e = v.get_object().get(obj)) return fail(e, "resource");
  for (auto f : obj) {
    od::field field;
    if (auto e = std::move(f).get(field)) return fail(e, "invalid JSON in resource");
    if (field.key() != "attributes") continue;
    size_t start = labels.size();
    if (!otlp_attributes(field.value(), why)) return false;
    finish_labels(start, why);
    *begin = static_cast<uint32_t>(start);
    *count = static_cast<uint32_t>(labels.size() - start);
  }
  return true;
}

bool Parser::Impl::otlp_scope_metrics(od::value v) {
  od::array scopes;
  if (auto e = v.get_array().get(scopes)) return fail(e, "scopeMetrics");
  for (auto s : scopes) {
    od::object scope;
    if (auto e = s.get_object().get(scope)) return fail(e, "scopeMetrics element");
    for (auto f : scope) {
      od::field field;
      if (auto e = std::move(f).get(field)) return fail(e, "invalid JSON in scopeMetrics");
      if (field.key() != "metrics") continue;
      od::array metrics;
      if (auto e = field.value().get_array().get(metrics)) return fail(e, "metrics");
      for (auto m : metrics) {
        od::value metric;
        if (auto e = m.get(metric)) return fail(e, "invalid JSON in metrics");
        if (!otlp_metric(metric)) return false;
      }
    }
  }
  return true;
}

bool Parser::Impl::otlp_metric(od::value v) {
  od::object obj;
  if (auto e = v.get_object().get(obj)) return fail(e, "metrics element");
  size_t first = raw.size();
  std::string_view name;
  const char* why = nullptr;
  for (auto f : obj) {
    od::field field;
    if (auto e = std::move(f).get(field)) return fail(e, "invalid JSON in metric");
    auto key = field.key();
    if (key == "name") {
      if (auto e = field.value().get_string().get(name)) {
        if (!sample_level(e)) return fail(e, "invalid JSON in metric");
        why = "metric \"name\" is not a string";
      }
    } else if (key == "gauge" || key == "sum") {
      if (!otlp_points(field.value(), false)) return false;
    } else if (key == "histogram") {
      if (!otlp_points(field.value(), true)) return false;
    }
    // summary and exponentialHistogram carry no single value per point: ignored.
  }
  if (!why && !valid_name(name, kMaxMetricNameBytes - 6))  // room for "_count"
    why = "invalid or missing metric name (1-249 bytes of A-Z a-z 0-9 _ . : / -)";
  if (why) {
    if (raw.size() > first) reject(sample_index, why, raw.size() - first);
    raw.resize(first);
    return true;
  }
  for (size_t i = first; i < raw.size(); ++i) raw[i].metric = name;
  return true;
}

bool Parser::Impl::otlp_points(od::value v, bool histogram) {
  od::object obj;
  if (auto e = v.get_object().get(obj)) return fail(e, "gauge/sum/histogram");
  for (auto f : obj) {
    od::field field;
    if (auto e = std::move(f).get(field)) return fail(e, "invalid JSON in metric data");
    if (field.key() != "dataPoints") continue;
    od::array points;
    if (auto e = field.value().get_array().get(points)) return fail(e, "dataPoints");
    for (auto p : points) {
      od::value point;
      if (auto e = p.get(point)) return fail(e, "invalid JSON in dataPoints");
      if (!otlp_point(point, histogram)) return false;
    }
  }
  return true;
}

bool Parser::Impl::u64_field(od::value v, uint64_t* out, const char** why, const char* what) {
  od::json_type type;
  if (auto e = v.type().get(type)) return fail(e, "invalid JSON in dataPoints");
  if (type == od::json_type::string) {
    std::string_view text;
    if (auto e = v.get_string().get(text)) return fail(e, "invalid JSON in dataPoints");
    if (!parse_decimal_u64(text, out) && !*why) *why = what;
    return true;
  }
  if (auto e = v.get_uint64().get(*out)) {
    if (!sample_level(e)) return fail(e, "invalid JSON in dataPoints");
    if (!*why) *why = what;
  }
  return true;
}

bool Parser::Impl::otlp_point(od::value v, bool histogram) {
  size_t index = sample_index++;
  od::object obj;
  if (auto e = v.get_object().get(obj)) return fail(e, "dataPoints element");
  size_t label_begin = labels.size();
  const char* why = nullptr;
  uint64_t ts = 0, count = 0, flags = 0;
  double value = 0, sum = 0;
  bool have_value = false, have_count = false, have_sum = false;
  for (auto f : obj) {
    od::field field;
    if (auto e = std::move(f).get(field)) return fail(e, "invalid JSON in dataPoints");
    auto key = field.key();
    if (key == "attributes") {
      if (!otlp_attributes(field.value(), &why)) return false;
    } else if (key == "timeUnixNano") {
      if (!u64_field(field.value(), &ts, &why, "bad timeUnixNano")) return false;
    } else if (key == "flags") {
      if (!u64_field(field.value(), &flags, &why, "bad flags")) return false;
    } else if (key == "count" && histogram) {
      if (!u64_field(field.value(), &count, &why, "bad histogram count")) return false;
      have_count = true;
    } else if (key == "sum" && histogram) {
      if (auto e = field.value().get_double().get(sum)) {
        if (!sample_level(e)) return fail(e, "invalid JSON in dataPoints");
        if (!why) why = "histogram sum is not a finite number";
      }
      have_sum = true;
    } else if (key == "asDouble") {
      // proto3 JSON writes NaN and infinities as strings: refused like any non-number.
      if (auto e = field.value().get_double().get(value)) {
        if (!sample_level(e)) return fail(e, "invalid JSON in dataPoints");
        if (!why) why = "asDouble is not a finite number";
      }
      have_value = true;
    } else if (key == "asInt") {
      od::json_type type;
      if (auto e = field.value().type().get(type)) return fail(e, "invalid JSON in dataPoints");
      int64_t n = 0;
      if (type == od::json_type::string) {
        std::string_view text;
        if (auto e = field.value().get_string().get(text)) return fail(e, "invalid JSON");
        if (!parse_decimal_i64(text, &n) && !why) why = "asInt is not an integer";
      } else if (auto e = field.value().get_int64().get(n)) {
        if (!sample_level(e)) return fail(e, "invalid JSON in dataPoints");
        if (!why) why = "asInt is not an integer";
      }
      value = static_cast<double>(n);
      have_value = true;
    }
  }
  finish_labels(label_begin, &why);
  if (flags & 1) {  // FLAG_NO_RECORDED_VALUE: a gap marker, not a sample
    labels.resize(label_begin);
    return true;
  }
  if (!why && ts > static_cast<uint64_t>(INT64_MAX)) why = "timeUnixNano out of range";
  if (!why && !histogram && !have_value) why = "no asDouble or asInt";
  if (!why && histogram && !have_count) why = "histogram point without count";
  if (!why && (!std::isfinite(value) || !std::isfinite(sum))) why = "value is not finite";
  if (why) {
    labels.resize(label_begin);
    reject(index, why);
    return true;
  }
  RawSample s;
  s.label_begin = static_cast<uint32_t>(label_begin);
  s.label_count = static_cast<uint32_t>(labels.size() - label_begin);
  s.index = static_cast<uint32_t>(index);
  s.ts_ns = static_cast<int64_t>(ts);
  if (!histogram) {
    s.value = value;
    raw.push_back(s);
    return true;
  }
  s.suffix = "_count";
  s.value = static_cast<double>(count);
  raw.push_back(s);
  if (have_sum) {
    s.suffix = "_sum";
    s.value = sum;
    raw.push_back(s);
  }
  return true;
}

bool Parser::Impl::otlp_attributes(od::value v, const char** why) {
  od::array arr;
  if (auto e = v.get_array().get(arr)) {
    if (!sample_level(e)) return fail(e, "invalid JSON in attributes");
    if (!*why) *why = "\"attributes\" is not an array";
    return true;
  }
  for (auto a : arr) {
    od::value attribute;
    if (auto e = a.get(attribute)) return fail(e, "invalid JSON in attributes");
    if (!otlp_attribute(attribute, why)) return false;
  }
  return true;
}

bool Parser::Impl::otlp_attribute(od::value v, const char** why) {
  od::object obj;
  if (auto e = v.get_object().get(obj)) {
    if (!sample_level(e)) return fail(e, "invalid JSON in attributes");
    if (!*why) *why = "attribute is not an object";
    return true;
  }
  Label label;
  bool have_key = false, have_value = false;
  for (auto f : obj) {
    od::field field;
    if (auto e = std::move(f).get(field)) return fail(e, "invalid JSON in attributes");
    if (field.key() == "key") {
      if (auto e = field.value().get_string().get(label.name)) {
        if (!sample_level(e)) return fail(e, "invalid JSON in attributes");
        if (!*why) *why = "attribute key is not a string";
      }
      have_key = true;
    } else if (field.key() == "value") {
      if (!otlp_any_value(field.value(), &label.value, why)) return false;
      have_value = true;
    }
  }
  if (!have_key && !*why) *why = "attribute without key";
  // Attributes of other types (array, kvlist, bytes) have no label form: left out.
  if (have_key && have_value && label.value.data() != nullptr) labels.push_back(label);
  return true;
}

bool Parser::Impl::otlp_any_value(od::value v, std::string_view* text, const char** why) {
  od::object obj;
  if (auto e = v.get_object().get(obj)) {
    if (!sample_level(e)) return fail(e, "invalid JSON in attributes");
    if (!*why) *why = "attribute value is not an object";
    return true;
  }
  *text = {};
  for (auto f : obj) {
    od::field field;
    if (auto e = std::move(f).get(field)) return fail(e, "invalid JSON in attributes");
    auto key = field.key();
    error_code e = simdjson::SUCCESS;
    if (key == "stringValue") {
      e = field.value().get_string().get(*text);
      if (!e && text->data() == nullptr) *text = std::string_view("", 0);
    } else if (key == "boolValue") {
      bool b = false;
      e = field.value().get_bool().get(b);
      if (!e) *text = b ? std::string_view("true") : std::string_view("false");
    } else if (key == "intValue") {
      od::json_type type;
      if ((e = field.value().type().get(type))) return fail(e, "invalid JSON in attributes");
      int64_t n = 0;
      if (type == od::json_type::string) {
        std::string_view digits;
        if ((e = field.value().get_string().get(digits))) return fail(e, "invalid JSON");
        if (!parse_decimal_i64(digits, &n)) e = simdjson::INCORRECT_TYPE;
      } else {
        e = field.value().get_int64().get(n);
      }
      if (!e) *text = arena.store(fmt::format_int(n).str());
    } else if (key == "doubleValue") {
      double d = 0;
      e = field.value().get_double().get(d);
      if (!e) {
        std::string s;
        append_json_number(s, d);
        *text = arena.store(s);
      }
    }
    if (e) {
      if (!sample_level(e)) return fail(e, "invalid JSON in attributes");
      if (!*why) *why = "attribute value of the wrong type";
    }
  }
  return true;
}

// --- public ------------------------------------------------------------------------

Parser::Parser() : impl_(std::make_unique<Impl>()) {}
Parser::~Parser() = default;

size_t Parser::padding() { return simdjson::SIMDJSON_PADDING; }

ParseResult Parser::parse(std::string_view body, std::string_view content_type) {
  // One copy into a buffer kept between bodies: simdjson reads a little past the end.
  std::string& copy = impl_->copy;
  if (copy.size() < body.size() + padding()) copy.resize(body.size() + padding());
  std::memcpy(copy.data(), body.data(), body.size());
  return impl_->run(std::string_view(copy.data(), body.size()), copy.size(), content_type);
}

ParseResult Parser::parse_padded(std::string_view body, size_t capacity,
                                 std::string_view content_type) {
  if (capacity < body.size() + padding())
    throw std::invalid_argument("Parser::parse_padded: capacity leaves no padding");
  return impl_->run(body, capacity, content_type);
}

std::span<const Sample> Parser::samples() const { return impl_->samples; }

size_t Parser::buffer_bytes() const {
  const Impl& i = *impl_;
  // simdjson keeps 4 bytes of structural index and 5/3 bytes of string buffer per byte
  // of capacity (the size of the largest document so far).
  return i.json.capacity() / 3 * 17 + i.copy.capacity() + i.raw.capacity() * sizeof(RawSample) +
         i.labels.capacity() * sizeof(Label) + i.samples.capacity() * sizeof(Sample) +
         i.arena.bytes() + i.prometheus.buffer_bytes();
}

void Parser::shrink(size_t keep_bytes) {
  if (buffer_bytes() <= keep_bytes) return;
  Impl& i = *impl_;
  i.json = od::parser{};
  std::string().swap(i.copy);
  std::vector<RawSample>().swap(i.raw);
  std::vector<Label>().swap(i.labels);
  std::vector<Sample>().swap(i.samples);
  i.arena.release();
  i.prometheus.release();
}

std::string_view format_name(Format format) {
  switch (format) {
    case Format::native: return "native";
    case Format::otlp: return "otlp";
    case Format::prometheus: return "prometheus";
  }
  return "native";
}

}  // namespace ingest
