// ingest: pulls telemetry from upstream sources, parses it, aggregates it per series
// over a sliding window and renders the snapshot bodies the HTTP readers serve.
//
// Layers, each usable on its own:
//
//   Parser      body bytes -> samples (native JSON or OTLP/JSON metrics with simdjson,
//               the Prometheus / OpenMetrics text format by hand). No sockets, no
//               clock: tests feed it strings.
//   Aggregator  samples of one source at one fetch time -> per-series window state;
//               build() renders every body into a shm::SnapshotBuilder.
//   Pipeline    the event-driven loop on a caller's libevent event_base: every interval
//               fetches all sources at once (http://, file://, synthetic://), applies
//               them, builds a snapshot and hands it to the caller (the writer process
//               publishes it).
//
// Time is Unix nanoseconds (CLOCK_REALTIME) everywhere in this API; the Aggregator never
// reads a clock itself, so every time-dependent rule is testable.
//
// The snapshot key conventions the HTTP readers rely on are at the end of this file.
// Formats, limits, drop rules and the sketch are described in docs/ingest.md.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shm/shm.h"

struct event_base;

namespace ingest {

// ---------------------------------------------------------------------------------
// Limits (documented in docs/ingest.md). A sample breaking one is rejected on its own.
// ---------------------------------------------------------------------------------

inline constexpr size_t kMaxMetricNameBytes = 255;   // 1..255 of [A-Za-z0-9_.:/-]
inline constexpr size_t kMaxLabelNameBytes = 128;    // 1..128 of [A-Za-z0-9_.:/-]
inline constexpr size_t kMaxLabelValueBytes = 1024;  // any valid UTF-8, escaped on output
inline constexpr size_t kMaxLabels = 32;             // per sample, resource labels included
inline constexpr int64_t kMaxFutureNs = 300'000'000'000;  // samples > 5 min ahead dropped
inline constexpr size_t kMaxResponseHeaderBytes = 64 * 1024;  // an upstream's status + headers
inline constexpr size_t kMaxLineBytes = 64 * 1024;  // a line of a Prometheus text body
inline constexpr std::string_view kDefaultSource = "synthetic://";

// ---------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------

// "500ms", "2s", "1m", "1h" or a bare number of seconds ("3", "0.5"). Throws
// std::invalid_argument naming the text when it is not a non-negative duration.
std::chrono::milliseconds parse_duration(std::string_view text);

struct Config {
  std::vector<std::string> sources;  // empty: {kDefaultSource}
  std::chrono::milliseconds interval{2000};
  std::chrono::milliseconds window{60000};
  std::chrono::milliseconds stale_after{0};   // 0: 3 intervals
  std::chrono::milliseconds expire_after{0};  // 0: the window
  std::chrono::milliseconds source_timeout{1500};
  size_t max_body_bytes = size_t{64} << 20;
  // Bytes all fetches in flight may hold together (at least max_body_bytes); a fetch
  // that would take the total past it fails.
  size_t fetch_memory_limit = size_t{256} << 20;
  size_t max_series_per_source = 1'000'000;
  size_t max_series = 1'000'000;
  size_t prom_series_limit = 10'000;  // per-series Prometheus gauges only below this

  // The defaults filled in (sources, stale_after, expire_after) and every value
  // checked. Throws std::invalid_argument with the offending setting's name.
  Config resolved() const;
};

// Checks every source URL as a Pipeline would take it (scheme, http URL, absolute file
// path, synthetic parameters), so that a configuration can be refused with the reason
// before it reaches the writer. Throws std::invalid_argument naming the URL.
void check_sources(const Config& config);

// ---------------------------------------------------------------------------------
// Series keys
// ---------------------------------------------------------------------------------

struct Label {
  std::string_view name;
  std::string_view value;
};

// A series key taken apart, values unescaped.
struct SeriesKey {
  std::string metric;
  std::vector<std::pair<std::string, std::string>> labels;  // sorted by name
};

// Canonical key `metric{k1="v1",k2="v2"}`: labels sorted by name, values escaped as in
// the Prometheus text format (\\, \", \n); no labels gives just `metric`. Labels must
// have distinct names (the parsers guarantee it).
std::string make_series_key(std::string_view metric, std::span<const Label> labels);
// The inverse; nullopt when key is not a canonical key.
std::optional<SeriesKey> parse_series_key(std::string_view key);

// ---------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------

enum class Format { native, otlp, prometheus };
std::string_view format_name(Format format);  // "native", "otlp", "prometheus"

// What a sample's series is, which decides how its rate is computed. The parsers give
// gauge (native, OTLP gauges and non-monotonic sums, Prometheus gauges, untyped and
// summary quantiles), counter (Prometheus counters, OTLP monotonic sums and the _sum /
// _count of histograms and summaries) and bucket
// (a histogram's `_bucket{le=..}`, a counter too); the aggregator adds one histogram
// series per bucket set, whose quantiles are estimated from the buckets.
enum class SampleKind : uint8_t { gauge, counter, bucket, histogram };

// A source URL ending in this query parameter is parsed as Prometheus text whatever its
// Content-Type (the parameter is not sent upstream); see docs/ingest.md.
inline constexpr std::string_view kPrometheusMarker = "format=prometheus";

// One sample as parsed: views into the Parser that produced it, valid until its next
// parse. The series is metric + suffix with the union of labels and resource_labels
// (a name present in both takes the labels' value).
struct Sample {
  std::string_view metric;
  // "" or, for histograms, "_bucket" / "_sum" / "_count", metric being the family's
  // name (OTLP histograms are mapped to the same, ingest/otlp_points.h).
  std::string_view suffix;
  std::span<const Label> labels;
  std::span<const Label> resource_labels;  // OTLP resource attributes; empty for native
  double value = 0;                        // always finite
  int64_t ts_ns = 0;                       // 0: no timestamp, the fetch time applies
  SampleKind kind = SampleKind::gauge;     // never histogram
  // OTLP points of delta temporality: value is the change since the point before, over
  // [start_ns, ts_ns]. DeltaTotals turns them into running totals before they are
  // applied; the Aggregator never sees one.
  bool delta = false;
  int64_t start_ns = 0;
};

struct ParseResult {
  Format format = Format::native;
  // false: the body was rejected as a whole (invalid JSON or UTF-8, truncation, wrong
  // top-level shape) and samples() is empty. true: samples() holds every sound sample;
  // `rejected` counts those refused one by one (bad type, name, value, label; for
  // Prometheus text, bad lines).
  bool ok = false;
  size_t rejected = 0;
  // Prometheus samples whose value is NaN or an infinity: the format's way of saying
  // "no value", left out without an error (the aggregates stay finite).
  size_t skipped = 0;
  std::string error;  // the whole-body error, or the first rejected sample's reason
};

// Reusable parser: keeps its buffers between bodies, so steady-state parsing does not
// allocate. Not thread-safe; one per thread.
class Parser {
 public:
  Parser();
  ~Parser();
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  // The content type decides for Prometheus text (`text/plain; version=...`, bare
  // `text/plain` unless the body starts with `{` or `[`, `application/openmetrics-text`);
  // otherwise the body's shape decides
  // between native and OTLP/JSON, and content_type (may be empty) only refuses protobuf
  // bodies with a clear error and labels a broken OTLP body as such.
  ParseResult parse(std::string_view body, std::string_view content_type = {});
  // Same, without copying: body.data() must stay readable up to `capacity` bytes and
  // capacity >= body.size() + padding() (what simdjson reads past the end).
  ParseResult parse_padded(std::string_view body, size_t capacity,
                           std::string_view content_type = {});
  static size_t padding();

  std::span<const Sample> samples() const;

  // Bytes held by the parser's buffers, which grow to fit the largest body parsed.
  size_t buffer_bytes() const;
  // Frees them when they hold more than keep_bytes (a large body is rare: its buffers
  // are not worth keeping for the next one). samples() is invalid afterwards.
  void shrink(size_t keep_bytes);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

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
  // conventions below) into builder, which is cleared first.
  void build(shm::SnapshotBuilder& builder, int64_t now_ns);

  size_t series_count() const;
  size_t series_count(uint32_t source) const;
  // For tests and the admin socket: the window aggregate of one series / metric.
  std::optional<Aggregate> series(std::string_view key) const;
  std::optional<Aggregate> metric(std::string_view name) const;
  // Approximate bytes of writer state (series, buckets, sketch bins, index).
  size_t memory_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------------
// Pipeline
// ---------------------------------------------------------------------------------

// A source that is not fetched: samples pushed to the writer between ticks (the
// OTLP/HTTP receiver, otlp_receiver.h). At every tick the Pipeline takes what arrived
// and applies it like a fetched body, as the source named url().
class PushSource {
 public:
  struct Batch {
    std::span<const Sample> samples;  // valid until the next take()
    uint64_t bytes = 0;               // body bytes received since the last take()
    uint64_t rejected = 0;            // data points refused on arrival
    std::string error;                // why the last request or point was refused, or ""
    uint64_t id = 0;                  // this take's number: 1, 2, ... (see settle)
  };
  virtual ~PushSource() = default;
  virtual const std::string& url() const = 0;
  virtual Batch take(int64_t now_ns) = 0;
  // What takes up to `id` held is committed (standalone: applied; a cluster leader: its
  // entry is in the log) or never will be (the tick was abandoned, or the state it went
  // into was replaced): a receiver answers its clients only now, 200 or retry later.
  // Called in take order, each take once at most; takes never settled by a Pipeline that
  // is destroyed are settled as not committed.
  virtual void settle(uint64_t id, bool committed) = 0;
};

// Receives every built snapshot, the status of each configured source, in the
// configuration's order (index i is Config::sources[i], then each push source; a
// follower gets the leader's),
// and the generation to publish it as: the log sequence number (seq) of the tick or
// entry. Called on the event loop, inside a libevent callback: it must not throw
// (handle publish errors inside it). It may call Pipeline::reconfigure().
using PublishFn = std::function<void(const shm::SnapshotBuilder&,
                                     const std::vector<shm::SourceStatus>&, uint64_t seq)>;

// Replication (docs/architecture.md, Replication). One tick's samples as every node
// applies them are a log entry: binary, versioned (kLogFormatVersion), zstd-compressed.
// It carries its sequence number, the tick's clock (Unix ns, the leader's tick time: the
// only "now" that apply and build use), the leader's settings that affect aggregation
// (interval, window, stale_after, expire_after, max_series, max_series_per_source,
// prom_series_limit), its source URLs and statuses, and the samples after parsing, in
// the order the leader applied them. A series is spelled out in the first entry that
// has it; later entries refer to it by a number (a dictionary that is part of the
// replicated state and of checkpoints). Checkpoints carry the same version.
inline constexpr uint32_t kLogFormatVersion = 1;

class Pipeline {
 public:
  // Resolves config (throws std::invalid_argument on a bad one). Does not fetch until
  // start() or run_once(). base must outlive the Pipeline.
  Pipeline(event_base* base, Config config, PublishFn publish);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Starts a tick now and then every interval, on base's loop. stop() cancels the
  // timer and any fetch in flight; nothing is published after it.
  void start();
  void stop();

  // Applies a new configuration (SIGHUP). Throws std::invalid_argument and keeps the
  // old one when it is bad. Sources whose URL is unchanged keep their series and
  // counters; removed sources' series go at once. A tick in flight completes first with
  // the old source list.
  void reconfigure(Config config);

  // Adds a source that pushes instead of being fetched, before start(); it stays
  // through reconfigure() and its status comes after the configured sources'. source
  // must outlive the Pipeline.
  void add_push_source(PushSource* source);

  // Runs one whole tick synchronously (fetch everything, apply, build, publish) by
  // looping base until it is done. For tests and tools; not from a callback of base.
  void run_once();

  // --- replication: how a writer is a cluster's leader or follower ---------------
  //
  // Standalone (no sink, fetching) each tick is applied as its sources answer and
  // published as seq applied_seq() + 1, encoding nothing. A leader (a sink set) stages
  // each tick's samples without changing any state; when the tick completes it makes
  // the entry for seq = applied_seq() + 1, applies it through apply_entry()'s own
  // decode-and-apply path, builds, publishes (generation = seq), then hands the entry
  // to the sink. If the sink cannot append it, this Pipeline holds an entry the log
  // does not: restore() a checkpoint (or replay the log into a fresh Pipeline) before
  // following. A follower does not fetch: its state changes only through
  // apply_entry() and restore().

  // The seq of the last entry applied or tick published (0: none). A standalone
  // writer starts it from the store's generation, so generations stay monotonic.
  uint64_t applied_seq() const;
  void set_applied_seq(uint64_t seq);  // before start(), or after restore()

  // Empty: standalone. Takes effect at the next tick; clearing it abandons a leader's
  // tick in flight (which changed nothing), so that no entry is applied here without
  // going to a sink. The sink is called inside the tick's libevent callback; it must
  // not throw. A follower becoming leader sets a sink, then set_fetching(true); a
  // leader losing its lease calls set_fetching(false) and clears the sink.
  using EntrySink = std::function<void(uint64_t seq, std::string entry)>;
  void set_entry_sink(EntrySink sink);

  // With a sink: a tick's snapshot is built and published only once publish_committed()
  // says its entry is in the log (the state moves on at once; the next tick stages
  // against it). So a leader never shows data under a generation that the log then
  // gives other data (its append refused, its lease lost). publish_committed(seq) does
  // nothing unless seq is the applied seq and not yet published: of several ticks
  // waiting, only the newest is built.
  void publish_committed(uint64_t seq);

  // Off: no fetch timer, a tick in flight is abandoned (it changed nothing if it was a
  // leader's). On (the default): start() runs ticks. Turning it on while started
  // starts a tick now.
  void set_fetching(bool on);
  bool fetching() const;

  // Applies one log entry: decode, check version and seq, apply, then (show) build and
  // publish. seq <= applied_seq(): duplicate, ignored. seq > applied_seq() + 1: gap
  // (the caller loads a checkpoint). Bad bytes or an unknown version: bad, *error says
  // why, and nothing changes. Not while a tick is in flight (bad). A node catching up
  // applies several with show false and calls show_applied() once after the last.
  enum class EntryResult { applied, duplicate, gap, bad };
  EntryResult apply_entry(std::string_view entry, std::string* error = nullptr, bool show = true);
  // Builds and publishes the last entry applied, if apply_entry() did not.
  void show_applied();

  // A tick's clock is the node's own, but never less than the last tick's (or entry's)
  // plus the interval: after a failover to a node whose clock is behind, ticks go on
  // from the log's time instead of stamping samples in its past. How far the tick
  // clock ran ahead of this node's clock at the last tick (0: not at all).
  int64_t clock_behind_ns() const;
  // The entry's seq from its header only (cheap); 0 when it is not an entry of this
  // format version.
  static uint64_t entry_seq(std::string_view entry);

  // The whole replicated state (aggregator, series dictionary, source table,
  // applied_seq, the leader's settings) as compressed bytes, and back. restore() throws
  // std::invalid_argument on bad bytes or an unknown version and then changes nothing.
  // It publishes nothing: the next entry applied does; a tick in flight is abandoned.
  // Both take seconds at a million series (docs/performance.md, Replication).
  std::string checkpoint() const;
  void restore(std::string_view checkpoint);

  const Config& config() const;
  std::vector<shm::SourceStatus> statuses() const;
  // Its config() holds the settings aggregation follows: a follower's are the last
  // entry's, whatever its own configuration says.
  const Aggregator& aggregator() const;
  uint64_t ticks() const;          // completed ticks
  uint64_t ticks_skipped() const;  // timer fired while a tick was still in flight
  // The highest total of bytes that fetches in flight held at once (at most
  // fetch_memory_limit), and the bytes that fetch and parse buffers keep between ticks.
  size_t fetch_memory_peak() const;
  size_t buffer_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

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
