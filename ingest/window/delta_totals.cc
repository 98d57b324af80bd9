// delta_totals.cc: delta points -> running totals (see delta_totals.h).
#include "ingest/window/delta_totals.h"

namespace ingest {

bool DeltaTotals::add(const Sample& s, int64_t now_ns, std::vector<Sample>& out) {
  if (!s.delta) {
    out.push_back(s);
    return true;
  }
  // The series' own key: its labels and the resource's it does not override.
  merged_.assign(s.labels.begin(), s.labels.end());
  for (const Label& r : s.resource_labels) {
    bool clash = false;
    for (const Label& l : s.labels) clash |= l.name == r.name;
    if (!clash) merged_.push_back(r);
  }
  std::string name(s.metric);
  name.append(s.suffix);
  std::string key = make_series_key(name, merged_);
  auto it = totals_.find(key);
  bool fresh = it == totals_.end();
  if (fresh) {
    if (totals_.size() >= max_series_) return false;
    auto seeded = seed_ ? seed_(key) : std::nullopt;
    it = totals_.emplace(std::move(key), Total{}).first;
    if (seeded) {
      it->second.value = seeded->first;
      it->second.last_ts = seeded->second;
    } else if (s.ts_ns > 1) {
      // A point without a time takes the tick's: its 0 would take it too, and be
      // dropped as a repeat; such a series' window counts from its first total.
      Sample zero = s;
      zero.delta = false;
      zero.value = 0;
      zero.ts_ns = s.start_ns > 0 && s.start_ns < s.ts_ns ? s.start_ns : s.ts_ns - 1;
      out.push_back(zero);
    }
  }
  Total& t = it->second;
  if (s.ts_ns != 0 && s.ts_ns <= t.last_ts) return true;
  t.value += s.value;
  t.last_ts = s.ts_ns;
  t.updated_ns = now_ns;
  Sample total = s;
  total.delta = false;
  total.value = t.value;
  out.push_back(total);
  return true;
}

void DeltaTotals::expire(int64_t cutoff_ns) {
  std::erase_if(totals_, [cutoff_ns](const auto& e) { return e.second.updated_ns < cutoff_ns; });
}

}  // namespace ingest
