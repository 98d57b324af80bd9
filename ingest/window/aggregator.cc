// aggregator.cc: per-series sliding-window state: the series table, applying samples,
// expiry. The snapshot build is aggregator_snapshot.cc's, checkpoints
// aggregator_checkpoint.cc's; what they share, aggregator_impl.h.
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
#include "ingest/window/aggregator_impl.h"

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
// Samples without a guess (a source's first body, the first entry after a restore): so
// many samples ahead the key is rendered and hashed and its slot prefetched, then the
// series the slot holds, then its key and newest bucket, so that a lookup's misses
// overlap the samples before it instead of coming one after another.
constexpr size_t kAheadKey = 24;
constexpr size_t kAheadSlot = 16;

}  // namespace

// What sample i of apply() prefetches for the samples after it: the series of their
// guesses, or, for those without one, their keys rendered and hashed (kept in ahead),
// their slots, then the series the slots hold.
void Aggregator::Impl::prefetch_ahead(std::span<const Sample> samples, const std::vector<uint32_t>& guess,
                                      size_t i) {
  static_assert(kAheadKey < std::tuple_size_v<decltype(ahead)>);
  const size_t n = samples.size();
  // The series sample j's key leads to, as far as its home slot says (a guess too).
  auto ahead_series = [this](size_t j) -> const SeriesState* {
    const AheadKey& a = ahead[j % ahead.size()];
    if (a.sample != j) return nullptr;
    uint32_t slot = slots[a.hash & (slots.size() - 1)];
    return slot ? &series[slot - 1] : nullptr;
  };
  if (i + kAheadKey < n && guess[i + kAheadKey] >= series.size()) {
    const size_t j = i + kAheadKey;
    AheadKey& a = ahead[j % ahead.size()];
    a.key.clear();
    append_series_key(a.key, samples[j].metric, samples[j].suffix, sorted_labels(samples[j]));
    a.hash = hash_key(a.key);
    a.sample = j;
    __builtin_prefetch(&slots[a.hash & (slots.size() - 1)]);
  }
  if (i + kAheadSlot < n) {
    if (const SeriesState* p = ahead_series(i + kAheadSlot)) __builtin_prefetch(p);
  }
  if (i + kPrefetchSeries < n && guess[i + kPrefetchSeries] < series.size())
    __builtin_prefetch(&series[guess[i + kPrefetchSeries]]);
  if (i + kPrefetchData < n) {
    const SeriesState* p = guess[i + kPrefetchData] < series.size() ? &series[guess[i + kPrefetchData]]
                                                                     : ahead_series(i + kPrefetchData);
    if (p) {
      __builtin_prefetch(p->key.data());
      if (!p->buckets.empty()) __builtin_prefetch(&p->buckets.back());
    }
  }
}

ApplyStats Aggregator::apply(uint32_t source, std::span<const Sample> samples, int64_t now_ns) {
  Impl& m = *impl_;
  ApplyStats stats;
  const int64_t oldest = now_ns - m.window_ns;
  const int64_t newest = now_ns + kMaxFutureNs;
  size_t source_series = m.per_source.count(source) ? m.per_source[source] : 0;
  std::vector<uint32_t>& guess = m.positions[source];
  guess.resize(samples.size(), kNoSeries);
  const size_t n = samples.size();
  for (Impl::AheadKey& a : m.ahead) a.sample = SIZE_MAX;
  for (size_t i = 0; i < n; ++i) {
    m.prefetch_ahead(samples, guess, i);
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
      const Impl::AheadKey& a = m.ahead[i % m.ahead.size()];
      std::string_view key = a.key;
      uint64_t hash = a.hash;
      if (a.sample != i) {
        m.key_buf.clear();
        append_series_key(m.key_buf, s.metric, s.suffix, labels);
        key = m.key_buf;
        hash = hash_key(m.key_buf);
      }
      uint32_t slot = *m.find_slot(hash, key);
      if (slot) {
        index = slot - 1;
      } else {
        if (m.series.size() >= m.config.max_series ||
            source_series >= m.config.max_series_per_source) {
          ++stats.over_limit;
          continue;
        }
        index = m.create(hash, key, s.metric, s.suffix, source, s.kind);
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
}  // namespace ingest
