// bench_ingest: ingest throughput and snapshot build cost.
//
//   parse + aggregate, native and OTLP/JSON: samples/s and MB/s on one core, steady state
//     (series exist; every fetch carries new timestamps, as a live upstream would), and
//     simdjson's DOM parse of the same body alone: the floor of any simdjson parser
//   Prometheus text: node_exporter's own /metrics (bench/ingest/node_exporter.txt),
//     parsed and aggregated the same way, beside the same samples as a native JSON body
//   snapshot build: Aggregator::build + SnapshotBuilder::serialize_into for N series
//   memory: writer state per series (1 sample, and a full window) and snapshot bytes
//
// Usage: bench_ingest [series=100000] [repeats=5] [all|parse|prometheus|build]. Every figure is
// the median of the repeats. Times are this thread's CPU time (CLOCK_THREAD_CPUTIME_ID),
// so that other processes on a shared machine do not count as our cost; they still
// share the caches and memory bandwidth.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "bench/measure.h"
#include <simdjson.h>

#include "ingest/ingest.h"

using namespace ingest;
// This thread's CPU time as a clock.
struct Clock {
  using time_point = double;
  static double now() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
  }
};

namespace {

using bench::kSec;
using bench::kT0;
using bench::median;
constexpr const char* kMetrics[] = {"cpu.usage_percent", "mem.used_bytes", "http.latency_ms",
                                    "disk.io_ops_total", "temperature_celsius"};
constexpr const char* kDcs[] = {"eu-west", "us-east", "ap-south"};

double seconds_since(Clock::time_point t) { return Clock::now() - t; }

// One fetch body of `series` samples at fetch `tick` (2 s apart), padded for simdjson.
std::string native_body(size_t series, int tick) {
  std::string out = "{\"samples\":[";
  double ts = static_cast<double>(kT0 / kSec) + 2.0 * tick + 0.25;
  for (size_t i = 0; i < series; ++i) {
    if (i) out += ',';
    fmt::format_to(std::back_inserter(out),
                   "{{\"metric\":\"{}\",\"labels\":{{\"host\":\"host-{:06}\",\"dc\":\"{}\"}},"
                   "\"value\":{},\"ts\":{}}}",
                   kMetrics[i % 5], i / 5, kDcs[(i / 5) % 3], 40.0 + (i % 97) * 0.37 + tick,
                   ts);
  }
  out += "]}";
  return out;
}

std::string otlp_body(size_t series, int tick) {
  std::string out = "{\"resourceMetrics\":[";
  int64_t ts = kT0 + tick * 2 * kSec + kSec / 4;
  size_t hosts = (series + 4) / 5;
  for (size_t h = 0; h < hosts; ++h) {
    if (h) out += ',';
    fmt::format_to(std::back_inserter(out),
                   "{{\"resource\":{{\"attributes\":[{{\"key\":\"host\",\"value\":{{"
                   "\"stringValue\":\"host-{:06}\"}}}},{{\"key\":\"dc\",\"value\":{{"
                   "\"stringValue\":\"{}\"}}}}]}},\"scopeMetrics\":[{{\"metrics\":[",
                   h, kDcs[h % 3]);
    for (size_t m = 0; m < 5 && h * 5 + m < series; ++m) {
      if (m) out += ',';
      fmt::format_to(std::back_inserter(out),
                     "{{\"name\":\"{}\",\"gauge\":{{\"dataPoints\":[{{\"asDouble\":{},"
                     "\"timeUnixNano\":\"{}\"}}]}}}}",
                     kMetrics[m], 40.0 + ((h * 5 + m) % 97) * 0.37 + tick, ts);
    }
    out += "]}]}";
  }
  out += "]}";
  return out;
}

struct Throughput {
  double parse_sps, parse_mbps, total_sps, total_mbps;
};

// Steady state: warm-up fetches create the series and fill the window (10 intervals of
// 2 s), so the timed fetches see what a long-running writer sees: every series exists,
// the oldest bucket leaves as a new one starts.
Throughput run_throughput(size_t series, std::string (*make)(size_t, int)) {
  constexpr int kWarm = 11, kTimed = 4;
  Config config;
  config.interval = std::chrono::milliseconds(2000);
  config.window = std::chrono::milliseconds(20'000);
  Parser parser;
  Aggregator agg(config);
  shm::SnapshotBuilder builder;
  size_t bytes = 0;
  double parse_s = 0, total_s = 0;
  for (int t = 0; t < kWarm + kTimed; ++t) {
    std::string body = make(series, t);
    body.reserve(body.size() + Parser::padding());
    int64_t now = kT0 + static_cast<int64_t>(t) * 2 * kSec + kSec;
    auto start = Clock::now();
    ParseResult r = parser.parse_padded(body, body.capacity());
    double p = seconds_since(start);
    ApplyStats st = agg.apply(0, parser.samples(), now);
    double total = seconds_since(start);
    if (!r.ok || st.accepted != series) {
      fmt::print(stderr, "bench: {} of {} samples accepted ({})\n", st.accepted, series, r.error);
      std::exit(1);
    }
    if (t == kWarm - 1) agg.expire(now);  // trims the window as build() would
    if (t < kWarm) continue;
    parse_s += p;
    total_s += total;
    bytes += body.size();
  }
  double samples = static_cast<double>(series * kTimed);
  return {samples / parse_s, static_cast<double>(bytes) / 1e6 / parse_s, samples / total_s,
          static_cast<double>(bytes) / 1e6 / total_s};
}

// simdjson's DOM parser on the same body, reading nothing out of it: what any parser
// built on simdjson costs at least, the floor under our parse figure.
double dom_parse_floor(size_t series, int repeats, std::string (*make)(size_t, int)) {
  std::string body = make(series, 1);
  body.reserve(body.size() + simdjson::SIMDJSON_PADDING);  // parsed in place, no copy
  simdjson::dom::parser dom;
  std::vector<double> rates;
  for (int r = 0; r < repeats; ++r) {
    auto start = Clock::now();
    simdjson::dom::element root;
    if (dom.parse(body.data(), body.size(), false).get(root)) std::exit(1);
    rates.push_back(static_cast<double>(series) / seconds_since(start));
  }
  return median(rates);
}

// One body fetched again and again, as a live upstream is scraped every tick: samples
// without timestamps, so every fetch's samples are new (they take the fetch time).
Throughput run_body(const std::string& text, std::string_view content_type, size_t samples) {
  constexpr int kWarm = 11, kTimed = 200;
  Config config;
  config.interval = std::chrono::milliseconds(2000);
  config.window = std::chrono::milliseconds(20'000);
  Parser parser;
  Aggregator agg(config);
  std::string body = text;
  body.reserve(body.size() + Parser::padding());
  double parse_s = 0, total_s = 0;
  for (int t = 0; t < kWarm + kTimed; ++t) {
    int64_t now = kT0 + static_cast<int64_t>(t) * 2 * kSec;
    auto start = Clock::now();
    ParseResult r = parser.parse_padded(body, body.capacity(), content_type);
    double p = seconds_since(start);
    ApplyStats st = agg.apply(0, parser.samples(), now);
    double total = seconds_since(start);
    if (!r.ok || r.rejected || st.accepted != samples) {
      fmt::print(stderr, "bench: {} of {} samples accepted ({})\n", st.accepted, samples, r.error);
      std::exit(1);
    }
    if (t % 10 == 0) agg.expire(now);
    if (t < kWarm) continue;
    parse_s += p;
    total_s += total;
  }
  double n = static_cast<double>(samples * kTimed);
  double mb = static_cast<double>(text.size() * kTimed) / 1e6;
  return {n / parse_s, mb / parse_s, n / total_s, mb / total_s};
}

// The samples of a parsed body as a native JSON body (no timestamps either).
std::string native_from(std::span<const Sample> samples) {
  std::string out = "{\"samples\":[";
  for (size_t i = 0; i < samples.size(); ++i) {
    const Sample& s = samples[i];
    if (i) out += ',';
    out += "{\"metric\":";
    append_json_string(out, std::string(s.metric) + std::string(s.suffix));
    out += ",\"labels\":{";
    for (size_t j = 0; j < s.labels.size(); ++j) {
      if (j) out += ',';
      append_json_string(out, s.labels[j].name);
      out += ':';
      append_json_string(out, s.labels[j].value);
    }
    fmt::format_to(std::back_inserter(out), "}},\"value\":{}}}", s.value);
  }
  return out + "]}";
}

// node_exporter's output against the native parser on the same samples.
void bench_node_exporter(int repeats) {
  std::ifstream in(NODE_EXPORTER_BODY, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  const std::string prom = text.str();
  constexpr std::string_view kType = "text/plain; version=0.0.4; charset=utf-8";
  Parser parser;
  ParseResult r = parser.parse(prom, kType);
  if (!r.ok || r.rejected || parser.samples().empty()) {
    fmt::print(stderr, "bench: cannot parse {}: {}\n", NODE_EXPORTER_BODY, r.error);
    std::exit(1);
  }
  const size_t samples = parser.samples().size();
  const std::string native = native_from(parser.samples());
  struct Case {
    const char* name;
    const std::string& body;
    std::string_view type;
  };
  const Case cases[] = {{"prometheus", prom, kType}, {"native", native, "application/json"}};
  // Repetitions alternate between the two, so that a machine that slows down or speeds
  // up meanwhile weighs on both alike.
  std::vector<double> ps[2], pm[2], ts[2], tm[2];
  for (int i = 0; i < repeats; ++i) {
    for (int c = 0; c < 2; ++c) {
      Throughput t = run_body(cases[c].body, cases[c].type, samples);
      ps[c].push_back(t.parse_sps);
      pm[c].push_back(t.parse_mbps);
      ts[c].push_back(t.total_sps);
      tm[c].push_back(t.total_mbps);
    }
  }
  for (int c = 0; c < 2; ++c)
    fmt::print("{:<10} node_exporter body: {:>4} samples {:>6.1f} B/sample  parse {:>6.2f} M samples/s"
               " {:>6.0f} MB/s   parse+aggregate {:>6.2f} M samples/s {:>6.0f} MB/s\n",
               cases[c].name, samples,
               static_cast<double>(cases[c].body.size()) / static_cast<double>(samples),
               median(ps[c]) / 1e6, median(pm[c]), median(ts[c]) / 1e6, median(tm[c]));
}

void bench_format(const char* name, size_t series, int repeats,
                  std::string (*make)(size_t, int)) {
  std::vector<double> ps, pm, ts, tm;
  for (int r = 0; r < repeats; ++r) {
    Throughput t = run_throughput(series, make);
    ps.push_back(t.parse_sps);
    pm.push_back(t.parse_mbps);
    ts.push_back(t.total_sps);
    tm.push_back(t.total_mbps);
  }
  double sample_bytes = static_cast<double>(make(series, 1).size()) / static_cast<double>(series);
  fmt::print("{:<7} {:>8} series {:>6.1f} B/sample  parse {:>6.2f} M samples/s {:>6.0f} MB/s"
             "   parse+aggregate {:>6.2f} M samples/s {:>6.0f} MB/s"
             "   (simdjson DOM parse alone {:>6.2f} M samples/s)\n",
             name, series, sample_bytes, median(ps) / 1e6, median(pm), median(ts) / 1e6,
             median(tm), dom_parse_floor(series, repeats, make) / 1e6);
}

// Builds an Aggregator holding `series` series with `intervals` samples each, 2 s apart.
Aggregator populate(size_t series, int intervals) {
  Config config;
  config.window = std::chrono::milliseconds(60'000);
  config.max_series = config.max_series_per_source = series;
  Aggregator agg(config);
  std::vector<std::string> hosts;
  for (size_t h = 0; h < (series + 4) / 5; ++h) hosts.push_back(fmt::format("host-{:06}", h));
  std::vector<Label> labels(2 * hosts.size());
  for (size_t h = 0; h < hosts.size(); ++h) {
    labels[2 * h] = {"dc", kDcs[h % 3]};
    labels[2 * h + 1] = {"host", hosts[h]};
  }
  std::vector<Sample> samples(series);
  for (int t = 0; t < intervals; ++t) {
    int64_t now = kT0 + t * 2 * kSec;
    for (size_t i = 0; i < series; ++i) {
      samples[i].metric = kMetrics[i % 5];
      samples[i].labels = std::span<const Label>(&labels[2 * (i / 5)], 2);
      samples[i].value = 40.0 + (i % 97) * 0.37 + t;
      samples[i].ts_ns = now;
    }
    agg.apply(0, samples, now);
  }
  return agg;
}

void bench_build(size_t series, int intervals, int repeats) {
  Aggregator agg = populate(series, intervals);
  int64_t now = kT0 + (intervals - 1) * 2 * kSec;
  shm::SnapshotBuilder builder;
  std::vector<std::byte> buffer;
  std::vector<double> build_s, serialize_s;
  size_t bytes = 0;
  for (int r = 0; r < repeats; ++r) {
    auto start = Clock::now();
    agg.build(builder, now);
    build_s.push_back(seconds_since(start));
    bytes = builder.serialized_size();
    if (buffer.size() < bytes) buffer.resize(bytes);
    start = Clock::now();
    builder.serialize_into(std::span<std::byte>(buffer.data(), bytes), 1, 0);
    serialize_s.push_back(seconds_since(start));
  }
  double per = static_cast<double>(series);
  fmt::print("build   {:>8} series x {:>2} intervals  build {:>7.1f} ms  serialize {:>6.1f} ms"
             "  total {:>7.1f} ms   state {:>5.0f} B/series  snapshot {:>4.0f} B/series\n",
             series, intervals, median(build_s) * 1e3, median(serialize_s) * 1e3,
             (median(build_s) + median(serialize_s)) * 1e3,
             static_cast<double>(agg.memory_bytes()) / per, static_cast<double>(bytes) / per);
}

}  // namespace

int main(int argc, char** argv) {
  size_t series = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 100'000;
  int repeats = argc > 2 ? std::atoi(argv[2]) : 5;
  if (series == 0 || repeats <= 0) {
    fmt::print(stderr, "usage: bench_ingest [series>0] [repeats>0]\n");
    return 2;
  }
  std::string only = argc > 3 ? argv[3] : "all";
  if (only == "all" || only == "parse") {
    bench_format("native", 10'000, repeats, native_body);
    bench_format("native", series, repeats, native_body);
    bench_format("otlp", 10'000, repeats, otlp_body);
    bench_format("otlp", series, repeats, otlp_body);
  }
  if (only == "all" || only == "parse" || only == "prometheus") bench_node_exporter(repeats);
  if (only == "all" || only == "build") {
    bench_build(series, 1, repeats);
    bench_build(series, 30, repeats);
    bench_build(10 * series, 1, repeats);
  }
  return 0;
}
