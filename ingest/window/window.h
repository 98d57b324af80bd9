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
#include <utility>
#include <vector>

#include "ingest/config.h"
#include "ingest/format/format.h"
#include "ingest/window/sketch.h"
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
struct BuildPartsOptions;

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
  friend void build_parts(shm::SnapshotBuilder& builder, std::span<const AggregatorPart> parts,
                          const BuildPartsOptions& options);
};

// ---------------------------------------------------------------------------------
// One snapshot over several aggregators (a node's partitions)
// ---------------------------------------------------------------------------------

// An aggregator and its own clock: the newest entry clock applied to its partition.
struct AggregatorPart {
  Aggregator* aggregator;
  int64_t now_ns;
  uint32_t partition = 0;  // its number, naming its views (BuildPartsOptions)
  // Its series in "prom". A node exports the series of the partitions it is primary
  // for only, so that a scrape of every node counts each series once; a part with false
  // also takes the rollups out of "prom" (below).
  bool prometheus = true;
};

struct BuildPartsOptions {
  // Adds each part's views for a coordinator that merges partitions held by other
  // nodes ("p:" lists and "r:" rollup partials, see the key conventions below).
  // Off, the snapshot has exactly the bytes it had before views existed.
  bool partition_views = false;
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
//   - "prom" holds the series of the parts with prometheus == true (all of them when
//     fewer than prom_series_limit), and the metric-level families (the rollups and
//     telemetry_metric_series) only when every part has prometheus == true and the
//     partition views are off (a partitioned node's build): a rollup
//     over part of a metric's partitions, exported by every node, would count its
//     series more than once cluster-wide.
//   - options.partition_views adds the "p:" lists and "r:" records; the parts'
//     partition numbers must then differ.
// A histogram's series is aggregated from its buckets and NAME_sum in its own part:
// they must be in the same part as it.
// Throws std::invalid_argument, the builder untouched, when a part has no aggregator or
// the parts' window, stale_after or prom_series_limit differ, or (views on) two parts
// have one partition number (nothing changed then), or when a key is in two parts
// (found once the parts are expired). No parts: an empty snapshot (its lists and
// records empty).
void build_parts(shm::SnapshotBuilder& builder, std::span<const AggregatorPart> parts,
                 const BuildPartsOptions& options = {});

// ---------------------------------------------------------------------------------
// Rollup partials: a metric's rollup over one partition, merged over partitions
// ---------------------------------------------------------------------------------
//
// A coordinator answering for the whole cluster reads record "r:P:NAME" from one holder
// of each partition P, decodes it, merges the partials in ascending partition order and
// renders the body that "m:NAME" of a snapshot over every partition would hold.
//
// Why a partial holds each series' aggregate and not one folded aggregate: the rollup
// folds its series in key order, and what that fold gives depends on the order: its sum
// of the series' rates (and its sum) is a float sum, its kind and an empty min / max are
// the first series', and its first / last, among series with equal timestamps (a scrape
// gives all of them one), are the first series' in key order. Folding the merged series
// again in key order gives the node's bytes exactly; a series' aggregate is 77 bytes
// plus its key, about what its key in the "series" array of "m:NAME" costs anyway.
// The sketch bins and histogram buckets are merged per partial (sums of integer counts,
// order-free); a sketch that had to collapse its lowest bins (values more than 70
// orders of magnitude apart) may differ there.
//
// Layout, version 1, every number little-endian, fixed width:
//   u8  version (1)
//   u8  flags: bit 0 the histogram series' bounds differ (no bucket estimate)
//   u32 series count S          (offset 2: rollup_partial_series_count reads it)
//   u32 bin count B
//   u32 bound count K
//   f64 window_s
//   B x { i32 ordered sketch key (sketch.h), u64 count }  keys ascending, counts > 0
//   K x { f64 le, f64 cumulative count }   the histograms' buckets summed, by bound
//   S x { u32 key length, key bytes, u8 kind (SampleKind), u64 count, then if count > 0:
//         f64 sum, min, max, first, i64 first_ts_ns, f64 last, i64 last_ts_ns,
//         f64 resets }                    series by key, ascending, each key once
// A series with an empty window is listed (count 0): it counts in series_count.

struct RollupPartial {
  struct Series {
    std::string key;
    Aggregate aggregate;  // the fields above; its quantiles are not kept
  };
  double window_s = 0;  // 0: an empty partial, which any merges into
  std::vector<Series> series;      // by key
  std::vector<SketchCount> bins;   // by key
  std::vector<std::pair<double, double>> bounds;  // (le, cumulative count)
  bool bounds_differ = false;
  uint64_t series_count() const { return series.size(); }
};

// The bytes of a partial (the layout above), appended to out.
void encode_rollup_partial(std::string& out, const RollupPartial& partial);
// Throws std::invalid_argument, naming what is wrong, on bytes that are not a partial
// of this layout (short, another version, keys out of order, trailing bytes...).
RollupPartial decode_rollup_partial(std::string_view bytes);
// The series count from the header alone (for /v1/metrics); throws as decode does on
// a short header or another version.
uint64_t rollup_partial_series_count(std::string_view bytes);
// Adds from's series, bins and buckets to into. Apply in ascending partition order:
// bucket counts are float sums. Throws std::invalid_argument, into unchanged, when the
// windows differ or a series is in both.
void merge_rollup_partial(RollupPartial& into, const RollupPartial& from);
// Appends the body "m:" + metric holds in a snapshot over the merged partitions:
// `{"metric":..,"window_s":..,<aggregate>,"series_count":N,"series":[keys]}`.
void render_merged_metric(std::string& out, std::string_view metric, const RollupPartial& merged);

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
// With BuildPartsOptions::partition_views, for each part P (its partition, decimal):
//   list   "p:" + P + ":" + metric  the "s:" record keys of that metric's series in P,
//                             sorted (as list "m:" + metric)
//   record "r:" + P + ":" + metric  the metric's rollup partial over P (above)
//   list   "p:" + P           the "r:" records of P, by metric name (a part without
//                             series has it, empty)

inline constexpr std::string_view kSeriesPrefix = "s:";
inline constexpr std::string_view kMetricPrefix = "m:";
inline constexpr std::string_view kSeriesList = "series";
inline constexpr std::string_view kMetricsRecord = "metrics";
inline constexpr std::string_view kPromRecord = "prom";
inline constexpr std::string_view kPartitionPrefix = "p:";
inline constexpr std::string_view kPartialPrefix = "r:";

// Appends text as a quoted JSON string, escaped (the bodies' escaping, for anyone who
// renders JSON around them).
void append_json_string(std::string& out, std::string_view text);

inline std::string series_record_key(std::string_view series_key) {
  return std::string(kSeriesPrefix).append(series_key);
}
inline std::string metric_record_key(std::string_view metric) {
  return std::string(kMetricPrefix).append(metric);
}
inline std::string partition_list_key(uint32_t partition) {
  return std::string(kPartitionPrefix).append(std::to_string(partition));
}
inline std::string partition_metric_list_key(uint32_t partition, std::string_view metric) {
  return partition_list_key(partition).append(":").append(metric);
}
inline std::string partial_record_key(uint32_t partition, std::string_view metric) {
  return std::string(kPartialPrefix).append(std::to_string(partition)).append(":").append(metric);
}

}  // namespace ingest
