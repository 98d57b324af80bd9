// aggregator_checkpoint.cc: Aggregator::save and Aggregator::load, the aggregator's part
// of a checkpoint.

#include <cstring>

#include "ingest/window/aggregator_impl.h"

namespace ingest {

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

// Long as one piece: the checkpoint's layout written field by field, in order.
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

// Long as one piece: what save() writes read back in the same order, each field checked.
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
    std::string_view key_metric;
    if (!canonical_series_key(st.key, &key_metric)) wire::Reader::fail("series key (not canonical)");
    if (key_metric != m.metric_names[st.metric]) wire::Reader::fail("series key (not its metric's)");
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
    // Room for the next interval's bucket: else the first entry after a restore would
    // reallocate every series' buckets.
    st.buckets.reserve(buckets + 1);
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
