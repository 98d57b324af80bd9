// tests/state/dir_test.cc: the state dir's files on a real directory: what recover()
// gives back after appends and checkpoints, torn and damaged logs, bad checkpoints,
// gaps, trimming and the lock. Entries here are plain bytes: the state dir does not
// read them (ingest/ does, in the writer's tests).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "state/state.h"

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/telemetryd-state-XXXXXX";
    REQUIRE(mkdtemp(tmpl));
    path = tmpl;
  }
  ~TempDir() { state::remove_dir(path + "/s"); rmdir(path.c_str()); }
};

std::string entry(uint64_t seq) { return fmt::format("entry {} {}", seq, std::string(seq % 7, 'x')); }

// What recover() handed over: the checkpoint restored and the entries replayed.
struct Replayed {
  std::string checkpoint;
  std::vector<std::string> entries;
  state::Recovery r;
};

Replayed recover(state::Dir& dir, const std::string& refuse = "") {
  Replayed out;
  out.r = dir.recover(
      [&](std::string_view bytes) {
        if (bytes == refuse) throw std::invalid_argument("refused");
        out.checkpoint = bytes;
      },
      [&](uint64_t seq, std::string_view bytes, std::string* error) {
        if (bytes != entry(seq)) {
          *error = "not the entry";
          return false;
        }
        out.entries.emplace_back(bytes);
        return true;
      },
      [] {});
  return out;
}

void wait_checkpoint(state::Dir& dir) {
  for (int i = 0; i < 1000; ++i) {
    if (auto done = dir.poll()) {
      REQUIRE(done->error.empty());
      return;
    }
    usleep(1000);
  }
  FAIL("the checkpoint was not written within 1 s");
}

std::string file(const std::string& dir, const char* prefix, uint64_t seq) {
  return fmt::format("{}/{}.{:020}", dir, prefix, seq);
}

uint64_t size_of(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? uint64_t(st.st_size) : 0;
}

// Entries 1..10, a checkpoint at 4 and one at 8.
void fill(const std::string& path) {
  state::Dir dir(path, state::Fsync::never);
  recover(dir);
  std::string error;
  for (uint64_t seq = 1; seq <= 10; ++seq) {
    REQUIRE(dir.append(seq, entry(seq), &error));
    if (seq == 4 || seq == 8) {
      REQUIRE(dir.begin_checkpoint(seq, fmt::format("state at {}", seq), &error));
      wait_checkpoint(dir);
    }
  }
}

}  // namespace

TEST_CASE("state dir - recovery gives the newest checkpoint and the entries after it") {
  TempDir t;
  const std::string path = t.path + "/s";
  fill(path);
  state::Dir dir(path, state::Fsync::never);
  Replayed got = recover(dir);
  CHECK(got.checkpoint == "state at 8");
  CHECK(got.entries == std::vector<std::string>{entry(9), entry(10)});
  CHECK(got.r.checkpoint_seq == 8);
  CHECK(got.r.last_seq == 10);
  CHECK(got.r.log_cuts == 0);
  CHECK(got.r.notes.empty());
  // The log goes on where it ended; an entry that does not follow is refused.
  std::string error;
  CHECK(dir.append(11, entry(11), &error));
  CHECK_FALSE(dir.append(13, entry(13), &error));
  CHECK(error.find("does not follow") != std::string::npos);
}

TEST_CASE("state dir - a torn tail is cut at the last whole entry") {
  TempDir t;
  const std::string path = t.path + "/s";
  fill(path);
  const std::string log = file(path, "log", 9);
  REQUIRE(truncate(log.c_str(), off_t(size_of(log) - 3)) == 0);
  {
    state::Dir dir(path, state::Fsync::never);
    Replayed got = recover(dir);
    CHECK(got.entries == std::vector<std::string>{entry(9)});
    CHECK(got.r.log_cuts == 1);
    REQUIRE(got.r.notes.size() == 1);
    CHECK(got.r.notes[0].find("cut at byte") != std::string::npos);
    CHECK(got.r.notes[0].find("a torn entry at its end") != std::string::npos);
    std::string error;
    CHECK(dir.append(10, entry(10), &error));  // appended after the cut
  }
  state::Dir dir(path, state::Fsync::never);
  Replayed got = recover(dir);
  CHECK(got.entries == std::vector<std::string>{entry(9), entry(10)});
  CHECK(got.r.notes.empty());
}

TEST_CASE("state dir - a damaged checkpoint is skipped for the older one and the log after it") {
  TempDir t;
  const std::string path = t.path + "/s";
  fill(path);
  const std::string newest = file(path, "checkpoint", 8);
  int fd = open(newest.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  REQUIRE(pwrite(fd, "?", 1, off_t(size_of(newest) - 2)) == 1);
  close(fd);
  state::Dir dir(path, state::Fsync::never);
  Replayed got = recover(dir);
  CHECK(got.checkpoint == "state at 4");
  CHECK(got.entries.size() == 6);  // 5..10, across two log files
  CHECK(got.r.last_seq == 10);
  CHECK(got.r.checkpoints_skipped == 1);
  REQUIRE(got.r.notes.size() == 1);
  CHECK(got.r.notes[0].find("damaged (hash mismatch)") != std::string::npos);
}

TEST_CASE("state dir - a checkpoint the state refuses, then none: the log from its start, or nothing") {
  TempDir t;
  const std::string path = t.path + "/s";
  {
    state::Dir dir(path, state::Fsync::never);
    recover(dir);
    std::string error;
    for (uint64_t seq = 1; seq <= 3; ++seq) REQUIRE(dir.append(seq, entry(seq), &error));
    REQUIRE(dir.begin_checkpoint(3, "bad", &error));
    wait_checkpoint(dir);
    REQUIRE(dir.append(4, entry(4), &error));
  }
  {
    // The only checkpoint refused: the log is whole from entry 1 (it is trimmed only
    // behind the older of two checkpoints).
    state::Dir dir(path, state::Fsync::never);
    Replayed got = recover(dir, "bad");
    CHECK(got.checkpoint.empty());
    CHECK(got.entries.size() == 4);  // from entry 1: the log is whole
    CHECK(got.r.checkpoints_skipped == 1);
  }
  // A log file damaged in its middle: what follows the damage goes, later files too.
  const std::string first = file(path, "log", 1);
  int fd = open(first.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  REQUIRE(pwrite(fd, "?", 1, 16 + 24 + 2) == 1);  // in entry 1's bytes
  close(fd);
  state::Dir dir(path, state::Fsync::never);
  Replayed got = recover(dir);
  CHECK(got.entries.empty());
  CHECK(got.r.last_seq == 0);
  CHECK(got.r.highest_seq == 3);  // generations go on past what was named
  CHECK(got.r.log_cuts == 1);
  CHECK(got.r.notes.size() == 2);  // log.1 removed (nothing whole in it), log.4 removed
}

TEST_CASE("state dir - trimming keeps two checkpoints and the log from the older one") {
  TempDir t;
  const std::string path = t.path + "/s";
  state::Dir dir(path, state::Fsync::checkpoint);
  recover(dir);
  std::string error;
  for (uint64_t seq = 1; seq <= 20; ++seq) {
    REQUIRE(dir.append(seq, entry(seq), &error));
    if (seq % 5 == 0) {
      REQUIRE(dir.begin_checkpoint(seq, fmt::format("s{}", seq), &error));
      CHECK_FALSE(dir.begin_checkpoint(seq, "again", &error));  // one at a time
      wait_checkpoint(dir);
    }
  }
  CHECK(size_of(file(path, "checkpoint", 20)) > 0);
  CHECK(size_of(file(path, "checkpoint", 15)) > 0);
  CHECK(access(file(path, "checkpoint", 10).c_str(), F_OK) != 0);
  CHECK(access(file(path, "log", 11).c_str(), F_OK) != 0);
  CHECK(access(file(path, "log", 16).c_str(), F_OK) == 0);
  CHECK(access(file(path, "log", 21).c_str(), F_OK) == 0);
  CHECK(dir.stats().checkpoint_seq == 20);
  CHECK(dir.stats().log_bytes == size_of(file(path, "log", 16)) + size_of(file(path, "log", 21)));
}

TEST_CASE("state dir - one telemetryd per directory, and a clear error for a path it cannot use") {
  TempDir t;
  const std::string path = t.path + "/s";
  state::Dir dir(path, state::Fsync::never);
  try {
    state::Dir other(path, state::Fsync::never);
    FAIL("a second Dir on the same directory");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find("another telemetryd uses it") != std::string::npos);
  }
  CHECK_THROWS_WITH(state::Dir(t.path + "/missing/s", state::Fsync::never),
                    Catch::Contains("cannot create it: No such file or directory"));
  CHECK(state::parse_fsync("always") == state::Fsync::always);
  CHECK_FALSE(state::parse_fsync("sometimes"));
}
