// otlp_points.cc: OTLP data points -> samples (see otlp_points.h).
#include "ingest/format/otlp_points.h"

#include <cmath>
#include <limits>

namespace ingest {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

bool add_count(uint64_t* total, uint64_t n) { return !__builtin_add_overflow(*total, n, total); }

// An exponential histogram's bucket index i covers (base^i, base^(i+1)], base being
// 2^(2^-scale).
double exponential_bound(int64_t index, int32_t scale) {
  return std::exp2(std::ldexp(static_cast<double>(index), -scale));
}

const char* explicit_buckets(const OtlpPoint& p, std::vector<OtlpSample>& out) {
  if (p.counts.empty()) return nullptr;  // count and sum alone, no distribution
  if (p.counts.size() != p.bounds.size() + 1)
    return "histogram bucket_counts must have one more entry than explicit_bounds";
  if (p.counts.size() > kMaxOtlpBuckets) return "histogram has too many buckets";
  uint64_t total = 0;
  for (size_t i = 0; i < p.counts.size(); ++i) {
    if (i < p.bounds.size() &&
        (!std::isfinite(p.bounds[i]) || (i > 0 && p.bounds[i] <= p.bounds[i - 1])))
      return "histogram explicit_bounds are not finite and increasing";
    if (!add_count(&total, p.counts[i])) return "histogram bucket counts overflow";
    double le = i < p.bounds.size() ? p.bounds[i] : kInf;
    out.push_back(OtlpSample{"_bucket", le, static_cast<double>(total), SampleKind::bucket});
  }
  if (total != p.count) return "histogram bucket counts do not add up to its count";
  return nullptr;
}

const char* exponential_buckets(const OtlpPoint& p, std::vector<OtlpSample>& out) {
  if (p.scale < -10 || p.scale > 20) return "exponential histogram scale out of -10..20";
  if (p.counts.size() + p.negative.size() + 2 > kMaxOtlpBuckets)
    return "exponential histogram has too many buckets";
  if (!std::isfinite(p.zero_threshold) || p.zero_threshold < 0)
    return "exponential histogram zero_threshold is not a finite non-negative number";
  uint64_t total = 0;
  double last = -kInf;
  auto bucket = [&](double le, uint64_t n) -> const char* {
    if (!std::isfinite(le) || le <= last)
      return "exponential histogram bucket bounds out of range";
    if (!add_count(&total, n)) return "histogram bucket counts overflow";
    last = le;
    out.push_back(OtlpSample{"_bucket", le, static_cast<double>(total), SampleKind::bucket});
    return nullptr;
  };
  // Ascending: the negative buckets from the most negative, the zero bucket, the
  // positive ones; a negative bucket's upper bound is -base^index.
  for (size_t k = p.negative.size(); k-- > 0;) {
    int64_t index = int64_t{p.negative_offset} + static_cast<int64_t>(k);
    if (const char* why = bucket(-exponential_bound(index, p.scale), p.negative[k])) return why;
  }
  if (const char* why = bucket(p.zero_threshold, p.zero_count)) return why;
  for (size_t k = 0; k < p.counts.size(); ++k) {
    int64_t index = int64_t{p.offset} + static_cast<int64_t>(k) + 1;
    if (const char* why = bucket(exponential_bound(index, p.scale), p.counts[k])) return why;
  }
  if (total != p.count) return "histogram bucket counts do not add up to its count";
  out.push_back(OtlpSample{"_bucket", kInf, static_cast<double>(total), SampleKind::bucket});
  return nullptr;
}

}  // namespace

const char* expand_otlp_point(const OtlpPoint& p, std::vector<OtlpSample>& out) {
  if (p.type == OtlpType::gauge || p.type == OtlpType::sum) {
    if (!std::isfinite(p.value)) return "value is not finite";
    out.push_back(OtlpSample{"", 0, p.value, SampleKind::gauge});
    return nullptr;
  }
  if (p.have_sum && !std::isfinite(p.sum)) return "histogram sum is not finite";
  size_t first = out.size();
  out.push_back(OtlpSample{"_count", 0, static_cast<double>(p.count), SampleKind::counter});
  if (p.have_sum) out.push_back(OtlpSample{"_sum", 0, p.sum, SampleKind::counter});
  const char* why = p.type == OtlpType::histogram ? explicit_buckets(p, out)
                                                  : exponential_buckets(p, out);
  if (why) out.resize(first);
  return why;
}

std::string_view otlp_le_text(double le, Arena& arena) {
  if (std::isinf(le)) return le > 0 ? "+Inf" : "-Inf";
  std::string text;
  append_json_number(text, le);
  return arena.store(text);
}

}  // namespace ingest
