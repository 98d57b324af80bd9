// otlp_mapping_test.cc: OTLP points -> samples: both encodings of one request give the
// same samples, sums' kinds and temporality, explicit and exponential histogram
// buckets, scope attributes, running totals of delta points, bounded gunzip.
#include <catch2/catch.hpp>
#include <zlib.h>

#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "ingest/format/otlp_proto.h"
#include "ingest/ingest.h"
#include "ingest/source/gunzip.h"
#include "ingest/window/delta_totals.h"
#include "otlp/metrics_service.pb.h"
#include "tests/otlp/otlp_util.h"

using namespace ingest;
using namespace otlp_test;

namespace {

std::string describe(const Sample& s) {
  std::string out = fmt::format("{}{} kind={} delta={} start={} ts={} value={} |", s.metric, s.suffix,
                                int(s.kind), s.delta, s.start_ns, s.ts_ns, s.value);
  for (const Label& l : s.labels) out += fmt::format(" {}={}", l.name, l.value);
  out += " |";
  for (const Label& l : s.resource_labels) out += fmt::format(" {}={}", l.name, l.value);
  return out;
}

std::vector<std::string> describe_all(std::span<const Sample> samples) {
  std::vector<std::string> out;
  for (const Sample& s : samples) out.push_back(describe(s));
  return out;
}

}  // namespace

TEST_CASE("OTLP: the JSON and protobuf forms of one request give the same samples") {
  Parser json;
  OtlpProtoParser proto;
  ParseResult rj = json.parse(mixed_request_json(), "application/json");
  ParseResult rp = proto.parse(mixed_request_protobuf());
  REQUIRE(rj.ok);
  REQUIRE(rp.ok);
  CHECK(rj.format == Format::otlp);
  CHECK(rj.rejected == 2);  // the NaN point and the point of the badly named metric
  CHECK(rp.rejected == rj.rejected);
  CHECK(rp.error == rj.error);
  auto a = describe_all(json.samples());
  auto b = describe_all(proto.samples());
  CHECK(a.size() == 4 + 5 + 8);  // a gauge and 3 sums; histogram: 5; exponential: 8
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(i);
    CHECK(a[i] == b[i]);
  }
}

TEST_CASE("OTLP protobuf: point labels and resource attributes together are held to the label limit") {
  // As the JSON form's test (tests/ingest/parser_test.cc): 20 resource attributes; a
  // point with 20 own names (40 together: over), one with 12 (32: at the limit), one
  // with 20 of which 10 repeat a resource name (30).
  namespace pb = opentelemetry::proto;
  pb::collector::metrics::v1::ExportMetricsServiceRequest req;
  auto add_attributes = [](auto* list, const char* prefix, int from, int to) {
    for (int i = from; i < to; ++i) {
      auto* kv = list->Add();
      kv->set_key(fmt::format("{}{}", prefix, i));
      kv->mutable_value()->set_string_value("v");
    }
  };
  auto* rm = req.add_resource_metrics();
  add_attributes(rm->mutable_resource()->mutable_attributes(), "r", 0, 20);
  auto* gauge = rm->add_scope_metrics()->add_metrics();
  gauge->set_name("m");
  const struct {
    const char* prefix;
    int from, to;
  } points[] = {{"p", 0, 20}, {"p", 0, 12}, {"r", 10, 30}};
  double value = 1;
  for (const auto& pt : points) {
    auto* p = gauge->mutable_gauge()->add_data_points();
    p->set_time_unix_nano(uint64_t(kT0));
    p->set_as_double(value++);
    add_attributes(p->mutable_attributes(), pt.prefix, pt.from, pt.to);
  }
  OtlpProtoParser proto;
  ParseResult r = proto.parse(req.SerializeAsString());
  REQUIRE(r.ok);
  CHECK(r.rejected == 1);
  INFO(r.error);
  CHECK(r.error.find("more than 32 labels with the resource attributes") != std::string::npos);
  REQUIRE(proto.samples().size() == 2);
  CHECK(proto.samples()[0].value == 2);
  CHECK(proto.samples()[0].labels.size() + proto.samples()[0].resource_labels.size() == 32);
  CHECK(proto.samples()[1].value == 3);
}

TEST_CASE("OTLP: sums: monotonic ones are counters, delta points are flagged") {
  Parser p;
  REQUIRE(p.parse(mixed_request_json()).ok);
  auto s = p.samples();
  REQUIRE(s.size() >= 4);
  CHECK(s[0].metric == "queue.depth");
  CHECK(s[0].kind == SampleKind::gauge);
  CHECK(s[1].metric == "requests");  // monotonic cumulative
  CHECK(s[1].kind == SampleKind::counter);
  CHECK_FALSE(s[1].delta);
  CHECK(s[2].metric == "inflight");  // not monotonic: the current value
  CHECK(s[2].kind == SampleKind::gauge);
  CHECK(s[3].metric == "bytes");  // monotonic delta
  CHECK(s[3].kind == SampleKind::counter);
  CHECK(s[3].delta);
  CHECK(s[3].start_ns == kT0 - kSec);
  // scope attributes join the resource's; the point's own win over both
  std::string labels;
  for (const Label& l : s[1].labels) labels += fmt::format("{}={} ", l.name, l.value);
  labels += "/ ";
  for (const Label& l : s[1].resource_labels) labels += fmt::format("{}={} ", l.name, l.value);
  CHECK(labels == "route=/pay / lib=web service.name=checkout ");
}

TEST_CASE("OTLP: an exponential histogram's buckets become cumulative le buckets") {
  Parser p;
  REQUIRE(p.parse(mixed_request_json()).ok);
  std::vector<std::pair<std::string, double>> buckets;
  for (const Sample& s : p.samples()) {
    if (s.metric != "size" || s.suffix != "_bucket") continue;
    buckets.emplace_back(std::string(s.labels.back().value), s.value);
  }
  // scale 0: base 2; negative bucket index 0 is [-2, -1); zero bucket; positive
  // offset 1: (2, 4], (4, 8], (8, 16]; +Inf.
  std::vector<std::pair<std::string, double>> want = {
      {"-1", 1}, {"0", 3}, {"4", 4}, {"8", 4}, {"16", 6}, {"+Inf", 6}};
  CHECK(buckets == want);
}

TEST_CASE("OTLP: a histogram whose buckets do not add up to its count is refused") {
  Parser p;
  ParseResult r = p.parse(R"({"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"h","histogram":{
    "dataPoints":[{"count":"5","bucketCounts":["1","2"],"explicitBounds":[1]},
                  {"count":"3","bucketCounts":["1","2"],"explicitBounds":[1]},
                  {"count":"3","bucketCounts":["1","2"],"explicitBounds":[1,2]}]}}]}]}]})");
  REQUIRE(r.ok);
  CHECK(r.rejected == 2);
  CHECK(r.error.find("do not add up") != std::string::npos);
  CHECK(p.samples().size() == 3);  // _count and two buckets: no sum given
}

TEST_CASE("OTLP: delta points become running totals with a 0 at the first start") {
  Parser p;
  DeltaTotals totals(2);
  std::vector<Sample> out;
  auto delta = [&](const char* name, int64_t start, int64_t ts, double v) {
    std::string body = fmt::format(
        R"({{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"{}","sum":{{"aggregationTemporality":1,"isMonotonic":true,
          "dataPoints":[{{"startTimeUnixNano":"{}","timeUnixNano":"{}","asDouble":{}}}]}}}}]}}]}}]}})",
        name, start, ts, v);
    REQUIRE(p.parse(body).ok);
    REQUIRE(p.samples().size() == 1);
    out.clear();
    return totals.add(p.samples()[0], ts, out);
  };
  REQUIRE(delta("a", kT0, kT0 + kSec, 5));
  REQUIRE(out.size() == 2);
  CHECK(out[0].ts_ns == kT0);
  CHECK(out[0].value == 0);
  CHECK(out[1].value == 5);
  CHECK_FALSE(out[1].delta);
  CHECK(out[1].kind == SampleKind::counter);
  REQUIRE(delta("a", kT0 + kSec, kT0 + 2 * kSec, 3));
  REQUIRE(out.size() == 1);
  CHECK(out[0].value == 8);
  REQUIRE(delta("a", kT0 + kSec, kT0 + 2 * kSec, 3));  // the same point again
  CHECK(out.empty());
  REQUIRE(delta("b", kT0 + kSec, kT0 + kSec, 1));  // no start before the time
  REQUIRE(out.size() == 2);
  CHECK(out[0].ts_ns == kT0 + kSec - 1);
  CHECK(out[0].value == 0);
  CHECK_FALSE(delta("c", kT0, kT0 + kSec, 1));  // a third series: over the limit of 2
  CHECK(out.empty());
  totals.expire(kT0 + 2 * kSec);  // b was last updated at kT0 + 1s
  CHECK(totals.size() == 1);
}

TEST_CASE("gunzip: a small body that inflates past the limit is refused, not held") {
  std::string big(8 << 20, 'a');
  std::string packed = gzip(big);
  CHECK(packed.size() < 64 << 10);
  std::string out, error;
  CHECK(gunzip(packed, 1 << 20, out, error) == GunzipResult::too_large);
  CHECK(out.capacity() <= (2 << 20));
  CHECK(gunzip(packed, 8 << 20, out, error) == GunzipResult::ok);
  CHECK(out == big);
  CHECK(gunzip(packed.substr(0, packed.size() / 2), 8 << 20, out, error) == GunzipResult::corrupt);
  CHECK(error.find("truncated") != std::string::npos);
  CHECK(gunzip("not gzip at all", 1 << 20, out, error) == GunzipResult::corrupt);
}
