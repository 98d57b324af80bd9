// otlp_points.h: how one OTLP data point becomes samples. Shared by the OTLP/JSON
// parser (parser.cc) and the protobuf decoder (otlp_proto.cc), so that both encodings
// of one request give the same series (docs/ingest.md, OTLP).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "ingest/format/format.h"
#include "ingest/internal.h"

namespace ingest {

enum class OtlpType : uint8_t { gauge, sum, histogram, exponential_histogram };

// AggregationTemporality: DELTA is 1, CUMULATIVE 2, UNSPECIFIED 0 (taken as cumulative).
inline constexpr uint64_t kOtlpDelta = 1;
// DataPointFlags.NO_RECORDED_VALUE: the point marks a gap and carries no value.
inline constexpr uint64_t kOtlpNoRecordedValue = 1;
// Most buckets one histogram point may carry (an exponential one's positive, negative
// and zero buckets together): each is a series.
inline constexpr size_t kMaxOtlpBuckets = 400;
// A metric name leaves room for the longest suffix, "_bucket".
inline constexpr size_t kMaxOtlpNameBytes = kMaxMetricNameBytes - 7;

struct OtlpPoint {
  OtlpType type = OtlpType::gauge;
  double value = 0;  // gauge, sum
  uint64_t count = 0;  // histograms
  double sum = 0;
  bool have_sum = false;
  std::span<const double> bounds;    // histogram: explicit_bounds
  std::span<const uint64_t> counts;  // histogram: bucket_counts; exponential: positive
  int32_t offset = 0;                // exponential: positive offset
  std::span<const uint64_t> negative;
  int32_t negative_offset = 0;
  int32_t scale = 0;
  uint64_t zero_count = 0;
  double zero_threshold = 0;
};

// One sample of a point before its labels are attached: `_bucket` samples take the
// point's labels plus le.
struct OtlpSample {
  std::string_view suffix;  // "", "_count", "_sum" or "_bucket"
  double le = 0;
  double value = 0;
  SampleKind kind = SampleKind::gauge;
};

// Appends the point's samples to out (a gauge or sum: one; a histogram: _count, _sum
// when present, then one _bucket per bound with cumulative counts, +Inf last). A sum's
// sample is a gauge; the caller sets its kind with otlp_sum_kind once it knows the
// sum's monotonicity. Returns the reason the point is refused (out unchanged), or null.
const char* expand_otlp_point(const OtlpPoint& point, std::vector<OtlpSample>& out);

// Monotonic sums are counters (cumulative, or delta made cumulative by DeltaTotals);
// the others are gauges.
inline SampleKind otlp_sum_kind(bool monotonic) {
  return monotonic ? SampleKind::counter : SampleKind::gauge;
}

// The size of the union of a point's labels and its context's (scope and resource
// attributes, each without duplicates): what the series will carry.
inline size_t merged_label_count(std::span<const Label> own, std::span<const Label> context) {
  if (own.size() + context.size() <= kMaxLabels) return own.size() + context.size();
  size_t count = own.size();
  for (const Label& r : context) {
    bool clash = false;
    for (const Label& l : own) clash |= l.name == r.name;
    count += !clash;
  }
  return count;
}

// A scope's context labels: appends the scope's attributes, then the resource's whose
// names the scope does not have, to labels (both given as [begin, begin + count) of
// labels), and returns where the appended run starts; it is `count` long.
inline uint32_t append_scope_context(std::vector<Label>& labels, uint32_t scope_begin, uint32_t scope_count,
                                     uint32_t resource_begin, uint32_t resource_count, uint32_t* count) {
  labels.reserve(labels.size() + scope_count + resource_count);
  const auto begin = static_cast<uint32_t>(labels.size());
  auto scope = std::span<const Label>(labels).subspan(scope_begin, scope_count);
  auto resource = std::span<const Label>(labels).subspan(resource_begin, resource_count);
  for (const Label& l : scope) labels.push_back(l);
  for (const Label& r : resource) {
    bool clash = false;
    for (const Label& l : scope) clash |= l.name == r.name;
    if (!clash) labels.push_back(r);
  }
  *count = static_cast<uint32_t>(labels.size() - begin);
  return begin;
}

// Attaches a resource's context labels to the samples raw[first, raw.size()) of its
// metrics, a point's samples adjacent (the same `index`): per scope (the run of labels
// raw[i].*scope_begin/*scope_count, empty: none), the scope's attributes, then the
// resource's ([resource_begin, resource_begin + resource_count) of labels) the scope does
// not name, built once per scope in labels and stored in each sample's
// *context_begin/*context_count. A point whose own labels with its context would be more
// than kMaxLabels is refused with reject(index, why), and its samples taken out of raw.
// Shared by the OTLP/JSON parser and the protobuf decoder, so that both refuse the same
// points.
template <class Raw, class Reject>
void attach_resource_context(std::vector<Raw>& raw, size_t first, std::vector<Label>& labels,
                             uint32_t resource_begin, uint32_t resource_count, uint32_t Raw::*scope_begin,
                             uint32_t Raw::*scope_count, uint32_t Raw::*context_begin,
                             uint32_t Raw::*context_count, Reject&& reject) {
  uint32_t cbegin = resource_begin, ccount = resource_count;
  uint32_t built_begin = 0, built_count = 0;
  size_t kept = first;
  for (size_t i = first; i < raw.size();) {
    size_t end = i + 1;  // the point's samples: [i, end)
    while (end < raw.size() && raw[end].index == raw[i].index) ++end;
    const uint32_t sbegin = raw[i].*scope_begin, scount = raw[i].*scope_count;
    if (scount == 0) {
      cbegin = resource_begin;
      ccount = resource_count;
    } else if (sbegin != built_begin || scount != built_count) {
      built_begin = sbegin;
      built_count = scount;
      cbegin = append_scope_context(labels, sbegin, scount, resource_begin, resource_count, &ccount);
    }
    auto context = std::span<const Label>(labels).subspan(cbegin, ccount);
    bool over = false;
    for (size_t k = i; k < end; ++k) {
      auto own = std::span<const Label>(labels).subspan(raw[k].label_begin, raw[k].label_count);
      over |= merged_label_count(own, context) > kMaxLabels;
    }
    if (over) {
      reject(raw[i].index, fmt::format("more than {} labels with the resource attributes", kMaxLabels));
    } else {
      for (size_t k = i; k < end; ++k) {
        raw[k].*context_begin = cbegin;
        raw[k].*context_count = ccount;
        raw[kept++] = raw[k];
      }
    }
    i = end;
  }
  raw.resize(kept);
}

// The text of an le label ("+Inf", or the shortest text that reads back as le).
std::string_view otlp_le_text(double le, Arena& arena);

}  // namespace ingest
