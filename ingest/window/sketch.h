// sketch.h: QuantileSketch, the mergeable quantile sketch behind p50 / p90 / p99.
//
// Why DDSketch-style log buckets: the issue asks for a guaranteed *relative* accuracy
// (1%) that survives merging, which rank-error sketches (t-digest, KLL) do not give,
// and which a log-bucketed histogram gives by construction: value v > 0 falls in bucket
// i = ceil(log_gamma(v)) with gamma = (1 + a) / (1 - a), a = 0.01, and every value of
// bucket i is within a of its representative 2 gamma^i / (gamma + 1). Merging is adding
// counts, so a metric rollup is exactly as accurate as each series. Negative values use
// a mirrored store, exact zeros a counter.
//
// Bins are also exchanged as signed "ordered keys" (SketchBin): 0 for zero, +(i + kBias)
// for positive values, -(i + kBias) for negative ones, so that sorting keys sorts values.
// The aggregator keeps per-bucket bins in that compact form (8 bytes a bin) and only
// expands them into a QuantileSketch when it merges many series.
//
// A store spans at most kMaxBins consecutive buckets (gamma^8192 ~ 1e71): beyond that
// the lowest buckets are collapsed into one, which only loses accuracy for values more
// than 70 orders of magnitude below the largest one in the same store.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace ingest {

struct SketchBin {
  int32_t key;
  uint32_t count;
};

// A bin of a merged sketch, whose counts outgrow 32 bits.
struct SketchCount {
  int32_t key;
  uint64_t count;
  bool operator==(const SketchCount&) const = default;
};

class QuantileSketch {
 public:
  static constexpr double kRelativeAccuracy = 0.01;
  static constexpr int32_t kMaxBins = 8192;

  // The ordered key of a finite value, and a value of the key's bucket within 1%.
  static int32_t key_of(double value);
  static double value_of(int32_t key);
  // Whether key_of() can give key: a key read from outside (a rollup partial) is
  // checked, as add_key() of any other could overflow its index arithmetic.
  static bool valid_key(int32_t key);

  void add(double value) { add_key(key_of(value), 1); }
  void add_key(int32_t key, uint64_t count);
  void merge(const QuantileSketch& other);
  void clear();
  // Appends the non-empty bins, ascending key.
  void append_bins(std::vector<SketchCount>& out) const;
  uint64_t count() const { return zero_ + positive_.total + negative_.total; }

  // The value of rank floor(q * (count - 1)) within 1%; 0 when empty.
  double quantile(double q) const;

 private:
  // Dense counts for buckets [offset, offset + counts.size()).
  struct Store {
    std::vector<uint64_t> counts;
    int32_t offset = 0;
    uint64_t total = 0;
    void add(int32_t index, uint64_t n);
    void clear();
  };
  Store positive_, negative_;
  uint64_t zero_ = 0;
};

// Quantiles of bins sorted by key with equal keys merged (count is their total): out[i]
// is the value of rank floor(qs[i] * (count - 1)), qs ascending. One pass over the bins,
// and one value computed per distinct bin (p50, p90 and p99 of a short window are often
// the same bin).
void quantiles_of_sorted_bins(std::span<const SketchBin> bins, uint64_t count,
                              std::span<const double> qs, std::span<double> out);

}  // namespace ingest
