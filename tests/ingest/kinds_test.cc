// kinds_test.cc: counters, histograms and summaries from Prometheus text through the
// aggregator: the counter-aware rate and its resets, histogram quantiles estimated from
// the buckets against a hand computation, rollups, a series twice in one body, and the
// bodies they render to.
#include <catch2/catch.hpp>

#include <cmath>

#include <fmt/format.h>

#include "ingest/ingest.h"
#include "test_util.h"

using namespace ingest;
using namespace ingest_test;

namespace {

constexpr std::string_view kText = "text/plain; version=0.0.4";

// Feeds one body per second, from kT0 + 1 s on.
struct Feed {
  Aggregator agg{small_config()};
  Parser parser;
  int64_t now = kT0;
  ApplyStats fetch(const std::string& body) {
    now += kSec;
    ParseResult r = parser.parse(body, kText);
    INFO(r.error);
    REQUIRE(r.ok);
    REQUIRE(r.rejected == 0);
    return agg.apply(0, parser.samples(), now);
  }
};

// One histogram's lines; `header` false leaves out its HELP and TYPE, for a second
// series of the same family in one body.
std::string histogram_body(const std::string& labels, double b01, double b05, double b1,
                           double inf, double sum, bool header = true) {
  std::string out = header ? "# HELP rq Request durations.\n# TYPE rq histogram\n" : "";
  std::string le = labels.empty() ? "" : labels + ",";
  fmt::format_to(std::back_inserter(out),
                 "rq_bucket{{{0}le=\"0.1\"}} {1}\nrq_bucket{{{0}le=\"0.5\"}} {2}\n"
                 "rq_bucket{{{0}le=\"1\"}} {3}\nrq_bucket{{{0}le=\"+Inf\"}} {4}\n"
                 "rq_sum{{{5}}} {6}\nrq_count{{{5}}} {4}\n",
                 le, b01, b05, b1, inf, labels, sum);
  return out;
}

}  // namespace

TEST_CASE("a counter's rate counts a decrease as a reset from 0") {
  Feed f;
  for (double v : {10.0, 20.0, 5.0, 15.0})  // reset after 20: 10 + 5 + 10 = 25 in 3 s
    f.fetch(fmt::format("# TYPE c counter\nc {}\n", v));
  Aggregate a = *f.agg.series("c");
  CHECK(a.kind == SampleKind::counter);
  CHECK(a.resets == 20);
  REQUIRE(a.rate());
  CHECK(*a.rate() == Approx(25.0 / 3));
  CHECK(a.last == 15);  // the values themselves are the counter's
  CHECK(a.min == 5);

  // The same values as a gauge: the rate is the plain change.
  Feed g;
  for (double v : {10.0, 20.0, 5.0, 15.0}) g.fetch(fmt::format("# TYPE c gauge\nc {}\n", v));
  CHECK(*g.agg.series("c")->rate() == Approx(5.0 / 3));
}

TEST_CASE("a counter reset that leaves the window no longer counts") {
  Feed f;  // window 10 s, interval 1 s
  f.fetch("# TYPE c counter\nc 100\n");
  f.fetch("# TYPE c counter\nc 4\n");  // reset at kT0 + 2 s
  for (int i = 0; i < 12; ++i) f.fetch(fmt::format("# TYPE c counter\nc {}\n", 4 + 2 * (i + 1)));
  f.agg.expire(f.now);
  Aggregate a = *f.agg.series("c");
  // The window now starts after the reset: a steady 2 per second.
  CHECK(a.resets == 0);
  CHECK(*a.rate() == Approx(2.0));
  // Two resets in a row inside the window: each adds back the value before it.
  f.fetch("# TYPE c counter\nc 1\n");
  f.fetch("# TYPE c counter\nc 0\n");
  a = *f.agg.series("c");
  CHECK(a.resets == 28 + 1);
  double span = static_cast<double>(a.last_ts_ns - a.first_ts_ns) / 1e9;
  CHECK(*a.rate() == Approx((a.last - a.first + 29) / span));
}

TEST_CASE("histogram quantiles are estimated from the window's bucket increases - checked by hand") {
  Feed f;
  f.fetch(histogram_body("path=\"/\"", 5, 10, 12, 12, 1.0));
  f.fetch(histogram_body("path=\"/\"", 15, 40, 52, 54, 20.5));
  // Increases over the window: le 0.1: 10, 0.5: 30, 1: 40, +Inf: 42; 19.5 seconds.
  auto h = f.agg.series("rq{path=\"/\"}");
  REQUIRE(h);
  CHECK(h->kind == SampleKind::histogram);
  CHECK(h->count == 42);
  CHECK(h->sum == Approx(19.5));
  CHECK(h->mean() == Approx(19.5 / 42));
  // p50: rank 21 in (0.1, 0.5], 11 of its 20: 0.1 + 0.4 * 11/20.
  CHECK(h->p50 == Approx(0.1 + 0.4 * 11 / 20));
  // p90: rank 37.8 in (0.5, 1], 7.8 of its 10.
  CHECK(h->p90 == Approx(0.5 + 0.5 * 7.8 / 10));
  // p99: rank 41.58 in the +Inf bucket: the highest finite bound.
  CHECK(h->p99 == 1);
  CHECK(*h->rate() == Approx(42.0));  // observations per second over the 1 s span
  CHECK(std::isnan(h->min));
  CHECK(std::isnan(h->last));
  // Its buckets, _sum and _count are counters of their own.
  CHECK(f.agg.series("rq_bucket{le=\"0.5\",path=\"/\"}")->kind == SampleKind::bucket);
  CHECK(*f.agg.series("rq_count{path=\"/\"}")->rate() == Approx(42.0));
  CHECK(f.agg.series("rq_sum{path=\"/\"}")->kind == SampleKind::counter);

  // A reset of the whole histogram (the exporter restarted) counts from 0.
  f.fetch(histogram_body("path=\"/\"", 1, 2, 2, 2, 0.5));
  h = f.agg.series("rq{path=\"/\"}");
  // Increases: 1 - 5 + 15 = 11, 2 - 10 + 40 = 32, 2 - 12 + 52 = 42, 2 - 12 + 54 = 44.
  CHECK(h->count == 44);
  CHECK(h->p90 == Approx(0.5 + 0.5 * (0.9 * 44 - 32) / 10));
}

TEST_CASE("histograms: one scrape gives no estimate - rollups sum the buckets of their series") {
  Feed f;
  f.fetch(histogram_body("path=\"/a\"", 0, 0, 0, 0, 0) +
          histogram_body("path=\"/b\"", 0, 0, 0, 0, 0, false));
  auto h = f.agg.series("rq{path=\"/a\"}");
  REQUIRE(h);
  CHECK(h->count == 0);
  CHECK(std::isnan(h->p50));
  CHECK_FALSE(h->rate());
  f.fetch(histogram_body("path=\"/a\"", 10, 10, 10, 10, 0.5) +
          histogram_body("path=\"/b\"", 0, 0, 10, 10, 8, false));
  // /a: all 10 in (0, 0.1]; /b: all 10 in (0.5, 1]. Together: 10 / 10 / 20 / 20.
  Aggregate m = *f.agg.metric("rq");
  CHECK(m.count == 20);
  CHECK(m.sum == Approx(8.5));
  CHECK(m.p50 == Approx(0.1));  // rank 10: the top of the first bucket
  CHECK(m.p90 == Approx(0.5 + 0.5 * 8 / 10));
  CHECK(*m.rate() == Approx(20.0));
  CHECK(f.agg.series("rq{path=\"/a\"}")->p50 == Approx(0.05));
}

TEST_CASE("a counter metric's rollup rate is the sum of its series' rates") {
  Feed f;
  f.fetch("# TYPE c counter\nc{cpu=\"0\"} 100\nc{cpu=\"1\"} 5\n");
  f.fetch("# TYPE c counter\nc{cpu=\"0\"} 101\nc{cpu=\"1\"} 7\n");
  f.fetch("# TYPE c counter\nc{cpu=\"0\"} 102.5\nc{cpu=\"1\"} 1\n");  // cpu 1 reset
  // cpu 0: 2.5 in 2 s; cpu 1: 2 + 1 in 2 s.
  CHECK(*f.agg.series("c{cpu=\"1\"}")->rate() == Approx(1.5));
  CHECK(*f.agg.metric("c")->rate() == Approx(1.25 + 1.5));
}

TEST_CASE("summaries keep their quantile series as gauges and _sum / _count as counters") {
  Feed f;
  std::string body =
      "# TYPE lat summary\nlat{quantile=\"0.5\"} 0.2\nlat{quantile=\"0.99\"} 0.9\n"
      "lat_sum 10\nlat_count 100\n";
  f.fetch(body);
  f.fetch("# TYPE lat summary\nlat{quantile=\"0.5\"} 0.3\nlat{quantile=\"0.99\"} 0.8\n"
          "lat_sum 12\nlat_count 110\n");
  auto q = f.agg.series("lat{quantile=\"0.5\"}");
  REQUIRE(q);
  CHECK(q->kind == SampleKind::gauge);
  CHECK(q->last == 0.3);
  CHECK(*f.agg.series("lat_count")->rate() == Approx(10.0));
  CHECK(f.agg.series("lat_sum")->kind == SampleKind::counter);
  CHECK_FALSE(f.agg.series("lat"));  // a summary has no series of its own
}

TEST_CASE("a series twice in one body: the second is dropped and reported") {
  Feed f;
  ApplyStats st = f.fetch("m{a=\"1\"} 1\nm{b=\"2\"} 2\nm{a=\"1\"} 3\n");
  CHECK(st.accepted == 2);
  CHECK(st.duplicate == 1);
  CHECK(st.repeated == 1);
  CHECK(st.first_repeated == "m{a=\"1\"}");
  CHECK(f.agg.series("m{a=\"1\"}")->last == 1);
  // The same body at the next fetch: nothing repeats across fetches.
  st = f.fetch("m{a=\"1\"} 1\nm{b=\"2\"} 2\n");
  CHECK(st.repeated == 0);
  CHECK(st.accepted == 2);
}

TEST_CASE("histogram series render their unknowns as null and feed the Prometheus text") {
  Feed f;
  f.fetch(histogram_body("", 1, 2, 3, 4, 1));
  f.fetch(histogram_body("", 2, 4, 6, 8, 3));
  shm::SnapshotBuilder builder;
  f.agg.build(builder, f.now);
  std::vector<std::byte> bytes = builder.serialize(1, 0);
  shm::SnapshotView view{std::span<const std::byte>(bytes)};
  auto rec = view.find(series_record_key("rq"));
  REQUIRE(rec);
  std::string body(*rec);
  INFO(body);
  CHECK(body.find("\"count\":4,") != std::string::npos);
  CHECK(body.find("\"sum\":2,") != std::string::npos);
  CHECK(body.find("\"min\":null,\"max\":null,\"mean\":0.5,\"first\":null,\"last\":null") !=
        std::string::npos);
  CHECK(body.find("\"rate\":4,") != std::string::npos);
  CHECK(body.find("\"p50\":0.5,") != std::string::npos);  // rank 2: top of (0.1, 0.5]
  auto metric = view.find(metric_record_key("rq"));
  REQUIRE(metric);
  CHECK(std::string(*metric).find("\"p50\":0.5,") != std::string::npos);
  auto prom = view.find(kPromRecord);
  REQUIRE(prom);
  CHECK(std::string(*prom).find("telemetry_metric_quantile{metric=\"rq\",quantile=\"0.5\"} 0.5\n") !=
        std::string::npos);
}

TEST_CASE("a histogram over the series limit is created when there is room - and kept although its bucket's samples repeat") {
  Config config = small_config();
  config.max_series = 1;  // the bucket, no room for the histogram's own series
  Aggregator agg(config);
  Parser parser;
  // An explicit timestamp: the second fetch repeats it, so its sample is a duplicate.
  std::string body = "# TYPE rq histogram\nrq_bucket{le=\"+Inf\"} 4 1732700000000\n";
  REQUIRE(parser.parse(body, kText).ok);
  ApplyStats st = agg.apply(0, parser.samples(), kT0 + kSec);
  CHECK(st.accepted == 1);
  CHECK(st.over_limit == 1);  // the histogram's series; its bucket is kept
  CHECK_FALSE(agg.series("rq"));
  config.max_series = 2;
  agg.reconfigure(config);
  st = agg.apply(0, parser.samples(), kT0 + 2 * kSec);
  CHECK(st.duplicate == 1);
  CHECK(st.over_limit == 0);
  REQUIRE(agg.series("rq"));
  shm::SnapshotBuilder builder;
  agg.build(builder, kT0 + 2 * kSec);  // expires what was not seen: the histogram was
  CHECK(agg.series("rq"));
  CHECK(agg.series_count() == 2);
}
