// sketch.cc: QuantileSketch, see sketch.h for the choice of DDSketch.
#include "ingest/window/sketch.h"

#include <algorithm>
#include <cmath>

namespace ingest {

namespace {

constexpr double kGamma = (1 + QuantileSketch::kRelativeAccuracy) /
                          (1 - QuantileSketch::kRelativeAccuracy);
const double kInvLogGamma = 1.0 / std::log(kGamma);
// Bucket indexes of finite doubles lie in about [-37000, 36000]; the bias keeps every
// positive key above zero and every negative key below it.
constexpr int32_t kBias = 1 << 20;

int32_t index_of(double magnitude) {
  return static_cast<int32_t>(std::ceil(std::log(magnitude) * kInvLogGamma));
}

double value_of_index(int32_t index) {
  return 2 * std::pow(kGamma, index) / (kGamma + 1);
}

}  // namespace

int32_t QuantileSketch::key_of(double value) {
  if (value > 0) return index_of(value) + kBias;
  if (value < 0) return -(index_of(-value) + kBias);
  return 0;
}

double QuantileSketch::value_of(int32_t key) {
  if (key > 0) return value_of_index(key - kBias);
  if (key < 0) return -value_of_index(-key - kBias);
  return 0;
}

bool QuantileSketch::valid_key(int32_t key) {
  // Indexes of finite doubles lie within 40000 of 0 (see kBias).
  constexpr int32_t kReach = 40000;
  if (key == 0) return true;
  int64_t index = (key > 0 ? int64_t{key} : -int64_t{key}) - kBias;  // 64 bits: -INT32_MIN
  return index >= -kReach && index <= kReach;
}

void QuantileSketch::Store::add(int32_t index, uint64_t n) {
  total += n;
  if (counts.empty()) {
    counts.assign(1, n);
    offset = index;
    return;
  }
  int32_t top = offset + static_cast<int32_t>(counts.size()) - 1;
  if (index < offset) {
    if (top - index >= kMaxBins) index = std::max(offset, top - kMaxBins + 1);
    if (index < offset) {
      counts.insert(counts.begin(), static_cast<size_t>(offset - index), 0);
      offset = index;
    }
  } else if (index > top) {
    counts.resize(static_cast<size_t>(index - offset) + 1, 0);
    int32_t excess = static_cast<int32_t>(counts.size()) - kMaxBins;
    if (excess > 0) {  // collapse the lowest buckets into the lowest one kept
      uint64_t folded = 0;
      for (int32_t i = 0; i < excess; ++i) folded += counts[static_cast<size_t>(i)];
      counts.erase(counts.begin(), counts.begin() + excess);
      counts[0] += folded;
      offset += excess;
    }
  }
  counts[static_cast<size_t>(index - offset)] += n;
}

void QuantileSketch::Store::clear() {
  counts.clear();
  offset = 0;
  total = 0;
}

void QuantileSketch::add_key(int32_t key, uint64_t count) {
  if (key > 0) positive_.add(key - kBias, count);
  else if (key < 0) negative_.add(-key - kBias, count);
  else zero_ += count;
}

void QuantileSketch::merge(const QuantileSketch& other) {
  auto merge_store = [](Store& into, const Store& from) {
    for (size_t i = 0; i < from.counts.size(); ++i)
      if (from.counts[i]) into.add(from.offset + static_cast<int32_t>(i), from.counts[i]);
  };
  merge_store(positive_, other.positive_);
  merge_store(negative_, other.negative_);
  zero_ += other.zero_;
}

void QuantileSketch::append_bins(std::vector<SketchCount>& out) const {
  // Most negative value first: the highest negative index.
  for (size_t i = negative_.counts.size(); i-- > 0;)
    if (negative_.counts[i])
      out.push_back({-(negative_.offset + static_cast<int32_t>(i) + kBias), negative_.counts[i]});
  if (zero_) out.push_back({0, zero_});
  for (size_t i = 0; i < positive_.counts.size(); ++i)
    if (positive_.counts[i])
      out.push_back({positive_.offset + static_cast<int32_t>(i) + kBias, positive_.counts[i]});
}

void QuantileSketch::clear() {
  positive_.clear();
  negative_.clear();
  zero_ = 0;
}

double QuantileSketch::quantile(double q) const {
  uint64_t n = count();
  if (n == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  auto rank = static_cast<uint64_t>(q * static_cast<double>(n - 1));
  uint64_t seen = 0;
  // Ascending values: the most negative first (highest negative index), then zero.
  for (size_t i = negative_.counts.size(); i-- > 0;) {
    seen += negative_.counts[i];
    if (seen > rank) return -value_of_index(negative_.offset + static_cast<int32_t>(i));
  }
  seen += zero_;
  if (seen > rank) return 0;
  for (size_t i = 0; i < positive_.counts.size(); ++i) {
    seen += positive_.counts[i];
    if (seen > rank) return value_of_index(positive_.offset + static_cast<int32_t>(i));
  }
  return value_of_index(positive_.offset + static_cast<int32_t>(positive_.counts.size()) - 1);
}

void quantiles_of_sorted_bins(std::span<const SketchBin> bins, uint64_t count,
                              std::span<const double> qs, std::span<double> out) {
  size_t i = 0;
  uint64_t seen = 0;  // samples in bins[0, i)
  int32_t key = 0;
  double value = 0;
  bool have_value = false;
  for (size_t k = 0; k < qs.size(); ++k) {
    if (count == 0 || bins.empty()) {
      out[k] = 0;
      continue;
    }
    auto rank = static_cast<uint64_t>(std::clamp(qs[k], 0.0, 1.0) * static_cast<double>(count - 1));
    while (i + 1 < bins.size() && seen + bins[i].count <= rank) seen += bins[i++].count;
    if (!have_value || bins[i].key != key) {
      key = bins[i].key;
      value = QuantileSketch::value_of(key);
      have_value = true;
    }
    out[k] = value;
  }
}

}  // namespace ingest
