// build_parts.cc: one snapshot over several aggregators (a node's partitions): the parts
// checked and expired, their metrics indexed by name and their series merged into one
// key order, which the build in aggregator_snapshot.cc walks as it walks one
// aggregator's.

#include <numeric>

#include <fmt/format.h>

#include "ingest/window/aggregator_impl.h"

namespace ingest {

void index_metrics(std::span<const BuildPart> parts) {
  Aggregator::Impl& lead = *parts[0].impl;
  std::vector<std::string_view>& names = lead.build_metric_names;
  names.assign(lead.metric_names.begin(), lead.metric_names.end());
  lead.build_metric_index.resize(names.size());
  std::iota(lead.build_metric_index.begin(), lead.build_metric_index.end(), 0u);
  if (parts.size() == 1) return;
  std::unordered_map<std::string_view, uint32_t>& ids = lead.build_metric_ids;
  ids.clear();
  for (uint32_t i = 0; i < names.size(); ++i) ids.emplace(names[i], i);
  for (const BuildPart& part : parts.subspan(1)) {
    Aggregator::Impl& m = *part.impl;
    m.build_metric_index.resize(m.metric_names.size());
    for (size_t i = 0; i < m.metric_names.size(); ++i) {
      auto [it, added] = ids.emplace(m.metric_names[i], static_cast<uint32_t>(names.size()));
      if (added) names.push_back(m.metric_names[i]);
      m.build_metric_index[i] = it->second;
    }
  }
}

// A heap of each part's next series, the least key on top: N log(parts) key
// comparisons, each part's order being sorted already.
void merge_orders(std::span<const BuildPart> parts, std::vector<MergedSeries>& into) {
  struct Head {
    const SeriesState* state;
    uint32_t part;
    uint32_t next;  // the position after it in its part's order
  };
  auto after = [](const Head& a, const Head& b) { return a.state->key > b.state->key; };
  std::vector<Head> heads;
  size_t total = 0;
  for (uint32_t p = 0; p < parts.size(); ++p) {
    const Aggregator::Impl& m = *parts[p].impl;
    total += m.order.size();
    if (!m.order.empty()) heads.push_back(Head{&m.series[m.order[0]], p, 1});
  }
  std::make_heap(heads.begin(), heads.end(), after);
  into.clear();
  into.reserve(total);
  while (!heads.empty()) {
    std::pop_heap(heads.begin(), heads.end(), after);
    Head& h = heads.back();
    // Equal keys come off the heap one after the other.
    if (!into.empty() && into.back().state->key == h.state->key)
      throw std::invalid_argument(
          fmt::format("build_parts: series {} is in two parts", h.state->key));
    into.push_back(MergedSeries{h.state, h.part});
    const Aggregator::Impl& m = *parts[h.part].impl;
    if (h.next < m.order.size()) {
      h.state = &m.series[m.order[h.next++]];
      std::push_heap(heads.begin(), heads.end(), after);
    } else {
      heads.pop_back();
    }
  }
}

void build_parts(shm::SnapshotBuilder& builder, std::span<const AggregatorPart> parts,
                 const BuildPartsOptions& options) {
  if (parts.empty()) {
    Aggregator nothing{Config{}};
    nothing.build(builder, 0);
    return;
  }
  for (const AggregatorPart& part : parts)
    if (!part.aggregator) throw std::invalid_argument("build_parts: a part without an aggregator");
  const Aggregator::Impl& lead = *parts[0].aggregator->impl_;
  std::vector<BuildPart> build;
  build.reserve(parts.size());
  for (const AggregatorPart& part : parts) {
    Aggregator::Impl& m = *part.aggregator->impl_;
    if (m.window_ns != lead.window_ns || m.stale_ns != lead.stale_ns ||
        m.config.prom_series_limit != lead.config.prom_series_limit)
      throw std::invalid_argument(
          "build_parts: the parts' window, stale_after or prom_series_limit differ");
    build.push_back(BuildPart{&m, part.now_ns, part.partition, part.prometheus});
  }
  if (options.partition_views) {
    std::vector<uint32_t> numbers;
    for (const AggregatorPart& part : parts) numbers.push_back(part.partition);
    std::sort(numbers.begin(), numbers.end());
    if (std::adjacent_find(numbers.begin(), numbers.end()) != numbers.end())
      throw std::invalid_argument("build_parts: two parts have one partition number");
  }
  for (const AggregatorPart& part : parts) {
    part.aggregator->expire(part.now_ns);
    part.aggregator->impl_->merge_fresh();
  }
  if (build.size() == 1) {
    index_metrics(build);
    build_snapshot(builder, build, {}, options.partition_views);
    return;
  }
  merge_orders(build, build[0].impl->merged_order);
  index_metrics(build);
  build_snapshot(builder, build, build[0].impl->merged_order, options.partition_views);
}

}  // namespace ingest
