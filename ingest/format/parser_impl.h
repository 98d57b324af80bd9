// parser_impl.h: Parser::Impl and the raw samples it stages. Private to parser.cc
// (the walk and native JSON) and parser_otlp.cc (OTLP/JSON): not part of ingest's API.
#pragma once

#include <simdjson.h>

#include <charconv>
#include <utility>
#include <cstring>

#include <fmt/format.h>

#include "ingest/format/otlp_points.h"
#include "ingest/format/prometheus.h"
#include "ingest/format/format.h"
#include "ingest/internal.h"

namespace ingest {

namespace od = simdjson::ondemand;
using simdjson::error_code;

// What the parser's files share: a named namespace, since two files use it.
namespace detail {

// A sample before the parse is known to be good: labels as offsets into a vector that
// may still grow.
struct RawSample {
  std::string_view metric;
  std::string_view suffix;
  uint32_t label_begin = 0, label_count = 0;
  uint32_t resource_begin = 0, resource_count = 0;  // OTLP: scope and resource labels
  uint32_t scope_begin = 0, scope_count = 0;
  uint32_t index = 0;  // position in the body, for error messages (OTLP: the point's)
  double value = 0;
  int64_t ts_ns = 0;
  int64_t start_ns = 0;
  SampleKind kind = SampleKind::gauge;
  bool delta = false;
};

// Errors after which the document is still positioned on a whole value, so the walk
// can go on with the next sample.
inline bool sample_level(error_code e) {
  return e == simdjson::INCORRECT_TYPE || e == simdjson::NUMBER_ERROR ||
         e == simdjson::NUMBER_OUT_OF_RANGE;
}

inline bool parse_decimal_u64(std::string_view text, uint64_t* out) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

inline bool parse_decimal_i64(std::string_view text, int64_t* out) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace detail

using namespace detail;  // the parser's files only: this header is theirs

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
  bool otlp_scope(od::value v, uint32_t* begin, uint32_t* count, const char** why);
  bool otlp_metric(od::value v);
  bool otlp_points(od::value v, OtlpType type);
  bool otlp_point(od::value v, OtlpType type);
  bool otlp_buckets(od::value v, int32_t* offset, std::vector<uint64_t>& counts,
                    const char** why);
  bool u64_array(od::value v, std::vector<uint64_t>& out, const char** why, const char* what);
  bool i32_field(od::value v, int32_t* out, const char** why, const char* what);
  bool double_field(od::value v, double* out, const char** why, const char* what);
  void add_otlp_samples(const RawSample& point, size_t label_begin);
  void reject_points(size_t first, std::string_view why);
  bool otlp_attributes(od::value v, const char** why);
  bool otlp_attribute(od::value v, const char** why);
  bool otlp_any_value(od::value v, std::string_view* text, const char** why);
  // Reads a uint64 given as a JSON number or a decimal string.
  bool u64_field(od::value v, uint64_t* out, const char** why, const char* what);
  void finish_labels(size_t begin, const char** why);

  // One OTLP point's arrays, reused from point to point.
  std::vector<double> bounds;
  std::vector<uint64_t> counts, negative;
  std::vector<OtlpSample> expanded;
};

}  // namespace ingest
