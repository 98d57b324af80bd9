// parser.cc: native JSON and OTLP/JSON metrics bodies -> samples, with simdjson On
// Demand: the walk and native JSON here, OTLP/JSON in parser_otlp.cc; Prometheus text
// bodies go to prometheus.cc.
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
#include "ingest/format/parser_impl.h"

namespace ingest {

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
    s.kind = r.kind;
    s.delta = r.delta;
    s.start_ns = r.start_ns;
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
