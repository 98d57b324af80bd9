// render.h: the pre-rendered HTTP bodies and the Prometheus text, built once per
// snapshot so that readers only look bytes up and send them (internal).
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "ingest/window/window.h"

namespace ingest {

// `{"key":..,"metric":..,"labels":{..},"window_s":..,<aggregate>,"stale":..}`.
// key_json and metric_json are the key and metric name as append_json_string() writes
// them: the build escapes each once and uses it twice (this body and the metric's list).
void render_series(std::string& out, std::string_view key, std::string_view key_json,
                   std::string_view metric_json, const Aggregate& a, double window_s,
                   bool stale);
// The "series" array of a metric body, built up while its series are rendered: their
// keys are in cache then, and reading a million keys again later, in key order, would
// cost a cache miss each.
struct SeriesKeyList {
  std::string json;  // the quoted keys, comma-separated
  size_t count = 0;
  void add(std::string_view key_json) {  // as append_json_string() writes the key
    if (count++) json += ',';
    json += key_json;
  }
  void clear() {  // keeps the capacity
    json.clear();
    count = 0;
  }
};
// `{"metric":..,"window_s":..,<aggregate>,"series_count":N,"series":[keys]}`
void render_metric(std::string& out, std::string_view metric, const Aggregate& a,
                   double window_s, const SeriesKeyList& series);

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
// Text exposition 0.0.4: gauges and a summary of the quantiles, families in a fixed order
// (docs/ingest.md, Snapshot contents).
void render_prometheus(std::string& out, std::span<const PromMetric> metrics,
                       std::span<const PromSeries> series);

}  // namespace ingest
