// render.h: the pre-rendered HTTP bodies and the Prometheus text, built once per
// snapshot so that readers only look bytes up and send them (internal).
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "ingest/ingest.h"

namespace ingest {

// `{"key":..,"metric":..,"labels":{..},"window_s":..,<aggregate>,"stale":..}`
void render_series(std::string& out, std::string_view key, std::string_view metric,
                   const Aggregate& a, double window_s, bool stale);
// `{"metric":..,"window_s":..,<aggregate>,"series_count":N,"series":[keys]}`
void render_metric(std::string& out, std::string_view metric, const Aggregate& a,
                   double window_s, std::span<const std::string_view> series_keys);

struct MetricCount {
  std::string_view metric;
  size_t series_count;
};
// `{"metrics":[{"metric":..,"series_count":N},..]}`
void render_metrics(std::string& out, std::span<const MetricCount> metrics);

struct PromMetric {
  std::string_view metric;
  size_t series_count;
  const Aggregate* aggregate;
};
struct PromSeries {
  std::string_view key;  // canonical key; its labels become Prometheus labels
  std::string_view metric;
  const Aggregate* aggregate;
};
// Text exposition 0.0.4, gauges only, families in a fixed order.
void render_prometheus(std::string& out, std::span<const PromMetric> metrics,
                       std::span<const PromSeries> series);

}  // namespace ingest
