// aggregator_snapshot.cc: the aggregates of a series and of a metric over the window,
// and the snapshot build that renders them, over one aggregator's series or the merged
// series of several (Aggregator::build, build_parts in build_parts.cc).

#include <numeric>

#include "ingest/window/aggregator_impl.h"

namespace ingest {

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

void Aggregator::Impl::finish_rollup(MetricBuild& ms) {
  if (ms.agg.kind != SampleKind::histogram) return set_quantiles(ms.agg, ms.sketch);
  if (ms.bounds_differ) ms.agg.p50 = ms.agg.p90 = ms.agg.p99 = kNaN;
  else set_bucket_quantiles(ms.agg, ms.bounds);
}

namespace {

// The series of a build in key order, as it walks them: one aggregator's own order, or
// the merged order of several. Each gives a series' state, the aggregator holding it
// (its histogram's buckets, its metric's index) and that aggregator's clock.
struct OneOrder {
  const Aggregator::Impl* m;
  int64_t now_ns;
  size_t size() const { return m->order.size(); }
  const SeriesState* state(size_t n) const { return &m->series[m->order[n]]; }
  const Aggregator::Impl& holder(size_t) const { return *m; }
  int64_t now(size_t) const { return now_ns; }
  uint32_t part(size_t) const { return 0; }
};

struct MergedOrder {
  std::span<const MergedSeries> merged;
  std::span<const BuildPart> parts;
  size_t size() const { return merged.size(); }
  const SeriesState* state(size_t n) const { return merged[n].state; }
  const Aggregator::Impl& holder(size_t n) const { return *parts[merged[n].part].impl; }
  int64_t now(size_t n) const { return parts[merged[n].part].now_ns; }
  uint32_t part(size_t n) const { return merged[n].part; }
};

// Renders the series at [begin, end) of the order into chunk (the build's producers, at
// once): each aggregated and marked stale at its own part's clock.
template <typename Order>
void render_chunk(const Order& order, size_t begin, size_t end, RenderChunk& chunk,
                  std::span<const MetricBuild> metrics, double window_s, int64_t stale_ns) {
  chunk.text.clear();
  chunk.series.clear();
  chunk.bins.clear();
  chunk.bounds.clear();
  // Key order is not creation order: each series is a few random loads (its state, then
  // its key and buckets), fetched in that order a few series ahead.
  const size_t count = order.size();
  for (size_t n = begin; n < end; ++n) {
    if (n + 24 < count) __builtin_prefetch(order.state(n + 24));
    if (n + 16 < count) {
      const SeriesState* p = order.state(n + 16);
      __builtin_prefetch(p->key.data());
      __builtin_prefetch(p->buckets.data());
    }
    const SeriesState& st = *order.state(n);
    const Aggregator::Impl& holder = order.holder(n);
    const uint32_t metric = holder.build_metric_index[st.metric];
    Aggregate a = holder.aggregate(st, chunk.scratch);
    chunk.key_json.clear();
    append_json_string(chunk.key_json, st.key);
    render_series(chunk.text, st.key, chunk.key_json, metrics[metric].name_json, a, window_s,
                  order.now(n) - st.last_seen >= stale_ns);
    const auto body_end = static_cast<uint32_t>(chunk.text.size());
    chunk.text += chunk.key_json;
    chunk.bins.insert(chunk.bins.end(), chunk.scratch.bins.begin(), chunk.scratch.bins.end());
    chunk.bounds.insert(chunk.bounds.end(), chunk.scratch.bounds.begin(),
                        chunk.scratch.bounds.end());
    chunk.series.push_back(RenderedSeries{a, metric, body_end,
                                          static_cast<uint32_t>(chunk.text.size()),
                                          static_cast<uint32_t>(chunk.bins.size()),
                                          static_cast<uint32_t>(chunk.bounds.size())});
  }
}

// The series in key order, in chunks: their aggregates and bodies rendered by the
// build's threads (render_chunk), then added to the builder, listed and folded into
// their metric's rollup here, chunk after chunk in key order, so that the bytes do not
// depend on the thread count nor on how the series are split over parts. Adding is a
// few random loads per series (the builder's table slot for its record): prefetched 8
// series ahead. Fills series_aggs (when prom_series) in the same order, and with
// partition views (partials not empty) each series' part and metric's PartialBuild.
// Long as one piece: its producer and consumer lambdas share the build's per-metric state.
template <typename Order>
void add_series(shm::SnapshotBuilder& builder, Aggregator::Impl& m, const Order& order,
                double window_s, bool prom_series, std::vector<Aggregate>& series_aggs,
                std::span<PartialBuild> partials) {
  std::vector<MetricBuild>& metrics = m.metric_builds;
  std::vector<uint32_t>& all_records = m.all_records;
  const size_t count = order.size();
  all_records.clear();
  all_records.reserve(count);
  uint64_t record_hash[16];  // their hashes, from builder.prefetch()
  auto prefetch_record = [&](size_t j) {
    std::string& record = m.record_keys[j % 16];
    record.assign(kSeriesPrefix).append(order.state(j)->key);
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
      if (!partials.empty()) {
        PartialBuild& pb = partials[order.part(n) * metrics.size() + r.metric];
        pb.records.push_back(id);
        const std::string& record = m.record_keys[n % 16];  // in cache: "s:" + key
        append_partial_series(pb.series, std::string_view(record).substr(kSeriesPrefix.size()),
                              r.agg);
        for (uint32_t k = bins_at; k < r.bins_end; ++k)
          pb.sketch.add_key(chunk.bins[k].key, chunk.bins[k].count);
        if (r.agg.count)
          merge_bounds(pb.bounds, &pb.bounds_differ,
                       std::span<const BoundCount>(chunk.bounds).subspan(bounds_at, r.bounds_end - bounds_at));
      }
      text_at = r.key_end;
      bins_at = r.bins_end;
      bounds_at = r.bounds_end;
      ++n;
    }
  };
  const int64_t stale_ns = m.stale_ns;
  auto produce = [&](size_t c, RenderChunk& chunk) {
    render_chunk(order, c * kBuildChunk, std::min(count, (c + 1) * kBuildChunk), chunk,
                 metrics, window_s, stale_ns);
  };
  run_ordered_chunks((count + kBuildChunk - 1) / kBuildChunk, m.config.writer_threads,
                     m.render_slots, produce, consume);
  builder.add_list(kSeriesList, std::span<const uint32_t>(all_records));
}

// The metrics' records and lists, "metrics" and "prom", after add_series(); the rollups
// go into "prom" only when export_rollups says.
// Returns the metrics in name order (their indexes), for the partition views.
template <typename Order>
std::vector<uint32_t> add_rollups(shm::SnapshotBuilder& builder, Aggregator::Impl& m,
                                  const Order& order, std::span<const BuildPart> parts,
                                  double window_s, bool prom_series, bool export_rollups,
                                  const std::vector<Aggregate>& series_aggs) {
  std::vector<MetricBuild>& metrics = m.metric_builds;
  const std::vector<std::string_view>& names = m.build_metric_names;
  std::vector<uint32_t> metric_order;
  for (uint32_t i = 0; i < metrics.size(); ++i)
    if (metrics[i].keys.count) metric_order.push_back(i);
  std::sort(metric_order.begin(), metric_order.end(),
            [&](uint32_t a, uint32_t b) { return names[a] < names[b]; });

  std::string& body = m.body;
  std::vector<MetricCount> counts;
  std::vector<PromMetric> prom_metrics;
  std::string name;
  for (uint32_t i : metric_order) {
    MetricBuild& ms = metrics[i];
    Aggregate& r = ms.agg;
    Aggregator::Impl::finish_rollup(ms);
    const std::string_view metric = names[i];
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
    prom.reserve(order.size());
    for (size_t n = 0; n < order.size(); ++n) {
      if (!parts[order.part(n)].prometheus) continue;
      const SeriesState& st = *order.state(n);
      prom.push_back({st.key, names[order.holder(n).build_metric_index[st.metric]],
                      &series_aggs[n]});
    }
  }
  body.clear();
  if (!export_rollups) prom_metrics.clear();
  render_prometheus(body, prom_metrics, prom);
  builder.add(kPromRecord, body);
  return metric_order;
}

// Each part's "p:P:NAME" lists, "r:P:NAME" partials and "p:P" list, parts by partition
// number so that the bytes do not depend on the order of the parts.
void add_partition_views(shm::SnapshotBuilder& builder, Aggregator::Impl& m,
                         std::span<const BuildPart> parts, std::span<const uint32_t> metric_order,
                         double window_s) {
  const size_t metrics = m.metric_builds.size();
  std::vector<uint32_t> by_number(parts.size());
  std::iota(by_number.begin(), by_number.end(), 0u);
  std::sort(by_number.begin(), by_number.end(), [&](uint32_t a, uint32_t b) {
    return parts[a].partition < parts[b].partition;
  });
  std::string& bytes = m.body;
  std::vector<uint32_t> partials;
  for (uint32_t p : by_number) {
    partials.clear();
    for (uint32_t i : metric_order) {
      PartialBuild& pb = m.partial_builds[p * metrics + i];
      if (pb.records.empty()) continue;
      const std::string_view metric = m.build_metric_names[i];
      builder.add_list(partition_metric_list_key(parts[p].partition, metric),
                       std::span<const uint32_t>(pb.records));
      m.partial_bins.clear();
      pb.sketch.append_bins(m.partial_bins);
      bytes.clear();
      append_partial(bytes, window_s, pb.records.size(), m.partial_bins, pb.bounds,
                     pb.bounds_differ, pb.series);
      partials.push_back(builder.add(partial_record_key(parts[p].partition, metric), bytes));
    }
    builder.add_list(partition_list_key(parts[p].partition), std::span<const uint32_t>(partials));
  }
}

template <typename Order>
void build_ordered(shm::SnapshotBuilder& builder, Aggregator::Impl& m, const Order& order,
                   std::span<const BuildPart> parts, bool views) {
  builder.clear();
  const double window_s = static_cast<double>(m.window_ns) / 1e9;
  std::vector<Aggregate> series_aggs;
  size_t exported = 0;  // the series "prom" may hold
  for (const BuildPart& p : parts)
    if (p.prometheus) exported += p.impl->order.size();
  const bool prom_series = exported < m.config.prom_series_limit;
  if (prom_series) series_aggs.reserve(order.size());
  const size_t metrics = m.build_metric_names.size();
  std::span<PartialBuild> partials;
  if (views) {
    m.partial_builds.resize(parts.size() * metrics);
    for (PartialBuild& pb : m.partial_builds) pb.clear();
    partials = m.partial_builds;
  }
  // Sized from the last build, so a steady writer does not regrow the builder.
  const size_t view_records = views ? parts.size() * metrics : 0;
  builder.reserve(order.size() + metrics + 2 + view_records, m.last_build_bytes);
  add_series(builder, m, order, window_s, prom_series, series_aggs, partials);
  // A partitioned node's rollups cover only the partitions it holds: a scrape of every
  // node would add them up more than once, so none is exported (views are on exactly there).
  const bool export_rollups =
      !views && std::all_of(parts.begin(), parts.end(), [](const BuildPart& p) { return p.prometheus; });
  std::vector<uint32_t> metric_order =
      add_rollups(builder, m, order, parts, window_s, prom_series, export_rollups, series_aggs);
  if (views) add_partition_views(builder, m, parts, metric_order, window_s);
  m.last_build_bytes = builder.serialized_size();
}

}  // namespace

void build_snapshot(shm::SnapshotBuilder& builder, std::span<const BuildPart> parts,
                    std::span<const MergedSeries> merged, bool views) {
  Aggregator::Impl& lead = *parts[0].impl;
  std::vector<MetricBuild>& metrics = lead.metric_builds;
  metrics.resize(lead.build_metric_names.size());
  for (size_t i = 0; i < metrics.size(); ++i) {
    metrics[i].clear();
    append_json_string(metrics[i].name_json, lead.build_metric_names[i]);
  }
  if (parts.size() == 1) build_ordered(builder, lead, OneOrder{&lead, parts[0].now_ns}, parts, views);
  else build_ordered(builder, lead, MergedOrder{merged, parts}, parts, views);
}

void Aggregator::build(shm::SnapshotBuilder& builder, int64_t now_ns) {
  const AggregatorPart part{this, now_ns};
  build_parts(builder, std::span<const AggregatorPart>(&part, 1));
}

}  // namespace ingest
