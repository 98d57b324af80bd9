// ingest/format: the wire formats telemetry arrives in, turned into samples. The
// Parser reads native JSON and OTLP/JSON metrics bodies (simdjson On Demand) and the
// Prometheus / OpenMetrics text format (by hand); otlp_proto.h reads OTLP/protobuf.
// Series keys are the canonical names every other part of ingest files samples under.
//
// Guarantees
// ----------
// - No sockets and no clock: a body in, samples out, so tests feed it strings.
// - A body that cannot be trusted (invalid JSON or UTF-8, truncation, a wrong shape)
//   gives no sample at all; a bad sample in a sound body is rejected alone, counted,
//   and the first one's reason kept (ParseResult).
// - Every sample given obeys the limits below: names of the allowed alphabet and length,
//   at most kMaxLabels distinct labels, a finite value.
// - Both OTLP encodings of one request give the same samples in the same order
//   (otlp_points.h holds the one mapping).
// - make_series_key() and parse_series_key() are inverses on canonical keys.
//
// Formats, limits and drop rules are described in docs/ingest.md.
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
// Whether parse_series_key() would take key, without taking it apart; *metric is then its
// metric (a view into key). For checking many keys: it allocates nothing.
bool canonical_series_key(std::string_view key, std::string_view* metric);

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
  // name (OTLP histograms are mapped to the same, ingest/format/otlp_points.h).
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

}  // namespace ingest
