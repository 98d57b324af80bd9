// pipeline_test.cc: the fetch loop against local HTTP upstreams on 127.0.0.1 (an evhttp
// server, and a plain-socket one for what evhttp will not send, on the same event
// base): good bodies, error statuses, refused connections, hanging and trickling
// upstreams, oversized bodies and heads, many large bodies at once; synthetic://
// sources; reconfiguration. file:// sources: pipeline_file_test.cc; Prometheus text
// sources: pipeline_prometheus_test.cc.

#include "pipeline_fixture.h"

using namespace ingest;
using namespace ingest_test;
using namespace pipeline_fixture;

TEST_CASE("one tick fetches every source - bad ones fail alone and within the timeout") {
  Base b;
  auto upstream = std::make_unique<Upstream>(b.base);
  Config c;
  c.source_timeout = std::chrono::milliseconds(300);
  c.max_body_bytes = 1024;
  const std::string refused = fmt::format("http://127.0.0.1:{}/native", refused_port());
  c.sources = {upstream->url("/native"), upstream->url("/otlp"),   upstream->url("/error"),
               upstream->url("/hang"),   upstream->url("/trickle"), upstream->url("/big"),
               upstream->url("/broken"), refused,
               "file://" + data_path("good/native.json"),
               "file:///nonexistent/telemetryd.json",
               "synthetic://?hosts=3&metrics=4&seed=9"};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  auto started = std::chrono::steady_clock::now();
  pipeline.run_once();
  auto took = std::chrono::steady_clock::now() - started;
  CHECK(took < std::chrono::seconds(10));  // generous: bounded by the 300 ms deadlines
  REQUIRE(pub.count == 1);
  REQUIRE(pub.statuses.size() == c.sources.size());

  const auto& native = status_of(pub, upstream->url("/native"));
  CHECK(native.last_status == 200);
  CHECK(native.format == "native");
  CHECK(native.samples == 1);
  CHECK(native.errors == 0);
  CHECK(native.last_error.empty());
  CHECK(native.bytes == upstream->native_body.size());
  CHECK(upstream->last_host == fmt::format("127.0.0.1:{}", upstream->port()));

  // The test files' timestamps are from 2024: older than the window, so dropped.
  const auto& otlp = status_of(pub, upstream->url("/otlp"));
  CHECK(otlp.format == "otlp");
  CHECK(otlp.samples == 1);
  CHECK(otlp.dropped == 6);

  auto failed = [&](const std::string& url, std::string_view text) {
    const auto& s = status_of(pub, url);
    INFO(url << ": " << s.last_error);
    CHECK(s.errors == 1);
    CHECK(s.samples == 0);
    CHECK(s.last_error.find(text) != std::string::npos);
    CHECK(s.last_error_ns > 0);
  };
  failed(upstream->url("/error"), "HTTP status 503");
  CHECK(status_of(pub, upstream->url("/error")).last_status == 503);
  failed(upstream->url("/hang"), "timeout after 300ms");
  failed(upstream->url("/trickle"), "timeout after 300ms");
  failed(upstream->url("/big"), "max_body_bytes");
  failed(upstream->url("/broken"), "parse: ");
  failed(refused, "connection");
  failed("file:///nonexistent/telemetryd.json", "cannot open");

  CHECK(status_of(pub, "file://" + data_path("good/native.json")).samples == 2);
  CHECK(status_of(pub, "file://" + data_path("good/native.json")).dropped == 1);
  CHECK(status_of(pub, "synthetic://?hosts=3&metrics=4&seed=9").samples == 12);

  shm::SnapshotView view(pub.snapshot);
  CHECK(view.find(series_record_key("up{src=\"http\"}")));
  CHECK(view.find(series_record_key("cpu.temp{dc=\"eu\",host=\"h2\"}")));
  CHECK(view.list(kSeriesList).size() == pipeline.aggregator().series_count());
}

TEST_CASE("a failing source keeps its earlier data - recovery counts again") {
  Base b;
  Upstream upstream(b.base);
  Config c;
  c.source_timeout = std::chrono::milliseconds(300);
  c.sources = {upstream.url("/native")};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  pipeline.run_once();
  REQUIRE(pipeline.aggregator().series("up{src=\"http\"}"));
  upstream.native_body = "{\"samples\":[";  // now broken
  pipeline.run_once();
  CHECK(pub.statuses[0].errors == 1);
  CHECK(pub.statuses[0].last_error.find("parse") != std::string::npos);
  CHECK(pipeline.aggregator().series("up{src=\"http\"}")->count == 1);
  CHECK(shm::SnapshotView(pub.snapshot).find(series_record_key("up{src=\"http\"}")));
  upstream.native_body = R"([{"metric":"up","labels":{"src":"http"},"value":1}])";
  pipeline.run_once();
  CHECK(pub.statuses[0].last_error.empty());
  CHECK(pub.statuses[0].errors == 1);  // a total, kept
}

TEST_CASE("start() ticks on the interval - stop() ends it") {
  Base b;
  Config c;
  c.interval = std::chrono::milliseconds(20);
  c.window = std::chrono::milliseconds(1000);
  c.sources = {"synthetic://?hosts=2&metrics=2"};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  pipeline.start();
  CHECK(pub.count == 1);  // the first tick runs at once (synchronous sources)
  for (int i = 0; i < 1000 && pub.count < 4; ++i) event_base_loop(b.base, EVLOOP_ONCE);
  CHECK(pub.count >= 4);
  pipeline.stop();
  int after = pub.count;
  event_base_loop(b.base, EVLOOP_NONBLOCK);
  CHECK(pub.count == after);
}

TEST_CASE("reconfigure keeps unchanged sources / drops removed ones / rejects bad configs") {
  Base b;
  Config c = small_config();
  const std::string file = "file://" + data_path("good/native.json");
  const std::string synth = "synthetic://?hosts=2&metrics=3";
  c.sources = {file, synth};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  pipeline.run_once();
  CHECK(pipeline.aggregator().series_count() == 2 + 6);  // the file's 2024 sample is too old

  Config bad = c;
  bad.sources = {file, "gopher://x"};
  CHECK_THROWS_AS(pipeline.reconfigure(bad), std::invalid_argument);
  Config bad_interval = c;
  bad_interval.interval = std::chrono::milliseconds(0);
  CHECK_THROWS_AS(pipeline.reconfigure(bad_interval), std::invalid_argument);
  CHECK(pipeline.config().sources.size() == 2);

  Config next = c;
  next.sources = {"synthetic://?hosts=1&metrics=1", file};
  next.window = std::chrono::milliseconds(20000);
  pipeline.reconfigure(next);
  CHECK(pipeline.aggregator().series_count() == 2);  // the old synthetic series are gone
  CHECK(pipeline.aggregator().series("up")->count == 1);  // the file's series kept
  pipeline.run_once();
  REQUIRE(pub.statuses.size() == 2);
  CHECK(pub.statuses[0].url == "synthetic://?hosts=1&metrics=1");
  CHECK(pub.statuses[1].url == file);
  CHECK(pub.statuses[1].samples == 2 + 2);  // counters kept; 2 new samples without ts
  CHECK(pipeline.config().window == std::chrono::milliseconds(20000));
}

TEST_CASE("bad source URLs are refused when the pipeline is made") {
  Base b;
  for (const char* url : {"ftp://x", "file://relative", "http://", "synthetic://?hosts=0",
                          "synthetic://?bogus=1", "synthetic://?hosts=abc"}) {
    INFO(url);
    Config c;
    c.sources = {url};
    CHECK_THROWS_AS(Pipeline(b.base, c, nullptr), std::invalid_argument);
  }
}

TEST_CASE("the synthetic source is deterministic for a seed and realistic in shape") {
  Base b;
  auto run = [&](const char* url) {
    Config c;
    c.sources = {url};
    Published pub;
    Pipeline p(b.base, c, recorder(pub));
    p.run_once();
    shm::SnapshotView view(pub.snapshot);
    std::vector<std::string> bodies;
    for (const auto& r : view.list(kSeriesList)) {
      std::string body(r.value);
      bodies.push_back(body.substr(0, body.find("\"first_ts\"")));  // ts differ per run
    }
    return bodies;
  };
  auto a = run("synthetic://?hosts=5&metrics=12&seed=3");
  auto again = run("synthetic://?hosts=5&metrics=12&seed=3");
  auto other = run("synthetic://?hosts=5&metrics=12&seed=4");
  CHECK(a.size() == 60);
  CHECK(a == again);
  CHECK(a != other);
  CHECK(a[0].find("\"labels\":{\"dc\":") != std::string::npos);
}

TEST_CASE("a response head that never ends is cut off at kMaxResponseHeaderBytes") {
  Base b;
  RawUpstream endless_headers(b.base);
  endless_headers.response = "HTTP/1.1 200 OK\r\n";
  endless_headers.repeat = "X-Filler: " + std::string(1000, 'a') + "\r\n";
  RawUpstream endless_status(b.base);
  endless_status.response = "HTTP/1.1 200 ";
  endless_status.repeat = std::string(4096, 'a');
  Upstream good(b.base);
  Config c;
  c.source_timeout = std::chrono::milliseconds(3000);  // generous: the limit comes first
  c.max_body_bytes = 1 << 20;
  c.sources = {endless_headers.url(), endless_status.url(), good.url("/native")};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  pipeline.run_once();
  for (const std::string& url : {endless_headers.url(), endless_status.url()}) {
    const auto& s = status_of(pub, url);
    INFO(url << ": " << s.last_error);
    CHECK(s.errors == 1);
    CHECK(s.last_error == fmt::format("response headers over {} bytes", kMaxResponseHeaderBytes));
  }
  CHECK(status_of(pub, good.url("/native")).last_error.empty());
  CHECK(status_of(pub, good.url("/native")).samples == 1);
  // Each stopped at the limit plus one socket read, not at the deadline.
  CHECK(pipeline.fetch_memory_peak() < 4 * kMaxResponseHeaderBytes);
}

TEST_CASE("a large body leaves no large buffer behind once its tick is over") {
  Base b;
  RawUpstream sized(b.base), chunked(b.base);
  sized.response = http_response(samples_body("big", "sized", 8 << 20));
  chunked.response = one_chunk_response(samples_body("big", "chunked", 8 << 20));
  Config c;
  c.source_timeout = std::chrono::milliseconds(30000);
  c.max_body_bytes = 16 << 20;
  c.fetch_memory_limit = 64 << 20;
  c.sources = {sized.url(), chunked.url()};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  pipeline.run_once();
  for (const auto& s : pub.statuses) {
    INFO(s.url << ": " << s.last_error);
    CHECK(s.last_error.empty());
    CHECK(s.bytes > (8 << 20));
  }
  CHECK(pipeline.aggregator().series("big{src=\"sized\"}"));
  CHECK(pipeline.aggregator().series("big{src=\"chunked\"}"));
  // Kept between ticks: at most 1 MiB per source body, 8 MiB of parser buffers.
  CHECK(pipeline.buffer_bytes() <= (2 << 20) + (8 << 20));
  CHECK(pipeline.fetch_memory_peak() > (8 << 20));
}

TEST_CASE("fetches in flight together hold at most fetch_memory_limit - a fetch that would pass it fails alone") {
  Base b;
  constexpr size_t kLimit = 4 << 20;
  RawUpstream upstream(b.base);
  Config c;
  c.source_timeout = std::chrono::milliseconds(30000);
  c.max_body_bytes = kLimit;
  c.fetch_memory_limit = kLimit;
  for (int i = 0; i < 4; ++i) {
    std::string path = fmt::format("/{}", i);
    upstream.by_path[path] =
        http_response(fmt::format(R"([{{"metric":"up","labels":{{"src":"{}"}},"value":1}}])", i));
    c.sources.push_back(upstream.url(path));
  }
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  pipeline.run_once();
  for (const auto& s : pub.statuses) CHECK(s.last_error.empty());

  // Now four bodies of 3 MiB, answered together: 12 MiB against a limit of 4. Two come
  // with a Content-Length, two as one chunk each (which evhttp holds until it is
  // complete: counted all the same).
  for (int i = 0; i < 4; ++i) {
    std::string body = samples_body("big", std::to_string(i), 3 << 20);
    upstream.by_path[fmt::format("/{}", i)] = i % 2 ? one_chunk_response(body) : http_response(body);
  }
  upstream.hold_until = 4 + 4;  // the four requests of this tick
  pipeline.run_once();
  int failed = 0;
  for (int i = 0; i < 4; ++i) {
    const auto& s = pub.statuses[i];
    INFO(s.url << ": " << s.last_error);
    std::string up = fmt::format("up{{src=\"{}\"}}", i);
    std::string big = fmt::format("big{{src=\"{}\"}}", i);
    if (s.last_error.empty()) {
      CHECK(pipeline.aggregator().series(big));
    } else {
      ++failed;
      CHECK(s.last_error.rfind("over fetch_memory_limit: ", 0) == 0);
      CHECK_FALSE(pipeline.aggregator().series(big));
    }
    // The last good data of every source is kept, failed or not.
    CHECK(shm::SnapshotView(pub.snapshot).find(series_record_key(up)));
  }
  CHECK(failed >= 1);  // they stream at once, and 3 MiB + 3 MiB never fit in 4
  CHECK(pipeline.fetch_memory_peak() <= kLimit);
  CHECK(pipeline.fetch_memory_peak() > kLimit / 2);
}
