// tests/server/e2e_test.cc: end-to-end tests of telemetryd with real processes: the
// built binary on a free loopback port, file:// and local http:// sources, the HTTP
// API, the admin socket and telemetryctl, signals, and children killed under load.
#include <catch2/catch.hpp>

#include <csignal>
#include <cstdlib>
#include <ctime>
#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <thread>

#include "e2e_util.h"

using namespace e2e;

namespace {

// Samples with a timestamp of "now", so that every fetch after the first is a
// duplicate: each series holds exactly one sample, whatever the number of ticks.
std::string native_body(double value_h1, const std::string& metric = "cpu.temp") {
  double now = double(std::time(nullptr));
  return fmt::format(
      R"({{"samples": [{{"metric": "{0}", "labels": {{"host": "h1", "dc": "eu"}}, "value": {1}, "ts": {2}}},)"
      R"({{"metric": "{0}", "labels": {{"host": "h2", "dc": "eu"}}, "value": 65, "ts": {2}}}]}})",
      metric, value_h1, now);
}

const std::string kH1 = R"(cpu.temp{dc="eu",host="h1"})";

std::vector<std::string> fast_flags(const std::string& source_file) {
  return {"--source", "file://" + source_file, "--interval", "200ms", "--window", "10m", "--workers", "3"};
}

}  // namespace

TEST_CASE("bad flags and files exit non-zero with a one-line reason", "[e2e]") {
  TempDir dir;
  auto r = run({telemetryd_bin(), "--workers", "1", "--check-config"});
  CHECK(r.status == 2);
  CHECK(r.err.find("workers") != std::string::npos);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);

  r = run({telemetryd_bin(), "--interval", "soon", "--check-config"});
  CHECK(r.status == 2);
  CHECK(r.err.find("interval") != std::string::npos);

  r = run({telemetryd_bin(), "--no-such-flag"});
  CHECK(r.status == 2);

  r = run({telemetryd_bin(), "--reader-engine", "uring", "--check-config"});
  CHECK(r.status == 2);
  CHECK(r.err == "telemetryd: reader-engine: 'uring' is not auto, io_uring or epoll\n");

  // Source URLs are checked as the writer would check them.
  r = run({telemetryd_bin(), "--source", "ftp://127.0.0.1/m.json", "--check-config"});
  CHECK(r.status == 2);
  CHECK(r.err.find("unsupported source") != std::string::npos);
  r = run({telemetryd_bin(), "--source", "file://relative/m.json", "--check-config"});
  CHECK(r.status == 2);
  CHECK(r.err.find("absolute path") != std::string::npos);

  write_file(dir.file("bad.toml"), "listen = \"127.0.0.1:1\"\nnot_a_setting = 3\n");
  r = run({telemetryd_bin(), "--config", dir.file("bad.toml"), "--check-config"});
  CHECK(r.status == 2);
  CHECK(r.err.find("not_a_setting") != std::string::npos);

  write_file(dir.file("good.toml"), "workers = 4\nsource = [\"synthetic://\"]\ninterval = \"1s\"\nwindow = 120\n");
  r = run({telemetryd_bin(), "--config", dir.file("good.toml"), "--check-config"});
  CHECK(r.status == 0);
  CHECK(r.out.find("4 workers") != std::string::npos);

  r = run({telemetryd_bin(), "--version"});
  CHECK(r.status == 0);
  CHECK(r.out.find("telemetryd") != std::string::npos);
}

TEST_CASE("endpoints serve the known data of a file:// and an http:// source", "[e2e]") {
  TempDir data;
  write_file(data.file("a.json"), native_body(71.5));
  Upstream upstream(native_body(5, "disk.free"));
  Service svc({"--source", "file://" + data.file("a.json"), "--source", upstream.url(), "--interval", "200ms",
               "--window", "10m", "--workers", "2"});
  REQUIRE(wait_for([&] { return http_get(svc.port(), "/v1/metrics").body.find("disk.free") != std::string::npos; }));

  auto series = http_get(svc.port(), "/v1/series/" + url_encode(kH1));
  REQUIRE(series.status == 200);
  CHECK(series.headers["content-type"] == "application/json");
  CHECK(series.headers.count("x-snapshot-generation") == 1);
  CHECK(series.body.find(R"("count":1)") != std::string::npos);
  CHECK(series.body.find(R"("last":71.5)") != std::string::npos);
  REQUIRE(series.headers.count("etag") == 1);

  auto again = http_get(svc.port(), "/v1/series/" + url_encode(kH1), "If-None-Match: " + series.headers["etag"] + "\r\n");
  CHECK(again.status == 304);
  CHECK(again.body.empty());

  CHECK(http_get(svc.port(), "/v1/series/" + url_encode("cpu.temp{host=\"nope\"}")).status == 404);

  auto query = http_get(svc.port(), "/v1/query?metric=cpu.temp&host=h1");
  CHECK(query.status == 200);
  CHECK(query.body.find("h1") != std::string::npos);
  CHECK(query.body.find("h2") == std::string::npos);

  auto metric = http_get(svc.port(), "/v1/metrics/cpu.temp");
  CHECK(metric.status == 200);
  CHECK(metric.body.find(R"("series_count":2)") != std::string::npos);

  auto http_source = http_get(svc.port(), "/v1/series/" + url_encode(R"(disk.free{dc="eu",host="h2"})"));
  CHECK(http_source.status == 200);

  auto snapshot = http_get(svc.port(), "/v1/snapshot");
  CHECK(snapshot.status == 200);
  CHECK(snapshot.body.find("\"generation\"") != std::string::npos);
  CHECK(snapshot.body.find("disk.free") != std::string::npos);

  auto prom = http_get(svc.port(), "/metrics");
  CHECK(prom.status == 200);
  CHECK(prom.body.find("cpu") != std::string::npos);

  CHECK(http_get(svc.port(), "/healthz").status == 200);
  CHECK(http_get(svc.port(), "/no/such/path").status == 404);
  CHECK(http_get(svc.port(), "/v1/metrics", "", "POST").status == 405);
  CHECK(svc.stop() == 0);
}

TEST_CASE("every admin command and telemetryctl exit codes", "[e2e][admin]") {
  TempDir data;
  write_file(data.file("a.json"), native_body(71.5));
  Service svc(fast_flags(data.file("a.json")));
  const std::string ctl = telemetryctl_bin();

  CHECK(svc.admin("ping") == "ping: pong");
  CHECK(svc.admin("help").find("show series KEY") != std::string::npos);
  CHECK(svc.admin("show version") == "version: 0.1.0");
  CHECK(svc.admin("show version json") == R"({"version":"0.1.0"})");

  std::string info = svc.admin("show info");
  CHECK(Service::field(info, "pid") == std::to_string(svc.pid()));
  CHECK(Service::field(info, "workers") == "3");
  CHECK(Service::field(info, "readers_running") == "2");
  // The engine the readers run: the one this pass asked for (e2e_util.cc), else auto's pick.
  const char* engine = std::getenv("TELEMETRYD_TEST_READER_ENGINE");
  const std::string want = engine && *engine ? engine : Service::field(info, "reader_engines_running").value_or("?");
  CHECK(Service::field(info, "reader_engine") == (engine && *engine ? engine : "auto"));
  CHECK(Service::field(info, "reader_engines_running") == want);
  CHECK((want == "io_uring" || want == "epoll"));
  std::string workers = svc.admin("show workers");
  CHECK(Service::field(workers, "worker.1.engine") == want);
  CHECK(Service::field(workers, "worker.2.engine") == want);
  CHECK(svc.admin("show info json").front() == '{');

  CHECK(svc.reader_pids().size() == 2);
  CHECK(svc.writer_pid() > 0);

  std::string sources = svc.admin("show sources");
  CHECK(Service::field(sources, "source.0.url") == "file://" + data.file("a.json"));
  CHECK(Service::field(sources, "source.0.samples").value_or("0") != "0");

  std::string snap = svc.admin("show snapshot");
  CHECK(Service::field(snap, "series") == "2");

  std::string series = svc.admin("show series " + kH1);
  CHECK(Service::field(series, "key") == kH1);
  CHECK(series.find(R"("last":71.5)") != std::string::npos);
  CHECK(svc.admin("show series " + kH1 + " json").find(R"("series":{)") != std::string::npos);
  CHECK(svc.admin("show series nope").rfind("Error: ", 0) == 0);

  CHECK(svc.admin("set log-level debug") == "log_level: debug");
  CHECK(Service::field(svc.admin("show info"), "log_level") == "debug");
  CHECK(svc.admin("set log-level loud").rfind("Error: ", 0) == 0);
  CHECK(svc.admin("set log-level info json") == R"({"log_level":"info"})");

  CHECK(svc.admin("frobnicate") == "Error: unknown command 'frobnicate'; try help");
  CHECK(svc.admin("frobnicate json").rfind(R"({"error":)", 0) == 0);
  CHECK(svc.admin("ping; show version") == "ping: pong\n\nversion: 0.1.0");

  CHECK(Service::field(svc.admin("reload"), "reload") == "ok");

  // restart readers: every reader replaced, no request refused or failed meanwhile.
  // One client opens a connection per request; two keep theirs alive and reconnect only
  // when told `Connection: close`, like wrk and curl. A retiring reader keeps its
  // connections and answers each one's next request with that header, so none of them
  // may see a reset or EOF instead of a response.
  auto before = svc.reader_pids();
  std::atomic<bool> stop{false};
  std::atomic<int> refused{0}, failures{0}, done{0}, closes{0};
  std::vector<std::thread> clients;
  clients.emplace_back([&] {
    while (!stop) {
      auto r = http_get(svc.port(), "/healthz");
      if (r.connect_errno != 0) ++refused;
      else if (r.status != 200) ++failures;
      ++done;
    }
  });
  for (int i = 0; i < 2; ++i)
    clients.emplace_back([&] {
      KeepAliveClient c(svc.port());
      while (!stop) {
        int status = 0;
        switch (c.get("/healthz", &status)) {
          case KeepAliveClient::Outcome::refused: ++refused; break;
          case KeepAliveClient::Outcome::failed: ++failures; break;
          case KeepAliveClient::Outcome::close: ++closes; [[fallthrough]];
          case KeepAliveClient::Outcome::ok: if (status != 200) ++failures; break;
        }
        ++done;
      }
    });
  std::string restarted = svc.admin("restart readers");
  stop = true;
  for (auto& t : clients) t.join();
  CHECK(Service::field(restarted, "restarted") == "2");
  auto after = svc.reader_pids();
  REQUIRE(after.size() == 2);
  for (pid_t p : after) CHECK(std::find(before.begin(), before.end(), p) == before.end());
  CHECK(refused == 0);
  CHECK(failures == 0);
  CHECK(closes >= 1);  // the keep-alive clients did meet a draining reader
  CHECK(done > 0);

  CHECK(run({ctl, "-s", svc.socket(), "ping"}).status == 0);
  CHECK(run({ctl, "-s", svc.socket(), "show", "info"}).out.find("generation: ") != std::string::npos);
  CHECK(run({ctl, "-s", svc.socket(), "no", "such", "command"}).status == 1);
  CHECK(run({ctl, "-s", svc.dir().file("nothing.sock"), "ping"}).status == 3);

  CHECK(svc.admin("shutdown") == "shutdown: in progress");
  CHECK(wait_for([&] { return !svc.running(); }, 20s));
  CHECK(svc.stop() == 0);
  CHECK(run({ctl, "-s", svc.socket(), "ping"}).status == 3);
}

TEST_CASE("SIGHUP and reload apply a good file and keep the old config on a bad one", "[e2e][reload]") {
  TempDir data;
  write_file(data.file("a.json"), native_body(1));
  write_file(data.file("b.json"), native_body(2, "mem.used"));
  std::string conf = data.file("telemetryd.toml");
  write_file(conf, fmt::format("workers = 2\ninterval = \"200ms\"\nwindow = \"10m\"\nsource = [\"file://{}\"]\n",
                               data.file("a.json")));
  Service svc({"--config", conf});
  CHECK(Service::field(svc.admin("show sources"), "sources") == "1");

  // Good file, by signal: the new source shows up without a restart.
  write_file(conf, fmt::format("workers = 2\ninterval = \"200ms\"\nwindow = \"10m\"\nsource = [\"file://{}\", \"file://{}\"]\n",
                               data.file("a.json"), data.file("b.json")));
  pid_t writer = svc.writer_pid();
  kill(svc.pid(), SIGHUP);
  CHECK(wait_for([&] { return Service::field(svc.admin("show sources"), "sources") == "2"; }));
  CHECK(wait_for([&] { return http_get(svc.port(), "/v1/metrics/mem.used").status == 200; }));
  CHECK(svc.writer_pid() == writer);

  // Bad file, by command: rejected with the reason, old configuration kept.
  write_file(conf, "workers = 2\ninterval = \"whenever\"\n");
  std::string reply = svc.admin("reload");
  CHECK(reply.rfind("Error: ", 0) == 0);
  CHECK(reply.find("interval") != std::string::npos);
  CHECK(run({telemetryctl_bin(), "-s", svc.socket(), "reload"}).status == 1);
  CHECK(Service::field(svc.admin("show info"), "last_reload_error").value_or("-").find("interval") != std::string::npos);
  kill(svc.pid(), SIGHUP);  // the same by signal: logged, nothing else
  CHECK(wait_for([&] { return svc.log().find("reload rejected") != std::string::npos; }));
  CHECK(svc.running());
  CHECK(Service::field(svc.admin("show sources"), "sources") == "2");

  // A source URL the pipeline cannot take is refused by the supervisor with its reason,
  // not handed to the writer to be refused there with only "see the log".
  write_file(conf, "workers = 2\ninterval = \"200ms\"\nsource = [\"file://relative/path.json\"]\n");
  reply = svc.admin("reload");
  CHECK(reply.rfind("Error: ", 0) == 0);
  CHECK(reply.find("file source needs an absolute path") != std::string::npos);
  CHECK(Service::field(svc.admin("show sources"), "sources") == "2");

  // A change that needs a restart is reported, the rest applied.
  write_file(conf, fmt::format("workers = 3\ninterval = \"200ms\"\nwindow = \"10m\"\nsource = [\"file://{}\"]\n", data.file("a.json")));
  reply = svc.admin("reload");
  CHECK(Service::field(reply, "reload") == "ok");
  CHECK(Service::field(reply, "restart_needed") == "workers");
  CHECK(wait_for([&] { return Service::field(svc.admin("show sources"), "sources") == "1"; }));
  CHECK(svc.stop() == 0);
}

TEST_CASE("a reload whose writer dies before answering is answered by the writer that replaces it", "[e2e][reload]") {
  TempDir data;
  write_file(data.file("a.json"), native_body(71.5));
  Service svc(fast_flags(data.file("a.json")));
  pid_t writer = svc.writer_pid();
  // Stopped, the writer cannot take the SIGHUP the reload sends; then it is killed.
  kill(writer, SIGSTOP);
  auto started = std::chrono::steady_clock::now();
  std::string reply;
  std::thread client([&] { reply = svc.admin("reload"); });
  CHECK(wait_for([&] { return svc.log().find("asking the writer") != std::string::npos; }));
  kill(writer, SIGKILL);
  client.join();
  CHECK(Service::field(reply, "reload") == "ok");
  // Answered by the restart, not by the 10 s timeout.
  CHECK(std::chrono::steady_clock::now() - started < 8s);
  CHECK(wait_for([&] { pid_t w = svc.writer_pid(); return w > 0 && w != writer; }));
  CHECK(svc.stop() == 0);
}

TEST_CASE("SIGTERM stops gracefully and leaves nothing behind", "[e2e]") {
  TempDir data;
  std::string pidfile = data.file("telemetryd.pid");
  Service svc({"--interval", "200ms", "--workers", "3", "--pidfile", pidfile});
  CHECK(file_exists(pidfile));
  CHECK(file_exists(svc.socket()));
  CHECK(svc.shm_left());
  CHECK(svc.stop(SIGTERM) == 0);
  CHECK_FALSE(svc.shm_left());
  CHECK_FALSE(file_exists(svc.socket()));
  CHECK_FALSE(file_exists(pidfile));
  CHECK(svc.log().find("stopped (exit status 0)") != std::string::npos);
}

TEST_CASE("SIGTERM under keep-alive load: every request sent gets a response", "[e2e][drain]") {
  TempDir data;
  write_file(data.file("a.json"), native_body(71.5));
  Service svc(fast_flags(data.file("a.json")));
  // Keep-alive clients, as wrk runs them. After `Connection: close` a client stops: the
  // whole service is going away, so a new connection could only reach a listener that
  // no reader accepts on any more. What must not happen is a request sent on an open
  // connection that gets a reset or EOF instead of a response.
  constexpr int kClients = 4;
  std::atomic<bool> give_up{false};
  std::atomic<int> ok{0}, failed{0}, closed{0}, refused{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i)
    clients.emplace_back([&] {
      KeepAliveClient c(svc.port());
      for (;;) {
        if (give_up) return;
        int status = 0;
        auto o = c.get("/v1/series/" + url_encode(kH1), &status);
        if (o == KeepAliveClient::Outcome::refused) { ++refused; return; }
        if (o == KeepAliveClient::Outcome::failed || status != 200) { ++failed; return; }
        if (o == KeepAliveClient::Outcome::close) { ++closed; return; }
        ++ok;
      }
    });
  REQUIRE(wait_for([&] { return ok > 400 || failed > 0 || refused > 0; }));
  kill(svc.pid(), SIGTERM);
  bool ended = wait_for([&] { return closed + failed + refused == kClients; }, 20s);
  give_up = true;
  for (auto& t : clients) t.join();
  CHECK(ended);
  CHECK(failed == 0);
  CHECK(refused == 0);
  CHECK(closed == kClients);
  CHECK(svc.stop(SIGTERM) == 0);
  CHECK_FALSE(svc.shm_left());
  CHECK_FALSE(file_exists(svc.socket()));
}

TEST_CASE("the writer in a crash loop: restarted up to the limit, then the service gives up", "[e2e][kill]") {
  TempDir data;
  write_file(data.file("a.json"), native_body(71.5));
  auto flags = fast_flags(data.file("a.json"));
  flags.insert(flags.end(), {"--crash-loop-limit", "3", "--crash-loop-window", "1m", "--restart-backoff-max", "200ms"});
  Service svc(flags);
  // crash-loop-limit counts restarts within the window: three crashes are restarted
  // (below the limit: a plain restart, as after a single crash), the fourth stops it.
  for (int crash = 1; crash <= 3; ++crash) {
    pid_t writer = svc.writer_pid();
    REQUIRE(writer > 0);
    kill(writer, SIGKILL);
    INFO("crash " << crash);
    REQUIRE(wait_for([&] { pid_t w = svc.writer_pid(); return w > 0 && w != writer; }, 10s));
    CHECK(Service::field(svc.admin("show info"), "restarts_writer") == std::to_string(crash));
    CHECK(svc.running());
  }
  pid_t writer = svc.writer_pid();
  REQUIRE(writer > 0);
  kill(writer, SIGKILL);
  CHECK(wait_for([&] { return !svc.running(); }, 20s));
  CHECK(svc.stop() == 1);
  CHECK(svc.log().find("crash loop, giving up") != std::string::npos);
  CHECK_FALSE(svc.shm_left());
  CHECK_FALSE(file_exists(svc.socket()));
}

TEST_CASE("a source URL that can never work is refused at start: exit 2, no child started", "[e2e][kill]") {
  // Every source URL is checked with the settings (ingest::check_sources), so the
  // supervisor refuses it before forking anyone, rather than starting a writer that
  // would exit 2 on it.
  Service svc({"--source", "ftp://127.0.0.1/metrics.json", "--interval", "200ms", "--workers", "2"}, false);
  CHECK(wait_for([&] { return !svc.running(); }, 20s));
  CHECK(svc.stop() == 2);
  std::string log = svc.log();
  INFO(log);
  CHECK(log.find("started writer") == std::string::npos);
  CHECK(log.find("started reader") == std::string::npos);
  CHECK_FALSE(svc.shm_left());
  CHECK_FALSE(file_exists(svc.socket()));
}

TEST_CASE("a reader SIGKILLed under concurrent requests is replaced within 1s", "[e2e][kill]") {
  TempDir data;
  write_file(data.file("a.json"), native_body(71.5));
  Service svc(fast_flags(data.file("a.json")));
  auto readers = svc.reader_pids();
  REQUIRE(readers.size() == 2);

  // Each client sends one request per connection: a failure can only be a connection
  // the killed reader had accepted, at most one in flight per client.
  constexpr int kClients = 4;
  std::atomic<bool> stop{false};
  std::atomic<int> failed{0}, refused{0}, ok{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i)
    clients.emplace_back([&] {
      while (!stop) {
        auto r = http_get(svc.port(), "/v1/series/" + url_encode(kH1));
        if (r.connect_errno != 0) ++refused;
        else if (r.status != 200) ++failed;
        else ++ok;
      }
    });
  REQUIRE(wait_for([&] { return ok > 100; }));
  int ok_before = ok;
  kill(readers[0], SIGKILL);
  auto killed_at = std::chrono::steady_clock::now();
  bool replaced = wait_for([&] {
    auto now = svc.reader_pids();
    return now.size() == 2 && std::find(now.begin(), now.end(), readers[0]) == now.end();
  }, 1s);
  auto took = std::chrono::steady_clock::now() - killed_at;
  REQUIRE(wait_for([&] { return ok > ok_before + 200; }));
  stop = true;
  for (auto& t : clients) t.join();
  CHECK(replaced);
  INFO("replacement took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << "ms");
  CHECK(refused == 0);
  CHECK(failed <= kClients);
  CHECK(Service::field(svc.admin("show info"), "restarts_reader") == "1");
  CHECK(svc.stop() == 0);
}

TEST_CASE("the writer SIGKILLed: readers keep answering and a new writer publishes newer generations", "[e2e][kill]") {
  TempDir data;
  write_file(data.file("a.json"), native_body(71.5));
  Service svc(fast_flags(data.file("a.json")));
  pid_t writer = svc.writer_pid();
  uint64_t generation = svc.info_number("generation");
  kill(writer, SIGKILL);
  for (int i = 0; i < 20; ++i) CHECK(http_get(svc.port(), "/v1/series/" + url_encode(kH1)).status == 200);
  CHECK(wait_for([&] { pid_t w = svc.writer_pid(); return w > 0 && w != writer; }));
  CHECK(wait_for([&] { return svc.info_number("generation") > generation + 2; }));
  CHECK(Service::field(svc.admin("show info"), "restarts_writer") == "1");
  auto r = http_get(svc.port(), "/v1/series/" + url_encode(kH1));
  CHECK(r.status == 200);
  CHECK(std::stoull(r.headers["x-snapshot-generation"]) > generation);
  CHECK(svc.stop() == 0);
}

TEST_CASE("a writer stuck in its loop is killed by the writer watchdog and replaced", "[e2e][kill]") {
  TempDir data, marks;
  write_file(data.file("a.json"), native_body(71.5));
  // Armed by creating the file: the writer that consumes it spins in its loop for ever.
  const std::string armed = marks.file("writer-spins");
  setenv("TELEMETRYD_FAILPOINTS", ("writer.heartbeat=spin@" + armed).c_str(), 1);
  auto flags = fast_flags(data.file("a.json"));
  flags.insert(flags.end(), {"--writer-stuck-timeout", "1s"});
  Service svc(flags);
  unsetenv("TELEMETRYD_FAILPOINTS");
  pid_t writer = svc.writer_pid();
  write_file(armed, "");
  REQUIRE(wait_for([&] { return !file_exists(armed); }));
  uint64_t generation = svc.info_number("generation");
  // Stuck, not dead: the readers go on serving the last snapshot.
  for (int i = 0; i < 10; ++i) CHECK(http_get(svc.port(), "/v1/series/" + url_encode(kH1)).status == 200);
  CHECK(wait_for([&] { pid_t w = svc.writer_pid(); return w > 0 && w != writer; }));
  CHECK(Service::field(svc.admin("show info"), "stuck_writers_killed") == "1");
  CHECK(http_get(svc.port(), "/v1/status").body.find("\"interval_s\":0.2") != std::string::npos);
  CHECK(http_get(svc.port(), "/metrics").body.find("telemetryd_watchdog_kills_total{role=\"writer\"} 1\n") != std::string::npos);
  CHECK(wait_for([&] { return svc.info_number("generation") > generation + 2; }));
  CHECK(svc.stop() == 0);
}

TEST_CASE("a stopped reader is killed by the stuck check and replaced", "[e2e][kill]") {
  Service svc({"--interval", "200ms", "--workers", "2", "--stuck-timeout", "500ms"});
  auto readers = svc.reader_pids();
  REQUIRE(readers.size() == 1);
  kill(readers[0], SIGSTOP);
  CHECK(wait_for([&] { auto now = svc.reader_pids(); return now.size() == 1 && now[0] != readers[0]; }));
  CHECK(Service::field(svc.admin("show info"), "stuck_readers_killed") == "1");
  CHECK(http_get(svc.port(), "/healthz").status == 200);
  CHECK(svc.stop() == 0);
}

TEST_CASE("malformed HTTP gets 400 or 431 and does not disturb other clients", "[e2e][http]") {
  Service svc({"--interval", "200ms", "--workers", "2"});
  CHECK(http_raw(svc.port(), "GARBAGE\r\n\r\n").rfind("HTTP/1.1 400", 0) == 0);
  CHECK(http_raw(svc.port(), "GET / HTTP/9.9\r\n\r\n").rfind("HTTP/1.1 ", 0) == 0);
  std::string huge = "GET /healthz HTTP/1.1\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n";
  CHECK(http_raw(svc.port(), huge).rfind("HTTP/1.1 431", 0) == 0);
  CHECK(http_get(svc.port(), "/healthz").status == 200);
  CHECK(svc.stop() == 0);
}

TEST_CASE("daemon mode returns once ready and sd_notify gets READY=1", "[e2e][daemon]") {
  TempDir dir;
  // NOTIFY_SOCKET: a datagram socket of ours.
  std::string notify_path = dir.file("notify.sock");
  int nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, notify_path.c_str(), sizeof a.sun_path - 1);
  REQUIRE(bind(nfd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  setenv("NOTIFY_SOCKET", notify_path.c_str(), 1);

  std::string pidfile = dir.file("t.pid"), sock = dir.file("admin.sock");
  std::string shm = "tmd-e2e-daemon-" + std::to_string(getpid());
  auto r = run({telemetryd_bin(), "--daemon", "--listen", "127.0.0.1:" + std::to_string(free_port()), "--workers", "2",
                "--interval", "200ms", "--shm-name", shm, "--admin-socket", sock, "--pidfile", pidfile,
                "--log-file", dir.file("d.log")});
  unsetenv("NOTIFY_SOCKET");
  CHECK(r.status == 0);
  REQUIRE(file_exists(pidfile));
  char buf[512] = {};
  timeval tv{5, 0};
  setsockopt(nfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ssize_t n = recv(nfd, buf, sizeof buf - 1, 0);
  CHECK(n > 0);
  CHECK(std::string(buf).find("READY=1") != std::string::npos);
  close(nfd);

  pid_t pid = 0;
  FILE* f = fopen(pidfile.c_str(), "r");
  REQUIRE(f);
  CHECK(fscanf(f, "%d", &pid) == 1);
  fclose(f);
  CHECK(run({telemetryctl_bin(), "-s", sock, "ping"}).status == 0);
  kill(pid, SIGTERM);
  CHECK(wait_for([&] { return kill(pid, 0) != 0; }, 20s));
  CHECK_FALSE(file_exists(pidfile));
  CHECK_FALSE(file_exists(sock));
}

#ifdef LOADGEN_BIN
// bench/loadgen produces the constant-rate latency figures of docs/performance.md: check
// it against a real telemetryd, here with a rate low enough for any machine.
TEST_CASE("bench/loadgen answers every scheduled request and counts the non-2xx", "[e2e][bench]") {
  TempDir data;
  write_file(data.file("a.json"), native_body(71.5));
  Service svc(fast_flags(data.file("a.json")));
  write_file(data.file("keys.txt"), "/v1/series/" + url_encode(kH1) + "\n/v1/series/no.such.series\n");
  RunResult r = run({LOADGEN_BIN, "--port", std::to_string(svc.port()), "--keys", data.file("keys.txt"),
                     "--conns", "4", "--rate", "200", "--duration", "2", "--seed", "3"});
  INFO(r.out << r.err);
  REQUIRE(r.status == 0);
  auto number = [&](const std::string& name) {
    size_t at = r.out.find(" " + name + "=");
    REQUIRE(at != std::string::npos);
    return std::stod(r.out.substr(at + name.size() + 2));
  };
  // Poisson arrivals at 200/s for 2 s: 400 expected, 300-500 is a 5-sigma band.
  double requests = number("requests");
  CHECK(requests > 300);
  CHECK(requests < 500);
  // Half the keys do not exist: about half the answers are 404s, each counted.
  CHECK(number("non2xx") > requests * 0.3);
  CHECK(number("non2xx") < requests * 0.7);
  CHECK(number("socket_errors") == 0);
  CHECK(number("p50_us") > 0);
  CHECK(number("p99_us") >= number("p50_us"));
}
#endif
