// delta_totals.h: turns OTLP points of delta temporality into running totals, so that a
// delta sum or histogram becomes the same counter series its cumulative form would
// (docs/ingest.md, OTLP temporality).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>
#include <utility>
#include <string>
#include <unordered_map>
#include <vector>

#include "ingest/window/window.h"

namespace ingest {

class DeltaTotals {
 public:
  // Where a series' running total goes on from when this process has none: the last
  // cumulative value and its time the replicated state holds for the series key (the
  // window's last sample), or nullopt. A node that starts leading (or a writer that
  // restarted) then continues every total where the cluster's state has it, instead of
  // from 0 (a false reset) or from its own stale total of an earlier leadership.
  using Seed = std::function<std::optional<std::pair<double, int64_t>>(std::string_view key)>;

  explicit DeltaTotals(size_t max_series) : max_series_(max_series) {}
  void set_seed(Seed seed) { seed_ = std::move(seed); }
  // Forgets every total: they are taken from the seed again (a new leadership).
  void clear() { totals_.clear(); }

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
  Seed seed_;
  std::unordered_map<std::string, Total> totals_;
  std::vector<Label> merged_;
};

}  // namespace ingest
