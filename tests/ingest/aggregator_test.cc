// aggregator_test.cc: window aggregates against an exact reference, expiry, dedup,
// staleness, limits, and the snapshot the build produces.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include <fmt/format.h>

#include "ingest/ingest.h"
#include "ingest/window/ordered_chunks.h"
#include "test_util.h"

using namespace ingest;
using namespace ingest_test;

namespace {

// Owns the label storage that Sample views point into.
struct Batch {
  std::vector<std::vector<Label>> labels;
  std::vector<Sample> samples;
  void add(std::string_view metric, std::vector<Label> l, double value, int64_t ts_ns) {
    labels.push_back(std::move(l));
    samples.push_back(Sample{metric, "", {}, {}, value, ts_ns});
  }
  std::span<const Sample> view() {
    for (size_t i = 0; i < samples.size(); ++i) samples[i].labels = labels[i];
    return samples;
  }
};

struct Point {
  int64_t ts;
  double value;
};

Aggregate reference(const std::vector<Point>& points) {
  Aggregate a;
  a.count = points.size();
  a.min = a.max = points.front().value;
  for (const Point& p : points) {
    a.sum += p.value;
    a.min = std::min(a.min, p.value);
    a.max = std::max(a.max, p.value);
  }
  a.first = points.front().value;
  a.last = points.back().value;
  a.first_ts_ns = points.front().ts;
  a.last_ts_ns = points.back().ts;
  std::vector<double> sorted;
  for (const Point& p : points) sorted.push_back(p.value);
  std::sort(sorted.begin(), sorted.end());
  auto q = [&](double p) { return sorted[static_cast<size_t>(p * double(sorted.size() - 1))]; };
  a.p50 = q(0.5);
  a.p90 = q(0.9);
  a.p99 = q(0.99);
  return a;
}

void check_close(const Aggregate& got, const Aggregate& want) {
  CHECK(got.count == want.count);
  CHECK(got.sum == Approx(want.sum).epsilon(1e-12));
  CHECK(got.min == want.min);
  CHECK(got.max == want.max);
  CHECK(got.mean() == Approx(want.mean()).epsilon(1e-12));
  CHECK(got.first == want.first);
  CHECK(got.last == want.last);
  CHECK(got.first_ts_ns == want.first_ts_ns);
  CHECK(got.last_ts_ns == want.last_ts_ns);
  REQUIRE(got.rate().has_value() == want.rate().has_value());
  if (want.rate()) CHECK(*got.rate() == Approx(*want.rate()).epsilon(1e-12));
  CHECK(std::abs(got.p50 - want.p50) <= 0.01 * std::abs(want.p50));
  CHECK(std::abs(got.p90 - want.p90) <= 0.01 * std::abs(want.p90));
  CHECK(std::abs(got.p99 - want.p99) <= 0.01 * std::abs(want.p99));
}

shm::SnapshotView view_of(const std::vector<std::byte>& bytes) {
  return shm::SnapshotView(std::span<const std::byte>(bytes));
}

}  // namespace

TEST_CASE("aggregates match an exact reference on generated data") {
  Config config = small_config();  // 1 s interval, 10 s window
  Aggregator agg(config);
  std::mt19937_64 rng(1234);
  std::normal_distribution<double> noise(0, 20);
  const int series = 50;
  std::map<std::string, std::vector<Point>> truth;
  std::map<std::string, std::vector<Point>> metric_truth;
  std::vector<std::string> hosts;
  for (int h = 0; h < series; ++h) hosts.push_back(fmt::format("h{}", h));
  // 8 fetches, 1 s apart, each with 1-20 samples per series at increasing ts.
  int64_t now = kT0;
  for (int tick = 0; tick < 8; ++tick, now += kSec) {
    Batch batch;
    for (int h = 0; h < series; ++h) {
      int n = 1 + static_cast<int>(rng() % 20);
      for (int i = 0; i < n; ++i) {
        int64_t ts = now - kSec + (i + 1) * (kSec / 25);
        double v = noise(rng) + (h % 2 ? 100 : -5);
        batch.add("lat", {{"host", hosts[h]}}, v, ts);
        truth[make_series_key("lat", std::vector<Label>{{"host", hosts[h]}})].push_back({ts, v});
        metric_truth["lat"].push_back({ts, v});
      }
    }
    ApplyStats st = agg.apply(0, batch.view(), now);
    CHECK(st.dropped() == 0);
  }
  for (const auto& [key, points] : truth) {
    INFO(key);
    auto got = agg.series(key);
    REQUIRE(got);
    check_close(*got, reference(points));
  }
  // The rollup: first / last are the earliest / latest samples of any series.
  auto& all = metric_truth["lat"];
  std::stable_sort(all.begin(), all.end(), [](const Point& a, const Point& b) { return a.ts < b.ts; });
  auto rollup = agg.metric("lat");
  REQUIRE(rollup);
  Aggregate want = reference(all);
  CHECK(rollup->count == want.count);
  CHECK(rollup->sum == Approx(want.sum).epsilon(1e-9));
  CHECK(rollup->min == want.min);
  CHECK(rollup->max == want.max);
  CHECK(rollup->first_ts_ns == want.first_ts_ns);
  CHECK(rollup->last_ts_ns == want.last_ts_ns);
  CHECK(std::abs(rollup->p50 - want.p50) <= 0.01 * std::abs(want.p50));
  CHECK(std::abs(rollup->p99 - want.p99) <= 0.01 * std::abs(want.p99));
}

TEST_CASE("polling an unchanged body twice never double counts") {
  Aggregator agg(small_config());
  Parser parser;
  std::string body = read_file(data_path("good/native.json"));
  // The file's one timestamped sample is at kT0 + 0.123 s.
  REQUIRE(parser.parse(body).ok);
  ApplyStats first = agg.apply(0, parser.samples(), kT0 + kSec);
  CHECK(first.accepted == 3);
  ApplyStats again = agg.apply(0, parser.samples(), kT0 + kSec);
  CHECK(again.duplicate == 3);  // the two without ts get the same fetch time again
  CHECK(again.accepted == 0);
  ApplyStats later = agg.apply(0, parser.samples(), kT0 + 2 * kSec);
  CHECK(later.duplicate == 1);  // the timestamped one
  CHECK(later.accepted == 2);   // no ts: the new fetch time makes them new samples
  CHECK(agg.series("cpu.temp{dc=\"eu\",host=\"h1\"}")->count == 1);
  CHECK(agg.series("up")->count == 2);
}

TEST_CASE("samples too old / too far in the future / or out of order are dropped") {
  Aggregator agg(small_config());
  Batch b;
  b.add("m", {}, 1, kT0 - 11 * kSec);             // older than the 10 s window
  b.add("m", {}, 2, kT0 + 301 * kSec);            // > 5 min ahead
  b.add("m", {}, 3, kT0);                         // good
  b.add("m", {}, 4, kT0 - kSec);                  // older than the last accepted
  b.add("m", {}, 5, kT0 + 299 * kSec);            // ahead, but within 5 min
  ApplyStats st = agg.apply(0, b.view(), kT0);
  CHECK(st.too_old == 1);
  CHECK(st.too_new == 1);
  CHECK(st.duplicate == 1);
  CHECK(st.accepted == 2);
  CHECK(st.dropped() == 3);
}

TEST_CASE("the window slides: old buckets leave / then the series expires") {
  Config c = small_config();  // window 10 s, expire 10 s, stale 3 s
  Aggregator agg(c);
  for (int i = 0; i < 5; ++i) {
    Batch b;
    b.add("m", {}, i, kT0 + i * kSec);
    agg.apply(0, b.view(), kT0 + i * kSec);
  }
  CHECK(agg.series("m")->count == 5);
  // At kT0 + 12.5 s the window starts at kT0 + 2.5 s: the samples at 0, 1, 2 left.
  agg.expire(kT0 + 12 * kSec + kSec / 2);
  auto a = agg.series("m");
  REQUIRE(a);
  CHECK(a->count == 2);
  CHECK(a->first == 3);
  CHECK(a->min == 3);
  // Last seen at kT0 + 4 s: expired once 10 s have passed without a sample.
  agg.expire(kT0 + 14 * kSec);
  CHECK_FALSE(agg.series("m"));
  CHECK(agg.series_count() == 0);
}

// A sample stamped after the tick that took it (a pusher's clock ahead of the
// leader's): its series lives while that sample is in the window, not only for
// expire_after from the tick.
TEST_CASE("a series whose sample is newer than its fetch expires by that sample's time") {
  Config c = small_config();  // window 10 s, expire 10 s, stale 3 s
  Aggregator agg(c);
  Batch b;
  b.add("m", {}, 1, kT0 + 3 * kSec);
  agg.apply(0, b.view(), kT0);
  agg.expire(kT0 + 11 * kSec);  // 11 s after the fetch, 8 s after the sample
  auto a = agg.series("m");
  REQUIRE(a);
  CHECK(a->count == 1);
  agg.expire(kT0 + 13 * kSec);  // 10 s after the sample: gone with it
  CHECK_FALSE(agg.series("m"));
}

TEST_CASE("a new interval re-slices the newest bucket: it fills to the end of its new interval") {
  // Two samples 2.5 s apart. The window drops whole buckets, so whether they share one
  // shows in what is left once the first one's time has left the window.
  for (bool longer : {false, true}) {
    Config c = small_config();  // interval 1 s, window 10 s
    Aggregator agg(c);
    Batch first;
    first.add("m", {}, 1, kT0 + kSec / 2);
    agg.apply(0, first.view(), kT0 + kSec);
    if (longer) {
      c.interval = std::chrono::milliseconds(5000);
      agg.reconfigure(c);
    }
    Batch second;
    second.add("m", {}, 2, kT0 + 3 * kSec);
    agg.apply(0, second.view(), kT0 + 3 * kSec);
    agg.expire(kT0 + 11 * kSec);  // the window starts at kT0 + 1 s
    INFO("interval " << (longer ? "5 s" : "1 s"));
    REQUIRE(agg.series("m"));
    CHECK(agg.series("m")->count == (longer ? 2u : 1u));
  }
}

TEST_CASE("staleness marks a series without new samples for stale_after") {
  Aggregator agg(small_config());
  Batch b;
  b.add("m", {}, 1, 0);
  agg.apply(0, b.view(), kT0);
  shm::SnapshotBuilder builder;
  agg.build(builder, kT0 + 2 * kSec);
  auto fresh = builder.serialize(1, 0);
  CHECK(view_of(fresh).find("s:m")->find("\"stale\":false}") != std::string_view::npos);
  agg.build(builder, kT0 + 3 * kSec);
  auto stale = builder.serialize(2, 0);
  CHECK(view_of(stale).find("s:m")->find("\"stale\":true}") != std::string_view::npos);
}

TEST_CASE("series limits: global and per source") {
  Config c = small_config();
  c.max_series = 5;
  c.max_series_per_source = 3;
  Aggregator agg(c);
  std::vector<std::string> names;
  for (int i = 0; i < 10; ++i) names.push_back(fmt::format("m{}", i));
  auto batch_of = [&](int from, int to) {
    Batch b;
    for (int i = from; i < to; ++i) b.add(names[i], {}, 1, 0);
    return b;
  };
  Batch b0 = batch_of(0, 5);
  ApplyStats s0 = agg.apply(0, b0.view(), kT0);
  CHECK(s0.accepted == 3);
  CHECK(s0.over_limit == 2);
  Batch b1 = batch_of(5, 10);
  ApplyStats s1 = agg.apply(1, b1.view(), kT0);
  CHECK(s1.accepted == 2);  // global limit 5
  CHECK(s1.over_limit == 3);
  CHECK(agg.series_count() == 5);
  CHECK(agg.series_count(0) == 3);
  // Existing series still take samples at the limit.
  Batch again = batch_of(0, 3);
  CHECK(agg.apply(0, again.view(), kT0 + kSec).accepted == 3);
  agg.forget_source(0);
  CHECK(agg.series_count() == 2);
  CHECK(agg.series_count(0) == 0);
}

TEST_CASE("negative values and zeros aggregate correctly") {
  Aggregator agg(small_config());
  Batch b;
  const double values[] = {-5, 0, 0, -1, 3, 0, -2};
  for (size_t i = 0; i < std::size(values); ++i)
    b.add("t", {}, values[i], kT0 - 1000 + static_cast<int64_t>(i));
  agg.apply(0, b.view(), kT0);
  auto a = agg.series("t");
  REQUIRE(a);
  CHECK(a->min == -5);
  CHECK(a->max == 3);
  CHECK(a->p50 == 0);
  CHECK(a->sum == -5);
}

TEST_CASE("build: records / lists and bodies follow the key conventions") {
  Aggregator agg(small_config());
  Parser parser;
  REQUIRE(parser.parse(read_file(data_path("good/native.json"))).ok);
  agg.apply(0, parser.samples(), kT0 + kSec);
  REQUIRE(parser.parse(read_file(data_path("good/otlp.json"))).ok);
  agg.apply(1, parser.samples(), kT0 + kSec);
  shm::SnapshotBuilder builder;
  agg.build(builder, kT0 + kSec);
  auto bytes = builder.serialize(1, 0);
  shm::SnapshotView view = view_of(bytes);
  REQUIRE(view.verify());

  auto all = view.list(kSeriesList);
  REQUIRE(all.size() == agg.series_count());
  for (size_t i = 1; i < all.size(); ++i) CHECK(all[i - 1].key < all[i].key);
  for (const shm::Record& r : all) {
    CHECK(r.key.substr(0, 2) == "s:");
    CHECK(r.value.rfind("{\"key\":", 0) == 0);
  }
  auto s = view.find(series_record_key("cpu.temp{dc=\"eu\",host=\"h1\"}"));
  REQUIRE(s);
  CHECK(*s ==
        "{\"key\":\"cpu.temp{dc=\\\"eu\\\",host=\\\"h1\\\"}\",\"metric\":\"cpu.temp\","
        "\"labels\":{\"dc\":\"eu\",\"host\":\"h1\"},\"window_s\":10,\"count\":1,\"sum\":71.5,"
        "\"min\":71.5,\"max\":71.5,\"mean\":71.5,\"first\":71.5,\"last\":71.5,"
        "\"first_ts\":1732700000.123,\"last_ts\":1732700000.123,\"rate\":null,\"p50\":71.5,"
        "\"p90\":71.5,\"p99\":71.5,\"stale\":false}");

  auto m = view.find(metric_record_key("cpu.temp"));
  REQUIRE(m);
  CHECK(m->find("\"count\":2,\"sum\":136.5,\"min\":65,\"max\":71.5") != std::string_view::npos);
  CHECK(m->find("\"series_count\":2,\"series\":[\"cpu.temp{dc=\\\"eu\\\",host=\\\"h1\\\"}\","
                "\"cpu.temp{dc=\\\"eu\\\",host=\\\"h2\\\"}\"]}") != std::string_view::npos);
  auto ml = view.list(metric_record_key("cpu.temp"));
  REQUIRE(ml.size() == 2);
  CHECK(ml[0].key == "s:cpu.temp{dc=\"eu\",host=\"h1\"}");

  auto metrics = view.find(kMetricsRecord);
  REQUIRE(metrics);
  CHECK(metrics->rfind("{\"metrics\":[{\"metric\":\"cpu.temp\",\"series_count\":2},", 0) == 0);
  CHECK(metrics->find("{\"metric\":\"http.server.duration_count\",\"series_count\":1}") !=
        std::string_view::npos);

  auto prom = view.find(kPromRecord);
  REQUIRE(prom);
  CHECK(prom->find("telemetry_metric_series{metric=\"cpu.temp\"} 2\n") != std::string_view::npos);
  CHECK(prom->find("telemetry_series_last{metric=\"up\"} 1\n") != std::string_view::npos);
}

TEST_CASE("per-series Prometheus gauges stop at prom_series_limit") {
  Config c = small_config();
  c.prom_series_limit = 2;
  Aggregator agg(c);
  Batch b;
  b.add("a", {}, 1, 0);
  b.add("b", {}, 1, 0);
  agg.apply(0, b.view(), kT0);
  shm::SnapshotBuilder builder;
  agg.build(builder, kT0);
  auto bytes = builder.serialize(1, 0);
  auto prom = view_of(bytes).find(kPromRecord);
  REQUIRE(prom);
  CHECK(prom->find("telemetry_series_") == std::string_view::npos);
  CHECK(prom->find("telemetry_metric_last{metric=\"a\"} 1\n") != std::string_view::npos);
}

TEST_CASE("a bad body after a good one keeps the earlier data") {
  Aggregator agg(small_config());
  Parser parser;
  REQUIRE(parser.parse(read_file(data_path("good/native.json"))).ok);
  agg.apply(0, parser.samples(), kT0 + kSec);
  size_t before = agg.series_count();
  for (const char* bad : {"bad/truncated.json", "bad/invalid_utf8.json", "bad/not_json.txt"}) {
    ParseResult r = parser.parse(read_file(data_path(bad)));
    CHECK_FALSE(r.ok);
    agg.apply(0, parser.samples(), kT0 + 2 * kSec);  // nothing to apply
  }
  CHECK(agg.series_count() == before);
  CHECK(agg.series("up")->count == 1);
}

TEST_CASE("many series: index growth / sorted build order / compaction") {
  Aggregator agg(small_config());
  std::vector<std::string> names;
  for (int i = 0; i < 5000; ++i) names.push_back(fmt::format("m{}", (i * 7919) % 5000));
  Batch b;
  for (const auto& n : names) b.add(n, {{"k", "v"}}, 1, 0);
  CHECK(agg.apply(0, b.view(), kT0).accepted == 5000);
  Batch half;
  for (size_t i = 0; i < names.size(); i += 2) half.add(names[i], {{"k", "v"}}, 2, 0);
  agg.apply(0, half.view(), kT0 + 5 * kSec);
  agg.expire(kT0 + 10 * kSec);  // the other half expires
  CHECK(agg.series_count() == 2500);
  for (size_t i = 0; i < names.size(); ++i) {
    auto a = agg.series(make_series_key(names[i], std::vector<Label>{{"k", "v"}}));
    CHECK(a.has_value() == (i % 2 == 0));
  }
  shm::SnapshotBuilder builder;
  agg.build(builder, kT0 + 10 * kSec);
  auto bytes = builder.serialize(1, 0);
  auto all = view_of(bytes).list(kSeriesList);
  REQUIRE(all.size() == 2500);
  CHECK(std::is_sorted(all.begin(), all.end(),
                       [](const shm::Record& x, const shm::Record& y) { return x.key < y.key; }));
  CHECK(agg.memory_bytes() > 0);
}

// A body without guesses (a source's first, or the first entry after a restore, whose
// state has no positions) has its keys rendered and looked up ahead of the sample being
// applied; a body in another order has wrong guesses. Either way each sample must land
// on its own series, and a restored state end up as the one that was never saved.
TEST_CASE("bodies without guesses or in a new order: every sample lands on its own series") {
  std::vector<std::string> names;
  for (int i = 0; i < 300; ++i) names.push_back(fmt::format("g{}", i));
  const std::vector<Label> labels{{"k", "v"}};
  Aggregator a(small_config());
  Batch first;
  for (int i = 0; i < 300; ++i) first.add(names[i], labels, i, kT0);
  CHECK(a.apply(0, first.view(), kT0).accepted == 300);
  std::string saved;
  a.save(saved);
  Aggregator b(small_config());
  b.load(saved);

  // Reversed, with new series, an old sample and a key twice in between.
  const int64_t t1 = kT0 + 2 * kSec;
  std::vector<std::string> more;
  for (int i = 0; i < 40; ++i) more.push_back(fmt::format("new{}", i));
  Batch second;
  for (int i = 299; i >= 0; --i) {
    second.add(names[i], labels, 1000 + i, t1);
    if (i % 50 == 0) second.add(more[i / 50], labels, -i, t1);
    if (i == 150) second.add(names[3], labels, 5, kT0 - 60 * kSec);  // too old
    if (i == 100) second.add(names[299], labels, 7, t1);               // again: a duplicate
  }
  for (int i = 10; i < 40; ++i) second.add(more[i], labels, i, t1);
  ApplyStats sa = a.apply(0, second.view(), t1);
  ApplyStats sb = b.apply(0, second.view(), t1);
  CHECK(sa.accepted == 300 + 6 + 30);
  CHECK(sa.too_old == 1);
  CHECK(sa.duplicate == 1);
  CHECK(sb.accepted == sa.accepted);
  CHECK(sb.too_old == sa.too_old);
  CHECK(sb.duplicate == sa.duplicate);
  for (Aggregator* agg : {&a, &b}) {
    for (int i = 0; i < 300; ++i) {
      auto got = agg->series(make_series_key(names[i], labels));
      REQUIRE(got.has_value());
      CHECK(got->count == 2);
      CHECK(got->last == 1000 + i);
    }
    auto added = agg->series(make_series_key(more[25], labels));
    REQUIRE(added.has_value());
    CHECK(added->last == 25);
  }
  std::string saved_a, saved_b;
  a.save(saved_a);
  b.save(saved_b);
  CHECK(saved_a == saved_b);
}

// Buckets of one sample are kept in a compact form and widen at their second sample; a
// checkpoint spells every bucket out, and load() picks the form again. Whatever the
// forms, the aggregates, the checkpoint and the snapshot must be the same.
TEST_CASE("one-sample and wide buckets: aggregates and checkpoints agree across save and load") {
  Aggregator a(small_config());
  auto apply = [](Aggregator& agg, double value, int64_t ts) {
    Batch b;
    b.add("m", {{"k", "v"}}, value, ts);
    b.add("c_total", {{"k", "v"}}, value < 0 ? 1 : value, ts);  // a gauge and a counter
    REQUIRE(agg.apply(0, b.view(), ts).accepted == 2);
  };
  // Interval 0: -0.0 alone (a sum from 0 holds +0.0). Interval 1: three samples.
  // Interval 2: one, which widens after the load.
  apply(a, -0.0, kT0 + kSec / 4);
  apply(a, 5, kT0 + kSec + kSec / 4);
  apply(a, -2, kT0 + kSec + kSec / 2);
  apply(a, 5, kT0 + kSec + 3 * kSec / 4);
  apply(a, 7.5, kT0 + 2 * kSec + kSec / 4);
  std::string saved;
  a.save(saved);
  Aggregator b(small_config());
  b.load(saved);
  std::string again;
  b.save(again);
  CHECK(again == saved);
  apply(a, 9, kT0 + 2 * kSec + kSec / 2);
  apply(b, 9, kT0 + 2 * kSec + kSec / 2);
  const std::string key = make_series_key("m", std::vector<Label>{{"k", "v"}});
  auto got = b.series(key), want = a.series(key);
  REQUIRE(got.has_value());
  REQUIRE(want.has_value());
  CHECK(want->count == 6);
  CHECK(want->sum == 24.5);
  CHECK(want->min == -2);
  CHECK(want->max == 9);
  CHECK(std::signbit(want->first));
  CHECK(want->last == 9);
  CHECK(got->count == want->count);
  CHECK(got->sum == want->sum);
  CHECK(got->p50 == want->p50);
  CHECK(got->p99 == want->p99);
  std::string saved_a, saved_b;
  a.save(saved_a);
  b.save(saved_b);
  CHECK(saved_a == saved_b);
  shm::SnapshotBuilder ba, bb;
  a.build(ba, kT0 + 3 * kSec);
  b.build(bb, kT0 + 3 * kSec);
  CHECK(ba.serialize(1, 0) == bb.serialize(1, 0));
  // The window slides past the three-sample interval: its bins go with it.
  a.build(ba, kT0 + 12 * kSec + kSec / 3);
  auto left = a.series(key);
  REQUIRE(left.has_value());
  CHECK(left->count == 2);
  CHECK(left->min == 7.5);
  CHECK(left->p50 == Approx(7.5).epsilon(0.01));
}

// The build renders series bodies on writer_threads threads; a cluster's nodes compare
// snapshots byte for byte, so the bytes must not depend on the count.
TEST_CASE("build: the same state gives the same snapshot bytes whatever writer_threads") {
  // Gauges, counters with resets and histograms, several chunks of series, buckets of
  // one sample and of several (ticks every 0.5 s of 1 s intervals, some series skipped).
  auto body = [](int tick) {
    std::string out = "# TYPE g gauge\n";
    for (int i = 0; i < 1500; ++i)
      if (tick % 2 == 0 || i % 3 == 0)
        fmt::format_to(std::back_inserter(out), "g{{h=\"{}\"}} {}\n", i, (i * 37 + tick * 11) % 101 - 50.5);
    out += "# TYPE c counter\n";
    for (int i = 0; i < 1500; ++i)
      fmt::format_to(std::back_inserter(out), "c_total{{h=\"{}\"}} {}\n", i, (i + tick * 7) % 40);
    out += "# TYPE rq histogram\n";
    for (int i = 0; i < 200; ++i) {
      double base = tick * (i % 5 + 1);
      fmt::format_to(std::back_inserter(out),
                     "rq_bucket{{h=\"{0}\",le=\"0.1\"}} {1}\nrq_bucket{{h=\"{0}\",le=\"1\"}} {2}\n"
                     "rq_bucket{{h=\"{0}\",le=\"+Inf\"}} {3}\nrq_sum{{h=\"{0}\"}} {4}\n"
                     "rq_count{{h=\"{0}\"}} {3}\n",
                     i, base, base * 2, base * 3, base * 0.7);
    }
    return out;
  };
  std::vector<std::vector<std::byte>> snapshots;
  for (size_t threads : {1, 2, 3, 5}) {
    Config config = small_config();
    config.writer_threads = threads;
    Aggregator agg(config);
    Parser parser;
    shm::SnapshotBuilder builder;
    int64_t now = kT0;
    // 12 s of a 10 s window: buckets and resets leave it; the last builds are compared.
    for (int tick = 0; tick < 24; ++tick) {
      now += kSec / 2;
      ParseResult r = parser.parse(body(tick), "text/plain; version=0.0.4");
      REQUIRE(r.ok);
      agg.apply(0, parser.samples(), now);
      if (tick >= 22) agg.build(builder, now);
    }
    REQUIRE(agg.series_count() > 4 * 512);  // several chunks
    snapshots.push_back(builder.serialize(1, 0));
  }
  for (size_t i = 1; i < snapshots.size(); ++i) CHECK(snapshots[i] == snapshots[0]);
}

TEST_CASE("ordered chunks: consumed in order on any thread count - a consumer's throw stops the producers") {
  for (size_t threads : {1, 2, 3, 8}) {
    std::vector<size_t> slots, seen;
    run_ordered_chunks(
        100, threads, slots, [](size_t c, size_t& slot) { slot = c * 3; },
        [&](size_t c, const size_t& slot) {
          CHECK(slot == c * 3);
          seen.push_back(c);
        });
    CHECK(seen.size() == 100);
    CHECK(std::is_sorted(seen.begin(), seen.end()));
    seen.clear();
    CHECK_THROWS_AS(run_ordered_chunks(
                        100, threads, slots, [](size_t c, size_t& slot) { slot = c; },
                        [&](size_t c, const size_t&) {
                          if (c == 37) throw std::runtime_error("consumer failed");
                          seen.push_back(c);
                        }),
                    std::runtime_error);
    CHECK(seen.size() == 37);
  }
}
