// prometheus_e2e_test.cc: telemetryd's /metrics as Prometheus's own tools take it.
//
// A real telemetryd reads fixed samples of every kind (counter, gauge, histogram,
// summary, untyped, and JSON labels whose names Prometheus spells differently) from
// files. `promtool check metrics` must accept its live /metrics without a word, and a
// real Prometheus server, started by the test on a free loopback port with its own
// configuration and storage in a temporary directory, must scrape it and answer queries
// with exactly what telemetryd's JSON API says for the same series. The samples never
// change, so the two reads agree exactly whatever lies between them, and every series
// compared has a value of its own: a wrong name or label mapping cannot match by chance.
// Without promtool or prometheus a test says so and exits with kSkip (SKIP_RETURN_CODE).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include <fmt/format.h>
#include <simdjson.h>

#include "tests/server/e2e_util.h"

using namespace e2e;

namespace {

constexpr int kSkip = 77;

[[noreturn]] void skip(const std::string& why) {
  std::fprintf(stderr, "SKIPPED: %s\n", why.c_str());
  std::fflush(stderr);
  std::_Exit(kSkip);
}

// env names another binary (or, set to a path that does not exist, shows the skip).
std::string find_bin(const char* env, const char* path) {
  if (const char* p = std::getenv(env)) return access(p, X_OK) == 0 ? p : "";
  return access(path, X_OK) == 0 ? path : "";
}

const char kPromText[] =
    "# TYPE req_total counter\n"
    "req_total{path=\"/a\"} 10\n"
    "req_total{path=\"/b\"} 20\n"
    "# TYPE temp_celsius gauge\n"
    "temp_celsius{room=\"x\"} 21.5\n"
    "# TYPE lat_seconds histogram\n"
    "lat_seconds_bucket{le=\"0.1\"} 1\n"
    "lat_seconds_bucket{le=\"1\"} 3\n"
    "lat_seconds_bucket{le=\"+Inf\"} 4\n"
    "lat_seconds_sum 2.5\n"
    "lat_seconds_count 4\n"
    "# TYPE rpc_seconds summary\n"
    "rpc_seconds{quantile=\"0.5\"} 0.25\n"
    "rpc_seconds{quantile=\"0.9\"} 0.75\n"
    "rpc_seconds_sum 11\n"
    "rpc_seconds_count 40\n"
    "untyped_thing{a=\"1\"} 3\n";

// host.name and host_name both become host_name, metric and exported_metric both
// exported_metric: one sample holding a label name twice makes Prometheus refuse the
// whole scrape. The two dup series come out alike but for their keys: Prometheus keeps
// one sample of two alike series and drops the other.
const char kNative[] =
    R"({"samples":[)"
    R"({"metric":"disk.free","labels":{"host.name":"a","host_name":"b","metric":"c","exported_metric":"d"},"value":41},)"
    R"({"metric":"disk.free","labels":{"host.name":"e"},"value":42.5},)"
    R"({"metric":"dup","labels":{"a.b":"1"},"value":5},)"
    R"({"metric":"dup","labels":{"a_b":"1"},"value":6},)"
    R"({"metric":"up","value":1}]})";

struct Upstreams {
  TempDir dir;
  std::vector<std::string> flags;
  Upstreams() {
    write_file(dir.file("kinds.prom"), kPromText);
    write_file(dir.file("samples.json"), kNative);
    flags = {"--source", "file://" + dir.file("kinds.prom") + "?format=prometheus",
             "--source", "file://" + dir.file("samples.json"),
             "--source", "synthetic://?hosts=2&metrics=3",
             "--interval", "200ms", "--workers", "2"};
  }
};

// True once /metrics holds every kind: a summary's quantile, a rate (two samples), a
// histogram's bucket, the series of the JSON file. (Written to hold for any naming of the
// labels, so that a wrong one fails in promtool or Prometheus, which say why.)
bool every_kind_present(const std::string& body) {
  for (const char* part : {"telemetry_metric_quantile{metric=\"rpc_seconds\",quantile=\"0.5\"}",
                           "telemetry_metric_rate{metric=\"req_total\"}", "le=\"+Inf\"",
                           "{metric=\"disk.free\","})
    if (body.find(part) == std::string::npos) return false;
  return true;
}

std::string live_metrics(const Service& service) {
  std::string body;
  bool ready = wait_for(
      [&] {
        HttpResponse r = http_get(service.port(), "/metrics");
        body = r.body;
        return r.status == 200 && every_kind_present(body);
      },
      30s);
  INFO(body);
  REQUIRE(ready);
  return body;
}

// Prometheus on 127.0.0.1:port with its configuration and storage in dir, stopped by its
// pid.
class Prometheus {
 public:
  Prometheus(const std::string& bin, const TempDir& dir, uint16_t target) : port_(free_port()) {
    log_ = dir.file("prometheus.log");
    std::string config = dir.file("prometheus.yml");
    write_file(config, fmt::format("global:\n"
                                   "  scrape_interval: 1s\n"
                                   "  scrape_timeout: 1s\n"
                                   "scrape_configs:\n"
                                   "  - job_name: telemetryd\n"
                                   "    static_configs:\n"
                                   "      - targets: ['127.0.0.1:{}']\n",
                                   target));
    std::vector<std::string> argv = {bin, "--config.file=" + config,
                                     fmt::format("--web.listen-address=127.0.0.1:{}", port_),
                                     "--storage.tsdb.path=" + dir.file("tsdb")};
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      dup2(fd, 1);
      dup2(fd, 2);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
  }
  ~Prometheus() { stop(); }
  uint16_t port() const { return port_; }
  bool running() { return pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) == 0; }
  std::string log() const {
    std::string text;
    if (FILE* f = std::fopen(log_.c_str(), "r")) {
      char buf[4096];
      size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
      std::fclose(f);
    }
    return text;
  }
  void stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    if (!wait_for([&] { return waitpid(pid_, nullptr, WNOHANG) != 0; }, 10s)) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
  }

  // The health and last error of the only target ("" before the first scrape).
  std::string target_health(std::string* last_error) const {
    HttpResponse r = http_get(port_, "/api/v1/targets");
    simdjson::dom::parser parser;
    simdjson::dom::element targets;
    if (r.status != 200 || parser.parse(r.body)["data"]["activeTargets"].get(targets)) return "";
    for (simdjson::dom::element t : targets.get_array()) {
      std::string_view health, error;
      if (t["health"].get(health) || t["lastError"].get(error)) return "";
      *last_error = std::string(error);
      return std::string(health);
    }
    return "";
  }

  // The value of an instant query that must select exactly one series; nullopt while it
  // selects none (no scrape yet). Two series fail the test: a family must not repeat one.
  std::optional<double> query_one(const std::string& promql) const {
    HttpResponse r = http_get(port_, "/api/v1/query?query=" + url_encode(promql));
    simdjson::dom::parser parser;
    simdjson::dom::array result;
    INFO(promql << " -> " << r.body);
    if (r.status != 200 || parser.parse(r.body)["data"]["result"].get(result)) return std::nullopt;
    if (result.size() == 0) return std::nullopt;
    REQUIRE(result.size() == 1);
    std::string_view value;
    REQUIRE_FALSE(result.at(0)["value"].at(1).get(value));
    return std::strtod(std::string(value).c_str(), nullptr);
  }

 private:
  uint16_t port_;
  pid_t pid_ = -1;
  std::string log_;
};

// A number field of a telemetryd JSON body.
double json_number(uint16_t port, const std::string& target, const char* field) {
  HttpResponse r = http_get(port, target);
  INFO(target << " -> " << r.status << " " << r.body);
  REQUIRE(r.status == 200);
  simdjson::dom::parser parser;
  double v = 0;
  REQUIRE_FALSE(parser.parse(r.body)[field].get(v));
  return v;
}

}  // namespace

TEST_CASE("promtool check metrics accepts telemetryd's live /metrics with every kind of sample", "[e2e]") {
  std::string promtool = find_bin("PROMTOOL_BIN", "/usr/bin/promtool");
  if (promtool.empty()) skip("promtool is not installed (package prometheus; scripts/deps.sh installs it)");
  Upstreams up;
  Service service(up.flags);
  std::string body = live_metrics(service);
  std::string file = up.dir.file("metrics.txt");
  write_file(file, body);
  // promtool reads the exposition on stdin; it prints each problem and exits non-zero.
  RunResult r = run({"/bin/sh", "-c", "exec \"$0\" check metrics < \"$1\"", promtool, file});
  INFO("promtool exit " << r.status << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err);
  CHECK(r.status == 0);
  CHECK(r.out.empty());
  CHECK(r.err.empty());
}

TEST_CASE("a real Prometheus scrapes telemetryd and answers what telemetryd's JSON API says", "[e2e]") {
  std::string bin = find_bin("PROMETHEUS_BIN", "/usr/bin/prometheus");
  if (bin.empty()) skip("prometheus is not installed (scripts/deps.sh installs it)");
  Upstreams up;
  Service service(up.flags);
  live_metrics(service);  // every sample is in; they do not change from here on
  Prometheus prom(bin, up.dir, service.port());

  // Up after its first scrape (the scrape manager starts a few seconds after the server).
  std::string health, error;
  bool scraped = wait_for(
      [&] {
        REQUIRE(prom.running());
        health = prom.target_health(&error);
        return health == "up" || health == "down";
      },
      60s);
  INFO("prometheus log:\n" << prom.log());
  REQUIRE(scraped);
  INFO("target health " << health << ", last error: " << error);
  REQUIRE(health == "up");
  // The scrape is stored before the target reports up; a query sees it at once, but poll
  // for it rather than trust that order.
  REQUIRE(wait_for([&] { return prom.query_one("telemetry_metric_series{metric=\"up\"}").has_value(); },
                   10s));

  const uint16_t port = service.port();
  auto series = [](const std::string& key) { return "/v1/series/" + url_encode(key); };
  struct Pair {
    std::string promql, target;
    const char* field;
  };
  const Pair pairs[] = {
      {"telemetry_metric_series{metric=\"req_total\"}", "/v1/metrics/req_total", "series_count"},
      {"telemetry_metric_last{metric=\"temp_celsius\"}", "/v1/metrics/temp_celsius", "last"},
      {"telemetry_metric_max{metric=\"disk.free\"}", "/v1/metrics/disk.free", "max"},
      {"telemetry_metric_min{metric=\"disk.free\"}", "/v1/metrics/disk.free", "min"},
      {"telemetry_metric_rate{metric=\"req_total\"}", "/v1/metrics/req_total", "rate"},
      {"telemetry_metric_quantile{metric=\"temp_celsius\",quantile=\"0.99\"}", "/v1/metrics/temp_celsius", "p99"},
      {"telemetry_metric_quantile{metric=\"rpc_seconds\",quantile=\"0.5\"}", "/v1/metrics/rpc_seconds", "p50"},
      {"telemetry_series_last{metric=\"req_total\",path=\"/b\"}", series("req_total{path=\"/b\"}"), "last"},
      {"telemetry_series_last{metric=\"lat_seconds_bucket\",exported_le=\"1\"}",
       series("lat_seconds_bucket{le=\"1\"}"), "last"},
      {"telemetry_series_last{metric=\"rpc_seconds\",exported_quantile=\"0.9\"}",
       series("rpc_seconds{quantile=\"0.9\"}"), "last"},
      {"telemetry_series_last{metric=\"disk.free\",host_name=\"a;b\",exported_metric=\"d;c\"}",
       series("disk.free{exported_metric=\"d\",host.name=\"a\",host_name=\"b\",metric=\"c\"}"), "last"},
      {"telemetry_series_last{metric=\"disk.free\",host_name=\"e\"}", series("disk.free{host.name=\"e\"}"),
       "last"},
      {"telemetry_series_last{metric=\"dup\",series_key=\"dup{a.b=\\\"1\\\"}\"}", series("dup{a.b=\"1\"}"), "last"},
      {"telemetry_series_last{metric=\"dup\",series_key=\"dup{a_b=\\\"1\\\"}\"}", series("dup{a_b=\"1\"}"), "last"},
  };
  for (const Pair& p : pairs) {
    INFO(p.promql << " against " << p.target << " " << p.field);
    std::optional<double> scraped_value = prom.query_one(p.promql);
    REQUIRE(scraped_value);
    CHECK(*scraped_value == json_number(port, p.target, p.field));
  }
  // The reader's own families come through the same scrape.
  std::optional<double> served = prom.query_one("telemetryd_http_requests_total{endpoint=\"prometheus\"}");
  REQUIRE(served);
  CHECK(*served >= 1);
  prom.stop();
}
