// ingest/window: per-series sliding-window state and the snapshot the readers serve.
// The Aggregator takes the samples of one source at one fetch time, keeps each series'
// window (buckets of one interval, a mergeable quantile sketch, sketch.h), and build()
// renders every body into a shm::SnapshotBuilder (render.h). DeltaTotals turns OTLP
// delta points into running totals before they reach it (delta_totals.h).
//
// Guarantees
// ----------
// - The Aggregator never reads a clock: every time-dependent rule takes the caller's
//   Unix nanoseconds, so each is testable.
// - Quantiles p50 / p90 / p99 within 1% relative error, also after merging.
// - save() gives the same bytes for the same state whatever its history; load() of bad
//   bytes throws and changes nothing.
// - A sample is dropped only for a reason counted in ApplyStats.
// - The snapshot follows the key conventions at the end of this file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "ingest/config.h"
#include "ingest/format/format.h"
#include "shm/shm.h"

namespace ingest {

// ---------------------------------------------------------------------------------
// Aggregation
// ---------------------------------------------------------------------------------

// Why samples were dropped after parsing, per apply() call.
struct ApplyStats {
  uint64_t accepted = 0;
  uint64_t duplicate = 0;  // ts not newer than the series' last accepted sample
  uint64_t too_old = 0;    // older than the window
  uint64_t too_new = 0;    // more than kMaxFutureNs ahead of the fetch time
  uint64_t over_limit = 0; // would create a series past max_series(_per_source)
  // Of the duplicates: samples of a series this same fetch had already updated (a body
  // that holds a series twice), and the first such series' key.
  uint64_t repeated = 0;
  std::string first_repeated;
  uint64_t dropped() const { return duplicate + too_old + too_new + over_limit; }
};

// Window aggregates of one series or one metric rollup. Non-finite results (a sum that
// overflowed, say, or what a histogram does not tell: its min, max, first and last)
// render as null.
struct Aggregate {
  uint64_t count = 0;  // samples; for a histogram, the observations made in the window
  double sum = 0, min = 0, max = 0;
  double first = 0, last = 0;
  int64_t first_ts_ns = 0, last_ts_ns = 0;
  double p50 = 0, p90 = 0, p99 = 0;
  SampleKind kind = SampleKind::gauge;
  // Counters and buckets: the values just before each reset inside the window, so that
  // the window's increase is last - first + resets.
  double resets = 0;
  bool rollup = false;  // a metric's rollup (built by folding its series)
  // A rollup of counters or histograms: the sum of its series' rates.
  std::optional<double> rate_sum;
  double mean() const;
  // Per second; nullopt with < 2 samples or dt 0. A gauge's is (last - first) / dt, a
  // counter's (last - first + resets) / dt, a histogram's observations / dt; a rollup
  // of counters or histograms sums its series' rates.
  std::optional<double> rate() const;
};

struct AggregatorPart;  // build_parts(), below

// Per-series sliding-window state for every source. Sources are named by a caller-chosen
// id (the Pipeline gives each URL its own); series remember the source that created
// them, for the per-source limit and for forget_source(). Not thread-safe, not even
// the const queries (they share scratch buffers): one thread owns an Aggregator.
class Aggregator {
 public:
  explicit Aggregator(const Config& config);  // config is resolved() here
  ~Aggregator();
  Aggregator(Aggregator&&) noexcept;
  Aggregator& operator=(Aggregator&&) noexcept;

  // Window, interval, staleness and limits change; series are kept. Buckets are
  // re-sliced to the new interval lazily (old ones simply age out).
  void reconfigure(const Config& config);
  const Config& config() const;  // resolved

  // The whole window state, appended to out in key order: the same state gives the same
  // bytes, whatever its history (docs/architecture.md, Replication). load() replaces
  // this Aggregator's series with saved ones (its config stays); it throws
  // std::invalid_argument on malformed bytes and then leaves this Aggregator unchanged.
  void save(std::string& out) const;
  void load(std::string_view saved);

  // Applies samples in order at fetch time now_ns (the ts of samples without one).
  ApplyStats apply(uint32_t source, std::span<const Sample> samples, int64_t now_ns);
  // Drops buckets older than the window and series unseen for expire_after.
  void expire(int64_t now_ns);
  // Removes every series the source created (the source left the configuration).
  void forget_source(uint32_t source);

  // Expires, then renders every record and list of the snapshot (see the key
  // conventions below) into builder, which is cleared first. build_parts() of this one
  // aggregator at now_ns.
  void build(shm::SnapshotBuilder& builder, int64_t now_ns);

  size_t series_count() const;
  size_t series_count(uint32_t source) const;
  // For tests and the admin socket: the window aggregate of one series / metric.
  std::optional<Aggregate> series(std::string_view key) const;
  std::optional<Aggregate> metric(std::string_view name) const;
  // Approximate bytes of writer state (series, buckets, sketch bins, index).
  size_t memory_bytes() const;

  // The state (ingest/window/aggregator_impl.h, internal): named here so that the
  // build's helpers there can name it; nothing outside ingest/window can use it.
  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  friend void build_parts(shm::SnapshotBuilder& builder, std::span<const AggregatorPart> parts);
};

// ---------------------------------------------------------------------------------
// One snapshot over several aggregators (a node's partitions)
// ---------------------------------------------------------------------------------

// An aggregator and its own clock: the newest entry clock applied to its partition.
struct AggregatorPart {
  Aggregator* aggregator;
  int64_t now_ns;
};

// Expires each part at its own now_ns, then renders the union of the parts' series
// into builder (cleared first) as Aggregator::build renders one aggregator's: each
// series aggregated and marked stale at its own part's now_ns, so that its body is the
// one a build of its part alone at that clock gives; the "m:" rollups and lists,
// "series", "metrics" and "prom" over the series of all parts, in key order.
//   - A split of one aggregator's series (each series in exactly one part, all at the
//     same now_ns) gives the bytes that aggregator's build() gives: rollups fold the
//     series in key order whatever part holds them (sums in the same order, sketch bins
//     and histogram buckets merged alike).
//   - The snapshot depends neither on the order of the parts nor on writer_threads; the
//     first part's build state (and its writer_threads) is used for the build. The
//     calling thread must own every part meanwhile (as for build()).
//   - Parts at different clocks: a rollup is still one fold of its series' aggregates,
//     each over its own part's window (count, sum, min and max over the union of those
//     windows, first / last the earliest / latest sample of any, a counter rollup's rate
//     the sum of its series' rates each over its own window). It describes no single
//     window; it is what the node holds, and changes with any part's clock.
// A histogram's series is aggregated from its buckets and NAME_sum in its own part:
// they must be in the same part as it.
// Throws std::invalid_argument, the builder untouched, when a part has no aggregator or
// the parts' window, stale_after or prom_series_limit differ (nothing changed then), or
// when a key is in two parts (found once the parts are expired). No parts: an empty
// snapshot (its lists and records empty).
void build_parts(shm::SnapshotBuilder& builder, std::span<const AggregatorPart> parts);

// ---------------------------------------------------------------------------------
// Snapshot key conventions (read by the HTTP readers)
// ---------------------------------------------------------------------------------
//
//   record "s:" + series key  the series body:
//       {"key":..,"metric":..,"labels":{..},"window_s":60,"count":..,"sum":..,"min":..,
//        "max":..,"mean":..,"first":..,"last":..,"first_ts":..,"last_ts":..,"rate":..,
//        "p50":..,"p90":..,"p99":..,"stale":false}
//   record "m:" + metric      the rollup: {"metric":..,"window_s":..,<the aggregate
//                             fields>,"series_count":N,"series":[keys...]}
//   list   "m:" + metric      the "s:" record keys of that metric's series, sorted
//   list   "series"           every "s:" record key, sorted
//   record "metrics"          the /v1/metrics body {"metrics":[{"metric":..,"series_count":N},..]}
//   record "prom"             Prometheus text 0.0.4 of the rollups (and of the series
//                             when fewer than prom_series_limit); ends with a newline
//                             so the server can append its own metrics.

inline constexpr std::string_view kSeriesPrefix = "s:";
inline constexpr std::string_view kMetricPrefix = "m:";
inline constexpr std::string_view kSeriesList = "series";
inline constexpr std::string_view kMetricsRecord = "metrics";
inline constexpr std::string_view kPromRecord = "prom";

// Appends text as a quoted JSON string, escaped (the bodies' escaping, for anyone who
// renders JSON around them).
void append_json_string(std::string& out, std::string_view text);

inline std::string series_record_key(std::string_view series_key) {
  return std::string(kSeriesPrefix).append(series_key);
}
inline std::string metric_record_key(std::string_view metric) {
  return std::string(kMetricPrefix).append(metric);
}

}  // namespace ingest
