// synthetic.h: the built-in source `synthetic://?hosts=H&metrics=M&seed=S` (internal).
//
// H hosts x M metrics series with labels dc, host, service: gauges are mean-reverting
// random walks with noise, a third of the metrics are monotonic counters. The same
// seed gives the same data. Samples are produced directly, without JSON, so that a
// 100,000-series load test spends its writer time on aggregation, not on generation.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ingest/source/source.h"

namespace ingest {

class SyntheticSource {
 public:
  // Throws std::invalid_argument on a bad URL or parameter.
  explicit SyntheticSource(std::string_view url);
  // One sample per series at ts_ns; views valid until the next call.
  std::span<const Sample> generate(int64_t ts_ns);
  size_t series() const { return values_.size(); }

 private:
  uint64_t next();  // splitmix64
  double uniform();  // [0, 1)
  uint64_t state_;
  size_t hosts_, metrics_;
  std::vector<std::string> metric_names_;
  std::vector<bool> counter_;
  std::vector<double> base_, scale_;  // per metric
  std::vector<std::string> label_text_;  // stable storage behind labels_
  std::vector<Label> labels_;  // 3 per host, sorted by name
  std::vector<double> values_;  // per series, host-major
  std::vector<Sample> samples_;
};

}  // namespace ingest
