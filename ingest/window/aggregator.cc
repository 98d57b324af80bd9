// aggregator.cc: per-series sliding-window state and the snapshot build.
//
// Memory layout, chosen for 1,000,000 series:
//  - series live in one vector; an open-addressing table of 32-bit indexes maps a key's
//    hash to its series, so finding a series costs one key render, one hash and
//    (usually) one probe, with no allocation once the series exists;
//  - a series keeps one Bucket per interval that received samples. An interval of one
//    sample (a series polled once per interval: most of them) is its time, value and
//    sketch key, 24 bytes; one that received more widens into a WideBucket kept beside
//    (sum, min, max, last, count) with its sketch bins as 8-byte (key, count) pairs, so
//    a series polled once per interval costs 24 bytes per interval of the window;
//  - upstreams send their series in the same order at every fetch, so each source
//    remembers which series the sample at each position of its last body was. A sample
//    that is its guess (compared piece by piece, without rendering its key) skips the
//    render, the hash and the probe, and the guess lets the loop prefetch the series a
//    few samples ahead: at a million series the cost of a sample is cache misses;
//  - the key order is kept sorted incrementally (only series created since the last
//    build are sorted), since sorting a million strings every tick would dominate.
//
// Kinds: a counter's (or a histogram bucket's) rate counts a decrease as a reset, the
// counter starting again from 0; the values before its resets are kept while they are
// in the window. A histogram is a series of its own, created with its first bucket,
// whose aggregates come from its buckets' increases over the window (docs/ingest.md).
#include <algorithm>
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

double Aggregate::mean() const { return count ? sum / static_cast<double>(count) : 0; }

std::optional<double> Aggregate::rate() const {
  if (rollup && kind != SampleKind::gauge) {
    if (!rate_sum || !std::isfinite(*rate_sum)) return std::nullopt;
    return rate_sum;
  }
  if (last_ts_ns <= first_ts_ns) return std::nullopt;
  double change;
  if (kind == SampleKind::histogram) {
    change = static_cast<double>(count);  // observations
  } else {
    if (count < 2) return std::nullopt;
    change = last - first + resets;  // resets is 0 for a gauge
  }
  double r = change / (static_cast<double>(last_ts_ns - first_ts_ns) / 1e9);
  if (!std::isfinite(r)) return std::nullopt;
  return r;
}

namespace {

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

BucketFigures figures(const SeriesState& st, const Bucket& b) {
  if (b.wide == 0) {
    // As a bucket summing from 0 would hold it (0.0 + -0.0 is 0.0).
    return BucketFigures{b.first_ts, 0.0 + b.first, b.first, b.first, b.first, 1};
  }
  const WideBucket& w = st.extra->wide[b.wide - 1];
  return BucketFigures{w.last_ts, w.sum, w.min, w.max, w.last, w.count};
}

double last_value(const SeriesState& st, const Bucket& b) {
  return b.wide == 0 ? b.first : st.extra->wide[b.wide - 1].last;
}
int64_t last_time(const SeriesState& st, const Bucket& b) {
  return b.wide == 0 ? b.first_ts : st.extra->wide[b.wide - 1].last_ts;
}

bool counts_up(SampleKind kind) {
  return kind == SampleKind::counter || kind == SampleKind::bucket;
}

// The values before the resets inside the window (after its first sample).
double resets_in_window(const SeriesState& st) {
  if (!st.extra || st.buckets.empty()) return 0;
  double total = 0;
  for (const CounterReset& r : st.extra->resets)
    if (r.ts > st.buckets.front().first_ts) total += r.before;
  return total;
}

// How much a counter grew over the window, resets counted from 0.
double window_increase(const SeriesState& st) {
  if (st.buckets.empty()) return 0;
  return last_value(st, st.buckets.back()) - st.buckets.front().first + resets_in_window(st);
}

// The q-quantile of the observations counted in cumulative buckets (by bound, the last
// +Inf), as Prometheus' histogram_quantile estimates it: linear interpolation inside the
// bucket holding the rank, the lowest bucket starting at 0 (unless its bound is not
// positive: then the bound), and a rank in the +Inf bucket giving the highest finite
// bound. NaN without observations or without a +Inf bucket.
double bucket_quantile(double q, std::span<const BoundCount> b) {
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

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

uint64_t hash_key(std::string_view key) { return std::hash<std::string_view>{}(key); }

// Folds a series' aggregate into its metric rollup: first / last are the earliest /
// latest samples of any series. Quantiles are set by set_quantiles() from the merged
// sketch.
void fold(Aggregate& rollup, const Aggregate& a) {
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
void merge_bounds(std::vector<BoundCount>& into, bool* differ, std::span<const BoundCount> b) {
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

void set_bucket_quantiles(Aggregate& a, std::span<const BoundCount> bounds) {
  a.p50 = bucket_quantile(0.5, bounds);
  a.p90 = bucket_quantile(0.9, bounds);
  a.p99 = bucket_quantile(0.99, bounds);
}

// Clamping to [min, max] keeps the 1% bound and never reports a value outside the data.
void set_quantiles(Aggregate& a, const QuantileSketch& sketch) {
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

}  // namespace

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
  std::string body;
  size_t last_build_bytes = 0;        // key + value bytes of the last build
  std::vector<SavedBucket> saved_scratch;  // load(): one series' buckets as saved

  void set_config(const Config& c);
  std::span<const Label> sorted_labels(const Sample& s);
  uint32_t* find_slot(uint64_t hash, std::string_view key);
  // The series of that key, or kNoSeries.
  uint32_t lookup(uint64_t hash, std::string_view key) const;
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
  // Fills s.bins with its sorted bins, or for a histogram s.bounds with its buckets'
  // increases. Reads only: build()'s threads call it at once.
  Aggregate aggregate(const SeriesState& st, AggregateScratch& s) const;
  Aggregate histogram_aggregate(const SeriesState& h, AggregateScratch& s) const;
  // Renders series order[begin, end) into chunk (build()'s producers, at once).
  void render_chunk(size_t begin, size_t end, RenderChunk& chunk, double window_s,
                    int64_t now_ns) const;
  // The rollup's quantiles, from the merged sketch or, for histograms, the merged buckets.
  static void finish_rollup(MetricBuild& ms);
};

namespace {

SeriesExtra& extra_of(SeriesState& st) {
  if (!st.extra) st.extra = std::make_unique<SeriesExtra>();
  return *st.extra;
}

}  // namespace

void Aggregator::Impl::set_config(const Config& c) {
  config = c.resolved();
  interval_ns = config.interval.count() * kNs;
  window_ns = config.window.count() * kNs;
  stale_ns = config.stale_after.count() * kNs;
  expire_ns = config.expire_after.count() * kNs;
}

std::span<const Label> Aggregator::Impl::sorted_labels(const Sample& s) {
  return sorted_sample_labels(s, merged);
}

uint32_t Aggregator::Impl::lookup(uint64_t hash, std::string_view key) const {
  size_t mask = slots.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    uint32_t s = slots[i];
    if (s == 0) return kNoSeries;
    const SeriesState& st = series[s - 1];
    if (st.hash == hash && st.key == key) return s - 1;
  }
}

uint32_t* Aggregator::Impl::find_slot(uint64_t hash, std::string_view key) {
  size_t mask = slots.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    uint32_t s = slots[i];
    if (s == 0) return &slots[i];
    const SeriesState& st = series[s - 1];
    if (st.hash == hash && st.key == key) return &slots[i];
  }
}

void Aggregator::Impl::grow_slots() {
  size_t size = std::max<size_t>(1024, slots.size());
  while (size < series.size() * 2 + 2) size *= 2;
  slots.assign(size, 0);
  size_t mask = size - 1;
  for (size_t n = 0; n < series.size(); ++n) {
    size_t i = series[n].hash & mask;
    while (slots[i]) i = (i + 1) & mask;
    slots[i] = static_cast<uint32_t>(n + 1);
  }
}

uint32_t Aggregator::Impl::metric_id(std::string_view metric, std::string_view suffix) {
  std::string name;
  name.reserve(metric.size() + suffix.size());
  name.append(metric).append(suffix);
  auto [it, inserted] = metric_ids.try_emplace(name, static_cast<uint32_t>(metric_names.size()));
  if (inserted) metric_names.push_back(std::move(name));
  return it->second;
}

uint32_t Aggregator::Impl::create(uint64_t hash, std::string_view key, std::string_view metric,
                                  std::string_view suffix, uint32_t source, SampleKind kind) {
  SeriesState st;
  st.key = key;
  st.hash = hash;
  st.metric = metric_id(metric, suffix);
  st.source = source;
  st.kind = kind;
  series.push_back(std::move(st));
  auto index = static_cast<uint32_t>(series.size() - 1);
  fresh.push_back(index);
  ++per_source[source];
  if (series.size() * 2 > slots.size()) grow_slots();
  else *find_slot(hash, series.back().key) = index + 1;
  return index;
}

// Links a bucket series to its histogram (the family's name and the bucket's labels but
// le), creating the histogram series if needed; false when that would pass a series
// limit.
bool Aggregator::Impl::link_bucket(uint32_t bucket, const Sample& s, std::span<const Label> labels,
                                   uint32_t source, size_t* source_series, int64_t now_ns) {
  double le = 0;
  bool have_le = false;
  histogram_labels.clear();
  for (const Label& l : labels) {
    if (l.name == "le") have_le = parse_float(l.value, &le);
    else histogram_labels.push_back(l);
  }
  if (!have_le || std::isnan(le)) return true;  // not a bucket after all: a counter alone
  histogram_key.clear();
  append_series_key(histogram_key, s.metric, {}, histogram_labels);
  uint64_t hash = hash_key(histogram_key);
  uint32_t h;
  if (uint32_t slot = *find_slot(hash, histogram_key)) {
    h = slot - 1;
    if (series[h].kind != SampleKind::histogram) return true;  // a series of that name
  } else {
    if (series.size() >= config.max_series || *source_series >= config.max_series_per_source)
      return false;
    h = create(hash, histogram_key, s.metric, {}, source, SampleKind::histogram);
    series[h].last_seen = now_ns;  // seen with its bucket, even if that sample is dropped
    ++*source_series;
  }
  std::vector<Bound>& bounds = extra_of(series[h]).bounds;
  auto at = std::upper_bound(bounds.begin(), bounds.end(), le,
                             [](double v, const Bound& b) { return v < b.le; });
  bounds.insert(at, Bound{le, bucket});
  series[bucket].histogram = h;
  return true;
}

void Aggregator::Impl::add(SeriesState& st, int64_t ts, double value) {
  // A counter that went down was reset and counts from 0 again.
  if (counts_up(st.kind) && !st.buckets.empty()) {
    double before = last_value(st, st.buckets.back());
    if (value < before) extra_of(st).resets.push_back(CounterReset{ts, before});
  }
  int32_t key = QuantileSketch::key_of(value);
  // ts is newer than every sample of the series (apply() drops the others), so it
  // belongs to the newest bucket or starts a new one.
  if (st.buckets.empty() || ts >= st.bucket_end) {
    st.buckets.push_back(Bucket{ts, value, key, 0});
    st.bucket_end = (floor_div(ts, interval_ns) + 1) * interval_ns;
    return;
  }
  Bucket& b = st.buckets.back();
  if (b.wide == 0) {  // its second sample: the bucket widens
    SeriesExtra& x = extra_of(st);
    x.wide.push_back(WideBucket{b.first_ts, 0.0 + b.first, b.first, b.first, b.first, 1,
                                static_cast<uint32_t>(x.bins.size())});
    x.bins.push_back(SketchBin{b.key, 1});
    b.wide = static_cast<uint32_t>(x.wide.size());
  }
  WideBucket& w = st.extra->wide[b.wide - 1];
  std::vector<SketchBin>& bins = st.extra->bins;
  ++w.count;
  w.sum += value;
  w.min = std::min(w.min, value);
  w.max = std::max(w.max, value);
  w.last = value;
  w.last_ts = ts;
  for (size_t i = w.bin_begin; i < bins.size(); ++i) {
    if (bins[i].key == key) {
      ++bins[i].count;
      return;
    }
  }
  bins.push_back(SketchBin{key, 1});
}

// Drops the buckets whose newest sample left the window: the window slides in steps of
// one interval.
void Aggregator::Impl::trim(SeriesState& st, int64_t cutoff) {
  size_t n = 0, wide_gone = 0;
  for (; n < st.buckets.size() && last_time(st, st.buckets[n]) < cutoff; ++n)
    wide_gone += st.buckets[n].wide != 0;
  if (n == 0) return;
  st.buckets.erase(st.buckets.begin(), st.buckets.begin() + static_cast<ptrdiff_t>(n));
  if (!st.extra) return;
  if (wide_gone) {
    std::vector<WideBucket>& wide = st.extra->wide;
    uint32_t bins_gone = wide_gone < wide.size() ? wide[wide_gone].bin_begin
                                                 : static_cast<uint32_t>(st.extra->bins.size());
    wide.erase(wide.begin(), wide.begin() + static_cast<ptrdiff_t>(wide_gone));
    st.extra->bins.erase(st.extra->bins.begin(), st.extra->bins.begin() + bins_gone);
    for (WideBucket& w : wide) w.bin_begin -= bins_gone;
    for (Bucket& b : st.buckets)
      if (b.wide) b.wide -= static_cast<uint32_t>(wide_gone);
  }
  // Resets at or before the window's first sample are no part of its increase.
  std::vector<CounterReset>& resets = st.extra->resets;
  int64_t first = st.buckets.empty() ? std::numeric_limits<int64_t>::max()
                                     : st.buckets.front().first_ts;
  size_t gone = 0;
  while (gone < resets.size() && resets[gone].ts <= first) ++gone;
  resets.erase(resets.begin(), resets.begin() + static_cast<ptrdiff_t>(gone));
  if (st.extra->empty()) st.extra.reset();
}

void Aggregator::Impl::compact(const std::vector<bool>& dead) {
  std::vector<uint32_t> remap(series.size(), UINT32_MAX);
  size_t kept = 0;
  for (size_t i = 0; i < series.size(); ++i) {
    if (dead[i]) {
      if (--per_source[series[i].source] == 0) per_source.erase(series[i].source);
      continue;
    }
    remap[i] = static_cast<uint32_t>(kept);
    if (kept != i) series[kept] = std::move(series[i]);
    ++kept;
  }
  series.resize(kept);
  auto remap_list = [&remap](std::vector<uint32_t>& list) {
    size_t out = 0;
    for (uint32_t i : list)
      if (remap[i] != UINT32_MAX) list[out++] = remap[i];
    list.resize(out);
  };
  remap_list(order);  // keeps its sorted order
  remap_list(fresh);
  // A bucket whose histogram is gone is linked again at its next sample.
  for (SeriesState& st : series) {
    if (st.histogram != kNoSeries) st.histogram = remap[st.histogram];
    if (!st.extra || st.extra->bounds.empty()) continue;
    std::vector<Bound>& bounds = st.extra->bounds;
    size_t out = 0;
    for (const Bound& b : bounds)
      if (remap[b.series] != UINT32_MAX) bounds[out++] = Bound{b.le, remap[b.series]};
    bounds.resize(out);
  }
  // Metric names of vanished series go too, so churning names cannot grow the table.
  std::vector<std::string> old_names = std::move(metric_names);
  metric_names.clear();
  metric_ids.clear();
  std::vector<uint32_t> metric_remap(old_names.size(), UINT32_MAX);
  for (SeriesState& st : series) {
    uint32_t& m = metric_remap[st.metric];
    if (m == UINT32_MAX) {
      m = static_cast<uint32_t>(metric_names.size());
      metric_ids.emplace(old_names[st.metric], m);
      metric_names.push_back(old_names[st.metric]);
    }
    st.metric = m;
  }
  slots.clear();
  grow_slots();
  positions.clear();  // indexes moved; the guesses refill on the next fetch
}

void Aggregator::Impl::merge_fresh() {
  if (fresh.empty()) return;
  auto by_key = [this](uint32_t a, uint32_t b) { return series[a].key < series[b].key; };
  std::sort(fresh.begin(), fresh.end(), by_key);
  size_t middle = order.size();
  order.insert(order.end(), fresh.begin(), fresh.end());
  std::inplace_merge(order.begin(), order.begin() + static_cast<ptrdiff_t>(middle),
                     order.end(), by_key);
  fresh.clear();
}

Aggregate Aggregator::Impl::aggregate(const SeriesState& st, AggregateScratch& s) const {
  if (st.kind == SampleKind::histogram) return histogram_aggregate(st, s);
  Aggregate a;
  a.kind = st.kind;
  std::vector<SketchBin>& bin_scratch = s.bins;
  bin_scratch.clear();
  s.bounds.clear();
  if (st.buckets.empty()) return a;
  if (counts_up(st.kind)) a.resets = resets_in_window(st);
  const Bucket& front = st.buckets.front();
  a.min = a.max = front.first;
  bin_scratch.clear();
  if (st.extra) bin_scratch.assign(st.extra->bins.begin(), st.extra->bins.end());
  for (const Bucket& b : st.buckets) {
    if (b.wide == 0) {
      a.count += 1;
      a.sum += b.first;  // as 0.0 + b.first: a.sum, from 0.0, is never -0.0
      a.min = std::min(a.min, b.first);
      a.max = std::max(a.max, b.first);
      bin_scratch.push_back(SketchBin{b.key, 1});
      continue;
    }
    const WideBucket& w = st.extra->wide[b.wide - 1];
    a.count += w.count;
    a.sum += w.sum;
    a.min = std::min(a.min, w.min);
    a.max = std::max(a.max, w.max);
  }
  a.first = front.first;
  a.first_ts_ns = front.first_ts;
  a.last = last_value(st, st.buckets.back());
  a.last_ts_ns = last_time(st, st.buckets.back());
  std::sort(bin_scratch.begin(), bin_scratch.end(),
            [](const SketchBin& x, const SketchBin& y) { return x.key < y.key; });
  size_t out = 0;
  for (size_t i = 0; i < bin_scratch.size(); ++i) {
    if (out && bin_scratch[out - 1].key == bin_scratch[i].key)
      bin_scratch[out - 1].count += bin_scratch[i].count;
    else
      bin_scratch[out++] = bin_scratch[i];
  }
  bin_scratch.resize(out);
  static constexpr double kQs[] = {0.5, 0.9, 0.99};
  double qs[3];
  quantiles_of_sorted_bins(bin_scratch, a.count, kQs, qs);
  // Clamped like set_quantiles().
  a.p50 = std::clamp(qs[0], a.min, a.max);
  a.p90 = std::clamp(qs[1], a.min, a.max);
  a.p99 = std::clamp(qs[2], a.min, a.max);
  return a;
}

// A histogram over the window: count is the observations made in it (the +Inf bucket's
// increase), sum the increase of NAME_sum, the quantiles estimated from each bucket's
// increase; min, max, first and last are unknown (NaN, rendered null).
Aggregate Aggregator::Impl::histogram_aggregate(const SeriesState& h,
                                                AggregateScratch& s) const {
  Aggregate a;
  a.kind = SampleKind::histogram;
  a.sum = a.min = a.max = a.first = a.last = kNaN;
  a.p50 = a.p90 = a.p99 = kNaN;
  s.bins.clear();
  std::vector<BoundCount>& bound_scratch = s.bounds;
  bound_scratch.clear();
  if (!h.extra || h.extra->bounds.empty()) return a;
  for (const Bound& b : h.extra->bounds) {
    double count = window_increase(series[b.series]);
    // Cumulative counts never fall with the bound; a scrape caught between two updates
    // of its buckets could say otherwise.
    if (!bound_scratch.empty()) count = std::max(count, bound_scratch.back().count);
    bound_scratch.push_back(BoundCount{b.le, count});
  }
  const SeriesState& top = series[h.extra->bounds.back().series];
  if (top.buckets.empty()) return a;
  a.first_ts_ns = top.buckets.front().first_ts;
  a.last_ts_ns = last_time(top, top.buckets.back());
  a.count = static_cast<uint64_t>(std::llround(std::max(0.0, bound_scratch.back().count)));
  // NAME_sum: the histogram's key with "_sum" after the name.
  const std::string& name = metric_names[h.metric];
  s.key.assign(name).append("_sum").append(h.key, name.size());
  if (uint32_t sum = lookup(hash_key(s.key), s.key); sum != kNoSeries)
    a.sum = window_increase(series[sum]);
  set_bucket_quantiles(a, bound_scratch);
  return a;
}

void Aggregator::Impl::render_chunk(size_t begin, size_t end, RenderChunk& chunk,
                                    double window_s, int64_t now_ns) const {
  chunk.text.clear();
  chunk.series.clear();
  chunk.bins.clear();
  chunk.bounds.clear();
  // Key order is not creation order: each series is a few random loads (its state, then
  // its key and buckets), fetched in that order a few series ahead.
  const size_t count = order.size();
  for (size_t n = begin; n < end; ++n) {
    if (n + 24 < count) __builtin_prefetch(&series[order[n + 24]]);
    if (n + 16 < count) {
      const SeriesState& p = series[order[n + 16]];
      __builtin_prefetch(p.key.data());
      __builtin_prefetch(p.buckets.data());
    }
    const SeriesState& st = series[order[n]];
    Aggregate a = aggregate(st, chunk.scratch);
    chunk.key_json.clear();
    append_json_string(chunk.key_json, st.key);
    render_series(chunk.text, st.key, chunk.key_json, metric_builds[st.metric].name_json, a,
                  window_s, now_ns - st.last_seen >= stale_ns);
    const auto body_end = static_cast<uint32_t>(chunk.text.size());
    chunk.text += chunk.key_json;
    chunk.bins.insert(chunk.bins.end(), chunk.scratch.bins.begin(), chunk.scratch.bins.end());
    chunk.bounds.insert(chunk.bounds.end(), chunk.scratch.bounds.begin(),
                        chunk.scratch.bounds.end());
    chunk.series.push_back(RenderedSeries{a, st.metric, body_end,
                                          static_cast<uint32_t>(chunk.text.size()),
                                          static_cast<uint32_t>(chunk.bins.size()),
                                          static_cast<uint32_t>(chunk.bounds.size())});
  }
}

void Aggregator::Impl::finish_rollup(MetricBuild& ms) {
  if (ms.agg.kind != SampleKind::histogram) return set_quantiles(ms.agg, ms.sketch);
  if (ms.bounds_differ) ms.agg.p50 = ms.agg.p90 = ms.agg.p99 = kNaN;
  else set_bucket_quantiles(ms.agg, ms.bounds);
}

// --- public ------------------------------------------------------------------------

Aggregator::Aggregator(const Config& config) : impl_(std::make_unique<Impl>()) {
  impl_->set_config(config);
  impl_->grow_slots();
}
Aggregator::~Aggregator() = default;
Aggregator::Aggregator(Aggregator&&) noexcept = default;
Aggregator& Aggregator::operator=(Aggregator&&) noexcept = default;

void Aggregator::reconfigure(const Config& config) {
  Impl& m = *impl_;
  int64_t old_interval = m.interval_ns;
  m.set_config(config);
  if (m.interval_ns == old_interval) return;
  // The newest buckets keep filling up to the end of their interval under the new
  // slicing, as if they had been opened under it.
  for (SeriesState& st : m.series)
    if (!st.buckets.empty())
      st.bucket_end = (floor_div(st.buckets.back().first_ts, m.interval_ns) + 1) * m.interval_ns;
}

namespace {

constexpr size_t kPrefetchSeries = 16;  // samples ahead: the series record
constexpr size_t kPrefetchData = 8;     // samples ahead: its key and newest bucket

}  // namespace

ApplyStats Aggregator::apply(uint32_t source, std::span<const Sample> samples, int64_t now_ns) {
  Impl& m = *impl_;
  ApplyStats stats;
  const int64_t oldest = now_ns - m.window_ns;
  const int64_t newest = now_ns + kMaxFutureNs;
  size_t source_series = m.per_source.count(source) ? m.per_source[source] : 0;
  std::vector<uint32_t>& guess = m.positions[source];
  guess.resize(samples.size(), kNoSeries);
  const size_t n = samples.size();
  for (size_t i = 0; i < n; ++i) {
    if (i + kPrefetchSeries < n && guess[i + kPrefetchSeries] < m.series.size())
      __builtin_prefetch(&m.series[guess[i + kPrefetchSeries]]);
    if (i + kPrefetchData < n && guess[i + kPrefetchData] < m.series.size()) {
      const SeriesState& p = m.series[guess[i + kPrefetchData]];
      __builtin_prefetch(p.key.data());
      if (!p.buckets.empty()) __builtin_prefetch(&p.buckets.back());
    }
    const Sample& s = samples[i];
    int64_t ts = s.ts_ns ? s.ts_ns : now_ns;
    if (ts > newest) {
      ++stats.too_new;
      continue;
    }
    if (ts < oldest) {
      ++stats.too_old;
      continue;
    }
    std::span<const Label> labels = m.sorted_labels(s);
    uint32_t index = guess[i];
    if (index >= m.series.size() ||
        !series_key_equals(m.series[index].key, s.metric, s.suffix, labels)) {
      m.key_buf.clear();
      append_series_key(m.key_buf, s.metric, s.suffix, labels);
      uint64_t hash = hash_key(m.key_buf);
      uint32_t slot = *m.find_slot(hash, m.key_buf);
      if (slot) {
        index = slot - 1;
      } else {
        if (m.series.size() >= m.config.max_series ||
            source_series >= m.config.max_series_per_source) {
          ++stats.over_limit;
          continue;
        }
        index = m.create(hash, m.key_buf, s.metric, s.suffix, source, s.kind);
        ++source_series;
      }
      guess[i] = index;
    }
    if (s.kind == SampleKind::bucket && m.series[index].kind == SampleKind::bucket &&
        m.series[index].histogram == kNoSeries &&
        !m.link_bucket(index, s, labels, source, &source_series, now_ns))
      ++stats.over_limit;  // the histogram's series; the bucket is still kept
    SeriesState& st = m.series[index];
    if (ts <= st.last_ts) {
      ++stats.duplicate;
      // Its own source updated it at this very fetch: the body holds the series twice.
      // (Another source's sample of the same series at the same tick is no repeat.)
      if (st.last_seen == now_ns && st.source == source && stats.repeated++ == 0)
        stats.first_repeated = st.key;
      continue;
    }
    m.add(st, ts, s.value);
    st.last_ts = ts;
    st.last_seen = now_ns;
    if (st.histogram != kNoSeries) m.series[st.histogram].last_seen = now_ns;
    ++stats.accepted;
  }
  return stats;
}

void Aggregator::expire(int64_t now_ns) {
  Impl& m = *impl_;
  const int64_t cutoff = now_ns - m.window_ns;
  std::vector<bool> dead;
  for (size_t i = 0; i < m.series.size(); ++i) {
    SeriesState& st = m.series[i];
    m.trim(st, cutoff);
    // Unseen: neither fetched nor holding a sample of its own time since expire_after. A
    // sample stamped after its tick (a pusher's clock ahead of the leader's) keeps its
    // series as long as it keeps its bucket in the window.
    if (now_ns - std::max(st.last_seen, st.last_ts) >= m.expire_ns) {
      if (dead.empty()) dead.resize(m.series.size(), false);
      dead[i] = true;
    }
  }
  if (!dead.empty()) m.compact(dead);
}

void Aggregator::forget_source(uint32_t source) {
  Impl& m = *impl_;
  std::vector<bool> dead(m.series.size(), false);
  bool any = false;
  for (size_t i = 0; i < m.series.size(); ++i)
    if (m.series[i].source == source) dead[i] = any = true;
  if (any) m.compact(dead);
  m.positions.erase(source);
}

void Aggregator::build(shm::SnapshotBuilder& builder, int64_t now_ns) {
  expire(now_ns);
  Impl& m = *impl_;
  m.merge_fresh();
  builder.clear();
  const double window_s = static_cast<double>(m.window_ns) / 1e9;

  std::vector<MetricBuild>& metrics = m.metric_builds;
  metrics.resize(m.metric_names.size());
  for (size_t i = 0; i < metrics.size(); ++i) {
    metrics[i].clear();
    append_json_string(metrics[i].name_json, m.metric_names[i]);
  }
  std::vector<Aggregate> series_aggs;
  bool prom_series = m.series.size() < m.config.prom_series_limit;
  if (prom_series) series_aggs.reserve(m.series.size());

  // Sized from the last build, so a steady writer does not regrow the builder.
  builder.reserve(m.series.size() + m.metric_names.size() + 2, m.last_build_bytes);
  std::vector<uint32_t>& all_records = m.all_records;
  all_records.clear();
  all_records.reserve(m.series.size());

  // The series in key order, in chunks: their aggregates and bodies rendered by the
  // build's threads (render_chunk), then added to the builder, listed and folded into
  // their metric's rollup here, chunk after chunk in key order, so that the bytes do
  // not depend on the thread count. Adding is a few random loads per series (the
  // builder's table slot for its record): prefetched 8 series ahead.
  const size_t count = m.order.size();
  uint64_t record_hash[16];  // their hashes, from builder.prefetch()
  auto prefetch_record = [&](size_t j) {
    std::string& record = m.record_keys[j % 16];
    record.assign(kSeriesPrefix).append(m.series[m.order[j]].key);
    record_hash[j % 16] = builder.prefetch(record);
  };
  for (size_t j = 0; j < std::min<size_t>(8, count); ++j) prefetch_record(j);
  size_t n = 0;
  auto consume = [&](size_t, const RenderChunk& chunk) {
    uint32_t text_at = 0, bins_at = 0, bounds_at = 0;
    for (const RenderedSeries& r : chunk.series) {
      if (n + 8 < count) prefetch_record(n + 8);
      std::string_view body(chunk.text.data() + text_at, r.body_end - text_at);
      std::string_view key_json(chunk.text.data() + r.body_end, r.key_end - r.body_end);
      uint32_t id = builder.add(m.record_keys[n % 16], body, record_hash[n % 16]);
      all_records.push_back(id);
      MetricBuild& ms = metrics[r.metric];
      ms.keys.add(key_json);
      ms.records.push_back(id);
      fold(ms.agg, r.agg);
      for (uint32_t k = bins_at; k < r.bins_end; ++k)
        ms.sketch.add_key(chunk.bins[k].key, chunk.bins[k].count);
      if (r.agg.count)
        merge_bounds(ms.bounds, &ms.bounds_differ,
                     std::span<const BoundCount>(chunk.bounds).subspan(bounds_at, r.bounds_end - bounds_at));
      if (prom_series) series_aggs.push_back(r.agg);
      text_at = r.key_end;
      bins_at = r.bins_end;
      bounds_at = r.bounds_end;
      ++n;
    }
  };
  auto produce = [&](size_t c, RenderChunk& chunk) {
    m.render_chunk(c * kBuildChunk, std::min(count, (c + 1) * kBuildChunk), chunk, window_s,
                   now_ns);
  };
  run_ordered_chunks((count + kBuildChunk - 1) / kBuildChunk, m.config.writer_threads,
                     m.render_slots, produce, consume);
  builder.add_list(kSeriesList, std::span<const uint32_t>(all_records));

  std::vector<uint32_t> metric_order;
  for (uint32_t i = 0; i < metrics.size(); ++i)
    if (metrics[i].keys.count) metric_order.push_back(i);
  std::sort(metric_order.begin(), metric_order.end(),
            [&](uint32_t a, uint32_t b) { return m.metric_names[a] < m.metric_names[b]; });

  std::string& body = m.body;
  std::vector<MetricCount> counts;
  std::vector<PromMetric> prom_metrics;
  std::string name;
  for (uint32_t i : metric_order) {
    MetricBuild& ms = metrics[i];
    Aggregate& r = ms.agg;
    m.finish_rollup(ms);
    const std::string& metric = m.metric_names[i];
    body.clear();
    render_metric(body, metric, r, window_s, ms.keys);
    name.assign(kMetricPrefix).append(metric);
    builder.add(name, body);
    builder.add_list(name, std::span<const uint32_t>(ms.records));
    counts.push_back({metric, ms.keys.count});
    prom_metrics.push_back({metric, ms.keys.count, &r});
  }
  body.clear();
  render_metrics(body, counts);
  builder.add(kMetricsRecord, body);

  std::vector<PromSeries> prom;
  if (prom_series) {
    prom.reserve(m.order.size());
    for (size_t n = 0; n < m.order.size(); ++n) {
      const SeriesState& st = m.series[m.order[n]];
      prom.push_back({st.key, m.metric_names[st.metric], &series_aggs[n]});
    }
  }
  body.clear();
  render_prometheus(body, prom_metrics, prom);
  builder.add(kPromRecord, body);
  m.last_build_bytes = builder.serialized_size();
}

const Config& Aggregator::config() const { return impl_->config; }

size_t Aggregator::series_count() const { return impl_->series.size(); }

size_t Aggregator::series_count(uint32_t source) const {
  auto it = impl_->per_source.find(source);
  return it == impl_->per_source.end() ? 0 : it->second;
}

std::optional<Aggregate> Aggregator::series(std::string_view key) const {
  uint32_t index = impl_->lookup(hash_key(key), key);
  if (index == kNoSeries) return std::nullopt;
  return impl_->aggregate(impl_->series[index], impl_->scratch);
}

std::optional<Aggregate> Aggregator::metric(std::string_view name) const {
  Impl& m = *impl_;
  auto it = m.metric_ids.find(std::string(name));
  if (it == m.metric_ids.end()) return std::nullopt;
  MetricBuild ms;
  bool any = false;
  for (const SeriesState& st : m.series) {
    if (st.metric != it->second) continue;
    any = true;
    Aggregate a = m.aggregate(st, m.scratch);
    fold(ms.agg, a);
    for (const SketchBin& b : m.scratch.bins) ms.sketch.add_key(b.key, b.count);
    if (a.count) merge_bounds(ms.bounds, &ms.bounds_differ, m.scratch.bounds);
  }
  if (!any) return std::nullopt;
  m.finish_rollup(ms);
  return ms.agg;
}

size_t Aggregator::memory_bytes() const {
  const Impl& m = *impl_;
  size_t bytes = m.series.capacity() * sizeof(SeriesState) + m.slots.capacity() * 4 +
                 (m.order.capacity() + m.fresh.capacity()) * 4;
  for (const SeriesState& st : m.series) {
    if (st.key.capacity() > 15) bytes += st.key.capacity() + 1;
    bytes += st.buckets.capacity() * sizeof(Bucket);
    if (st.extra)
      bytes += sizeof(SeriesExtra) + st.extra->resets.capacity() * sizeof(CounterReset) +
               st.extra->bounds.capacity() * sizeof(Bound) +
               st.extra->wide.capacity() * sizeof(WideBucket) +
               st.extra->bins.capacity() * sizeof(SketchBin);
  }
  return bytes;
}

// --- checkpoint ----------------------------------------------------------------------
//
// Series in key order, each with its metric (an index into the metric names, numbered
// in order of first use), source, kind, histogram link and bounds (as positions in that
// order), times as deltas from the series' last_seen, and buckets holding one sample
// (most of them, at one sample per series per interval) as one value.

namespace {

constexpr uint64_t kMaxSavedItems = uint64_t{1} << 32;

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// Differences of times, wrapping rather than overflowing (loaded bytes may hold any).
int64_t delta(int64_t from, int64_t to) {
  return static_cast<int64_t>(static_cast<uint64_t>(to) - static_cast<uint64_t>(from));
}
int64_t plus(int64_t base, int64_t d) {
  return static_cast<int64_t>(static_cast<uint64_t>(base) + static_cast<uint64_t>(d));
}

// A loaded time: within [0, kMaxTimeNs], so that differences of times never overflow.
int64_t checked_time(int64_t ns, const char* what) {
  if (ns < 0 || ns > kMaxTimeNs) wire::Reader::fail(what);
  return ns;
}

}  // namespace

void Aggregator::save(std::string& out) const {
  const Impl& m = *impl_;
  std::vector<uint32_t> order = m.order;
  if (!m.fresh.empty()) {
    auto by_key = [&m](uint32_t a, uint32_t b) { return m.series[a].key < m.series[b].key; };
    std::vector<uint32_t> fresh = m.fresh;
    std::sort(fresh.begin(), fresh.end(), by_key);
    size_t middle = order.size();
    order.insert(order.end(), fresh.begin(), fresh.end());
    std::inplace_merge(order.begin(), order.begin() + static_cast<ptrdiff_t>(middle),
                       order.end(), by_key);
  }
  std::vector<uint32_t> position(m.series.size());
  for (size_t i = 0; i < order.size(); ++i) position[order[i]] = static_cast<uint32_t>(i);
  std::vector<uint32_t> metric_number(m.metric_names.size(), UINT32_MAX);
  std::vector<uint32_t> metrics_used;
  for (uint32_t i : order) {
    uint32_t& n = metric_number[m.series[i].metric];
    if (n == UINT32_MAX) {
      n = static_cast<uint32_t>(metrics_used.size());
      metrics_used.push_back(m.series[i].metric);
    }
  }
  wire::put_varint(out, metrics_used.size());
  for (uint32_t id : metrics_used) wire::put_string(out, m.metric_names[id]);
  wire::put_varint(out, order.size());
  for (uint32_t i : order) {
    const SeriesState& st = m.series[i];
    wire::put_string(out, st.key);
    wire::put_varint(out, metric_number[st.metric]);
    wire::put_varint(out, st.source);
    out.push_back(static_cast<char>(st.kind));
    wire::put_varint(out, st.histogram == kNoSeries ? 0 : uint64_t{position[st.histogram]} + 1);
    const int64_t base = st.last_seen;
    wire::put_svarint(out, base);
    const bool accepted_any = st.last_ts != std::numeric_limits<int64_t>::min();
    out.push_back(accepted_any ? 1 : 0);
    if (accepted_any) wire::put_svarint(out, delta(base, st.last_ts));
    wire::put_svarint(out, delta(base, st.bucket_end));
    // The bins of each bucket in turn: a one-sample bucket's is its key, once.
    const size_t wide_count = st.extra ? st.extra->wide.size() : 0;
    auto bins_of = [&](const Bucket& b) -> std::span<const SketchBin> {
      if (b.wide == 0) return {};
      uint32_t begin = st.extra->wide[b.wide - 1].bin_begin;
      uint32_t end = b.wide < wide_count ? st.extra->wide[b.wide].bin_begin
                                         : static_cast<uint32_t>(st.extra->bins.size());
      return std::span<const SketchBin>(st.extra->bins).subspan(begin, end - begin);
    };
    wire::put_varint(out, st.buckets.size());
    for (const Bucket& b : st.buckets) {
      const BucketFigures f = figures(st, b);
      wire::put_svarint(out, delta(base, b.first_ts));
      wire::put_svarint(out, delta(b.first_ts, f.last_ts));
      wire::put_varint(out, f.count);
      wire::put_varint(out, b.wide == 0 ? 1 : bins_of(b).size());
      bool one = same_bits(f.sum, b.first) && same_bits(f.min, b.first) &&
                 same_bits(f.max, b.first) && same_bits(f.last, b.first);
      out.push_back(one ? 1 : 0);
      wire::put_double(out, b.first);
      if (!one) {
        wire::put_double(out, f.sum);
        wire::put_double(out, f.min);
        wire::put_double(out, f.max);
        wire::put_double(out, f.last);
      }
    }
    int32_t prev_key = 0;
    auto put_bin = [&](SketchBin bin) {
      wire::put_svarint(out, int64_t{bin.key} - prev_key);
      wire::put_varint(out, bin.count);
      prev_key = bin.key;
    };
    for (const Bucket& b : st.buckets) {
      if (b.wide == 0) put_bin(SketchBin{b.key, 1});
      else for (const SketchBin& bin : bins_of(b)) put_bin(bin);
    }
    const size_t resets = st.extra ? st.extra->resets.size() : 0;
    const size_t bounds = st.extra ? st.extra->bounds.size() : 0;
    wire::put_varint(out, resets);
    for (size_t k = 0; k < resets; ++k) {
      const CounterReset& r = st.extra->resets[k];
      wire::put_svarint(out, delta(base, r.ts));
      wire::put_double(out, r.before);
    }
    wire::put_varint(out, bounds);
    for (size_t k = 0; k < bounds; ++k) {
      const Bound& b = st.extra->bounds[k];
      wire::put_double(out, b.le);
      wire::put_varint(out, position[b.series]);
    }
  }
}

void Aggregator::load(std::string_view saved) {
  wire::Reader in(saved);
  Impl fresh;
  fresh.set_config(impl_->config);
  Impl& m = fresh;
  // Each item takes at least one byte, which bounds every count by the input's size.
  const uint64_t metrics = in.count("checkpoint metric count", in.left());
  for (uint64_t i = 0; i < metrics; ++i) {
    std::string name(in.string("checkpoint metric name"));
    if (!m.metric_ids.emplace(name, static_cast<uint32_t>(i)).second)
      wire::Reader::fail("checkpoint metric names (repeated)");
    m.metric_names.push_back(std::move(name));
  }
  const uint64_t n = in.count("checkpoint series count", std::min<uint64_t>(in.left(), kMaxSavedItems - 1));
  m.series.reserve(n);
  for (uint64_t i = 0; i < n; ++i) {
    SeriesState st;
    st.key = in.string("series key");
    st.hash = hash_key(st.key);
    if (i > 0 && !(m.series.back().key < st.key)) wire::Reader::fail("series keys (out of order)");
    if (metrics == 0) wire::Reader::fail("series metric");
    st.metric = static_cast<uint32_t>(in.count("series metric", metrics - 1));
    // Rendering walks the key's labels and the histogram's _sum is found by the
    // metric's length: a key must be canonical and of its metric.
    std::optional<SeriesKey> parsed = parse_series_key(st.key);
    if (!parsed) wire::Reader::fail("series key (not canonical)");
    if (parsed->metric != m.metric_names[st.metric]) wire::Reader::fail("series key (not its metric's)");
    st.source = static_cast<uint32_t>(in.count("series source", UINT32_MAX));
    uint8_t kind = in.byte("series kind");
    if (kind > static_cast<uint8_t>(SampleKind::histogram)) wire::Reader::fail("series kind");
    st.kind = static_cast<SampleKind>(kind);
    uint64_t histogram = in.count("series histogram", n);
    st.histogram = histogram ? static_cast<uint32_t>(histogram - 1) : kNoSeries;
    const int64_t base = checked_time(in.svarint("series last_seen"), "series last_seen");
    st.last_seen = base;
    uint8_t accepted_any = in.byte("series last_ts");
    if (accepted_any > 1) wire::Reader::fail("series last_ts");
    if (accepted_any) st.last_ts = checked_time(plus(base, in.svarint("series last_ts")), "series last_ts");
    st.bucket_end = checked_time(plus(base, in.svarint("series bucket_end")), "series bucket_end");
    uint64_t buckets = in.count("bucket count", in.left());
    std::vector<SavedBucket>& saved = fresh.saved_scratch;
    saved.clear();
    saved.reserve(buckets);
    uint64_t bins = 0;
    for (uint64_t k = 0; k < buckets; ++k) {
      SavedBucket b;
      b.first_ts = checked_time(plus(base, in.svarint("bucket first_ts")), "bucket first_ts");
      b.last_ts = checked_time(plus(b.first_ts, in.svarint("bucket last_ts")), "bucket last_ts");
      b.count = static_cast<uint32_t>(in.count("bucket count", UINT32_MAX));
      b.bins = in.count("bucket bins", in.left());
      bins += b.bins;
      if (bins > UINT32_MAX) wire::Reader::fail("bucket bins");
      uint8_t one = in.byte("bucket form");
      if (one > 1) wire::Reader::fail("bucket form");
      b.first = in.f64("bucket value");
      if (one) {
        b.sum = b.min = b.max = b.last = b.first;
      } else {
        b.sum = in.f64("bucket sum");
        b.min = in.f64("bucket min");
        b.max = in.f64("bucket max");
        b.last = in.f64("bucket last");
      }
      saved.push_back(b);
    }
    if (bins > in.left()) wire::Reader::fail("bins");
    st.buckets.reserve(buckets);
    int64_t key = 0;
    auto next_bin = [&] {
      key += in.svarint("bin key");
      if (key < INT32_MIN || key > INT32_MAX) wire::Reader::fail("bin key");
      return SketchBin{static_cast<int32_t>(key),
                       static_cast<uint32_t>(in.count("bin count", UINT32_MAX))};
    };
    for (const SavedBucket& b : saved) {
      // One sample as a bucket of one holds it (figures()): the compact form.
      if (b.count == 1 && b.bins == 1 && b.last_ts == b.first_ts &&
          same_bits(b.sum, 0.0 + b.first) && same_bits(b.min, b.first) &&
          same_bits(b.max, b.first) && same_bits(b.last, b.first)) {
        SketchBin bin = next_bin();
        if (bin.count == 1) {
          st.buckets.push_back(Bucket{b.first_ts, b.first, bin.key, 0});
          continue;
        }
        SeriesExtra& x = extra_of(st);
        x.wide.push_back(WideBucket{b.last_ts, b.sum, b.min, b.max, b.last, b.count,
                                    static_cast<uint32_t>(x.bins.size())});
        x.bins.push_back(bin);
      } else {
        SeriesExtra& x = extra_of(st);
        x.wide.push_back(WideBucket{b.last_ts, b.sum, b.min, b.max, b.last, b.count,
                                    static_cast<uint32_t>(x.bins.size())});
        for (uint64_t j = 0; j < b.bins; ++j) x.bins.push_back(next_bin());
      }
      st.buckets.push_back(Bucket{b.first_ts, b.first, 0,
                                  static_cast<uint32_t>(st.extra->wide.size())});
    }
    uint64_t resets = in.count("reset count", in.left());
    if (resets) extra_of(st).resets.reserve(resets);
    for (uint64_t k = 0; k < resets; ++k) {
      int64_t ts = checked_time(plus(base, in.svarint("reset ts")), "reset ts");
      st.extra->resets.push_back(CounterReset{ts, in.f64("reset value")});
    }
    uint64_t bounds = in.count("bound count", in.left());
    for (uint64_t k = 0; k < bounds; ++k) {
      double le = in.f64("bound le");
      auto series = static_cast<uint32_t>(in.count("bound series", n - 1));
      extra_of(st).bounds.push_back(Bound{le, series});
    }
    m.series.push_back(std::move(st));
    ++m.per_source[m.series.back().source];
  }
  if (!in.done()) wire::Reader::fail("checkpoint series (bytes left over)");
  for (const SeriesState& st : m.series) {
    // The links build() follows must lead where it expects.
    if (st.histogram != kNoSeries && m.series[st.histogram].kind != SampleKind::histogram)
      wire::Reader::fail("series histogram (not a histogram)");
    if (st.extra && !st.extra->bounds.empty() && st.kind != SampleKind::histogram)
      wire::Reader::fail("series bounds (not a histogram)");
  }
  m.order.resize(m.series.size());
  for (uint32_t i = 0; i < m.order.size(); ++i) m.order[i] = i;
  m.grow_slots();
  m.config = impl_->config;
  *impl_ = std::move(fresh);
}

}  // namespace ingest
