// tests/server/e2e_state_test.cc: a standalone node's window across a writer crash, a
// restart of the service and damaged or unwritable state (state/, server/writer_state.h),
// with the real telemetryd: the count of every series must go on, never start again.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "tests/server/e2e_util.h"

using namespace e2e;

namespace {

constexpr int kSeries = 4;

std::string key(int i) { return fmt::format(R"(state.test{{host="h{}"}})", i); }

// Samples without a time: each tick adds one to every series' count.
void write_source(const std::string& path) {
  std::string body = R"({"samples": [)";
  for (int i = 0; i < kSeries; ++i)
    body += fmt::format(R"({}{{"metric": "state.test", "labels": {{"host": "h{}"}}, "value": {}}})", i ? "," : "",
                        i, i + 1);
  write_file(path, body + "]}");
}

std::vector<std::string> flags(const std::string& source, std::vector<std::string> more = {}) {
  std::vector<std::string> f = {"--source", "file://" + source, "--interval", "200ms", "--window", "10m",
                                "--workers", "2", "--checkpoint-every", "5"};
  f.insert(f.end(), more.begin(), more.end());
  return f;
}

// Every series' count now (0 for a series not served).
std::map<std::string, uint64_t> counts(const Service& svc) {
  std::map<std::string, uint64_t> out;
  for (int i = 0; i < kSeries; ++i) {
    auto r = http_get(svc.port(), "/v1/series/" + url_encode(key(i)));
    size_t at = r.body.find("\"count\":");
    out[key(i)] = r.status == 200 && at != std::string::npos ? std::strtoull(r.body.c_str() + at + 8, nullptr, 10) : 0;
  }
  return out;
}

uint64_t lowest(const std::map<std::string, uint64_t>& c) {
  uint64_t low = UINT64_MAX;
  for (const auto& [k, v] : c) low = std::min(low, v);
  return low;
}

// Every series holds at least as many samples as in before: the window went on.
void check_continues(const std::map<std::string, uint64_t>& before, const std::map<std::string, uint64_t>& after,
                     uint64_t slack = 0) {
  for (const auto& [k, v] : before) {
    INFO(k << ": before " << v << ", after " << after.at(k));
    CHECK(after.at(k) + slack >= v);
  }
}

// Kills the writer and waits for its replacement to publish past what it had.
void kill_writer_and_wait(Service& svc) {
  pid_t writer = svc.writer_pid();
  REQUIRE(writer > 0);
  const uint64_t generation = svc.info_number("generation");
  kill(writer, SIGKILL);
  REQUIRE(wait_for([&] { pid_t w = svc.writer_pid(); return w > 0 && w != writer; }, 10s));
  REQUIRE(wait_for([&] { return svc.info_number("generation") >= generation + 2; }, 10s));
}

std::vector<std::string> files(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d))
      if (std::string(e->d_name).rfind(prefix, 0) == 0) out.push_back(dir + "/" + e->d_name);
    closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("state: a SIGKILLed writer's window goes on, without a state dir (from /dev/shm)", "[e2e][state]") {
  TempDir data;
  write_source(data.file("a.json"));
  Service svc(flags(data.file("a.json")));
  CHECK(Service::field(svc.admin("show info"), "state_dir") == "/dev/shm/" + svc.shm_name() + ".state");
  REQUIRE(wait_for([&] { return lowest(counts(svc)) >= 8; }, 10s));
  for (int kill = 0; kill < 2; ++kill) {
    auto before = counts(svc);
    kill_writer_and_wait(svc);
    check_continues(before, counts(svc));
  }
  CHECK(svc.log().find("state: recovered from") != std::string::npos);
  CHECK(svc.info_number("state_recovery_entries") + svc.info_number("state_checkpoint_bytes") > 0);
  CHECK(svc.stop() == 0);
  CHECK_FALSE(svc.shm_left());  // the default state dir went with the service
}

TEST_CASE("state: a writer killed while writing a checkpoint, and half-way through an append", "[e2e][state]") {
  TempDir data;
  write_source(data.file("a.json"));
  const std::string at_checkpoint = data.file("kill-at-checkpoint"), at_append = data.file("kill-at-append");
  setenv("TELEMETRYD_FAILPOINTS",
         ("state.checkpoint.before_rename=kill@" + at_checkpoint + ",state.append.torn=error@" + at_append).c_str(), 1);
  Service svc(flags(data.file("a.json"), {"--state-dir", data.file("state")}));
  unsetenv("TELEMETRYD_FAILPOINTS");
  REQUIRE(wait_for([&] { return lowest(counts(svc)) >= 8; }, 10s));
  for (const std::string& armed : {at_checkpoint, at_append}) {
    INFO(armed);
    auto before = counts(svc);
    pid_t writer = svc.writer_pid();
    write_file(armed, "");
    // It dies at the next checkpoint (every 5 entries) or append.
    REQUIRE(wait_for([&] { pid_t w = svc.writer_pid(); return w > 0 && w != writer; }, 10s));
    CHECK_FALSE(file_exists(armed));
    REQUIRE(wait_for([&] { return lowest(counts(svc)) > lowest(before) + 2; }, 10s));
    check_continues(before, counts(svc));
  }
  CHECK(files(data.file("state"), "checkpoint.").size() >= 1);
  CHECK(files(data.file("state"), "checkpoint.").size() <= 3);  // trimmed behind
  const std::string log = svc.log();
  INFO(log);
  CHECK(count_of(log, "a torn entry at its end") == 1);
  CHECK(svc.info_number("state_log_cuts") == 1);
  CHECK(svc.info_number("restarts_writer") == 2);
}

TEST_CASE("state: the service stopped and started on the same state dir continues its window", "[e2e][state]") {
  TempDir data;
  write_source(data.file("a.json"));
  const std::string dir = data.file("state");
  std::map<std::string, uint64_t> before;
  uint64_t generation = 0;
  {
    Service svc(flags(data.file("a.json"), {"--state-dir", dir}));
    REQUIRE(wait_for([&] { return lowest(counts(svc)) >= 8; }, 10s));
    before = counts(svc);
    generation = svc.info_number("generation");
    CHECK(svc.stop() == 0);
  }
  // An upgrade is the same: a new process on the same directory.
  Service svc(flags(data.file("a.json"), {"--state-dir", dir}));
  // The recovered window is shown under its own seq (the same data, the same
  // generation, as in a cluster), then the ticks go on past it.
  CHECK(svc.info_number("generation") >= generation);
  check_continues(before, counts(svc));
  CHECK(wait_for([&] { return svc.info_number("generation") > generation; }, 5s));
  CHECK(Service::field(svc.admin("show info"), "state_dir") == dir);
  const std::string log = svc.log();
  INFO(log);
  CHECK(log.find("state: recovered from " + dir) != std::string::npos);
  // Settings that differ from the state's: the next interval follows the new ones.
  CHECK(svc.stop() == 0);
  Service other(flags(data.file("a.json"), {"--state-dir", dir, "--window", "5m"}));
  check_continues(before, counts(other));
  CHECK(other.log().find("aggregated with other settings") != std::string::npos);
  auto metrics = http_get(other.port(), "/metrics").body;
  CHECK(metrics.find("telemetryd_state_info{dir=\"" + dir + "\"} 1") != std::string::npos);
  CHECK(metrics.find("telemetryd_state_log_bytes ") != std::string::npos);
}

TEST_CASE("state: a log cut mid-entry and a damaged checkpoint: one log line each, the service serves",
          "[e2e][state]") {
  TempDir data;
  write_source(data.file("a.json"));
  const std::string dir = data.file("state");
  std::map<std::string, uint64_t> before;
  {
    Service svc(flags(data.file("a.json"), {"--state-dir", dir}));
    // Two checkpoints (every 5 entries) and entries after the newest.
    REQUIRE(wait_for([&] { return files(dir, "checkpoint.").size() >= 2 && lowest(counts(svc)) >= 14; }, 15s));
    CHECK(svc.stop() == 0);
    before = counts(svc);  // the last snapshot stays readable until the stop
  }
  // A power loss's torn tail: the last entry loses its end.
  auto logs = files(dir, "log.");
  REQUIRE(!logs.empty());
  struct stat st {};
  REQUIRE(stat(logs.back().c_str(), &st) == 0);
  REQUIRE(truncate(logs.back().c_str(), st.st_size - 7) == 0);
  // A damaged byte in the middle of the newest checkpoint.
  auto checkpoints = files(dir, "checkpoint.");
  REQUIRE(checkpoints.size() >= 2);
  int fd = open(checkpoints.back().c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  REQUIRE(stat(checkpoints.back().c_str(), &st) == 0);
  char byte = 0;
  REQUIRE(pread(fd, &byte, 1, st.st_size / 2) == 1);
  byte = char(byte ^ 0x5a);
  REQUIRE(pwrite(fd, &byte, 1, st.st_size / 2) == 1);
  close(fd);

  Service svc(flags(data.file("a.json"), {"--state-dir", dir}));
  const std::string log = svc.log();
  INFO(log);
  CHECK(count_of(log, "skipped and removed: damaged (hash mismatch)") == 1);
  CHECK(count_of(log, "a torn entry at its end") == 1);
  CHECK(svc.info_number("state_log_cuts") == 1);
  CHECK(svc.info_number("state_checkpoints_skipped") == 1);
  // From the older checkpoint and the log after it, all but the torn entry.
  check_continues(before, counts(svc), 1);
  const uint64_t generation = svc.info_number("generation");
  CHECK(wait_for([&] { return svc.info_number("generation") >= generation + 3; }, 5s));
}

TEST_CASE("state: a full disk: a clear error, the service serves, nothing lost once there is room", "[e2e][state]") {
  TempDir data;
  write_source(data.file("a.json"));
  const std::string mnt = data.file("mnt");
  REQUIRE(mkdir(mnt.c_str(), 0755) == 0);
  if (mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=1m") != 0) {
    WARN("skipped: cannot mount a tmpfs (" << std::strerror(errno) << "): run as root to test a full disk");
    return;
  }
  struct Unmount {
    std::string path;
    ~Unmount() { umount2(path.c_str(), MNT_DETACH); }
  } unmount{mnt};
  const std::string dir = mnt + "/state", filler = mnt + "/filler";
  Service svc(flags(data.file("a.json"), {"--state-dir", dir, "--state-fsync", "always"}));
  REQUIRE(wait_for([&] { return lowest(counts(svc)) >= 4; }, 10s));
  // Fill what is left.
  {
    int fd = open(filler.c_str(), O_WRONLY | O_CREAT, 0644);
    REQUIRE(fd >= 0);
    std::string block(4096, 'x');
    while (write(fd, block.data(), block.size()) > 0) {
    }
    close(fd);
  }
  REQUIRE(wait_for([&] { return svc.info_number("state_write_failing") == 1; }, 10s));
  std::string log = svc.log();
  CHECK(log.find("No space left on device; serving on") != std::string::npos);
  CHECK(count_of(log, "; serving on, what is not in the state dir") == 1);
  const uint64_t generation = svc.info_number("generation");
  CHECK(wait_for([&] { return svc.info_number("generation") >= generation + 5; }, 5s));  // serving on
  CHECK(svc.info_number("state_write_failing") == 1);
  // Room again: the next checkpoint (tried every 5 s) writes the whole state.
  REQUIRE(unlink(filler.c_str()) == 0);
  REQUIRE(wait_for([&] { return svc.info_number("state_write_failing") == 0; }, 10s));
  CHECK(svc.log().find("state: written again") != std::string::npos);
  auto before = counts(svc);
  kill_writer_and_wait(svc);
  check_continues(before, counts(svc));
}
