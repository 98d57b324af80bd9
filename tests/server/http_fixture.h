// tests/server/http_fixture.h: what the in-process tests of the reader's HTTP server
// (http_test.cc: parsing and endpoints; http_connection_test.cc: connections, errors,
// timeouts, shutdown, forked readers) share: known series, a store plus a server on its
// own thread, and client helpers over 127.0.0.1. flood_test.cc and ui_test.cc use its
// store set-up (StoreSite) and forked children (fork_child, fork_reader).
#pragma once

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <simdjson.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ingest/ingest.h"
#include "server/http.h"
#include "server/reader.h"
#include "server/service.h"
#include "shm/shm.h"
#include "http_client.h"
#include "server_thread.h"

namespace http_fixture {

using namespace std::chrono_literals;
using test_http::fill;
using test_http::read_response;
using test_http::Response;
using test_http::send_all;

// ---------------------------------------------------------------------------------
// Known data
// ---------------------------------------------------------------------------------

inline const std::string kCpuEu = R"(cpu{host="a",region="eu"})";
inline const std::string kCpuUs = R"(cpu{host="b",region="us"})";
inline const std::string kMem = "mem";
inline const std::string kOdd = R"(req{path="/a b,c=d",q="x\"y"})";  // space, comma, =, escaped quote

inline std::string series_body(const std::string& key, int version = 1) {
  std::string quoted;
  ingest::append_json_string(quoted, key);
  return R"({"key":)" + quoted + R"(,"count":)" + std::to_string(version) + "}";
}

// A snapshot with the given series (plus the four fixed ones) in the conventions'
// layout: "s:" records, "m:" rollups and lists, "series", "metrics", "prom".
inline shm::SnapshotBuilder build_snapshot(size_t extra_series = 0, int version = 1) {
  shm::SnapshotBuilder b;
  std::map<std::string, std::vector<std::string>> by_metric;
  std::vector<std::string> all;
  auto add_series = [&](const std::string& metric, const std::string& key) {
    b.add(ingest::series_record_key(key), series_body(key, version));
    by_metric[metric].push_back(ingest::series_record_key(key));
    all.push_back(ingest::series_record_key(key));
  };
  add_series("cpu", kCpuEu);
  add_series("cpu", kCpuUs);
  add_series("mem", kMem);
  add_series("req", kOdd);
  for (size_t i = 0; i < extra_series; ++i)
    add_series("bulk", "bulk{i=\"" + std::to_string(i) + "\",pad=\"" + std::string(200, 'x') + "\"}");
  std::string metrics = R"({"metrics":[)";
  for (auto& [metric, keys] : by_metric) {
    std::sort(keys.begin(), keys.end());
    b.add(ingest::metric_record_key(metric),
          R"({"metric":")" + metric + R"(","series_count":)" + std::to_string(keys.size()) + "}");
    b.add_list(ingest::metric_record_key(metric), keys);
    if (metrics.back() != '[') metrics += ',';
    metrics += R"({"metric":")" + metric + R"(","series_count":)" + std::to_string(keys.size()) + "}";
  }
  metrics += "]}";
  b.add(ingest::kMetricsRecord, metrics);
  std::sort(all.begin(), all.end());
  b.add_list(ingest::kSeriesList, all);
  b.add(ingest::kPromRecord, "# TYPE cpu_mean gauge\ncpu_mean 1\n");
  return b;
}

// ---------------------------------------------------------------------------------
// A store plus a server on its own thread
// ---------------------------------------------------------------------------------

inline std::string unique_name() {
  static int n = 0;
  return "tdhttp-" + std::to_string(getpid()) + "-" + std::to_string(++n);
}

// A store of its own (4 reader slots) with its writer, and a socket listening on
// 127.0.0.1 for the test's readers; closed and removed with it.
struct StoreSite {
  explicit StoreSite(std::string store_name, int backlog = 512) : name(std::move(store_name)) {
    shm::StoreOptions so;
    so.name = name;
    so.reader_slots = 4;
    store = shm::Store::create(so);
    writer = std::make_unique<shm::Writer>(*store);
    listen_fd = test_server::listen_loopback(&port, backlog);
  }
  ~StoreSite() {
    close(listen_fd);
    writer.reset();
    store.reset();
    shm::Store::remove(name);
  }

  std::string name;
  std::unique_ptr<shm::Store> store;
  std::unique_ptr<shm::Writer> writer;
  int listen_fd = -1;
  uint16_t port = 0;
};

struct Fixture : StoreSite {
  explicit Fixture(server::ReaderOptions opt = {}, bool publish = true, size_t extra_series = 0)
      : StoreSite(unique_name()) {
    if (publish) generation = writer->publish(build_snapshot(extra_series));
    opt.listen_fd = listen_fd;
    opt.slot = 1;
    options = opt;
    server = std::make_unique<test_server::ServerThread>(*store, opt);
  }
  ~Fixture() { stop(); }
  void stop() { server->stop(); }
  uint64_t counter(uint32_t i) const { return store->reader_counter(options.slot, i); }

  uint64_t generation = 0;
  server::ReaderOptions options;
  std::unique_ptr<test_server::ServerThread> server;
};

// Forks a child that exits with what `body` returns (kExitFailure if it throws: Catch
// is the parent's, not the child's). Returns its pid; the caller reaps it.
inline pid_t fork_child(const std::function<int()>& body) {
  test_server::skip_unless_engine_available();  // here: a child cannot skip the test
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int rc = server::kExitFailure;
    try {
      rc = body();
    } catch (...) {
    }
    _exit(rc);
  }
  return pid;
}

// Forks a reader process on store `name`: `before(options)` runs in the child first (a
// process-wide limit, say), then run_reader, whose code the child exits with. The caller
// SIGTERMs and reaps it.
inline pid_t fork_reader(const std::string& name, server::ReaderOptions options,
                         const std::function<void(server::ReaderOptions&)>& before = {}) {
  return fork_child([&] {
    auto store = shm::Store::open(name);
    if (before) before(options);
    return server::run_reader(*store, test_server::with_engine(options));
  });
}

// ---------------------------------------------------------------------------------
// A tiny blocking HTTP client
// ---------------------------------------------------------------------------------

inline int connect_to(uint16_t port) {
  int fd = test_server::connect_loopback(port);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

// True when the server closes fd (EOF or reset) within the receive timeout.
inline bool closed_by_server(int fd) {
  char tmp[4096];
  for (int i = 0; i < 1000; ++i) {
    ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
  }
  return false;
}

// Sends `request` on the open connection fd and reads its response (buf keeps what came
// after it); the test fails when none came.
inline Response exchange(int fd, std::string& buf, const std::string& request, bool head_request = false) {
  send_all(fd, request);
  auto r = read_response(fd, buf, head_request);
  REQUIRE(r);
  return *r;
}

inline Response get(uint16_t port, const std::string& target, const std::string& extra_headers = "") {
  int fd = connect_to(port);
  send_all(fd, "GET " + target + " HTTP/1.1\r\nHost: t\r\n" + extra_headers + "\r\n");
  std::string buf;
  auto r = read_response(fd, buf);
  close(fd);
  REQUIRE(r);
  return *r;
}

inline size_t json_series_count(const std::string& body, uint64_t* generation = nullptr) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc = parser.parse(body);
  if (generation) *generation = uint64_t(doc["generation"]);
  return simdjson::dom::array(doc["series"]).size();
}

}  // namespace http_fixture
