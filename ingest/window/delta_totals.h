// delta_totals.h: turns OTLP points of delta temporality into running totals, so that a
// delta sum or histogram becomes the same counter series its cumulative form would
// (docs/ingest.md, OTLP temporality).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "ingest/ingest.h"

namespace ingest {

class DeltaTotals {
 public:
  explicit DeltaTotals(size_t max_series) : max_series_(max_series) {}

  // Appends to out the samples that stand for s: s itself unless it is a delta;
  // otherwise the series' running total at s's time, preceded, for a series not seen
  // before, by a 0 at the point's start time, or 1 ns before s when the start is not
  // earlier (SDKs stamp in milliseconds): the window counts the first delta too. A
  // point not newer than the series' last one is a repeat (a body fetched twice, a
  // request sent again) and adds nothing. False, and nothing appended, when a new
  // series would pass max_series.
  // The labels of appended samples are s's.
  bool add(const Sample& s, int64_t now_ns, std::vector<Sample>& out);
  // Forgets the series not updated since cutoff_ns.
  void expire(int64_t cutoff_ns);
  size_t size() const { return totals_.size(); }

 private:
  struct Total {
    double value = 0;
    int64_t last_ts = 0;
    int64_t updated_ns = 0;
  };
  size_t max_series_;
  std::unordered_map<std::string, Total> totals_;
  std::vector<Label> merged_;
};

}  // namespace ingest
