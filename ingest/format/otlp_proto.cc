// otlp_proto.cc: OTLP/protobuf metrics -> samples (see otlp_proto.h). The message is
// decoded by the protobuf library (lite runtime, ingest/otlp/*.proto declares only the
// fields read here); labels are views into the decoded message.
#include "ingest/format/otlp_proto.h"

#include <fmt/format.h>

#include "ingest/format/otlp_points.h"
#include "ingest/internal.h"
#include "otlp/metrics_service.pb.h"

namespace ingest {

namespace pb = opentelemetry::proto;

namespace {

// A sample before the decode is known to be good: labels as offsets into a vector that
// may still grow (as parser.cc's RawSample).
struct RawSample {
  std::string_view metric, suffix;
  uint32_t label_begin = 0, label_count = 0;
  uint32_t context_begin = 0, context_count = 0;
  uint32_t index = 0;
  double value = 0;
  int64_t ts_ns = 0, start_ns = 0;
  SampleKind kind = SampleKind::gauge;
  bool delta = false;
};

}  // namespace

struct OtlpProtoParser::Impl {
  pb::collector::metrics::v1::ExportMetricsServiceRequest request;
  std::vector<RawSample> raw;
  std::vector<Label> labels;
  std::vector<Sample> samples;
  std::vector<OtlpSample> expanded;
  std::vector<double> bounds;
  std::vector<uint64_t> counts, negative;
  Arena arena;
  ParseResult result;
  uint32_t point_index = 0;

  void reject(uint32_t index, std::string_view why, size_t points = 1) {
    result.rejected += points;
    if (result.error.empty()) result.error = fmt::format("sample {}: {}", index, why);
  }
  void reject_points(size_t first, std::string_view why) {
    size_t n = 0;
    for (size_t i = first; i < raw.size(); ++i) n += i == first || raw[i].index != raw[i - 1].index;
    if (n) reject(raw[first].index, why, n);
    raw.resize(first);
  }

  // Appends the attributes as labels; the reason the set is unusable, or null.
  const char* attributes(const google::protobuf::RepeatedPtrField<pb::common::v1::KeyValue>& kvs) {
    size_t begin = labels.size();
    for (const auto& kv : kvs) {
      if (!kv.has_value()) continue;
      const auto& v = kv.value();
      std::string_view text;
      switch (v.value_case()) {
        case pb::common::v1::AnyValue::kStringValue: text = v.string_value(); break;
        case pb::common::v1::AnyValue::kBoolValue: text = v.bool_value() ? "true" : "false"; break;
        case pb::common::v1::AnyValue::kIntValue:
          text = arena.store(fmt::format_int(v.int_value()).str());
          break;
        case pb::common::v1::AnyValue::kDoubleValue: {
          std::string s;
          append_json_number(s, v.double_value());
          text = arena.store(s);
          break;
        }
        default: continue;  // array, kvlist and bytes values have no label form
      }
      if (text.data() == nullptr) text = std::string_view("", 0);
      labels.push_back(Label{kv.key(), text});
    }
    return check_labels(std::span<const Label>(labels).subspan(begin));
  }

  void resource_metrics(const pb::metrics::v1::ResourceMetrics& rm);
  void scope_metrics(const pb::metrics::v1::ScopeMetrics& sm);
  void metric(const pb::metrics::v1::Metric& m);
  template <class Point>
  void point(const Point& p, OtlpType type, bool delta, SampleKind sum_kind);
  void run();
};

void OtlpProtoParser::Impl::resource_metrics(const pb::metrics::v1::ResourceMetrics& rm) {
  size_t first = raw.size();
  for (const auto& sm : rm.scope_metrics()) scope_metrics(sm);
  uint32_t rbegin = static_cast<uint32_t>(labels.size());
  if (const char* why = attributes(rm.resource().attributes())) {
    reject_points(first, std::string("resource: ") + why);
    return;
  }
  uint32_t rcount = static_cast<uint32_t>(labels.size() - rbegin);
  // A scope's context labels are in context_begin/count until its resource's are added.
  attach_resource_context(raw, first, labels, rbegin, rcount, &RawSample::context_begin, &RawSample::context_count,
                          &RawSample::context_begin, &RawSample::context_count,
                          [this](uint32_t index, std::string_view why) { reject(index, why); });
}

void OtlpProtoParser::Impl::scope_metrics(const pb::metrics::v1::ScopeMetrics& sm) {
  size_t first = raw.size();
  for (const auto& m : sm.metrics()) metric(m);
  uint32_t sbegin = static_cast<uint32_t>(labels.size());
  if (const char* why = attributes(sm.scope().attributes())) {
    reject_points(first, std::string("scope: ") + why);
    return;
  }
  uint32_t scount = static_cast<uint32_t>(labels.size() - sbegin);
  for (size_t i = first; i < raw.size(); ++i) {
    raw[i].context_begin = sbegin;
    raw[i].context_count = scount;
  }
}

void OtlpProtoParser::Impl::metric(const pb::metrics::v1::Metric& m) {
  size_t first = raw.size();
  using M = pb::metrics::v1::Metric;
  auto delta = [](int temporality) {
    return static_cast<uint64_t>(temporality) == kOtlpDelta;
  };
  switch (m.data_case()) {
    case M::kGauge:
      for (const auto& p : m.gauge().data_points()) point(p, OtlpType::gauge, false, SampleKind::gauge);
      break;
    case M::kSum: {
      bool d = delta(m.sum().aggregation_temporality());
      SampleKind kind = otlp_sum_kind(m.sum().is_monotonic());
      for (const auto& p : m.sum().data_points()) point(p, OtlpType::sum, d, kind);
      break;
    }
    case M::kHistogram: {
      bool d = delta(m.histogram().aggregation_temporality());
      for (const auto& p : m.histogram().data_points()) point(p, OtlpType::histogram, d, {});
      break;
    }
    case M::kExponentialHistogram: {
      bool d = delta(m.exponential_histogram().aggregation_temporality());
      for (const auto& p : m.exponential_histogram().data_points())
        point(p, OtlpType::exponential_histogram, d, {});
      break;
    }
    default: break;  // a summary, or no data
  }
  if (!valid_name(m.name(), kMaxOtlpNameBytes))
    return reject_points(first,
                         "invalid or missing metric name (1-248 bytes of A-Z a-z 0-9 _ . : / -)");
  for (size_t i = first; i < raw.size(); ++i) raw[i].metric = m.name();
}

template <class Point>
void OtlpProtoParser::Impl::point(const Point& p, OtlpType type, bool delta, SampleKind sum_kind) {
  uint32_t index = point_index++;
  size_t label_begin = labels.size();
  const char* why = attributes(p.attributes());
  if (p.flags() & kOtlpNoRecordedValue) {  // a gap marker, not a sample
    labels.resize(label_begin);
    return;
  }
  if (!why && (p.time_unix_nano() > static_cast<uint64_t>(INT64_MAX) ||
               p.start_time_unix_nano() > static_cast<uint64_t>(INT64_MAX)))
    why = "timeUnixNano out of range";
  OtlpPoint point;
  point.type = type;
  bounds.clear();
  counts.clear();
  negative.clear();
  if constexpr (std::is_same_v<Point, pb::metrics::v1::NumberDataPoint>) {
    using N = pb::metrics::v1::NumberDataPoint;
    if (p.value_case() == N::kAsDouble) point.value = p.as_double();
    else if (p.value_case() == N::kAsInt) point.value = static_cast<double>(p.as_int());
    else if (!why) why = "no asDouble or asInt";
  } else {
    for (size_t i = label_begin; i < labels.size(); ++i)
      if (!why && labels[i].name == "le") why = "attribute \"le\" is the bucket label of a histogram";
    point.count = p.count();
    point.have_sum = p.has_sum();
    point.sum = p.sum();
    if constexpr (std::is_same_v<Point, pb::metrics::v1::HistogramDataPoint>) {
      bounds.assign(p.explicit_bounds().begin(), p.explicit_bounds().end());
      counts.assign(p.bucket_counts().begin(), p.bucket_counts().end());
    } else {
      point.scale = p.scale();
      point.zero_count = p.zero_count();
      point.zero_threshold = p.zero_threshold();
      point.offset = p.positive().offset();
      counts.assign(p.positive().bucket_counts().begin(), p.positive().bucket_counts().end());
      point.negative_offset = p.negative().offset();
      negative.assign(p.negative().bucket_counts().begin(), p.negative().bucket_counts().end());
    }
  }
  point.bounds = bounds;
  point.counts = counts;
  point.negative = negative;
  expanded.clear();
  if (!why) why = expand_otlp_point(point, expanded);
  if (why) {
    labels.resize(label_begin);
    reject(index, why);
    return;
  }
  uint32_t own = static_cast<uint32_t>(labels.size() - label_begin);
  for (const OtlpSample& e : expanded) {
    RawSample s;
    s.index = index;
    s.suffix = e.suffix;
    s.value = e.value;
    s.kind = type == OtlpType::sum ? sum_kind : e.kind;
    s.delta = delta;
    s.ts_ns = static_cast<int64_t>(p.time_unix_nano());
    s.start_ns = static_cast<int64_t>(p.start_time_unix_nano());
    s.label_begin = static_cast<uint32_t>(label_begin);
    s.label_count = own;
    if (e.kind == SampleKind::bucket) {
      s.label_begin = static_cast<uint32_t>(labels.size());
      for (uint32_t k = 0; k < own; ++k) labels.push_back(labels[label_begin + k]);
      labels.push_back(Label{"le", otlp_le_text(e.le, arena)});
      s.label_count = own + 1;
    }
    raw.push_back(s);
  }
}

void OtlpProtoParser::Impl::run() {
  for (const auto& rm : request.resource_metrics()) resource_metrics(rm);
  samples.reserve(raw.size());
  for (const RawSample& r : raw) {
    Sample s;
    s.metric = r.metric;
    s.suffix = r.suffix;
    s.labels = std::span<const Label>(labels).subspan(r.label_begin, r.label_count);
    s.resource_labels = std::span<const Label>(labels).subspan(r.context_begin, r.context_count);
    s.value = r.value;
    s.ts_ns = r.ts_ns;
    s.kind = r.kind;
    s.delta = r.delta;
    s.start_ns = r.start_ns;
    samples.push_back(s);
  }
}

OtlpProtoParser::OtlpProtoParser() : impl_(std::make_unique<Impl>()) {}
OtlpProtoParser::~OtlpProtoParser() = default;

ParseResult OtlpProtoParser::parse(std::string_view body) {
  Impl& i = *impl_;
  i.raw.clear();
  i.labels.clear();
  i.samples.clear();
  i.arena.reset();
  i.point_index = 0;
  i.result = ParseResult{};
  i.result.format = Format::otlp;
  if (body.size() > static_cast<size_t>(INT32_MAX) ||
      !i.request.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    i.request.Clear();
    i.result.error = "invalid protobuf: not an ExportMetricsServiceRequest";
    return i.result;
  }
  i.run();
  i.result.ok = true;
  return i.result;
}

std::span<const Sample> OtlpProtoParser::samples() const { return impl_->samples; }

}  // namespace ingest
