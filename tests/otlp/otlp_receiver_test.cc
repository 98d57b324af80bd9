// otlp_receiver_test.cc: the OTLP/HTTP receiver in-process, on a real loopback socket:
// status codes, gzip, chunked bodies, a gzip bomb, partial success in both encodings,
// back-pressure, and pushed samples reaching the aggregator through a Pipeline tick.
#include <catch2/catch.hpp>
#include <event2/event.h>

#include <cstdio>
#include <future>

#include "ingest/ingest.h"
#include "ingest/source/otlp_receiver.h"
#include "otlp/metrics_service.pb.h"
#include "otlp/status.pb.h"
#include "tests/otlp/otlp_util.h"

using namespace ingest;
using namespace otlp_test;
using namespace std::chrono_literals;

namespace {

// An event loop on this thread; requests are sent from another and the loop runs
// until their answer is in.
struct Loop {
  event_base* base = event_base_new();
  event* wake = nullptr;  // a timer, so that EVLOOP_ONCE returns while a client works
  Loop() {
    wake = event_new(base, -1, EV_PERSIST, [](evutil_socket_t, short, void*) {}, nullptr);
    timeval tv{0, 10'000};
    event_add(wake, &tv);
  }
  ~Loop() {
    event_free(wake);
    event_base_free(base);
  }
  // Receivers whose admitted requests are answered as if a tick took and committed them
  // at once: for the tests of what a request is answered, not when.
  std::vector<OtlpReceiver*> committing;
  Reply send(uint16_t port, const std::string& request) {
    auto reply = std::async(std::launch::async, exchange, port, request);
    while (reply.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      event_base_loop(base, EVLOOP_ONCE);
      for (OtlpReceiver* r : committing)
        if (r->unanswered()) r->settle(~uint64_t{0}, true);
    }
    return reply.get();
  }
};

// Runs the loop until the receiver has admitted a request it has not answered.
bool loop_until_unanswered(Loop& loop, const OtlpReceiver& rx) {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (rx.unanswered() == 0 && std::chrono::steady_clock::now() < end) event_base_loop(loop.base, EVLOOP_ONCE);
  return rx.unanswered() != 0;
}

OtlpOptions test_options() {
  OtlpOptions o;
  o.port = 0;
  o.max_body_bytes = 64 << 10;
  o.retry_after = std::chrono::milliseconds(200);
  return o;
}

Config tick_config() {
  Config c;
  c.sources = {"synthetic://?hosts=1&metrics=1"};
  c.interval = std::chrono::milliseconds(200);
  return c;
}

const shm::SourceStatus& status_of(const std::vector<shm::SourceStatus>& all, const std::string& url) {
  for (const auto& s : all)
    if (s.url == url) return s;
  FAIL("no status for " << url);
  throw;
}

constexpr const char* kJson = "application/json";
constexpr const char* kProtobuf = "application/x-protobuf";

}  // namespace

TEST_CASE("OTLP receiver: status codes for other paths, methods, types, encodings and bad bodies") {
  Loop loop;
  OtlpReceiver rx(loop.base, test_options());
  loop.committing.push_back(&rx);
  uint16_t port = rx.port();
  auto json = mixed_request_json(int64_t(shm::realtime_ns()));

  Reply r = loop.send(port, post("/v1/traces", kJson, json));
  CHECK(r.status == 404);
  r = loop.send(port, "GET /v1/metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  CHECK(r.status == 405);
  CHECK(r.headers["allow"] == "POST");
  r = loop.send(port, post("/v1/metrics", "text/plain", json));
  CHECK(r.status == 415);
  CHECK(r.body.find("Content-Type") != std::string::npos);
  r = loop.send(port, post("/v1/metrics", kJson, json, "Content-Encoding: br\r\n"));
  CHECK(r.status == 415);
  r = loop.send(port, post("/v1/metrics", kJson, "{\"resourceMetrics\":["));
  CHECK(r.status == 400);
  CHECK(r.headers["content-type"] == kJson);
  CHECK(r.body.find("\"message\":\"invalid JSON") != std::string::npos);
  r = loop.send(port, post("/v1/metrics", kJson, R"({"samples":[{"metric":"a","value":1}]})"));
  CHECK(r.status == 400);  // a native body is not OTLP
  r = loop.send(port, post("/v1/metrics", kProtobuf, "\xff\xff\xff\xff"));
  CHECK(r.status == 400);
  CHECK(r.headers["content-type"] == kProtobuf);
  r = loop.send(port, post("/v1/metrics", kJson, "not gzip", "Content-Encoding: gzip\r\n"));
  CHECK(r.status == 400);
  // Over otlp-max-body as sent (evhttp refuses it), chunked or not, and once inflated.
  std::string big = json + std::string(70 << 10, ' ');
  CHECK(loop.send(port, post("/v1/metrics", kJson, big)).status == 413);
  CHECK(loop.send(port, post("/v1/metrics", kJson, big, "", 8192)).status == 413);
  std::string bomb = gzip(json + std::string(50 << 20, ' '));  // 50 MiB in ~50 KiB
  REQUIRE(bomb.size() < 64 << 10);
  r = loop.send(port, post("/v1/metrics", kJson, bomb, "Content-Encoding: gzip\r\n"));
  CHECK(r.status == 413);
  CHECK(r.body.find("decompressed") != std::string::npos);
  CHECK(rx.pending() == 0);  // nothing of a refused request is kept
  CHECK(loop.send(port, post("/v1/metrics", kJson, json)).status == 200);
  CHECK(rx.pending() > 0);
}

TEST_CASE("OTLP receiver: gzip and chunked bodies - partial success in the request's encoding") {
  Loop loop;
  OtlpReceiver rx(loop.base, test_options());
  loop.committing.push_back(&rx);
  uint16_t port = rx.port();
  int64_t now = int64_t(shm::realtime_ns());

  Reply r = loop.send(port, post("/v1/metrics", "application/json; charset=utf-8", mixed_request_json(now)));
  REQUIRE(r.status == 200);
  CHECK(r.headers["content-type"] == kJson);
  CHECK(r.body.find(R"({"partialSuccess":{"rejectedDataPoints":"2","errorMessage":"sample 6: invalid)") == 0);

  r = loop.send(port, post("/v1/metrics", kProtobuf, mixed_request_protobuf(now + 1'000'000)));
  REQUIRE(r.status == 200);
  CHECK(r.headers["content-type"] == kProtobuf);
  opentelemetry::proto::collector::metrics::v1::ExportMetricsServiceResponse response;
  REQUIRE(response.ParseFromString(r.body));
  CHECK(response.partial_success().rejected_data_points() == 2);
  CHECK(response.partial_success().error_message().find("metric name") != std::string::npos);

  // gzip, sent chunked without a Content-Length as the JavaScript SDK does
  r = loop.send(port, post("/v1/metrics", kJson, gzip(mixed_request_json(now + 2'000'000)),
                           "Content-Encoding: gzip\r\n", 100));
  CHECK(r.status == 200);
  r = loop.send(port, post("/v1/metrics", kProtobuf, gzip(mixed_request_protobuf(now + 3'000'000)),
                           "Content-Encoding: GZIP\r\n", 7));
  CHECK(r.status == 200);

  // The next tick applies all four requests as the source otlp://127.0.0.1:PORT.
  Pipeline pipeline(loop.base, tick_config(), nullptr);
  pipeline.add_push_source(&rx);
  pipeline.run_once();
  const Aggregator& agg = pipeline.aggregator();
  auto requests = agg.series(R"(requests{lib="web",route="/pay",service.name="checkout"})");
  REQUIRE(requests);
  CHECK(requests->count == 4);
  CHECK(requests->last == 42);
  CHECK(requests->kind == SampleKind::counter);
  // delta: 100 per request on a running total that starts at 0
  auto bytes = agg.series(R"(bytes{lib="web",ok="true",ratio="0.5",service.name="checkout"})");
  REQUIRE(bytes);
  CHECK(bytes->last == 400);
  CHECK(bytes->first == 0);
  CHECK(bytes->count == 5);
  auto latency = agg.series(R"(latency_bucket{le="0.5",lib="web",service.name="checkout"})");
  REQUIRE(latency);
  CHECK(latency->last == 3);
  CHECK(agg.series(R"(size{lib="web",service.name="checkout"})"));  // the histogram series
  auto status = status_of(pipeline.statuses(), rx.url());
  CHECK(rx.url() == fmt::format("otlp://127.0.0.1:{}", port));
  CHECK(status.format == "otlp");
  CHECK(status.samples == 4 * 17 + 1);
  CHECK(status.dropped == 4 * 2);
  CHECK(status.last_error.find("8 data point(s) refused") == 0);
  CHECK(rx.pending() == 0);

  // A reload keeps the push source, its series and its counters.
  Config other = tick_config();
  other.sources = {"synthetic://?hosts=2&metrics=1"};
  pipeline.reconfigure(other);
  pipeline.run_once();
  REQUIRE(pipeline.statuses().size() == 2);
  CHECK(pipeline.statuses().back().url == rx.url());
  CHECK(pipeline.statuses().back().samples == 4 * 17 + 1);
  CHECK(agg.series(R"(requests{lib="web",route="/pay",service.name="checkout"})"));
}

TEST_CASE("OTLP receiver: 503 with Retry-After while the pending batch is full - served again after the tick") {
  Loop loop;
  OtlpOptions o = test_options();
  o.max_pending = 40;  // one mixed request needs 18 (17 samples, a delta one counted twice)
  OtlpReceiver rx(loop.base, o);
  loop.committing.push_back(&rx);
  uint16_t port = rx.port();
  Pipeline pipeline(loop.base, tick_config(), nullptr);
  pipeline.add_push_source(&rx);
  int64_t now = int64_t(shm::realtime_ns());
  CHECK(loop.send(port, post("/v1/metrics", kJson, mixed_request_json(now))).status == 200);
  CHECK(loop.send(port, post("/v1/metrics", kJson, mixed_request_json(now + 1))).status == 200);
  Reply r = loop.send(port, post("/v1/metrics", kProtobuf, mixed_request_protobuf(now + 2)));
  CHECK(r.status == 503);
  CHECK(r.headers["retry-after"] == "1");
  google::rpc::Status st;
  REQUIRE(st.ParseFromString(r.body));
  CHECK(st.code() == 14);
  CHECK(st.message().find("otlp-max-pending") != std::string::npos);
  CHECK(loop.send(port, post("/v1/other", kJson, "{}")).status == 404);  // still serving
  pipeline.run_once();
  CHECK(rx.pending() == 0);
  CHECK(loop.send(port, post("/v1/metrics", kProtobuf, mixed_request_protobuf(now + 2))).status == 200);
  auto status = status_of(pipeline.statuses(), rx.url());
  CHECK(status.last_error.find("1 request(s) refused since the last tick, the last: HTTP 503") == 0);

  // A request that could never fit is too large rather than early.
  o.max_pending = 10;
  OtlpReceiver small(loop.base, o);
  loop.committing.push_back(&small);
  r = loop.send(small.port(), post("/v1/metrics", kJson, mixed_request_json(now)));
  CHECK(r.status == 413);
  CHECK(r.headers.count("retry-after") == 0);
}

TEST_CASE("OTLP receiver: an address in use is a clear error at start") {
  Loop loop;
  OtlpReceiver first(loop.base, test_options());
  OtlpOptions o = test_options();
  o.port = first.port();
  try {
    OtlpReceiver second(loop.base, o);
    FAIL("a second receiver bound the same port");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()) ==
          fmt::format("otlp-listen 127.0.0.1:{}: cannot listen: Address already in use", o.port));
  }
}

TEST_CASE("fetched OTLP/JSON delta points become running totals too - a body read twice adds nothing") {
  Loop loop;
  char path[] = "/tmp/telemetryd-otlp-delta-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  auto write_delta = [&](int64_t start, int64_t ts, double value) {
    std::string body = fmt::format(
        R"({{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"jobs","sum":{{"aggregationTemporality":1,
          "isMonotonic":true,"dataPoints":[{{"startTimeUnixNano":"{}","timeUnixNano":"{}","asDouble":{}}}]}}}}]}}]}}]}})",
        start, ts, value);
    FILE* f = std::fopen(path, "w");
    std::fwrite(body.data(), 1, body.size(), f);
    std::fclose(f);
  };
  Config c = tick_config();
  c.sources = {std::string("file://") + path};
  Pipeline pipeline(loop.base, c, nullptr);
  int64_t t = int64_t(shm::realtime_ns()) - 10 * kSec;
  write_delta(t, t + kSec, 5);
  pipeline.run_once();
  write_delta(t + kSec, t + 2 * kSec, 3);
  pipeline.run_once();
  pipeline.run_once();  // the same body again
  auto jobs = pipeline.aggregator().series("jobs");
  REQUIRE(jobs);
  CHECK(jobs->last == 8);
  CHECK(jobs->first == 0);
  CHECK(jobs->count == 3);
  CHECK(jobs->kind == SampleKind::counter);
  unlink(path);
}

TEST_CASE("OTLP receiver: 200 only once the tick that took the points is committed, 503 when it never will be") {
  Loop loop;
  OtlpReceiver rx(loop.base, test_options());
  Pipeline leader(loop.base, tick_config(), nullptr);
  leader.add_push_source(&rx);
  std::vector<uint64_t> entries;
  leader.set_entry_sink([&](uint64_t seq, std::string) { entries.push_back(seq); });
  int64_t now = int64_t(shm::realtime_ns());
  auto pending_reply = [&](const std::string& body) {
    return std::async(std::launch::async, exchange, rx.port(), post("/v1/metrics", kJson, body));
  };
  auto run_until = [&](auto& reply, std::chrono::milliseconds limit) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (reply.wait_for(std::chrono::seconds(0)) != std::future_status::ready &&
           std::chrono::steady_clock::now() < end)
      event_base_loop(loop.base, EVLOOP_ONCE);
    return reply.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  };
  auto first = pending_reply(mixed_request_json(now));
  CHECK_FALSE(run_until(first, 300ms));  // admitted, not taken by any tick yet
  REQUIRE(rx.unanswered() == 1);
  leader.run_once();
  REQUIRE(entries.size() == 1);
  CHECK_FALSE(run_until(first, 300ms));  // applied here, not in the log yet
  leader.publish_committed(entries[0]);
  REQUIRE(run_until(first, 5s));
  CHECK(first.get().status == 200);

  auto second = pending_reply(mixed_request_json(now + 1));
  REQUIRE(loop_until_unanswered(loop, rx));
  leader.run_once();
  leader.set_fetching(false);  // stopped leading before the log took the tick
  REQUIRE(run_until(second, 5s));
  Reply r = second.get();
  CHECK(r.status == 503);
  CHECK(r.headers["retry-after"] == "1");
  CHECK(r.body.find("not committed") != std::string::npos);
  CHECK(rx.unanswered() == 0);
}
