// prometheus_test.cc: the Prometheus text / OpenMetrics parser: format detection,
// families and types, escaping, timestamps, NaN and infinities, # EOF, bad lines and
// their line numbers, limits, and node_exporter's own output.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <random>

#include <fmt/format.h>

#include "ingest/format/prometheus.h"
#include "ingest/ingest.h"
#include "test_util.h"

using namespace ingest;
using namespace ingest_test;

namespace {

constexpr std::string_view kText = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view kOpenMetrics = "application/openmetrics-text; version=1.0.0";

std::string key_of(const Sample& s) {
  std::vector<Label> labels(s.labels.begin(), s.labels.end());
  return make_series_key(std::string(s.metric) + std::string(s.suffix), labels);
}

const Sample* find(const Parser& p, std::string_view key) {
  for (const Sample& s : p.samples())
    if (key_of(s) == key) return &s;
  return nullptr;
}

}  // namespace

TEST_CASE("prometheus: the content type or a text body decides the format") {
  Parser p;
  ParseResult r = p.parse("up 1\n", kText);
  REQUIRE(r.ok);
  CHECK(r.format == Format::prometheus);
  CHECK(format_name(r.format) == "prometheus");
  REQUIRE(p.samples().size() == 1);
  CHECK(p.samples()[0].value == 1);
  // text/plain without a version: JSON when the body opens a JSON document.
  r = p.parse(R"([{"metric":"m","value":2}])", "text/plain");
  REQUIRE(r.ok);
  CHECK(r.format == Format::native);
  // With a version the content type says it all: a body that looks like JSON is bad text.
  r = p.parse(R"([{"metric":"m","value":2}])" "\n", kText);
  REQUIRE(r.ok);
  CHECK(r.format == Format::prometheus);
  CHECK(r.error == "line 1: expected a metric name");
  r = p.parse("up 3\n", "TEXT/PLAIN");
  REQUIRE(r.ok);
  CHECK(r.format == Format::prometheus);
  r = p.parse("up 4\n# EOF\n", kOpenMetrics);
  REQUIRE(r.ok);
  CHECK(r.format == Format::prometheus);
  // Another content type: the body is taken as JSON, and text is not JSON.
  r = p.parse("up 1\n", "application/json");
  CHECK_FALSE(r.ok);
  CHECK(r.format == Format::native);
  // An empty exposition is a valid one (an exporter with nothing to say).
  r = p.parse("", kText);
  CHECK(r.ok);
  CHECK(p.samples().empty());
}

TEST_CASE("prometheus: names / label sets / values / blanks and comments") {
  Parser p;
  ParseResult r = p.parse(
      "# a comment\n"
      "# HELP m A help text with \\\\ and \\n escapes and {\"braces\"}.\n"
      "\n"
      "m{a=\"1\",b=\"two\"} 1.5\n"
      "m { a = \"2\" , b=\"\" , } -2e3\n"  // blanks inside braces, a trailing comma
      "m{} 7\r\n"                           // empty label set, a CRLF line
      "  n_total\t0x1p3\n"                  // hex is not a value: rejected
      "n2 +5\n"
      "n3 .5e-2   \n",
      kText);
  REQUIRE(r.ok);
  INFO(r.error);
  CHECK(r.rejected == 1);
  CHECK(r.error == "line 7: invalid value");
  CHECK(find(p, "m{a=\"1\",b=\"two\"}")->value == 1.5);
  CHECK(find(p, "m{a=\"2\",b=\"\"}")->value == -2000);
  CHECK(find(p, "m")->value == 7);
  CHECK(find(p, "n2")->value == 5);
  CHECK(find(p, "n3")->value == 0.005);
  CHECK(p.samples().size() == 5);
}

TEST_CASE("prometheus: label value escapes - and only those three") {
  Parser p;
  ParseResult r = p.parse(
      "m{path=\"C:\\\\dir\",q=\"say \\\"hi\\\"\",nl=\"a\\nb\"} 1\n"
      "m{bad=\"tab\\there\"} 2\n"
      "m{utf=\"caf\xc3\xa9\"} 3\n",
      kText);
  REQUIRE(r.ok);
  CHECK(r.rejected == 1);
  CHECK(r.error.find("line 2: invalid escape") == 0);
  REQUIRE(p.samples().size() == 2);
  const Sample& s = p.samples()[0];
  REQUIRE(s.labels.size() == 3);
  CHECK(s.labels[0].value == "C:\\dir");
  CHECK(s.labels[1].value == "say \"hi\"");
  CHECK(s.labels[2].value == "a\nb");
  // The canonical key escapes them again the same way.
  CHECK(key_of(s) == "m{nl=\"a\\nb\",path=\"C:\\\\dir\",q=\"say \\\"hi\\\"\"}");
  CHECK(p.samples()[1].labels[0].value == "caf\xc3\xa9");
}

TEST_CASE("prometheus: timestamps are milliseconds - OpenMetrics' are seconds") {
  Parser p;
  ParseResult r = p.parse(
      "a 1 1732700000123\n"
      "b 2\n"
      "c 3 -5\n"
      "d 4 1.5\n"
      "e 5 99999999999999999999\n",
      kText);
  REQUIRE(r.ok);
  CHECK(r.rejected == 3);
  CHECK(r.error == "line 3: invalid timestamp (Unix milliseconds expected)");
  REQUIRE(p.samples().size() == 2);
  CHECK(p.samples()[0].ts_ns == 1'732'700'000'123'000'000);
  CHECK(p.samples()[1].ts_ns == 0);  // the fetch time applies

  r = p.parse("a_total 1 1732700000.25\n# EOF\n", kOpenMetrics);
  REQUIRE(r.ok);
  REQUIRE(p.samples().size() == 1);
  CHECK(p.samples()[0].ts_ns == 1'732'700'000'250'000'000);
}

TEST_CASE("prometheus: NaN and infinities are left out - counted - not errors") {
  Parser p;
  ParseResult r = p.parse(
      "# TYPE s summary\n"
      "s{quantile=\"0.5\"} NaN\n"
      "s{quantile=\"0.9\"} 4\n"
      "s_sum 10\n"
      "s_count 3\n"
      "g1 +Inf\n"
      "g2 -Inf\n"
      "g3 Inf\n"
      "g4 nan\n"
      "g5 1e400\n",  // beyond a double: a bad value, not an infinity
      kText);
  REQUIRE(r.ok);
  CHECK(r.skipped == 5);
  CHECK(r.rejected == 1);
  CHECK(r.error == "line 10: invalid value");
  REQUIRE(p.samples().size() == 3);
  for (const Sample& s : p.samples()) CHECK(std::isfinite(s.value));
}

TEST_CASE("prometheus: # EOF ends the body - text after it or an OpenMetrics body without it rejects the body") {
  Parser p;
  ParseResult r = p.parse("a 1\n# EOF\n\n", kText);
  REQUIRE(r.ok);
  CHECK(p.samples().size() == 1);
  r = p.parse("a_total 1\n# EOF", kOpenMetrics);  // no newline after # EOF: allowed
  REQUIRE(r.ok);
  CHECK(p.samples().size() == 1);

  r = p.parse("a 1\n# EOF\nb 2\n", kText);
  CHECK_FALSE(r.ok);
  CHECK(r.error == "line 3: text after # EOF");
  CHECK(p.samples().empty());
  CHECK(r.rejected == 0);

  r = p.parse("a_total 1\nb_total 2\n", kOpenMetrics);
  CHECK_FALSE(r.ok);
  CHECK(r.error.find("no # EOF") == 0);
  CHECK(p.samples().empty());
}

TEST_CASE("prometheus: a line cut off without its newline is rejected - the rest kept") {
  Parser p;
  ParseResult r = p.parse("a 1\nb 2\nc 12", kText);
  REQUIRE(r.ok);
  CHECK(r.rejected == 1);
  CHECK(r.error == "line 3: no newline at the end of the body (cut short?)");
  CHECK(p.samples().size() == 2);
}

TEST_CASE("prometheus: bad lines are rejected one by one with the first one's line number") {
  Parser p;
  ParseResult r = p.parse(
      "good 1\n"
      "{a=\"1\"} 2\n"           // no name
      "m{a=\"1\" 3\n"           // no closing brace
      "m{a=1} 4\n"              // unquoted value
      "m{a=\"1} 5\n"            // no closing quote
      "m 6 7 8\n"               // text after the timestamp
      "m{a=\"1\"}9\n"           // no blank before the value
      "m\n"                     // no value
      "m{1a=\"x\",a=\"y\",a=\"z\"} 10\n"  // a duplicate label name
      "also_good{x=\"y\"} 11\n",
      kText);
  REQUIRE(r.ok);
  CHECK(r.rejected == 8);
  CHECK(r.error == "line 2: expected a metric name");
  REQUIRE(p.samples().size() == 2);
  CHECK(key_of(p.samples()[0]) == "good");
  CHECK(key_of(p.samples()[1]) == "also_good{x=\"y\"}");
}

TEST_CASE("prometheus: TYPE lines - types kept - mismatches rejected") {
  Parser p;
  ParseResult r = p.parse(
      "# TYPE c counter\n"
      "c{x=\"1\"} 5\n"
      "# TYPE g gauge\n"
      "g 1\n"
      "# TYPE c counter\n"        // line 5: a second TYPE for c
      "# TYPE u untyped\n"
      "u 2\n"
      "# TYPE weird rainbow\n"    // line 8: unknown type
      "free 3\n"
      "# TYPE free gauge\n"       // line 10: TYPE after its samples
      "# TYPE h histogram\n"
      "h 4\n"                     // line 12: a histogram sample without a suffix
      "h_bucket{le=\"x\"} 1\n"    // line 13: le not a number
      "h_bucket 1\n"              // line 14: no le
      "h_bucket{le=\"1\"} 1\n"
      "# TYPE s summary\n"
      "s 1\n"                     // line 17: a summary sample without quantile
      "# TYPE neg counter\n"
      "neg -1\n",                 // line 19: a negative counter
      kText);
  REQUIRE(r.ok);
  INFO(r.error);
  CHECK(r.error == "line 5: a second TYPE line for the same metric");
  CHECK(r.rejected == 8);
  CHECK(find(p, "c{x=\"1\"}")->kind == SampleKind::counter);
  CHECK(find(p, "g")->kind == SampleKind::gauge);
  CHECK(find(p, "u")->kind == SampleKind::gauge);
  CHECK(find(p, "free")->kind == SampleKind::gauge);
  CHECK(find(p, "h_bucket{le=\"1\"}")->kind == SampleKind::bucket);
  CHECK(p.samples().size() == 5);
  // Each kind of mismatch, alone, with its own reason.
  r = p.parse("# TYPE weird rainbow\n", kText);
  CHECK(r.error == "line 1: unknown metric type in a TYPE line");
  r = p.parse("free 3\n# TYPE free gauge\n", kText);
  CHECK(r.error == "line 2: TYPE line after samples of its metric");
  r = p.parse("# TYPE h histogram\nh 4\n", kText);
  CHECK(r.error == "line 2: a histogram's samples are named _bucket, _sum or _count");
  r = p.parse("# TYPE h histogram\nh_bucket 1\n", kText);
  CHECK(r.error == "line 2: a histogram bucket without a numeric le label");
  r = p.parse("# TYPE s summary\ns 1\n", kText);
  CHECK(r.error == "line 2: a summary sample without a quantile label");
  r = p.parse("# TYPE neg counter\nneg -1\n", kText);
  CHECK(r.error == "line 2: a negative counter or bucket value");
}

TEST_CASE("prometheus: histogram and summary families - names split for the aggregator") {
  Parser p;
  ParseResult r = p.parse(
      "# HELP rq Request durations.\n"
      "# TYPE rq histogram\n"
      "rq_bucket{path=\"/\",le=\"0.1\"} 2\n"
      "rq_bucket{path=\"/\",le=\"+Inf\"} 5\n"
      "rq_sum{path=\"/\"} 1.25\n"
      "rq_count{path=\"/\"} 5\n"
      "# TYPE lat summary\n"
      "lat{quantile=\"0.99\"} 0.3\n"
      "lat_sum 8\n"
      "lat_count 40\n"
      "rq_other 1\n",  // not a suffix of the histogram: a family of its own
      kText);
  REQUIRE(r.ok);
  CHECK(r.rejected == 0);
  const Sample* b = find(p, "rq_bucket{le=\"+Inf\",path=\"/\"}");
  REQUIRE(b);
  CHECK(b->metric == "rq");
  CHECK(b->suffix == "_bucket");
  CHECK(b->kind == SampleKind::bucket);
  CHECK(find(p, "rq_sum{path=\"/\"}")->kind == SampleKind::counter);
  CHECK(find(p, "rq_count{path=\"/\"}")->suffix == "_count");
  CHECK(find(p, "lat{quantile=\"0.99\"}")->kind == SampleKind::gauge);
  CHECK(find(p, "lat_sum")->kind == SampleKind::counter);
  CHECK(find(p, "lat_count")->value == 40);
  CHECK(find(p, "rq_other")->kind == SampleKind::gauge);
}

TEST_CASE("prometheus: OpenMetrics counters - _created left out - exemplars ignored") {
  Parser p;
  ParseResult r = p.parse(
      "# TYPE req counter\n"
      "# HELP req Requests.\n"
      "req_total{code=\"200\"} 10 # {trace_id=\"abc\"} 1 1732700000.5\n"
      "req_created{code=\"200\"} 1732699000\n"
      "# TYPE info_thing info\n"
      "info_thing_info{version=\"1\"} 1\n"
      "# EOF\n",
      kOpenMetrics);
  REQUIRE(r.ok);
  INFO(r.error);
  CHECK(r.rejected == 0);
  REQUIRE(p.samples().size() == 2);
  CHECK(key_of(p.samples()[0]) == "req_total{code=\"200\"}");
  CHECK(p.samples()[0].kind == SampleKind::counter);
  CHECK(p.samples()[0].value == 10);
  CHECK(p.samples()[0].ts_ns == 0);
  CHECK(key_of(p.samples()[1]) == "info_thing_info{version=\"1\"}");
  // An exemplar is no part of the 0.0.4 format.
  r = p.parse("req_total 10 # {trace_id=\"abc\"} 1\n", kText);
  CHECK(r.error == "line 1: unexpected text after the value");
}

TEST_CASE("prometheus: the limits on lines / labels / values apply") {
  std::string many = "m{";
  for (size_t i = 0; i <= kMaxLabels; ++i) many += fmt::format("{}l{}=\"v\"", i ? "," : "", i);
  many += "} 1\n";
  std::string long_value = "m{a=\"" + std::string(kMaxLabelValueBytes + 1, 'x') + "\"} 2\n";
  std::string long_escaped =
      "m{a=\"\\n" + std::string(kMaxLabelValueBytes, 'x') + "\"} 3\n";
  std::string long_line = "# " + std::string(kMaxLineBytes, 'c') + "\n";
  std::string long_name = std::string(kMaxMetricNameBytes + 1, 'n') + " 4\n";
  Parser p;
  ParseResult r = p.parse(many + long_value + long_escaped + long_line + long_name +
                              "m{bad=\"\xff\xfe\"} 5\nok 6\n",
                          kText);
  REQUIRE(r.ok);
  CHECK(r.rejected == 6);
  CHECK(r.error == "line 1: too many labels");
  REQUIRE(p.samples().size() == 1);
  CHECK(key_of(p.samples()[0]) == "ok");
  r = p.parse(long_value, kText);
  CHECK(r.error == "line 1: label value too long");
  r = p.parse(long_escaped, kText);
  CHECK(r.error == "line 1: label value too long");
  r = p.parse(long_line, kText);
  CHECK(r.error == "line 1: line longer than 65536 bytes");
  r = p.parse(long_name, kText);
  CHECK(r.error.find("line 1: invalid metric name") == 0);
  r = p.parse("m{bad=\"\xff\xfe\"} 5\n", kText);
  CHECK(r.error == "line 1: label value is not valid UTF-8");
  // Exactly at the limits: kept.
  std::string at_limit = "m{";
  for (size_t i = 0; i < kMaxLabels; ++i) at_limit += fmt::format("{}l{}=\"v\"", i ? "," : "", i);
  at_limit += "} 1\n";
  r = p.parse(at_limit, kText);
  CHECK(r.rejected == 0);
  CHECK(p.samples().size() == 1);
}

TEST_CASE("prometheus: node_exporter's own output parses whole") {
  Parser p;
  size_t total = 0;
  for (const char* name : {"prometheus/node_exporter_1.txt", "prometheus/node_exporter_2.txt",
                           "prometheus/node_exporter_3.txt"}) {
    INFO(name);
    std::string body = read_file(data_path(name));
    REQUIRE(body.size() > 10'000);
    ParseResult r = p.parse(body, kText);
    REQUIRE(r.ok);
    CHECK(r.rejected == 0);
    CHECK(r.error.empty());
    size_t lines = 0;
    for (size_t at = 0; at < body.size(); at = body.find('\n', at) + 1)
      lines += body[at] != '#';
    CHECK(p.samples().size() + r.skipped == lines);
    total += p.samples().size();
  }
  CHECK(total > 400);
  p.parse(read_file(data_path("prometheus/node_exporter_1.txt")), kText);
  const Sample* cpu = find(p, "node_cpu_seconds_total{cpu=\"0\",mode=\"user\"}");
  REQUIRE(cpu);
  CHECK(cpu->kind == SampleKind::counter);
  CHECK(cpu->value > 0);
  const Sample* gc = find(p, "go_gc_duration_seconds_count");
  REQUIRE(gc);
  CHECK(gc->metric == "go_gc_duration_seconds");
  CHECK(gc->kind == SampleKind::counter);
}

TEST_CASE("prometheus: values read as strtod reads them - the short-decimal path included") {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> mantissa(-1e6, 1e6);
  std::uniform_int_distribution<int> exponent(-30, 30), precision(1, 19);
  for (int i = 0; i < 200'000; ++i) {
    double v = mantissa(rng) * std::pow(10.0, exponent(rng));
    int digits = precision(rng);
    for (const std::string& text : {fmt::format("{:.{}g}", v, digits), fmt::format("{:.{}e}", v, digits),
                                    fmt::format("{:.{}f}", v, digits % 8), fmt::format("{}", v)}) {
      double got = 0;
      INFO(text);
      REQUIRE(parse_float(text, &got));
      REQUIRE(got == std::strtod(text.c_str(), nullptr));
    }
  }
  for (const char* text : {"0", "-0", "+0.0", "1.", ".5", "1e0", "1E+2", "123456789012345",
                           "1234567890123456789", "0.1e-22", "9e22", "9e23", "1.445857e+06"}) {
    double got = 0;
    INFO(text);
    REQUIRE(parse_float(text, &got));
    CHECK(got == std::strtod(text, nullptr));
  }
  double got = 0;
  for (const char* text : {"", "+", "-", ".", "e5", "1e", "1e+", "--1", "+-1", "1.2.3", "0x10", "1_000", "1 "})
    CHECK_FALSE(parse_float(text, &got));
}
