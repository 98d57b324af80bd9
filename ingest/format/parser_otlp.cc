// parser_otlp.cc: OTLP/JSON metrics bodies -> samples, Parser::Impl's walk of them.

#include "ingest/format/parser_impl.h"

namespace ingest {

// --- OTLP/JSON -------------------------------------------------------------------
//
// The mapping of points to samples is otlp_points.h's, shared with the protobuf
// decoder. Fields may come in any order, so what an enclosing object says about its
// points (a sum's temporality and monotonicity, the scope's and the resource's
// attributes, the metric's name) is attached to their samples once the object ends.
// `rejected` counts data points, as OTLP's partial success does.

namespace {

// Points among raw[first..]: a point's samples are adjacent and share its index.
size_t points_in(const std::vector<RawSample>& raw, size_t first) {
  size_t n = 0;
  for (size_t i = first; i < raw.size(); ++i) n += i == first || raw[i].index != raw[i - 1].index;
  return n;
}

}  // namespace

void Parser::Impl::reject_points(size_t first, std::string_view why) {
  if (raw.size() > first) reject(raw[first].index, why, points_in(raw, first));
  raw.resize(first);
}

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
    reject_points(first, std::string("resource: ") + resource_why);
    return true;
  }
  // A sample's context labels: its scope's attributes, then the resource's that the
  // scope does not name (a point's own attributes win over both, a scope's over the
  // resource's).
  attach_resource_context(raw, first, labels, rbegin, rcount, &RawSample::scope_begin, &RawSample::scope_count,
                          &RawSample::resource_begin, &RawSample::resource_count,
                          [this](uint32_t index, std::string_view why) { reject(index, why); });
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
    size_t first = raw.size();
    uint32_t sbegin = 0, scount = 0;
    const char* scope_why = nullptr;
    for (auto f : scope) {
      od::field field;
      if (auto e = std::move(f).get(field)) return fail(e, "invalid JSON in scopeMetrics");
      if (field.key() == "scope") {
        if (!otlp_scope(field.value(), &sbegin, &scount, &scope_why)) return false;
        continue;
      }
      if (field.key() != "metrics") continue;
      od::array metrics;
      if (auto e = field.value().get_array().get(metrics)) return fail(e, "metrics");
      for (auto m : metrics) {
        od::value metric;
        if (auto e = m.get(metric)) return fail(e, "invalid JSON in metrics");
        if (!otlp_metric(metric)) return false;
      }
    }
    if (scope_why) {
      reject_points(first, std::string("scope: ") + scope_why);
      continue;
    }
    for (size_t i = first; i < raw.size(); ++i) {
      raw[i].scope_begin = sbegin;
      raw[i].scope_count = scount;
    }
  }
  return true;
}

bool Parser::Impl::otlp_scope(od::value v, uint32_t* begin, uint32_t* count, const char** why) {
  od::json_type type;
  if (auto e = v.type().get(type)) return fail(e, "invalid JSON in scope");
  if (type == od::json_type::null) return true;
  return otlp_resource(v, begin, count, why);
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
    } else if (key == "gauge") {
      if (!otlp_points(field.value(), OtlpType::gauge)) return false;
    } else if (key == "sum") {
      if (!otlp_points(field.value(), OtlpType::sum)) return false;
    } else if (key == "histogram") {
      if (!otlp_points(field.value(), OtlpType::histogram)) return false;
    } else if (key == "exponentialHistogram") {
      if (!otlp_points(field.value(), OtlpType::exponential_histogram)) return false;
    }
    // A summary's quantiles were computed upstream over an unknown window: ignored.
  }
  if (!why && !valid_name(name, kMaxOtlpNameBytes))
    why = "invalid or missing metric name (1-248 bytes of A-Z a-z 0-9 _ . : / -)";
  if (why) {
    reject_points(first, why);
    return true;
  }
  for (size_t i = first; i < raw.size(); ++i) raw[i].metric = name;
  return true;
}

bool Parser::Impl::otlp_points(od::value v, OtlpType type) {
  od::object obj;
  if (auto e = v.get_object().get(obj)) return fail(e, "gauge/sum/histogram");
  size_t first = raw.size();
  uint64_t temporality = 0;
  bool monotonic = false;
  const char* why = nullptr;
  for (auto f : obj) {
    od::field field;
    if (auto e = std::move(f).get(field)) return fail(e, "invalid JSON in metric data");
    auto key = field.key();
    if (key == "aggregationTemporality") {
      if (!u64_field(field.value(), &temporality, &why, "bad aggregationTemporality"))
        return false;
    } else if (key == "isMonotonic") {
      if (auto e = field.value().get_bool().get(monotonic)) {
        if (!sample_level(e)) return fail(e, "invalid JSON in metric data");
        if (!why) why = "isMonotonic is not a boolean";
      }
    } else if (key == "dataPoints") {
      od::array points;
      if (auto e = field.value().get_array().get(points)) return fail(e, "dataPoints");
      for (auto p : points) {
        od::value point;
        if (auto e = p.get(point)) return fail(e, "invalid JSON in dataPoints");
        if (!otlp_point(point, type)) return false;
      }
    }
  }
  if (why) {
    reject_points(first, why);
    return true;
  }
  for (size_t i = first; i < raw.size(); ++i) {
    if (type == OtlpType::sum) raw[i].kind = otlp_sum_kind(monotonic);
    raw[i].delta = type != OtlpType::gauge && temporality == kOtlpDelta;
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

bool Parser::Impl::i32_field(od::value v, int32_t* out, const char** why, const char* what) {
  int64_t n = 0;
  if (auto e = v.get_int64().get(n)) {
    if (!sample_level(e)) return fail(e, "invalid JSON in dataPoints");
    if (!*why) *why = what;
    return true;
  }
  if (n < INT32_MIN || n > INT32_MAX) {
    if (!*why) *why = what;
    return true;
  }
  *out = static_cast<int32_t>(n);
  return true;
}

// proto3 JSON writes NaN and infinities as strings: refused like any non-number.
bool Parser::Impl::double_field(od::value v, double* out, const char** why, const char* what) {
  if (auto e = v.get_double().get(*out)) {
    if (!sample_level(e)) return fail(e, "invalid JSON in dataPoints");
    if (!*why) *why = what;
  }
  return true;
}

bool Parser::Impl::u64_array(od::value v, std::vector<uint64_t>& out, const char** why,
                             const char* what) {
  od::array arr;
  if (auto e = v.get_array().get(arr)) {
    if (!sample_level(e)) return fail(e, "invalid JSON in dataPoints");
    if (!*why) *why = what;
    return true;
  }
  for (auto element : arr) {
    od::value n;
    if (auto e = element.get(n)) return fail(e, "invalid JSON in dataPoints");
    uint64_t count = 0;
    if (!u64_field(n, &count, why, what)) return false;
    out.push_back(count);
  }
  return true;
}

bool Parser::Impl::otlp_buckets(od::value v, int32_t* offset, std::vector<uint64_t>& out,
                                const char** why) {
  od::object obj;
  if (auto e = v.get_object().get(obj)) {
    if (!sample_level(e)) return fail(e, "invalid JSON in dataPoints");
    if (!*why) *why = "exponential histogram buckets are not an object";
    return true;
  }
  for (auto f : obj) {
    od::field field;
    if (auto e = std::move(f).get(field)) return fail(e, "invalid JSON in dataPoints");
    if (field.key() == "offset") {
      if (!i32_field(field.value(), offset, why, "bad bucket offset")) return false;
    } else if (field.key() == "bucketCounts") {
      if (!u64_array(field.value(), out, why, "bad bucketCounts")) return false;
    }
  }
  return true;
}

// Long as one piece: one dispatch over a point's fields (any order), then the checks on all.
bool Parser::Impl::otlp_point(od::value v, OtlpType type) {
  size_t index = sample_index++;
  od::object obj;
  if (auto e = v.get_object().get(obj)) return fail(e, "dataPoints element");
  size_t label_begin = labels.size();
  const char* why = nullptr;
  uint64_t ts = 0, start = 0, flags = 0;
  OtlpPoint point;
  point.type = type;
  bounds.clear();
  counts.clear();
  negative.clear();
  bool histogram = type == OtlpType::histogram || type == OtlpType::exponential_histogram;
  bool have_value = false, have_count = false;
  for (auto f : obj) {
    od::field field;
    if (auto e = std::move(f).get(field)) return fail(e, "invalid JSON in dataPoints");
    auto key = field.key();
    bool ok = true;
    if (key == "attributes") {
      ok = otlp_attributes(field.value(), &why);
    } else if (key == "timeUnixNano") {
      ok = u64_field(field.value(), &ts, &why, "bad timeUnixNano");
    } else if (key == "startTimeUnixNano") {
      ok = u64_field(field.value(), &start, &why, "bad startTimeUnixNano");
    } else if (key == "flags") {
      ok = u64_field(field.value(), &flags, &why, "bad flags");
    } else if (!histogram && key == "asDouble") {
      ok = double_field(field.value(), &point.value, &why, "asDouble is not a finite number");
      have_value = true;
    } else if (!histogram && key == "asInt") {
      od::json_type jtype;
      if (auto e = field.value().type().get(jtype)) return fail(e, "invalid JSON in dataPoints");
      int64_t n = 0;
      if (jtype == od::json_type::string) {
        std::string_view text;
        if (auto e = field.value().get_string().get(text)) return fail(e, "invalid JSON");
        if (!parse_decimal_i64(text, &n) && !why) why = "asInt is not an integer";
      } else if (auto e = field.value().get_int64().get(n)) {
        if (!sample_level(e)) return fail(e, "invalid JSON in dataPoints");
        if (!why) why = "asInt is not an integer";
      }
      point.value = static_cast<double>(n);
      have_value = true;
    } else if (histogram && key == "count") {
      ok = u64_field(field.value(), &point.count, &why, "bad histogram count");
      have_count = true;
    } else if (histogram && key == "sum") {
      ok = double_field(field.value(), &point.sum, &why, "histogram sum is not a finite number");
      point.have_sum = true;
    } else if (type == OtlpType::histogram && key == "bucketCounts") {
      ok = u64_array(field.value(), counts, &why, "bad bucketCounts");
    } else if (type == OtlpType::histogram && key == "explicitBounds") {
      od::array arr;
      if (auto e = field.value().get_array().get(arr)) {
        if (!sample_level(e)) return fail(e, "invalid JSON in dataPoints");
        if (!why) why = "explicitBounds is not an array";
        continue;
      }
      for (auto element : arr) {
        od::value b;
        if (auto e = element.get(b)) return fail(e, "invalid JSON in dataPoints");
        double bound = 0;
        if (!double_field(b, &bound, &why, "explicitBounds holds a non-number")) return false;
        bounds.push_back(bound);
      }
    } else if (type == OtlpType::exponential_histogram) {
      if (key == "scale") {
        ok = i32_field(field.value(), &point.scale, &why, "bad scale");
      } else if (key == "zeroCount") {
        ok = u64_field(field.value(), &point.zero_count, &why, "bad zeroCount");
      } else if (key == "zeroThreshold") {
        ok = double_field(field.value(), &point.zero_threshold, &why, "bad zeroThreshold");
      } else if (key == "positive") {
        ok = otlp_buckets(field.value(), &point.offset, counts, &why);
      } else if (key == "negative") {
        ok = otlp_buckets(field.value(), &point.negative_offset, negative, &why);
      }
    }
    if (!ok) return false;
  }
  finish_labels(label_begin, &why);
  if (flags & kOtlpNoRecordedValue) {  // a gap marker, not a sample
    labels.resize(label_begin);
    return true;
  }
  if (!why && (ts > static_cast<uint64_t>(INT64_MAX) || start > static_cast<uint64_t>(INT64_MAX)))
    why = "timeUnixNano out of range";
  if (!why && !histogram && !have_value) why = "no asDouble or asInt";
  if (!why && histogram && !have_count) why = "histogram point without count";
  if (!why && histogram) {
    for (size_t i = label_begin; i < labels.size(); ++i)
      if (labels[i].name == "le") why = "attribute \"le\" is the bucket label of a histogram";
  }
  point.bounds = bounds;
  point.counts = counts;
  point.negative = negative;
  expanded.clear();
  if (!why) why = expand_otlp_point(point, expanded);
  if (why) {
    labels.resize(label_begin);
    reject(index, why);
    return true;
  }
  RawSample s;
  s.index = static_cast<uint32_t>(index);
  s.ts_ns = static_cast<int64_t>(ts);
  s.start_ns = static_cast<int64_t>(start);
  s.label_begin = static_cast<uint32_t>(label_begin);
  s.label_count = static_cast<uint32_t>(labels.size() - label_begin);
  add_otlp_samples(s, label_begin);
  return true;
}

// The expanded samples of one point: `_bucket` samples get a copy of the point's
// labels with le added.
void Parser::Impl::add_otlp_samples(const RawSample& point, size_t label_begin) {
  uint32_t own = point.label_count;
  for (const OtlpSample& e : expanded) {
    RawSample s = point;
    s.suffix = e.suffix;
    s.value = e.value;
    s.kind = e.kind;
    if (e.kind == SampleKind::bucket) {
      s.label_begin = static_cast<uint32_t>(labels.size());
      for (uint32_t k = 0; k < own; ++k) labels.push_back(labels[label_begin + k]);
      labels.push_back(Label{"le", otlp_le_text(e.le, arena)});
      s.label_count = own + 1;
    }
    raw.push_back(s);
  }
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

}  // namespace ingest
