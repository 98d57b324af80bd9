// rollup_partial_test.cc: the partition views of build_parts (window.h, "p:" lists and
// "r:" rollup partials) and what a coordinator does with them: the partials of every
// partition, decoded, merged in partition order and rendered, give the "m:" body of one
// aggregator holding every series, byte for byte; the lists are each part's series;
// "prom" leaves out the parts that do not export; views off change no byte.
#include <catch2/catch.hpp>

#include <cmath>
#include <deque>

#include <fmt/format.h>

#include "common/partitions.h"
#include "ingest/internal.h"
#include "tests/ingest/test_util.h"

using namespace ingest;
using namespace ingest_test;

namespace {

struct Tick {
  std::deque<std::string> text;
  std::deque<std::vector<Label>> labels;
  std::vector<Sample> samples;
};

Sample sample(std::string_view metric, std::string_view suffix, std::span<const Label> labels,
              SampleKind kind, double value, int64_t ts_ns) {
  Sample s;
  s.metric = metric;
  s.suffix = suffix;
  s.labels = labels;
  s.kind = kind;
  s.value = value;
  s.ts_ns = ts_ns;
  return s;
}

// Per host: a gauge g, a counter c_total that resets now and then, a metric mix whose
// series alternate between gauge and counter (the rollup's kind is its first series'),
// and a histogram lat (4 buckets, _sum, _count). Most samples carry no timestamp: a
// fetch gives them all one, so the rollup's first / last are ties broken by key order.
// With integers false, the gauges, counters and _sum take values with many bits.
Tick make_tick(uint64_t tick, int hosts, int64_t clock, bool integers) {
  Tick t;
  auto add = [&](std::string_view metric, std::string_view suffix, std::vector<Label> labels,
                 SampleKind kind, double value, int64_t ts) {
    t.samples.push_back(sample(metric, suffix, t.labels.emplace_back(std::move(labels)), kind,
                               value, ts));
  };
  for (int h = 0; h < hosts; ++h) {
    const std::string& host = t.text.emplace_back(fmt::format("h{:02}", h));
    const double scale = integers ? 1 : 1.1 + h * 0.013;
    const int64_t ts = h % 4 == 3 ? clock - 1000 * h : 0;
    const double gauge = double((tick * 31 + uint64_t(h) * 7) % 101) - 40;
    add("g", "", {{"host", host}}, SampleKind::gauge,
        integers ? gauge : std::sin(double(tick) * 0.37 + h) * 100.3, ts);
    add("c", "_total", {{"host", host}}, SampleKind::counter,
        double((tick * uint64_t(h + 1)) % uint64_t(23 + h)) * scale, ts);
    add("mix", "", {{"host", host}}, h % 2 ? SampleKind::counter : SampleKind::gauge,
        h % 2 ? double(tick * 3) : gauge * scale, ts);
    const char* const bounds[] = {"0.1", "0.5", "1", "+Inf"};
    double cumulative = 0;
    for (int b = 0; b < 4; ++b) {
      cumulative += double((tick * (b + 1) + uint64_t(h)) % 7 + tick);
      add("lat", "_bucket", {{"host", host}, {"le", bounds[b]}}, SampleKind::bucket, cumulative, 0);
    }
    add("lat", "_sum", {{"host", host}}, SampleKind::counter, cumulative * (integers ? 3 : 0.37), 0);
    add("lat", "_count", {{"host", host}}, SampleKind::counter, cumulative, 0);
  }
  return t;
}

// A histogram's samples go by their family's key (le left out): its series needs its
// buckets and _sum in its own part.
uint32_t part_of(const Sample& s, uint32_t parts) {
  std::vector<Label> scratch, family;
  std::span<const Label> labels = sorted_sample_labels(s, scratch);
  std::string key;
  if (s.metric == "lat") {
    for (const Label& l : labels)
      if (l.name != "le") family.push_back(l);
    append_series_key(key, s.metric, {}, family);
  } else {
    append_series_key(key, s.metric, s.suffix, labels);
  }
  return common::partition_of(key, parts);
}

struct Fed {
  Aggregator whole{small_config()};
  std::vector<Aggregator> parts;
  int64_t now = 0;
};

// The same samples to one aggregator and, split by part_of(), to n; hosts 30..39 stop
// early, so that their series are stale or empty-windowed by the end.
void feed(Fed& f, uint32_t n, bool integers, uint64_t ticks = 16) {
  for (uint32_t p = 0; p < n; ++p) f.parts.emplace_back(small_config());
  std::vector<std::vector<Sample>> split(n);
  for (uint64_t tick = 1; tick <= ticks; ++tick) {
    f.now = kT0 + int64_t(tick) * kSec;
    Tick t = make_tick(tick, tick < 6 ? 40 : 30, f.now, integers);
    f.whole.apply(0, t.samples, f.now);
    for (auto& v : split) v.clear();
    for (const Sample& s : t.samples) split[part_of(s, n)].push_back(s);
    for (uint32_t p = 0; p < n; ++p) f.parts[p].apply(0, split[p], f.now);
  }
}

std::vector<AggregatorPart> parts_of(Fed& f) {
  std::vector<AggregatorPart> out;
  for (uint32_t p = 0; p < f.parts.size(); ++p) out.push_back(AggregatorPart{&f.parts[p], f.now, p});
  return out;
}

std::vector<std::string> metric_names(const shm::SnapshotView& v) {
  std::vector<std::string> out;
  for (std::string_view name : v.list_names())
    if (name.starts_with(kMetricPrefix)) out.emplace_back(name.substr(kMetricPrefix.size()));
  return out;
}

std::vector<std::string> keys_of(const std::vector<shm::Record>& records) {
  std::vector<std::string> out;
  for (const shm::Record& r : records) out.emplace_back(r.key);
  return out;
}

// What a coordinator does: every partition's partial of the metric, merged in
// partition order, rendered.
std::string merged_body(const shm::SnapshotView& v, uint32_t partitions, std::string_view metric) {
  RollupPartial merged;
  for (uint32_t p = 0; p < partitions; ++p) {
    std::optional<std::string_view> bytes = v.find(partial_record_key(p, metric));
    if (!bytes) continue;  // no series of the metric in p
    merge_rollup_partial(merged, decode_rollup_partial(*bytes));
  }
  std::string body;
  render_merged_metric(body, metric, merged);
  return body;
}

void check_merged_bodies(bool integers) {
  for (uint32_t n : {1u, 3u, 8u}) {
    INFO("parts " << n << (integers ? ", integers" : ", fractions"));
    Fed f;
    feed(f, n, integers);
    shm::SnapshotBuilder want, got;
    f.whole.build(want, f.now);
    std::vector<AggregatorPart> given = parts_of(f);
    build_parts(got, given, BuildPartsOptions{.partition_views = true});
    const std::vector<std::byte> want_bytes = want.serialize(1, 0), got_bytes = got.serialize(1, 0);
    shm::SnapshotView w(want_bytes), g(got_bytes);
    const std::vector<std::string> metrics = metric_names(w);
    REQUIRE(metrics.size() >= 4);
    for (const std::string& metric : metrics) {
      INFO(metric);
      std::optional<std::string_view> body = w.find(metric_record_key(metric));
      REQUIRE(body);
      CHECK(merged_body(g, n, metric) == *body);
    }
  }
}

// Lines of a Prometheus text that start with prefix.
size_t lines(const std::string& text, std::string_view prefix) {
  size_t n = 0;
  for (size_t at = 0; (at = text.find(prefix, at)) != std::string::npos; at += prefix.size())
    n += at == 0 || text[at - 1] == '\n';
  return n;
}

}  // namespace

TEST_CASE("rollup partials: merged over partitions they render the single aggregator's m: body byte for byte (integer values; P = 1 3 8)") {
  check_merged_bodies(true);
}

// Beyond what float sums promise: the merge folds the series again in key order, so the
// sums come out in the node's order too.
TEST_CASE("rollup partials: with fractional values the merged body is still the single aggregator's") {
  check_merged_bodies(false);
}

TEST_CASE("rollup partials: each part's lists hold exactly its series, sorted, and name its partials by metric") {
  Fed f;
  feed(f, 4, true);
  shm::SnapshotBuilder got;
  std::vector<AggregatorPart> given = parts_of(f);
  std::swap(given[0].partition, given[3].partition);  // numbers are the parts' own
  build_parts(got, given, BuildPartsOptions{.partition_views = true});
  const std::vector<std::byte> bytes = got.serialize(1, 0);
  shm::SnapshotView g(bytes);
  size_t listed = 0;
  for (const AggregatorPart& part : given) {
    shm::SnapshotBuilder alone_builder;
    part.aggregator->build(alone_builder, f.now);
    const std::vector<std::byte> alone_bytes = alone_builder.serialize(1, 0);
    shm::SnapshotView alone(alone_bytes);
    std::vector<std::string> partials;
    for (const std::string& metric : metric_names(alone)) {
      INFO("partition " << part.partition << " " << metric);
      const std::vector<std::string> mine = keys_of(g.list(partition_metric_list_key(part.partition, metric)));
      CHECK(mine == keys_of(alone.list(metric_record_key(metric))));
      CHECK(std::is_sorted(mine.begin(), mine.end()));
      std::optional<std::string_view> partial = g.find(partial_record_key(part.partition, metric));
      REQUIRE(partial);
      CHECK(rollup_partial_series_count(*partial) == mine.size());
      CHECK(decode_rollup_partial(*partial).series_count() == mine.size());
      partials.push_back(partial_record_key(part.partition, metric));
      listed += mine.size();
    }
    CHECK(keys_of(g.list(partition_list_key(part.partition))) == partials);
  }
  CHECK(listed == g.list(kSeriesList).size());
  CHECK(g.list(partition_list_key(9)).empty());
}

TEST_CASE("rollup partials: prom holds only the exporting parts' series, and rollups only without views when every part exports") {
  Fed f;
  feed(f, 3, true);
  std::vector<AggregatorPart> given = parts_of(f);
  size_t metrics = 0;
  auto prom_of = [&](std::vector<AggregatorPart> parts, bool views = true) {
    shm::SnapshotBuilder b;
    build_parts(b, parts, BuildPartsOptions{.partition_views = views});
    const std::vector<std::byte> bytes = b.serialize(1, 0);
    metrics = metric_names(shm::SnapshotView(bytes)).size();
    return std::string(*shm::SnapshotView(bytes).find(kPromRecord));
  };
  const std::string all = prom_of(given, false);  // the build expires: series_count() after it
  CHECK(lines(all, "telemetry_series_samples{") ==
        f.parts[0].series_count() + f.parts[1].series_count() + f.parts[2].series_count());
  CHECK(lines(all, "telemetry_metric_series{") == metrics);
  CHECK(metrics >= 4);
  const std::string viewed = prom_of(given);  // a partitioned node: no rollup, every series
  CHECK(lines(viewed, "telemetry_metric_") == 0);
  CHECK(lines(viewed, "telemetry_series_samples{") == lines(all, "telemetry_series_samples{"));
  given[1].prometheus = false;
  const std::string some = prom_of(given);
  CHECK(lines(some, "telemetry_series_samples{") ==
        f.parts[0].series_count() + f.parts[2].series_count());
  CHECK(lines(some, "telemetry_metric_") == 0);
  CHECK(some.find("# TYPE telemetry_metric_series gauge\n") != std::string::npos);  // empty families
  for (AggregatorPart& p : given) p.prometheus = false;
  CHECK(lines(prom_of(given), "telemetry_series_") == 0);
}

TEST_CASE("rollup partials: views off give today's bytes, and views on change no record of them but prom's rollups") {
  Fed f;
  feed(f, 3, true);
  shm::SnapshotBuilder want, off, on;
  f.whole.build(want, f.now);
  std::vector<AggregatorPart> given = parts_of(f);
  build_parts(off, given, BuildPartsOptions{});
  CHECK(off.serialize(1, 0) == want.serialize(1, 0));
  build_parts(on, given, BuildPartsOptions{.partition_views = true});
  const std::vector<std::byte> want_bytes = want.serialize(1, 0), on_bytes = on.serialize(1, 0);
  shm::SnapshotView w(want_bytes), o(on_bytes);
  for (size_t i = 0; i < w.record_count(); ++i) {
    std::optional<shm::Record> r = w.record(i);
    REQUIRE(r);
    if (r->key == kPromRecord) continue;  // below
    CHECK(o.find(r->key) == std::optional<std::string_view>(r->value));
  }
  // A partitioned node (views on) exports no rollup: other nodes hold the metric's
  // other partitions, and a scrape of every node would count them more than once.
  const std::string prom_on(*o.find(kPromRecord)), prom_want(*w.find(kPromRecord));
  CHECK(lines(prom_want, "telemetry_metric_") > 0);
  CHECK(lines(prom_on, "telemetry_metric_") == 0);
  CHECK(lines(prom_on, "telemetry_series_") == lines(prom_want, "telemetry_series_"));
  for (std::string_view name : w.list_names()) CHECK(keys_of(o.list(name)) == keys_of(w.list(name)));
  // The parts given in another order: the same bytes.
  std::swap(given[0], given[2]);
  shm::SnapshotBuilder swapped;
  build_parts(swapped, given, BuildPartsOptions{.partition_views = true});
  CHECK(swapped.serialize(1, 0) == on_bytes);
  given[0].partition = given[1].partition;
  CHECK_THROWS_WITH(build_parts(swapped, given, BuildPartsOptions{.partition_views = true}),
                    Catch::Contains("one partition number"));
}

TEST_CASE("rollup partials: bad bytes are refused with a reason - a merge that cannot be is refused, nothing changed") {
  Fed f;
  feed(f, 2, true, 8);
  shm::SnapshotBuilder got;
  std::vector<AggregatorPart> given = parts_of(f);
  build_parts(got, given, BuildPartsOptions{.partition_views = true});
  const std::vector<std::byte> bytes = got.serialize(1, 0);
  shm::SnapshotView g(bytes);
  const std::string good(*g.find(partial_record_key(0, "lat")));
  const RollupPartial lat0 = decode_rollup_partial(good);
  std::string again;
  encode_rollup_partial(again, lat0);
  CHECK(again == good);
  for (size_t cut = 0; cut < good.size(); ++cut)
    CHECK_THROWS_AS(decode_rollup_partial(std::string_view(good).substr(0, cut)), std::invalid_argument);
  CHECK_THROWS_WITH(decode_rollup_partial(good + "x"), Catch::Contains("after the series"));
  std::string v2 = good;
  v2[0] = 2;
  CHECK_THROWS_WITH(decode_rollup_partial(v2), Catch::Contains("version 2"));
  CHECK_THROWS_WITH(rollup_partial_series_count(v2), Catch::Contains("version 2"));
  RollupPartial swapped = lat0;
  REQUIRE(swapped.series.size() >= 2);
  std::swap(swapped.series[0], swapped.series[1]);
  std::string unordered;
  encode_rollup_partial(unordered, swapped);
  CHECK_THROWS_WITH(decode_rollup_partial(unordered), Catch::Contains("is not after"));

  RollupPartial into = lat0;
  CHECK_THROWS_WITH(merge_rollup_partial(into, lat0), Catch::Contains("is in both partials"));
  RollupPartial other = decode_rollup_partial(*g.find(partial_record_key(1, "lat")));
  other.window_s = 20;
  CHECK_THROWS_WITH(merge_rollup_partial(into, other), Catch::Contains("windows of"));
  std::string unchanged;
  encode_rollup_partial(unchanged, into);
  CHECK(unchanged == good);
}
