// node_exporter_e2e_test.cc: telemetryd scraping a real prometheus-node-exporter.
//
// Starts its own node_exporter on a free loopback port (never the one a package may
// have started as a service) and a real telemetryd with that /metrics as its source,
// then checks what telemetryd serves against the test's own scrapes of node_exporter:
// node_cpu_seconds_total's rates against the counters' deltas over the same span, the
// CPU seconds of one CPU over all modes growing by one per second, and
// node_memory_MemTotal_bytes exactly. Without node_exporter the test says so and exits
// with kSkip, which ctest reports as skipped (SKIP_RETURN_CODE).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <simdjson.h>

#include "tests/server/e2e_util.h"

using namespace e2e;

namespace {

constexpr int kSkip = 77;

// NODE_EXPORTER_BIN names another binary (or, set to a path that does not exist, shows
// the skip).
std::string node_exporter_bin() {
  if (const char* path = std::getenv("NODE_EXPORTER_BIN")) return access(path, X_OK) == 0 ? path : "";
  for (const char* path : {"/usr/bin/prometheus-node-exporter", "/usr/sbin/prometheus-node-exporter",
                           "/usr/local/bin/node_exporter"})
    if (access(path, X_OK) == 0) return path;
  return "";
}

[[noreturn]] void skip(const std::string& why) {
  std::fprintf(stderr, "SKIPPED: %s\n", why.c_str());
  std::fflush(stderr);
  std::_Exit(kSkip);
}

// node_exporter on 127.0.0.1:port, stopped by its pid.
class NodeExporter {
 public:
  NodeExporter(const std::string& bin, const TempDir& dir) : port_(free_port()) {
    std::string log = dir.file("node_exporter.log");
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      dup2(fd, 1);
      dup2(fd, 2);
      std::string listen = fmt::format("--web.listen-address=127.0.0.1:{}", port_);
      execl(bin.c_str(), bin.c_str(), listen.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    bool up = wait_for([&] { return running() && scrape().status == 200; }, 20s);
    if (!up) {
      std::string text;
      if (FILE* f = std::fopen(log.c_str(), "r")) {
        char buf[4096];
        text.assign(buf, std::fread(buf, 1, sizeof buf, f));
        std::fclose(f);
      }
      stop();
      skip(fmt::format("node_exporter ({}) did not start on port {}: {}", bin, port_, text));
    }
  }
  ~NodeExporter() { stop(); }
  uint16_t port() const { return port_; }
  HttpResponse scrape() const { return http_get(port_, "/metrics"); }

 private:
  bool running() {
    return pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) == 0;
  }
  void stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    if (!wait_for([&] { return waitpid(pid_, nullptr, WNOHANG) != 0; }, 5s)) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
  }
  uint16_t port_;
  pid_t pid_ = -1;
};

// The value of one series in a text body, read independently of ingest's parser: the
// line that starts with the series as node_exporter writes it.
std::optional<double> value_of(const std::string& body, const std::string& series) {
  size_t at = 0;
  while ((at = body.find(series + " ", at)) != std::string::npos) {
    if (at == 0 || body[at - 1] == '\n')
      return std::strtod(body.c_str() + at + series.size() + 1, nullptr);
    at += series.size();
  }
  return std::nullopt;
}

struct Scrape {
  double at_s;  // Unix seconds, the middle of the request
  std::string body;
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct SeriesBody {
  double first, last, first_ts, last_ts, rate;
  uint64_t count;
};

std::optional<SeriesBody> series_body(uint16_t port, const std::string& key) {
  HttpResponse r = http_get(port, "/v1/series/" + url_encode(key));
  if (r.status != 200) return std::nullopt;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(r.body).get(doc)) return std::nullopt;
  SeriesBody s;
  if (doc["count"].get(s.count) || s.count < 2) return std::nullopt;
  if (doc["first"].get(s.first) || doc["last"].get(s.last) || doc["first_ts"].get(s.first_ts) ||
      doc["last_ts"].get(s.last_ts) || doc["rate"].get(s.rate))
    return std::nullopt;
  return s;
}

const char* const kModes[] = {"idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"};

}  // namespace

TEST_CASE("telemetryd scrapes a real node_exporter: counter rates and gauges match direct scrapes", "[e2e]") {
  std::string bin = node_exporter_bin();
  if (bin.empty())
    skip("prometheus-node-exporter is not installed (scripts/deps.sh installs it)");
  TempDir dir;
  NodeExporter exporter(bin, dir);
  std::string source = fmt::format("http://127.0.0.1:{}/metrics", exporter.port());
  Service service({"--source", source, "--interval", "500ms", "--window", "30s", "--workers", "2"});

  // The test's own scrapes, every 100 ms while telemetryd gathers a few seconds.
  std::vector<Scrape> scrapes;
  const std::string user0 = "node_cpu_seconds_total{cpu=\"0\",mode=\"user\"}";
  std::optional<SeriesBody> seen;
  bool enough = wait_for(
      [&] {
        double before = now_s();
        HttpResponse r = exporter.scrape();
        if (r.status == 200) scrapes.push_back({(before + now_s()) / 2, std::move(r.body)});
        seen = series_body(service.port(), user0);
        return seen && seen->last_ts - seen->first_ts >= 6 && scrapes.size() >= 2 &&
               scrapes.back().at_s > seen->last_ts + 0.2;
      },
      60s);
  INFO(service.admin("show sources"));
  REQUIRE(enough);
  std::string sources = service.admin("show sources");
  CHECK(Service::field(sources, "source.0.format") == "prometheus");
  CHECK(Service::field(sources, "source.0.last_error") == "-");

  // The direct scrape nearest to a moment.
  auto nearest = [&](double t) -> const Scrape& {
    const Scrape* best = &scrapes.front();
    for (const Scrape& s : scrapes)
      if (std::abs(s.at_s - t) < std::abs(best->at_s - t)) best = &s;
    return *best;
  };

  double cpu0_total = 0;
  for (const char* mode : kModes) {
    std::string key = fmt::format("node_cpu_seconds_total{{cpu=\"0\",mode=\"{}\"}}", mode);
    INFO(key);
    auto s = series_body(service.port(), key);
    REQUIRE(s);
    // The rate is the counter's increase over the window (no reset here); the
    // timestamps, doubles of Unix seconds, are exact to about a microsecond.
    double span = s->last_ts - s->first_ts;
    CHECK(s->rate == Approx((s->last - s->first) / span).epsilon(1e-6));
    // ...and matches the deltas of the direct scrapes at the ends of the same span.
    const Scrape& a = nearest(s->first_ts);
    const Scrape& b = nearest(s->last_ts);
    auto va = value_of(a.body, key), vb = value_of(b.body, key);
    REQUIRE(va);
    REQUIRE(vb);
    double direct = (*vb - *va) / (b.at_s - a.at_s);
    // Each end may be off by the time between scrapes and a loaded machine's scrape
    // latency (0.3 s), at up to one CPU second per second, and the counters tick in
    // hundredths of a second.
    double tolerance = 2 * (0.3 + 0.01) / span;
    CHECK(std::abs(s->rate - direct) <= tolerance);
    cpu0_total += s->rate;
  }
  // Over all modes, a CPU's seconds grow by one per second (less what a steal-less
  // hypervisor or a clock tick lost: within 15%).
  CHECK(cpu0_total == Approx(1.0).epsilon(0.15));

  // A gauge: exactly what node_exporter says.
  const std::string mem = "node_memory_MemTotal_bytes";
  HttpResponse r = http_get(service.port(), "/v1/series/" + url_encode(mem));
  REQUIRE(r.status == 200);
  simdjson::dom::parser parser;
  double last = 0;
  REQUIRE_FALSE(parser.parse(r.body)["last"].get(last));
  auto direct = value_of(exporter.scrape().body, mem);
  REQUIRE(direct);
  CHECK(last == *direct);
  CHECK(last > 0);
}
