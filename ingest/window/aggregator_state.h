// aggregator_state.h: the Aggregator's state, shared by its implementation files
// (aggregator.cc: apply, expire, build; aggregator_checkpoint.cc: save, load). Internal
// to ingest/window/. The memory layout and why it is so: aggregator.cc.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ingest/window/render.h"
#include "ingest/window/sketch.h"
#include "ingest/window/window.h"

namespace ingest {

inline constexpr int64_t kNs = 1'000'000;  // per millisecond
inline constexpr uint32_t kNoSeries = UINT32_MAX;
inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Bucket {
  int64_t first_ts, last_ts;
  double sum, min, max, first, last;
  uint32_t count;
  uint32_t bin_begin;  // this bucket's bins are [bin_begin, next bucket's bin_begin)
};
static_assert(sizeof(Bucket) == 64, "the memory figures in docs/ assume 64-byte buckets");

// A counter's reset: at ts it fell from `before`, which the window's increase adds back.
struct CounterReset {
  int64_t ts;
  double before;
};

// One bucket series of a histogram and its upper bound.
struct Bound {
  double le;
  uint32_t series;
};

// A bound and the count of observations up to it (cumulative), for the estimates.
struct BoundCount {
  double le;
  double count;
};

// What only some series need, allocated when first needed: a pointer for the others.
struct SeriesExtra {
  std::vector<CounterReset> resets;  // counters: resets in the window, oldest first
  std::vector<Bound> bounds;         // histograms: their bucket series, by bound
};

struct SeriesState {
  std::string key;
  uint64_t hash = 0;
  uint32_t metric = 0;  // index into Impl::metric_names
  uint32_t source = 0;
  uint32_t histogram = kNoSeries;  // a bucket: its histogram's series, once linked
  SampleKind kind = SampleKind::gauge;  // of its first sample
  int64_t last_ts = std::numeric_limits<int64_t>::min();  // last accepted sample
  int64_t last_seen = 0;  // fetch time of the last accepted sample
  int64_t bucket_end = 0;  // end of the newest bucket's interval: a later ts starts one
  std::vector<Bucket> buckets;
  std::vector<SketchBin> bins;
  std::unique_ptr<SeriesExtra> extra;
};

// What build() gathers per metric while it walks the series: the rollup, the merged
// sketch, the "series" array and the records' ids. Kept across builds for their
// capacity (tens of megabytes at a million series).
struct MetricBuild {
  Aggregate agg;
  QuantileSketch sketch;
  std::vector<BoundCount> bounds;  // histograms: the sum of their series' buckets
  bool bounds_differ = false;
  SeriesKeyList keys;             // series keys, sorted
  std::vector<uint32_t> records;  // their "s:" records' ids, same order
  std::string name_json;          // the metric name as a JSON string
  void clear() {
    agg = Aggregate{};
    sketch.clear();
    bounds.clear();
    bounds_differ = false;
    keys.clear();
    records.clear();
    name_json.clear();
  }
};

struct Aggregator::Impl {
  Config config;
  int64_t interval_ns = 0, window_ns = 0, stale_ns = 0, expire_ns = 0;

  std::vector<SeriesState> series;
  std::vector<uint32_t> slots;  // series index + 1; 0 is empty
  std::vector<std::string> metric_names;
  std::unordered_map<std::string, uint32_t> metric_ids;
  std::unordered_map<uint32_t, size_t> per_source;
  // Per source: the series index of each sample position of its last body (or none).
  std::unordered_map<uint32_t, std::vector<uint32_t>> positions;
  std::vector<uint32_t> order;  // series indexes sorted by key
  std::vector<uint32_t> fresh;  // created since order was last merged

  // Scratch, kept to avoid allocating per sample or per series.
  std::string key_buf;
  std::vector<Label> merged;
  std::vector<SketchBin> bin_scratch;
  std::vector<BoundCount> bound_scratch;  // a histogram's buckets, from aggregate()
  std::vector<Label> histogram_labels;
  std::string histogram_key;
  // Kept across builds: at a million series these are tens of megabytes that would
  // otherwise be allocated and page-faulted again at every tick.
  std::vector<uint32_t> all_records;  // scratch of build(), kept for its capacity
  std::vector<MetricBuild> metric_builds;
  std::string record_keys[16];  // "s:" + key of series n .. n + 8 in build(), by n % 16
  std::string key_json;
  std::string body;
  size_t last_build_bytes = 0;        // key + value bytes of the last build

  void set_config(const Config& c);
  std::span<const Label> sorted_labels(const Sample& s);
  uint32_t* find_slot(uint64_t hash, std::string_view key);
  void grow_slots();
  uint32_t create(uint64_t hash, std::string_view key, std::string_view metric,
                  std::string_view suffix, uint32_t source, SampleKind kind);
  uint32_t metric_id(std::string_view metric, std::string_view suffix);
  bool link_bucket(uint32_t bucket, const Sample& s, std::span<const Label> labels,
                   uint32_t source, size_t* source_series, int64_t now_ns);
  void add(SeriesState& st, int64_t ts, double value);
  void trim(SeriesState& st, int64_t cutoff);
  void compact(const std::vector<bool>& dead);
  void merge_fresh();
  // Fills bin_scratch with its sorted bins, or for a histogram bound_scratch with its
  // buckets' increases.
  Aggregate aggregate(const SeriesState& st);
  Aggregate histogram_aggregate(const SeriesState& h);
  // The rollup's quantiles, from the merged sketch or, for histograms, the merged buckets.
  static void finish_rollup(MetricBuild& ms);
};

// The hash of a series key in the slot table (save and load rebuild the table with it).
inline uint64_t hash_key(std::string_view key) { return std::hash<std::string_view>{}(key); }

inline SeriesExtra& extra_of(SeriesState& st) {
  if (!st.extra) st.extra = std::make_unique<SeriesExtra>();
  return *st.extra;
}

}  // namespace ingest
