// pipeline_prometheus_test.cc: Prometheus text sources through the pipeline: chosen by
// Content-Type or by the ?format=prometheus marker, bad lines reported with the rest applied.

#include "pipeline_fixture.h"

using namespace ingest;
using namespace ingest_test;
using namespace pipeline_fixture;

TEST_CASE("prometheus sources: by Content-Type or by the ?format=prometheus marker - which is not sent upstream") {
  Base b;
  Upstream upstream(b.base);
  Config c = small_config();
  c.source_timeout = std::chrono::milliseconds(300);
  const std::string file =
      "file://" + data_path("prometheus/node_exporter_1.txt") + "?format=prometheus";
  c.sources = {upstream.url("/prom"), upstream.url("/octet?x=1&format=prometheus"),
               upstream.url("/octet?format=prometheus"), upstream.url("/octet"), file};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  pipeline.run_once();
  for (const std::string& url : {upstream.url("/prom"), upstream.url("/octet?x=1&format=prometheus"),
                                upstream.url("/octet?format=prometheus")}) {
    const auto& s = status_of(pub, url);
    INFO(url << ": " << s.last_error);
    CHECK(s.format == "prometheus");
    CHECK(s.samples == 2);
    CHECK(s.errors == 0);
  }
  // Without the marker, an octet-stream body is taken as JSON, which it is not.
  CHECK(status_of(pub, upstream.url("/octet")).last_error.find("parse: invalid JSON") == 0);
  // JSON first, the text formats acceptable too; marked sources ask for text only.
  CHECK(upstream.accept["/prom"] ==
        "application/json, text/plain;version=0.0.4;q=0.5, "
        "application/openmetrics-text;version=1.0.0;q=0.4");
  CHECK(upstream.accept["/octet?x=1"].rfind("text/plain;version=0.0.4", 0) == 0);
  CHECK(upstream.accept.count("/octet"));  // the marker left, nothing else
  CHECK(upstream.accept.size() == 3);
  const auto& f = status_of(pub, file);
  INFO(f.last_error);
  CHECK(f.format == "prometheus");
  CHECK(f.samples > 100);
  CHECK(f.errors == 0);
  CHECK(pipeline.aggregator().series("prom_up{job=\"b\"}")->last == 0);
  CHECK(pipeline.aggregator().series("node_cpu_seconds_total{cpu=\"0\",mode=\"user\"}"));
}

TEST_CASE("a prometheus body with bad lines: line number and reason in last_error - the rest applied - NaN dropped without an error - a repeated series reported") {
  Base b;
  Upstream upstream(b.base);
  Config c = small_config();
  c.source_timeout = std::chrono::milliseconds(300);
  c.sources = {upstream.url("/prom")};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  pipeline.run_once();
  REQUIRE(pub.statuses[0].samples == 2);
  upstream.prom_body = "prom_up{job=\"a\"} 2\nprom_up{job=\"b\"} oops\nprom_nan NaN\n";
  pipeline.run_once();
  const auto& s = pub.statuses[0];
  CHECK(s.last_error == "1 lines rejected, first: line 2: invalid value");
  CHECK(s.errors == 1);
  CHECK(s.samples == 3);
  CHECK(s.dropped == 2);  // the bad line and the NaN
  CHECK(pipeline.aggregator().series("prom_up{job=\"a\"}")->last == 2);
  // The bad line's series keeps what it had.
  CHECK(pipeline.aggregator().series("prom_up{job=\"b\"}")->count == 1);
  CHECK_FALSE(pipeline.aggregator().series("prom_nan"));
  // A series twice in one body: the format allows it once; the second is reported.
  upstream.prom_body = "prom_up{job=\"a\"} 4\nprom_up{job=\"b\"} 4\nprom_up{job=\"a\"} 5\n";
  pipeline.run_once();
  CHECK(pub.statuses[0].last_error ==
        "1 samples repeat a series earlier in the body, first: prom_up{job=\"a\"}");
  CHECK(pipeline.aggregator().series("prom_up{job=\"a\"}")->last == 4);
  // Text after # EOF: the whole body is refused, every series keeps its data.
  upstream.prom_body = "prom_up{job=\"a\"} 3\n# EOF\nprom_up{job=\"b\"} 3\n";
  pipeline.run_once();
  CHECK(pub.statuses[0].last_error == "parse: line 3: text after # EOF");
  CHECK(pipeline.aggregator().series("prom_up{job=\"a\"}")->last == 4);
}
