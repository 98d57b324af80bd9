// render_test.cc: series keys, JSON escaping, number rendering and the Prometheus text.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <limits>

#include "ingest/ingest.h"
#include "ingest/internal.h"
#include "ingest/window/render.h"

using namespace ingest;

namespace {

// The window of two samples, 1 then 2, at the given times: what the series and the
// Prometheus renderings below are checked with.
Aggregate one_then_two(int64_t first_ts_ns, int64_t last_ts_ns) {
  Aggregate a;
  a.count = 2;
  a.sum = 3;
  a.min = a.first = a.p50 = 1;
  a.max = a.last = a.p90 = a.p99 = 2;
  a.first_ts_ns = first_ts_ns;
  a.last_ts_ns = last_ts_ns;
  return a;
}

}  // namespace

TEST_CASE("series keys are canonical and parse back") {
  std::vector<Label> labels = {{"zone", "a\"b"}, {"host", "h\\1\nx"}, {"dc", ""}};
  std::string key = make_series_key("cpu.temp", labels);
  CHECK(key == "cpu.temp{dc=\"\",host=\"h\\\\1\\nx\",zone=\"a\\\"b\"}");
  auto parsed = parse_series_key(key);
  REQUIRE(parsed);
  CHECK(parsed->metric == "cpu.temp");
  REQUIRE(parsed->labels.size() == 3);
  CHECK(parsed->labels[0] == std::pair<std::string, std::string>("dc", ""));
  CHECK(parsed->labels[1].second == "h\\1\nx");
  CHECK(parsed->labels[2].second == "a\"b");
  CHECK(make_series_key("up", {}) == "up");
  CHECK(parse_series_key("up")->labels.empty());
  std::string_view metric;
  CHECK(canonical_series_key(key, &metric));
  CHECK(metric == "cpu.temp");
  CHECK(canonical_series_key("up", &metric));
  CHECK(metric == "up");
  for (const char* bad : {"", "m{}", "m{a=\"1\"", "m{a=1}", "m{b=\"1\",a=\"2\"}", "m{a=\"1\",a=\"2\"}",
                          "m{a=\"x\\q\"}", "m{a=\"x\\\"}", "m{a=\"1\",}", "bad name{a=\"1\"}", "m{a=\"1\"}x",
                          "m{a=\"raw\nnewline\"}", "{a=\"1\"}", "m{", "m}"}) {
    INFO(bad);
    CHECK_FALSE(parse_series_key(bad));
    CHECK_FALSE(canonical_series_key(bad, &metric));
  }
}

TEST_CASE("a key equals the key its parts would render, without rendering it") {
  // Sorted labels, values long enough to cross the 8-byte compare and with escapes.
  std::vector<Label> labels = {{"dc", "eu-west-1-long-value"}, {"host", "h\\1\nx\"y"}};
  std::string key;
  append_series_key(key, "cpu.usage_percent", "_sum", labels);
  CHECK(series_key_equals(key, "cpu.usage_percent", "_sum", labels));
  CHECK_FALSE(series_key_equals(key, "cpu.usage_percent", "", labels));
  CHECK_FALSE(series_key_equals(key, "cpu.usage_percenT", "_sum", labels));
  CHECK_FALSE(series_key_equals(key, "Cpu.usage_percent", "_sum", labels));
  CHECK_FALSE(series_key_equals(key, "cpu.usage_percent", "_sum", std::span(labels).first(1)));
  CHECK_FALSE(series_key_equals(key + "x", "cpu.usage_percent", "_sum", labels));
  CHECK_FALSE(series_key_equals(key.substr(0, key.size() - 1), "cpu.usage_percent", "_sum", labels));
  for (size_t i = 0; i < labels.size(); ++i) {
    std::string first_byte(labels[i].value);
    first_byte[0] = 'Q';  // same length, differs only in the first 8-byte word
    for (std::string changed : {std::string(labels[i].value) + "z", std::string(labels[i].value.substr(1)),
                                std::string(labels[i].value.size(), 'q'), first_byte}) {
      std::vector<Label> other = labels;
      other[i].value = changed;
      INFO(changed);
      CHECK_FALSE(series_key_equals(key, "cpu.usage_percent", "_sum", other));
    }
  }
  CHECK(series_key_equals("up", "up", "", {}));
  CHECK_FALSE(series_key_equals("up{a=\"1\"}", "up", "", {}));
  CHECK_FALSE(series_key_equals("up", "u", "", {}));
}

TEST_CASE("JSON strings escape quotes / backslashes and control characters") {
  std::string out;
  append_json_string(out, std::string_view("a\"b\\c\nd\te\x01\x1f\xc3\xa9", 13));
  CHECK(out == "\"a\\\"b\\\\c\\nd\\te\\u0001\\u001f\xc3\xa9\"");
}

TEST_CASE("numbers render as the shortest round-trip text - non-finite as null") {
  const double values[] = {0.1, 1.0 / 3, 71.5, 100, -0.0, 1e21, 5e-324,
                           std::numeric_limits<double>::max(), 1732700000.123, -2.5e-7};
  for (double v : values) {
    std::string out;
    append_json_number(out, v);
    INFO(out);
    CHECK(std::strtod(out.c_str(), nullptr) == v);
    CHECK(out.find_first_of("ni") == std::string::npos);  // no nan / inf
  }
  std::string a, b;
  append_json_number(a, 0.1);
  CHECK(a == "0.1");
  append_json_number(b, std::numeric_limits<double>::infinity());
  append_json_number(b, std::nan(""));
  CHECK(b == "nullnull");
}

TEST_CASE("timestamps convert between seconds and nanoseconds exactly") {
  int64_t ns = 0;
  REQUIRE(seconds_to_ns(1732700000.123, &ns));
  CHECK(ns == 1732700000123000000);
  CHECK(ns_to_seconds(ns) == 1732700000.123);
  CHECK_FALSE(seconds_to_ns(-1, &ns));
  CHECK_FALSE(seconds_to_ns(1e300, &ns));
  CHECK_FALSE(seconds_to_ns(17327080200, &ns));  // past int64 nanoseconds (found by fuzzing)
  REQUIRE(seconds_to_ns(8.9e9, &ns));
}

TEST_CASE("series body: field order / labels / nulls for an empty window") {
  Aggregate a = one_then_two(1732700000'000000000, 1732700002'500000000);
  std::string key = make_series_key("m", std::vector<Label>{{"h", "a\"\tb"}});
  std::string key_json, out;
  append_json_string(key_json, key);
  render_series(out, key, key_json, "\"m\"", a, 60, false);
  CHECK(out ==
        "{\"key\":\"m{h=\\\"a\\\\\\\"\\tb\\\"}\",\"metric\":\"m\",\"labels\":{\"h\":\"a\\\"\\tb\"},"
        "\"window_s\":60,\"count\":2,\"sum\":3,\"min\":1,\"max\":2,\"mean\":1.5,\"first\":1,"
        "\"last\":2,\"first_ts\":1732700000,\"last_ts\":1732700002.5,\"rate\":0.4,\"p50\":1,"
        "\"p90\":2,\"p99\":2,\"stale\":false}");
  out.clear();
  render_series(out, "m", "\"m\"", "\"m\"", Aggregate{}, 0.5, true);
  CHECK(out ==
        "{\"key\":\"m\",\"metric\":\"m\",\"labels\":{},\"window_s\":0.5,\"count\":0,\"sum\":0,"
        "\"min\":null,\"max\":null,\"mean\":null,\"first\":null,\"last\":null,\"first_ts\":null,"
        "\"last_ts\":null,\"rate\":null,\"p50\":null,\"p90\":null,\"p99\":null,\"stale\":true}");
}

TEST_CASE("metric body and metrics list") {
  Aggregate a;
  a.count = 1;
  a.sum = a.min = a.max = a.first = a.last = a.p50 = a.p90 = a.p99 = 7;
  a.first_ts_ns = a.last_ts_ns = 1'000'000'000;
  SeriesKeyList keys;
  for (std::string_view key : {"m{h=\"1\"}", "m{h=\"2\"}"}) {
    std::string json;
    append_json_string(json, key);
    keys.add(json);
  }
  std::string out;
  render_metric(out, "m", a, 60, keys);
  CHECK(out.rfind("{\"metric\":\"m\",\"window_s\":60,\"count\":1,", 0) == 0);
  CHECK(out.find("\"rate\":null,") != std::string::npos);
  CHECK(out.find(",\"series_count\":2,\"series\":[\"m{h=\\\"1\\\"}\",\"m{h=\\\"2\\\"}\"]}") !=
        std::string::npos);
  out.clear();
  std::vector<MetricCount> counts = {{"a", 1}, {"b\"", 20}};
  render_metrics(out, counts);
  CHECK(out ==
        "{\"metrics\":[{\"metric\":\"a\",\"series_count\":1},{\"metric\":\"b\\\"\",\"series_count\":20}]}");
}

TEST_CASE("Prometheus text: families / escaping / label names made valid") {
  Aggregate a = one_then_two(0, 2'000'000'000);
  Aggregate overflow = a;
  overflow.sum = std::numeric_limits<double>::infinity();
  std::vector<PromMetric> metrics = {{"cpu.temp", 1, &a}, {"big", 1, &overflow}};
  std::string key = make_series_key(
      "cpu.temp", std::vector<Label>{{"host.name", "x\"y"}, {"metric", "m"}, {"9a", "z"}});
  std::vector<PromSeries> series = {{key, "cpu.temp", &a}};
  std::string out;
  render_prometheus(out, metrics, series);
  CHECK(out.find("# TYPE telemetry_metric_samples gauge\n") != std::string::npos);
  CHECK(out.find("telemetry_metric_samples{metric=\"cpu.temp\"} 2\n") != std::string::npos);
  CHECK(out.find("telemetry_metric_sum_of_samples{metric=\"cpu.temp\"} 3\n") != std::string::npos);
  CHECK(out.find("telemetry_metric_mean{metric=\"cpu.temp\"} 1.5\n") != std::string::npos);
  CHECK(out.find("telemetry_metric_rate{metric=\"cpu.temp\"} 0.5\n") != std::string::npos);
  CHECK(out.find("# TYPE telemetry_metric_quantile summary\n") != std::string::npos);
  CHECK(out.find("telemetry_metric_quantile{metric=\"cpu.temp\",quantile=\"0.99\"} 2\n") !=
        std::string::npos);
  CHECK(out.find("telemetry_metric_sum_of_samples{metric=\"big\"}") == std::string::npos);  // inf left out
  CHECK(out.find("telemetry_series_last{metric=\"cpu.temp\",_9a=\"z\",exported_metric=\"m\","
                 "host_name=\"x\\\"y\"} 2\n") != std::string::npos);
  // Gauges never take the suffixes of summaries, histograms and counters.
  for (std::string_view reserved : {"_count{", "_sum{", "_bucket{", "_total{"})
    CHECK(out.find(reserved) == std::string::npos);
  CHECK(out.back() == '\n');
  CHECK(out.find("nan") == std::string::npos);
  CHECK(out.find("inf") == std::string::npos);
}

// Prometheus refuses a whole scrape when a sample holds a label name twice, and takes
// "le", "quantile" and "__" names for its own.
TEST_CASE("Prometheus text: labels whose valid names collide become one label") {
  Aggregate a;
  a.count = 1;
  a.sum = a.min = a.max = a.first = a.last = a.p50 = a.p90 = a.p99 = 7;
  std::string key = make_series_key(
      "m", std::vector<Label>{{"host.name", "a"}, {"host_name", "b"}, {"metric", "c"},
                              {"exported_metric", "d"}, {"le", "0.5"}, {"quantile", "0.9"},
                              {"__name__", "n"}});
  std::vector<PromMetric> metrics = {{"m", 1, &a}};
  std::vector<PromSeries> series = {{key, "m", &a}};
  std::string out;
  render_prometheus(out, metrics, series);
  INFO(out);
  CHECK(out.find("telemetry_series_last{metric=\"m\",exported___name__=\"n\",exported_le=\"0.5\","
                 "exported_metric=\"d;c\",exported_quantile=\"0.9\",host_name=\"a;b\"} 7\n") !=
        std::string::npos);
}

// Prometheus keeps one sample of two alike series of a scrape and drops the other.
TEST_CASE("Prometheus text: series whose labels come out alike get their keys as a label") {
  Aggregate one, two, three;
  for (auto [agg, v] : {std::pair{&one, 1.0}, {&two, 2.0}, {&three, 3.0}}) {
    agg->count = 1;
    agg->sum = agg->min = agg->max = agg->first = agg->last = agg->p50 = agg->p90 = agg->p99 = v;
  }
  std::string a = make_series_key("dup", std::vector<Label>{{"a.b", "1"}});
  std::string b = make_series_key("dup", std::vector<Label>{{"a_b", "1"}});
  std::string c = make_series_key("dup", std::vector<Label>{{"a_b", "2"}});
  std::vector<PromMetric> metrics = {{"dup", 3, &one}};
  std::vector<PromSeries> series = {{a, "dup", &one}, {b, "dup", &two}, {c, "dup", &three}};
  std::string out;
  render_prometheus(out, metrics, series);
  INFO(out);
  CHECK(out.find("telemetry_series_last{metric=\"dup\",a_b=\"1\",series_key=\"dup{a.b=\\\"1\\\"}\"} 1\n") !=
        std::string::npos);
  CHECK(out.find("telemetry_series_last{metric=\"dup\",a_b=\"1\",series_key=\"dup{a_b=\\\"1\\\"}\"} 2\n") !=
        std::string::npos);
  CHECK(out.find("telemetry_series_last{metric=\"dup\",a_b=\"2\"} 3\n") != std::string::npos);
}
