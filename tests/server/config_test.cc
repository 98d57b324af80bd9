// tests/server/config_test.cc: the configuration loader (server/config.h) in-process:
// every value it accepts is one the service can start with (the same check runs for
// --check-config, start and reload), and every refusal is a std::invalid_argument that
// names the setting.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "server/config.h"
#include "shm/shm.h"

namespace {

// load_options with flags only, as `telemetryd --NAME VALUE ...` would.
server::Options with_flags(const std::vector<std::pair<std::string, std::string>>& flags) {
  server::CommandLine cl;
  for (const auto& [name, value] : flags) cl.overrides.push_back({name, {value}});
  return server::load_options(cl);
}

std::string refusal(const std::vector<std::pair<std::string, std::string>>& flags) {
  try {
    with_flags(flags);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("workers is refused above what the shm store's reader slots hold", "[config]") {
  std::string why = refusal({{"workers", "256"}});
  CHECK(why.find("workers") != std::string::npos);
  CHECK(why.find("255") != std::string::npos);
  CHECK(!refusal({{"workers", "4294967295"}}).empty());  // workers + 1 would wrap
  CHECK(!refusal({{"workers", "1"}}).empty());

  // The largest accepted value starts: the store takes the slots it needs.
  server::Options o = with_flags({{"workers", "255"}});
  CHECK(o.workers == 255);
  shm::StoreOptions so;
  so.name = "telemetryd_config_test_" + std::to_string(getpid());
  so.reader_slots = o.store_slots();
  so.initial_buffer_bytes = 4096;
  CHECK_NOTHROW(shm::Store::create(so));
  shm::Store::remove(so.name);
}

TEST_CASE("the default workers fit the store", "[config]") {
  server::Options o = with_flags({});
  CHECK(o.workers >= 2);
  CHECK(o.store_slots() <= shm::kMaxReaders);
}

TEST_CASE("durations past 24h are refused, before the supervisor's arithmetic overflows", "[config]") {
  for (const char* name : {"stuck-timeout", "shutdown-timeout", "restart-backoff-max", "crash-loop-window",
                           "idle-timeout", "request-timeout", "healthz-max-age", "query-deadline"}) {
    INFO(name);
    CHECK(refusal({{name, "24h"}}).empty());
    std::string why = refusal({{name, "10000000h"}});
    CHECK(why.find(name) != std::string::npos);
  }
}

TEST_CASE("advertise defaults to listen, a wildcard host to the host name, and is refused when not HOST:PORT", "[config]") {
  server::Options o = with_flags({{"listen", "127.0.0.1:8123"}, {"cluster", "redis://127.0.0.1:6379"}});
  CHECK(o.advertise == "127.0.0.1:8123");
  o = with_flags({{"listen", "0.0.0.0:8123"}, {"cluster", "redis://127.0.0.1:6379"}});
  CHECK(o.advertise.ends_with(":8123"));
  CHECK_FALSE(o.advertise.starts_with("0.0.0.0"));
  for (const char* bad : {"nohost", "h:0", "a b:1", "h:99999"}) {
    INFO(bad);
    CHECK(refusal({{"cluster", "redis://127.0.0.1:6379"}, {"advertise", bad}}).find("advertise") != std::string::npos);
  }
  CHECK(refusal({{"query-deadline", "5ms"}}).find("query-deadline") != std::string::npos);
}

TEST_CASE("admin-socket is checked as the absolute path the service will bind", "[config]") {
  char cwd[4096];
  REQUIRE(getcwd(cwd, sizeof cwd));
  const size_t max = 107;  // sizeof(sockaddr_un::sun_path) - 1
  REQUIRE(std::string(cwd).size() + 1 < max);
  // Short enough as written, too long once made absolute from this directory.
  std::string relative(max - std::string(cwd).size(), 's');
  std::string why = refusal({{"admin-socket", relative}});
  CHECK(why.find("admin-socket") != std::string::npos);
  CHECK(refusal({{"admin-socket", relative.substr(1)}}).empty());
  CHECK(refusal({{"admin-socket", "/" + std::string(max - 1, 's')}}).empty());
  CHECK(!refusal({{"admin-socket", "/" + std::string(max, 's')}}).empty());
}

TEST_CASE("load_options_from_text reads TOML like the file", "[config]") {
  server::Options o = server::load_options_from_text(
      "workers = 3\nsource = [\"synthetic://\"]\ninterval = \"1s\"\nwindow = 120\ndaemon = false\n", "test.toml");
  CHECK(o.workers == 3);
  CHECK(o.ingest.interval == std::chrono::seconds(1));
  CHECK(o.ingest.window == std::chrono::seconds(120));
  // Overrides win over the text.
  o = server::load_options_from_text("workers = 3\n", "test.toml", {{"workers", {"5"}}});
  CHECK(o.workers == 5);
  // What it returns passes the check again unchanged.
  server::Options again = o;
  server::check_options(again);
  CHECK(again.workers == o.workers);
  CHECK(again.admin_socket == o.admin_socket);
}

TEST_CASE("load_options_from_text refuses bad text with std::invalid_argument naming where", "[config]") {
  auto why = [](const std::string& text) -> std::string {
    try {
      server::load_options_from_text(text, "test.toml");
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "";
  };
  CHECK(why("workers = ").rfind("test.toml:1:", 0) == 0);
  CHECK(why("no_such = 1").find("no_such") != std::string::npos);
  CHECK(why("workers = [2, 3]").find("not a list") != std::string::npos);
  CHECK(why("[workers]\nx = 1").find("workers") != std::string::npos);
  CHECK(why("workers = 1979-05-27").find("workers") != std::string::npos);
  CHECK(why("source = [[\"a\"]]").find("source") != std::string::npos);
  CHECK(why("workers = 256").find("255") != std::string::npos);
  CHECK(why("max-header-bytes = 1.5").find("max-header-bytes") != std::string::npos);
  CHECK(why("log-level = \"loud\"").find("log-level") != std::string::npos);
  CHECK(why("reader-engine = \"uring\"") == "reader-engine: 'uring' is not auto, io_uring or epoll");
}

TEST_CASE("reader-engine: auto by default, io_uring or epoll by name, anything else refused", "[config]") {
  CHECK(with_flags({}).reader_engine == "auto");
  CHECK(with_flags({{"reader-engine", "epoll"}}).reader_engine == "epoll");
  CHECK(server::load_options_from_text("reader-engine = \"io_uring\"\n", "t.toml").reader_engine == "io_uring");
  CHECK(refusal({{"reader-engine", "libevent"}}) == "reader-engine: 'libevent' is not auto, io_uring or epoll");
  CHECK(refusal({{"reader-engine", ""}}) == "reader-engine: '' is not auto, io_uring or epoll");
}

TEST_CASE("state-dir and state-fsync: refused with the setting's name, made absolute, the default in /dev/shm", "[config]") {
  CHECK(refusal({{"state-fsync", "sometimes"}}) == "state-fsync: 'sometimes' is not always, checkpoint or never");
  CHECK(refusal({{"state-fsync", "always"}}).empty());
  std::string why = refusal({{"state-dir", "/nonexistent-parent/state"}});
  CHECK(why == "state-dir: /nonexistent-parent/state does not exist, nor does its parent directory /nonexistent-parent");
  CHECK(refusal({{"state-dir", "/etc/hostname"}}) == "state-dir: /etc/hostname is not a directory");
  char cwd[4096];
  REQUIRE(getcwd(cwd, sizeof cwd));
  CHECK(with_flags({{"state-dir", "state/"}}).state_dir == std::string(cwd) + "/state");
  server::Options o = with_flags({{"shm-name", "x1"}});
  CHECK(o.state_dir.empty());
  CHECK(o.effective_state_dir() == "/dev/shm/x1.state");
  // A cluster node's state is the cluster's log.
  o.cluster = "redis://127.0.0.1:6379";
  CHECK(o.effective_state_dir().empty());
}

TEST_CASE("cluster: the three kinds of Redis address, and a Redis Cluster refused with a database", "[config]") {
  CHECK(refusal({{"cluster", "redis://10.0.0.9:6379/2"}}).empty());
  CHECK(refusal({{"cluster", "redis-sentinel://10.0.0.1:26379,10.0.0.2:26379/telemetryd"}}).empty());
  CHECK(refusal({{"cluster", "redis-cluster://10.0.0.21:6379,10.0.0.22:6379"}}).empty());
  std::string why = refusal({{"cluster", "redis-cluster://10.0.0.21:6379/1"}});
  CHECK(why.rfind("cluster: cluster address 'redis-cluster://10.0.0.21:6379/1': a Redis Cluster has only database 0", 0) == 0);
  CHECK(refusal({{"cluster", "rediss://10.0.0.9:6379"}}).find("neither redis://, redis-sentinel:// nor redis-cluster://") !=
        std::string::npos);
}
