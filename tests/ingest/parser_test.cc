// parser_test.cc: native and OTLP/JSON parsing, and the bad-input corpus.
#include <catch2/catch.hpp>

#include <filesystem>

#include <fmt/format.h>

#include "ingest/ingest.h"
#include "test_util.h"

using namespace ingest;
using namespace ingest_test;

namespace {

std::string labels_of(const Sample& s) {
  std::vector<Label> all(s.labels.begin(), s.labels.end());
  for (const Label& r : s.resource_labels) {
    bool clash = false;
    for (const Label& l : s.labels) clash |= l.name == r.name;
    if (!clash) all.push_back(r);
  }
  return make_series_key(std::string(s.metric) + std::string(s.suffix), all);
}

}  // namespace

TEST_CASE("native object form with labels / ts and defaults") {
  Parser p;
  ParseResult r = p.parse(read_file(data_path("good/native.json")));
  REQUIRE(r.ok);
  CHECK(r.format == Format::native);
  CHECK(r.rejected == 0);
  CHECK(r.error.empty());
  auto s = p.samples();
  REQUIRE(s.size() == 3);
  CHECK(labels_of(s[0]) == "cpu.temp{dc=\"eu\",host=\"h1\"}");
  CHECK(s[0].value == 71.5);
  CHECK(s[0].ts_ns == 1732700000'123000000);  // decimal seconds kept exactly to the ns
  CHECK(s[1].ts_ns == 0);
  CHECK(labels_of(s[2]) == "up");
}

TEST_CASE("native bare array form - null ts means the fetch time") {
  Parser p;
  ParseResult r = p.parse(read_file(data_path("good/native_array.json")));
  REQUIRE(r.ok);
  REQUIRE(p.samples().size() == 2);
  CHECK(p.samples()[1].ts_ns == 0);
  CHECK(p.samples()[1].value == 2);
}

TEST_CASE("strings are read exactly whatever the whitespace around them") {
  // Pretty-printed bodies: neither the quotes nor the whitespace around a string value
  // may leak into it.
  Parser p;
  ParseResult r = p.parse("{ \"samples\" : [ { \"metric\" :\t\"cpu.temp\" \r\n , \"labels\" : "
                          "{ \"dc\" : \"eu\"\n, \"host\":\"\" } , \"value\" : 1 } ,"
                          "{\"metric\":\"a\",\"labels\":{\"k\":\"v\"  }  ,\"value\":2}] }");
  REQUIRE(r.ok);
  REQUIRE(p.samples().size() == 2);
  CHECK(p.samples()[0].metric == "cpu.temp");
  CHECK(labels_of(p.samples()[0]) == "cpu.temp{dc=\"eu\",host=\"\"}");
  CHECK(labels_of(p.samples()[1]) == "a{k=\"v\"}");
  // A non-string where a string belongs is still refused as such.
  r = p.parse(R"({"samples":[{"metric":12,"value":1},{"metric":"b","labels":{"k":true},"value":1}]})");
  REQUIRE(r.ok);
  CHECK(p.samples().empty());
  CHECK(r.rejected == 2);
}

TEST_CASE("escaped strings in names and label values") {
  Parser p;
  ParseResult r = p.parse(R"({"samples":[{"metric":"a\u002eb","labels":{"k":"q\"uo\\te\nnl\u00e9"},"value":-0.5}]})");
  REQUIRE(r.ok);
  REQUIRE(p.samples().size() == 1);
  CHECK(p.samples()[0].metric == "a.b");
  CHECK(p.samples()[0].labels[0].value == "q\"uo\\te\nnl\xc3\xa9");
  CHECK(labels_of(p.samples()[0]) == "a.b{k=\"q\\\"uo\\\\te\\nnl\xc3\xa9\"}");
}

TEST_CASE("OTLP/JSON gauge / sum / histogram / attributes / resource after metrics") {
  Parser p;
  ParseResult r = p.parse(read_file(data_path("good/otlp.json")), "application/json");
  REQUIRE(r.ok);
  CHECK(r.format == Format::otlp);
  CHECK(r.rejected == 0);
  auto s = p.samples();
  REQUIRE(s.size() == 7);
  CHECK(labels_of(s[0]) ==
        "http.server.duration_count{host.name=\"h1\",http.method=\"GET\",service.name=\"checkout\"}");
  CHECK(s[0].value == 10);
  CHECK(s[0].kind == SampleKind::counter);
  CHECK(s[0].ts_ns == 1732700000000000000);
  CHECK(labels_of(s[1]) ==
        "http.server.duration_sum{host.name=\"h1\",http.method=\"GET\",service.name=\"checkout\"}");
  CHECK(s[1].value == 123.5);
  // the buckets, cumulative, +Inf last
  CHECK(labels_of(s[2]) == "http.server.duration_bucket{host.name=\"h1\",http.method=\"GET\",le=\"10\","
                           "service.name=\"checkout\"}");
  CHECK(s[2].value == 1);
  CHECK(s[2].kind == SampleKind::bucket);
  CHECK(labels_of(s[3]).find("le=\"+Inf\"") != std::string::npos);
  CHECK(s[3].value == 10);
  // name given after the data points; int, double and bool attributes as text
  CHECK(labels_of(s[4]) ==
        "system.cpu.utilization{core=\"3\",host.name=\"h1\",on=\"true\",ratio=\"0.25\","
        "service.name=\"checkout\"}");
  CHECK(s[4].ts_ns == 1732700000500000000);
  CHECK(s[4].kind == SampleKind::gauge);
  CHECK(s[5].value == 42);  // asInt as a string
  CHECK(s[5].kind == SampleKind::counter);  // a monotonic cumulative sum
  CHECK(s[6].value == 7);   // asInt as a number
  CHECK(s[6].ts_ns == 0);
}

TEST_CASE("a point attribute wins over a resource attribute of the same name") {
  Parser p;
  ParseResult r = p.parse(R"({"resourceMetrics":[{"resource":{"attributes":[{"key":"a","value":{"stringValue":"res"}}]},
    "scopeMetrics":[{"metrics":[{"name":"m","gauge":{"dataPoints":[{"asDouble":1,"attributes":[{"key":"a","value":{"stringValue":"pt"}}]}]}}]}]}]})");
  REQUIRE(r.ok);
  REQUIRE(p.samples().size() == 1);
  CHECK(labels_of(p.samples()[0]) == "m{a=\"pt\"}");
}

TEST_CASE("OTLP protobuf content type is refused with a clear error") {
  Parser p;
  ParseResult r = p.parse("\x0a\x02", "application/x-protobuf");
  CHECK_FALSE(r.ok);
  CHECK(r.error.find("protobuf") != std::string::npos);
}

TEST_CASE("every body of the bad corpus is rejected whole with a clear error") {
  Parser p;
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(data_path("bad"))) {
    ++files;
    INFO(entry.path().filename().string());
    ParseResult r = p.parse(read_file(entry.path().string()));
    CHECK_FALSE(r.ok);
    CHECK_FALSE(r.error.empty());
    CHECK(p.samples().empty());
    CHECK(r.rejected == 0);
  }
  CHECK(files >= 13);
}

TEST_CASE("partly bad bodies keep their sound samples") {
  struct Expect {
    const char* file;
    size_t kept, rejected;
  };
  const Expect cases[] = {
      {"partial/wrong_types.json", 2, 6},
      {"partial/huge_numbers.json", 2, 3},  // 1e308 and the big integer (as a double)
      {"partial/bad_names.json", 2, 7},
      {"partial/missing_fields.json", 1, 3},
      {"partial/otlp_mixed.json", 1, 7},
      {"partial/deep_nesting_in_unknown_field.json", 2, 0},
      {"partial/deep_nesting_as_sample.json", 1, 1},
      // Not JSON, but what Python's json.dumps writes: only those samples go.
      {"partial/nan_infinity_tokens.json", 1, 3},
  };
  Parser p;
  for (const Expect& e : cases) {
    INFO(e.file);
    ParseResult r = p.parse(read_file(data_path(e.file)));
    INFO(r.error);
    REQUIRE(r.ok);
    CHECK(p.samples().size() == e.kept);
    CHECK(r.rejected == e.rejected);
    if (e.rejected) CHECK(r.error.rfind("sample ", 0) == 0);
  }
}

TEST_CASE("parse_padded parses in place and checks its padding") {
  Parser p;
  std::string body = R"([{"metric":"m","value":1}])";
  size_t size = body.size();
  body.resize(size + Parser::padding());
  ParseResult r = p.parse_padded(std::string_view(body.data(), size), body.size());
  REQUIRE(r.ok);
  CHECK(p.samples().size() == 1);
  CHECK_THROWS_AS(p.parse_padded(std::string_view(body.data(), size), size),
                  std::invalid_argument);
}

TEST_CASE("a parser is reusable and earlier samples do not leak into the next body") {
  Parser p;
  REQUIRE(p.parse(read_file(data_path("good/otlp.json"))).ok);
  REQUIRE(p.parse(R"([{"metric":"only","value":3}])").ok);
  REQUIRE(p.samples().size() == 1);
  CHECK(p.samples()[0].resource_labels.empty());
  CHECK_FALSE(p.parse("[{\"metric\":").ok);
  CHECK(p.samples().empty());
}

TEST_CASE("parse_duration") {
  using std::chrono::milliseconds;
  CHECK(parse_duration("500ms") == milliseconds(500));
  CHECK(parse_duration("2s") == milliseconds(2000));
  CHECK(parse_duration("1m") == milliseconds(60000));
  CHECK(parse_duration("1h") == milliseconds(3600000));
  CHECK(parse_duration("3") == milliseconds(3000));
  CHECK(parse_duration("0.5") == milliseconds(500));
  for (const char* bad : {"", "s", "-1s", "2x", "1.2.3", "ms5", "1e3", " 2s"}) {
    INFO(bad);
    CHECK_THROWS_AS(parse_duration(bad), std::invalid_argument);
  }
  try {
    parse_duration("2x");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("'2x'") != std::string::npos);
  }
}

TEST_CASE("Config::resolved fills defaults and rejects bad settings") {
  Config c = Config{}.resolved();
  REQUIRE(c.sources.size() == 1);
  CHECK(c.sources[0] == kDefaultSource);
  CHECK(c.stale_after == std::chrono::milliseconds(6000));
  CHECK(c.expire_after == c.window);
  Config bad;
  bad.window = std::chrono::milliseconds(100);
  CHECK_THROWS_AS(bad.resolved(), std::invalid_argument);
  Config dup;
  dup.sources = {"file:///a", "file:///a"};
  CHECK_THROWS_AS(dup.resolved(), std::invalid_argument);
  Config small_budget;
  small_budget.max_body_bytes = 2 << 20;
  small_budget.fetch_memory_limit = 1 << 20;  // one maximal body could never be fetched
  CHECK_THROWS_WITH(small_budget.resolved(), Catch::Contains("fetch_memory_limit"));
  small_budget.fetch_memory_limit = 2 << 20;
  CHECK_NOTHROW(small_budget.resolved());
}

TEST_CASE("OTLP: a bad resource attribute rejects that resource's points only") {
  Parser p;
  ParseResult r = p.parse(R"({"resourceMetrics":[
    {"resource":{"attributes":[{"key":"bad key","value":{"stringValue":"x"}}]},
     "scopeMetrics":[{"metrics":[{"name":"a","gauge":{"dataPoints":[{"asDouble":1},{"asDouble":2}]}}]}]},
    {"scopeMetrics":[{"metrics":[{"name":"b","histogram":{"dataPoints":[{"count":3}]}}]}]}]})");
  REQUIRE(r.ok);
  CHECK(r.rejected == 2);
  CHECK(r.error.find("resource") != std::string::npos);
  REQUIRE(p.samples().size() == 1);  // a histogram point without sum: only _count
  CHECK(p.samples()[0].metric == "b");
  CHECK(p.samples()[0].suffix == "_count");
  CHECK(p.samples()[0].value == 3);
}

TEST_CASE("OTLP: points flagged as having no recorded value are skipped") {
  Parser p;
  ParseResult r = p.parse(R"({"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g",
    "gauge":{"dataPoints":[{"flags":1},{"asDouble":5,"flags":0}]}}]}]}]})");
  REQUIRE(r.ok);
  CHECK(r.rejected == 0);
  REQUIRE(p.samples().size() == 1);
  CHECK(p.samples()[0].value == 5);
}

TEST_CASE("OTLP: point labels and resource attributes together are held to the label limit") {
  // 20 resource attributes; points with 20 own names (40 together: over), with 12 (32:
  // at the limit) and with 20 of which 10 repeat a resource name (30: a name in both
  // counts once). The histogram point is over too: all its samples go.
  auto attributes = [](const char* prefix, int from, int to) {
    std::string out = "[";
    for (int i = from; i < to; ++i)
      out += fmt::format(R"({}{{"key":"{}{}","value":{{"stringValue":"v"}}}})", i > from ? "," : "",
                         prefix, i);
    return out + "]";
  };
  std::string body = fmt::format(
      R"({{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"m","gauge":{{"dataPoints":[
        {{"asDouble":1,"attributes":{}}},
        {{"asDouble":2,"attributes":{}}},
        {{"asDouble":3,"attributes":{}}}]}}}},
        {{"name":"h","histogram":{{"dataPoints":[{{"count":4,"sum":5,"attributes":{}}}]}}}}]}}],
      "resource":{{"attributes":{}}}}}]}})",
      attributes("p", 0, 20), attributes("p", 0, 12), attributes("r", 10, 30),
      attributes("p", 0, 13), attributes("r", 0, 20));
  Parser p;
  ParseResult r = p.parse(body);
  REQUIRE(r.ok);
  CHECK(r.rejected == 2);  // data points, as OTLP's partial success counts them
  INFO(r.error);
  CHECK(r.error.find("sample 0: more than 32 labels with the resource attributes") == 0);
  REQUIRE(p.samples().size() == 2);
  CHECK(p.samples()[0].value == 2);
  CHECK(p.samples()[0].labels.size() + p.samples()[0].resource_labels.size() == 32);
  CHECK(p.samples()[1].value == 3);
  CHECK(labels_of(p.samples()[1]).find("r29=\"v\"") != std::string::npos);
}
