// rollup_partial.cc: a metric's rollup over one partition as bytes (the "r:" records of
// a build with partition views), and what a coordinator does with them: decode, merge
// over partitions, render the "m:" body. The layout is in window.h (Rollup partials).

#include <bit>
#include <cstring>

#include <fmt/format.h>

#include "ingest/window/aggregator_impl.h"

namespace ingest {

namespace {

static_assert(std::endian::native == std::endian::little,
              "rollup partials are little-endian and copied as such");

constexpr uint8_t kPartialVersion = 1;
constexpr uint8_t kBoundsDiffer = 1;
constexpr size_t kHeaderSize = 1 + 1 + 4 + 4 + 4 + 8;
constexpr size_t kBinSize = 4 + 8;
constexpr size_t kBoundSize = 8 + 8;
constexpr size_t kSeriesMinSize = 4 + 1 + 8;  // a key's length, kind and count 0

template <typename T>
void put(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out.append(bytes, sizeof(T));
}

// Reads fixed-width fields in order; every read is bounds-checked, so that no input
// reads past the bytes.
struct Reader {
  std::string_view bytes;
  size_t at = 0;
  size_t left() const { return bytes.size() - at; }
  void need(size_t n, const char* what) const {
    if (left() < n)
      throw std::invalid_argument(
          fmt::format("rollup partial: {} bytes at {}, {} left, for {}", n, at, left(), what));
  }
  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, bytes.data() + at, sizeof(T));
    at += sizeof(T);
    return value;
  }
  std::string_view take(size_t n, const char* what) {
    need(n, what);
    std::string_view s = bytes.substr(at, n);
    at += n;
    return s;
  }
};

void read_header(Reader& r, uint8_t* flags, uint32_t* series, uint32_t* bins, uint32_t* bounds) {
  const auto version = r.get<uint8_t>("the version");
  if (version != kPartialVersion)
    throw std::invalid_argument(
        fmt::format("rollup partial: version {}, this build reads {}", version, kPartialVersion));
  *flags = r.get<uint8_t>("the flags");
  *series = r.get<uint32_t>("the series count");
  *bins = r.get<uint32_t>("the bin count");
  *bounds = r.get<uint32_t>("the bound count");
}

RollupPartial::Series read_series(Reader& r) {
  RollupPartial::Series s;
  const auto key_size = r.get<uint32_t>("a key's length");
  s.key.assign(r.take(key_size, "a key"));
  const auto kind = r.get<uint8_t>("a kind");
  if (kind > static_cast<uint8_t>(SampleKind::histogram))
    throw std::invalid_argument(fmt::format("rollup partial: series {} has kind {}", s.key, kind));
  Aggregate& a = s.aggregate;
  a.kind = static_cast<SampleKind>(kind);
  a.count = r.get<uint64_t>("a count");
  if (a.count == 0) return s;
  a.sum = r.get<double>("a sum");
  a.min = r.get<double>("a min");
  a.max = r.get<double>("a max");
  a.first = r.get<double>("a first");
  a.first_ts_ns = r.get<int64_t>("a first_ts");
  a.last = r.get<double>("a last");
  a.last_ts_ns = r.get<int64_t>("a last_ts");
  a.resets = r.get<double>("resets");
  return s;
}

}  // namespace

void detail::append_partial_series(std::string& out, std::string_view key, const Aggregate& a) {
  put(out, static_cast<uint32_t>(key.size()));
  out.append(key);
  put(out, static_cast<uint8_t>(a.kind));
  put(out, a.count);
  if (a.count == 0) return;
  for (double v : {a.sum, a.min, a.max, a.first}) put(out, v);
  put(out, a.first_ts_ns);
  put(out, a.last);
  put(out, a.last_ts_ns);
  put(out, a.resets);
}

void detail::append_partial(std::string& out, double window_s, size_t series_count,
                    std::span<const SketchCount> bins, std::span<const BoundCount> bounds,
                    bool bounds_differ, std::string_view series_bytes) {
  out.reserve(out.size() + kHeaderSize + bins.size() * kBinSize + bounds.size() * kBoundSize +
              series_bytes.size());
  put(out, kPartialVersion);
  put(out, static_cast<uint8_t>(bounds_differ ? kBoundsDiffer : 0));
  put(out, static_cast<uint32_t>(series_count));
  put(out, static_cast<uint32_t>(bins.size()));
  put(out, static_cast<uint32_t>(bounds.size()));
  put(out, window_s);
  for (const SketchCount& b : bins) {
    put(out, b.key);
    put(out, b.count);
  }
  for (const BoundCount& b : bounds) {
    put(out, b.le);
    put(out, b.count);
  }
  out.append(series_bytes);
}

void encode_rollup_partial(std::string& out, const RollupPartial& partial) {
  std::string series;
  for (const RollupPartial::Series& s : partial.series)
    append_partial_series(series, s.key, s.aggregate);
  std::vector<BoundCount> bounds;
  for (auto [le, count] : partial.bounds) bounds.push_back(BoundCount{le, count});
  append_partial(out, partial.window_s, partial.series.size(), partial.bins, bounds,
                 partial.bounds_differ, series);
}

uint64_t rollup_partial_series_count(std::string_view bytes) {
  Reader r{bytes};
  uint8_t flags;
  uint32_t series, bins, bounds;
  read_header(r, &flags, &series, &bins, &bounds);
  return series;
}

// Counts are checked against the bytes left before anything is reserved: a forged count
// allocates nothing.
RollupPartial decode_rollup_partial(std::string_view bytes) {
  Reader r{bytes};
  uint8_t flags;
  uint32_t series, bins, bounds;
  read_header(r, &flags, &series, &bins, &bounds);
  if (flags & ~kBoundsDiffer)
    throw std::invalid_argument(fmt::format("rollup partial: unknown flags {:#x}", flags));
  RollupPartial p;
  p.bounds_differ = flags & kBoundsDiffer;
  p.window_s = r.get<double>("window_s");
  if (!(p.window_s > 0 && std::isfinite(p.window_s)))
    throw std::invalid_argument(fmt::format("rollup partial: window_s {}", p.window_s));
  r.need(size_t{bins} * kBinSize + size_t{bounds} * kBoundSize + size_t{series} * kSeriesMinSize,
         "the bins, bounds and series the header counts");
  p.bins.reserve(bins);
  for (uint32_t i = 0; i < bins; ++i) {
    SketchCount b{r.get<int32_t>("a bin key"), r.get<uint64_t>("a bin count")};
    if (!QuantileSketch::valid_key(b.key) || b.count == 0 ||
        (i && b.key <= p.bins.back().key))
      throw std::invalid_argument(
          fmt::format("rollup partial: bin {} (key {}, count {}) is out of order, empty or "
                      "not a sketch key", i, b.key, b.count));
    p.bins.push_back(b);
  }
  p.bounds.reserve(bounds);
  for (uint32_t i = 0; i < bounds; ++i) {
    double le = r.get<double>("a bound");
    p.bounds.emplace_back(le, r.get<double>("a bound's count"));
  }
  p.series.reserve(series);
  for (uint32_t i = 0; i < series; ++i) {
    RollupPartial::Series s = read_series(r);
    if (i && s.key <= p.series.back().key)
      throw std::invalid_argument(
          fmt::format("rollup partial: series {} is not after {}", s.key, p.series.back().key));
    p.series.push_back(std::move(s));
  }
  if (r.left())
    throw std::invalid_argument(fmt::format("rollup partial: {} bytes after the series", r.left()));
  return p;
}

namespace {

std::vector<SketchCount> merged_bins(std::span<const SketchCount> a, std::span<const SketchCount> b) {
  std::vector<SketchCount> out;
  out.reserve(a.size() + b.size());
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    if (j == b.size() || (i < a.size() && a[i].key < b[j].key)) out.push_back(a[i++]);
    else if (i == a.size() || b[j].key < a[i].key) out.push_back(b[j++]);
    else out.push_back({a[i].key, a[i++].count + b[j++].count});
  }
  return out;
}

}  // namespace

// The buckets merge as merge_bounds() merges a series' into a rollup's: the node's
// rollup sums them series by series, this partition by partition.
void merge_rollup_partial(RollupPartial& into, const RollupPartial& from) {
  if (into.window_s != 0 && from.window_s != 0 && into.window_s != from.window_s)
    throw std::invalid_argument(fmt::format("merge_rollup_partial: windows of {} s and {} s",
                                            into.window_s, from.window_s));
  // Both by key: a series in both is found before anything changes.
  for (size_t i = 0, j = 0; i < into.series.size() && j < from.series.size();) {
    const std::string& a = into.series[i].key;
    const std::string& b = from.series[j].key;
    if (a == b)
      throw std::invalid_argument(
          fmt::format("merge_rollup_partial: series {} is in both partials", a));
    a < b ? ++i : ++j;
  }
  std::vector<RollupPartial::Series> series;
  series.reserve(into.series.size() + from.series.size());
  size_t i = 0, j = 0;
  while (i < into.series.size() || j < from.series.size()) {
    if (j == from.series.size() ||
        (i < into.series.size() && into.series[i].key < from.series[j].key))
      series.push_back(std::move(into.series[i++]));
    else
      series.push_back(from.series[j++]);
  }
  into.series = std::move(series);
  into.bins = merged_bins(into.bins, from.bins);
  if (into.window_s == 0) into.window_s = from.window_s;
  std::vector<BoundCount> bounds, add;
  for (auto [le, count] : into.bounds) bounds.push_back({le, count});
  for (auto [le, count] : from.bounds) add.push_back({le, count});
  into.bounds_differ = into.bounds_differ || from.bounds_differ;
  merge_bounds(bounds, &into.bounds_differ, add);
  into.bounds.clear();
  for (const BoundCount& b : bounds) into.bounds.emplace_back(b.le, b.count);
}

// The fold, quantiles and rendering of add_rollups() in aggregator_snapshot.cc, over
// the series in key order: so the same bytes.
void render_merged_metric(std::string& out, std::string_view metric, const RollupPartial& merged) {
  MetricBuild ms;
  std::string key_json;
  for (const RollupPartial::Series& s : merged.series) {
    key_json.clear();
    append_json_string(key_json, s.key);
    ms.keys.add(key_json);
    fold(ms.agg, s.aggregate);
  }
  for (const SketchCount& b : merged.bins) ms.sketch.add_key(b.key, b.count);
  for (auto [le, count] : merged.bounds) ms.bounds.push_back({le, count});
  ms.bounds_differ = merged.bounds_differ;
  Aggregator::Impl::finish_rollup(ms);
  render_metric(out, metric, ms.agg, merged.window_s, ms.keys);
}

}  // namespace ingest
