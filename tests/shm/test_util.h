// Helpers for the shm tests: unique store names that clean up after themselves, and
// forked children that report back through their exit status and a pipe.
#pragma once

#include <dirent.h>
#include <fmt/format.h>
#include <functional>
#include <set>
#include <stdexcept>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "shm/shm.h"

namespace shm_test {

// A store name unique to this process and call; removes its segments when it goes.
struct ScopedName {
  std::string name;
  ScopedName() {
    static int n = 0;
    name = fmt::format("tmyd-test-{}-{}", getpid(), n++);
    shm::Store::remove(name);
  }
  ~ScopedName() { shm::Store::remove(name); }
};

inline shm::StoreOptions options(const std::string& name, uint32_t buffers = 3) {
  shm::StoreOptions o;
  o.name = name;
  o.buffer_count = buffers;
  o.reader_slots = 8;
  o.initial_buffer_bytes = 64 << 10;
  o.reclaim_timeout = std::chrono::milliseconds(50);
  return o;
}

// Runs fn in a forked child; the child exits with fn's return value (never returns).
inline pid_t spawn(const std::function<int()>& fn) {
  pid_t pid = fork();
  if (pid == 0) {
    int code = 1;
    try {
      code = fn();
    } catch (const std::exception& e) {
      fmt::print(stderr, "child {}: {}\n", getpid(), e.what());
      code = 99;
    }
    _exit(code);
  }
  return pid;
}

// Exit code of a child, or 128 + signal.
inline int wait_child(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

// A one-byte signal from child to parent.
struct Pipe {
  int fd[2];
  Pipe() {
    if (pipe(fd) != 0) throw std::runtime_error("pipe");
  }
  ~Pipe() {
    close(fd[0]);
    close(fd[1]);
  }
  void signal() { (void)!write(fd[1], "x", 1); }
  bool wait() {
    char c;
    return read(fd[0], &c, 1) == 1;
  }
};

// A forked reader that enters a read of the current snapshot on `slot` and stays inside
// it until it is killed. Returns once the read has begun.
inline pid_t spawn_reader_inside_read(const std::string& name, uint32_t slot) {
  Pipe inside;
  pid_t pid = spawn([&] {
    auto s = shm::Store::open(name);
    shm::Reader r(*s, slot);
    auto g = r.enter();
    inside.signal();
    pause();
    return 0;
  });
  if (!inside.wait()) throw std::runtime_error("reader child died before entering its read");
  return pid;
}

inline shm::SnapshotBuilder snapshot_of(int records, const std::string& tag) {
  shm::SnapshotBuilder b;
  for (int i = 0; i < records; ++i) b.add(fmt::format("k{}", i), fmt::format("{}:{}", tag, i));
  return b;
}

#ifdef SHM_WRITER
// Runs tests/shm/shm_writer with args in a fresh process (fork + exec), its failpoints
// set to `failpoints` ("" for none). Returns its exit code, or 128 + signal.
inline int run_writer(const std::string& failpoints, const std::vector<std::string>& args) {
  pid_t pid = fork();
  if (pid == 0) {
    if (failpoints.empty()) {
      unsetenv("TELEMETRYD_FAILPOINTS");
    } else {
      setenv("TELEMETRYD_FAILPOINTS", failpoints.c_str(), 1);
    }
    std::vector<char*> argv{const_cast<char*>(SHM_WRITER)};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(SHM_WRITER, argv.data());
    _exit(127);
  }
  return wait_child(pid);
}
#endif

// The entries of /dev/shm that are `name` or start with `name.`: a store's segments.
inline std::set<std::string> segments_of(const std::string& name) {
  std::set<std::string> found;
  if (DIR* d = opendir("/dev/shm")) {
    while (dirent* e = readdir(d)) {
      std::string entry = e->d_name;
      if (entry == name || entry.starts_with(name + ".")) found.insert(entry);
    }
    closedir(d);
  }
  return found;
}

}  // namespace shm_test
