// aggregator_impl.h: the aggregator's internal types (the series table, its buckets,
// the build's working space) and Aggregator::Impl. Private to aggregator.cc,
// aggregator_snapshot.cc, build_parts.cc and aggregator_checkpoint.cc: not part of
// ingest's API.
#pragma once

#include <algorithm>
#include <array>
#include <cassert>
#include <limits>
#include <unordered_map>

#include "ingest/format/prometheus.h"
#include "ingest/window/window.h"
#include "ingest/internal.h"
#include "ingest/replica/wire.h"
#include "ingest/window/ordered_chunks.h"
#include "ingest/window/render.h"
#include "ingest/window/sketch.h"

namespace ingest {

// What the aggregator's files share: a named namespace, since three files use it.
namespace detail {

constexpr int64_t kNs = 1'000'000;  // per millisecond
constexpr uint32_t kNoSeries = UINT32_MAX;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Bucket {
  int64_t first_ts;
  double first;
  int32_t key;    // one sample: its sketch key (a wide bucket's are in its bins)
  uint32_t wide;  // 0: one sample; else 1 + its index in the series' SeriesExtra::wide
};
static_assert(sizeof(Bucket) == 24, "the memory figures in docs/ assume 24-byte buckets");

// The rest of a bucket that received more than one sample.
struct WideBucket {
  int64_t last_ts;
  double sum, min, max, last;
  uint32_t count;
  uint32_t bin_begin;  // its bins are [bin_begin, the next wide bucket's bin_begin)
};

// A bucket's figures, whichever its form.
struct BucketFigures {
  int64_t last_ts;
  double sum, min, max, last;
  uint32_t count;
};

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
  std::vector<WideBucket> wide;      // buckets of more than one sample, oldest first
  std::vector<SketchBin> bins;       // their sketch bins, in their order
  bool empty() const { return resets.empty() && bounds.empty() && wide.empty(); }
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
  std::unique_ptr<SeriesExtra> extra;
};

inline BucketFigures figures(const SeriesState& st, const Bucket& b) {
  if (b.wide == 0) {
    // As a bucket summing from 0 would hold it (0.0 + -0.0 is 0.0).
    return BucketFigures{b.first_ts, 0.0 + b.first, b.first, b.first, b.first, 1};
  }
  const WideBucket& w = st.extra->wide[b.wide - 1];
  return BucketFigures{w.last_ts, w.sum, w.min, w.max, w.last, w.count};
}

inline double last_value(const SeriesState& st, const Bucket& b) {
  return b.wide == 0 ? b.first : st.extra->wide[b.wide - 1].last;
}
inline int64_t last_time(const SeriesState& st, const Bucket& b) {
  return b.wide == 0 ? b.first_ts : st.extra->wide[b.wide - 1].last_ts;
}

inline bool counts_up(SampleKind kind) {
  return kind == SampleKind::counter || kind == SampleKind::bucket;
}

// The values before the resets inside the window (after its first sample).
inline double resets_in_window(const SeriesState& st) {
  if (!st.extra || st.buckets.empty()) return 0;
  double total = 0;
  for (const CounterReset& r : st.extra->resets)
    if (r.ts > st.buckets.front().first_ts) total += r.before;
  return total;
}

// How much a counter grew over the window, resets counted from 0.
inline double window_increase(const SeriesState& st) {
  if (st.buckets.empty()) return 0;
  return last_value(st, st.buckets.back()) - st.buckets.front().first + resets_in_window(st);
}

// The q-quantile of the observations counted in cumulative buckets (by bound, the last
// +Inf), as Prometheus' histogram_quantile estimates it: linear interpolation inside the
// bucket holding the rank, the lowest bucket starting at 0 (unless its bound is not
// positive: then the bound), and a rank in the +Inf bucket giving the highest finite
// bound. NaN without observations or without a +Inf bucket.
inline double bucket_quantile(double q, std::span<const BoundCount> b) {
  if (b.empty() || !(std::isinf(b.back().le) && b.back().le > 0)) return kNaN;
  double total = b.back().count;
  if (!(total > 0)) return kNaN;
  double rank = q * total;
  size_t i = 0;
  while (b[i].count < rank) ++i;  // ends at the last bucket at the latest
  if (i == b.size() - 1) return i > 0 ? b[i - 1].le : kNaN;
  double lower = 0, below = 0;
  if (i > 0) {
    lower = b[i - 1].le;
    below = b[i - 1].count;
  } else if (b[0].le <= 0) {
    return b[0].le;
  }
  return lower + (b[i].le - lower) * (rank - below) / (b[i].count - below);
}

inline int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

inline uint64_t hash_key(std::string_view key) { return std::hash<std::string_view>{}(key); }

// Folds a series' aggregate into its metric rollup: first / last are the earliest /
// latest samples of any series. Quantiles are set by set_quantiles() from the merged
// sketch.
inline void fold(Aggregate& rollup, const Aggregate& a) {
  if (a.count == 0) return;
  // Counters and histograms: a rollup's rate is the sum of its series' rates.
  std::optional<double> rate = a.kind != SampleKind::gauge ? a.rate() : std::nullopt;
  if (rollup.count == 0) {
    rollup = a;
    rollup.rollup = true;
    rollup.resets = 0;
    rollup.rate_sum = rate;
    return;
  }
  if (rate) rollup.rate_sum = rollup.rate_sum.value_or(0) + *rate;
  rollup.count += a.count;
  rollup.sum += a.sum;
  rollup.min = std::min(rollup.min, a.min);
  rollup.max = std::max(rollup.max, a.max);
  if (a.first_ts_ns < rollup.first_ts_ns) {
    rollup.first = a.first;
    rollup.first_ts_ns = a.first_ts_ns;
  }
  if (a.last_ts_ns > rollup.last_ts_ns) {
    rollup.last = a.last;
    rollup.last_ts_ns = a.last_ts_ns;
  }
}

// Adds a histogram's cumulative counts into a rollup's. Series of one metric normally
// share their bounds; where they do not, a sum would mix unlike buckets, so the rollup
// gets no estimate (`differ`).
inline void merge_bounds(std::vector<BoundCount>& into, bool* differ,
                         std::span<const BoundCount> b) {
  if (b.empty() || *differ) return;
  if (into.empty()) {
    into.assign(b.begin(), b.end());
    return;
  }
  if (into.size() != b.size()) {
    *differ = true;
    return;
  }
  for (size_t i = 0; i < b.size(); ++i) {
    if (into[i].le != b[i].le) {
      *differ = true;
      return;
    }
    into[i].count += b[i].count;
  }
}

inline void set_bucket_quantiles(Aggregate& a, std::span<const BoundCount> bounds) {
  a.p50 = bucket_quantile(0.5, bounds);
  a.p90 = bucket_quantile(0.9, bounds);
  a.p99 = bucket_quantile(0.99, bounds);
}

// Clamping to [min, max] keeps the 1% bound and never reports a value outside the data.
inline void set_quantiles(Aggregate& a, const QuantileSketch& sketch) {
  if (a.count == 0) return;
  a.p50 = std::clamp(sketch.quantile(0.5), a.min, a.max);
  a.p90 = std::clamp(sketch.quantile(0.9), a.min, a.max);
  a.p99 = std::clamp(sketch.quantile(0.99), a.min, a.max);
}

// A bucket as a checkpoint holds it (every figure), before load() picks its form.
struct SavedBucket {
  int64_t first_ts, last_ts;
  double first, sum, min, max, last;
  uint32_t count;
  uint64_t bins;
};

// aggregate()'s working space: one per thread that calls it.
struct AggregateScratch {
  std::vector<SketchBin> bins;      // the series' sketch bins, sorted, equal keys merged
  std::vector<BoundCount> bounds;   // a histogram's buckets
  std::string key;                  // a histogram's NAME_sum key
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

// What a build with partition views gathers per part and metric for its "r:" partial
// and "p:" list: the series terms encoded as it walks them (rollup_partial.cc), their
// sketch and buckets merged. Kept across builds, as MetricBuild.
struct PartialBuild {
  QuantileSketch sketch;
  std::vector<BoundCount> bounds;
  bool bounds_differ = false;
  std::string series;  // the series' entries of the partial, in key order
  std::vector<uint32_t> records;  // their "s:" records' ids, same order
  void clear() {
    sketch.clear();
    bounds.clear();
    bounds_differ = false;
    series.clear();
    records.clear();
  }
};

// A partial's bytes (window.h, Rollup partials) from what the build gathered: the
// header, bins and bounds, then series_bytes (series entries append_partial_series()
// wrote, series_count of them).
void append_partial(std::string& out, double window_s, size_t series_count,
                    std::span<const SketchCount> bins, std::span<const BoundCount> bounds,
                    bool bounds_differ, std::string_view series_bytes);
// One series' entry of a partial.
void append_partial_series(std::string& out, std::string_view key, const Aggregate& a);

// Series bodies rendered by build()'s threads, in key order, for the building thread to
// add: each series' body then its key as a JSON string in text, its sorted sketch bins
// and a histogram's bucket counts, each series' ends recorded.
constexpr size_t kBuildChunk = 512;  // series per chunk
struct RenderedSeries {
  Aggregate agg;
  uint32_t metric;
  uint32_t body_end, key_end, bins_end, bounds_end;
};
struct RenderChunk {
  std::string text;
  std::vector<RenderedSeries> series;
  std::vector<SketchBin> bins;
  std::vector<BoundCount> bounds;
  AggregateScratch scratch;  // the producer's (one at a time per chunk slot)
  std::string key_json;
};

// A series of a build over several aggregators, in the merged key order: its state and
// the index of the part that holds it.
struct MergedSeries {
  const SeriesState* state;
  uint32_t part;
};

inline SeriesExtra& extra_of(SeriesState& st) {
  if (!st.extra) st.extra = std::make_unique<SeriesExtra>();
  return *st.extra;
}

}  // namespace detail

using namespace detail;  // the aggregator's files only: this header is theirs

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
  AggregateScratch scratch;  // of aggregate() outside build()
  std::vector<Label> histogram_labels;
  std::string histogram_key;
  // Kept across builds: at a million series these are tens of megabytes that would
  // otherwise be allocated and page-faulted again at every tick.
  std::vector<uint32_t> all_records;  // scratch of build(), kept for its capacity
  std::vector<MetricBuild> metric_builds;
  std::string record_keys[16];  // "s:" + key of series n .. n + 8 in build(), by n % 16
  std::vector<RenderChunk> render_slots;
  // The build's metric table, set by index_metrics() for each build: in the part that
  // leads it (the first given), the metrics of every part, each name once, by index
  // (their MetricBuild in metric_builds); in every part, its own metric ids' indexes
  // there. The names view the parts' metric_names: valid during that build only.
  std::vector<std::string_view> build_metric_names;
  std::vector<uint32_t> build_metric_index;
  std::unordered_map<std::string_view, uint32_t> build_metric_ids;  // build_parts() only
  std::vector<MergedSeries> merged_order;  // build_parts(): the parts' series in key order
  // Partition views: part p's metric i at p * metrics + i; the bins of one partial.
  std::vector<PartialBuild> partial_builds;
  std::vector<SketchCount> partial_bins;
  std::string body;
  size_t last_build_bytes = 0;        // key + value bytes of the last build
  std::vector<SavedBucket> saved_scratch;  // load(): one series' buckets as saved
  // apply(): the keys of samples without a guess, rendered and hashed ahead, at their
  // sample index modulo the ring's size (AheadKey::sample says which sample's it is).
  struct AheadKey {
    size_t sample = SIZE_MAX;
    uint64_t hash = 0;
    std::string key;
  };
  std::array<AheadKey, 32> ahead;

  void set_config(const Config& c);
  std::span<const Label> sorted_labels(const Sample& s);
  uint32_t* find_slot(uint64_t hash, std::string_view key);
  // The series of that key, or kNoSeries.
  uint32_t lookup(uint64_t hash, std::string_view key) const;
  void grow_slots();
  void prefetch_ahead(std::span<const Sample> samples, const std::vector<uint32_t>& guess, size_t i);
  uint32_t create(uint64_t hash, std::string_view key, std::string_view metric,
                  std::string_view suffix, uint32_t source, SampleKind kind);
  uint32_t metric_id(std::string_view metric, std::string_view suffix);
  bool link_bucket(uint32_t bucket, const Sample& s, std::span<const Label> labels,
                   uint32_t source, size_t* source_series, int64_t now_ns);
  void add(SeriesState& st, int64_t ts, double value);
  void trim(SeriesState& st, int64_t cutoff);
  void compact(const std::vector<bool>& dead);
  void merge_fresh();
  // Fills s.bins with its sorted bins, or for a histogram s.bounds with its buckets'
  // increases. Reads only: build()'s threads call it at once.
  Aggregate aggregate(const SeriesState& st, AggregateScratch& s) const;
  Aggregate histogram_aggregate(const SeriesState& h, AggregateScratch& s) const;
  // The rollup's quantiles, from the merged sketch or, for histograms, the merged buckets.
  static void finish_rollup(MetricBuild& ms);
};

// One aggregator of a build, its clock and its AggregatorPart's partition and
// prometheus.
struct BuildPart {
  Aggregator::Impl* impl;
  int64_t now_ns;
  uint32_t partition;
  bool prometheus;
};

// The build's metric table (see Impl::build_metric_names), parts[0] leading.
void index_metrics(std::span<const BuildPart> parts);
// The parts' series in key order into `into`, a k-way merge of their orders; throws
// std::invalid_argument when a key is in two parts.
void merge_orders(std::span<const BuildPart> parts, std::vector<MergedSeries>& into);
// Renders every record and list of the snapshot into builder, cleared first: the
// series in key order (one part's own order, or `merged`), each at its part's clock,
// the rollups over all of them, and with views each part's "p:" lists and "r:"
// partials. The parts are expired and their orders merged already.
void build_snapshot(shm::SnapshotBuilder& builder, std::span<const BuildPart> parts,
                    std::span<const MergedSeries> merged, bool views);

}  // namespace ingest
