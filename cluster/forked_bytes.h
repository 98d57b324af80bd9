// cluster/forked_bytes.h: bytes made in a forked child, read back on the event loop.
// fork() gives the child a copy-on-write image of the process as it is at that moment,
// so a function that serialises a large state (a checkpoint: seconds at a million
// series) runs there while the parent's loop goes on renewing its lease and appending,
// and the state can change under the parent without touching the child's copy. The
// way Redis writes its RDB files, for the same reason.
#pragma once

#include <functional>
#include <string>

#include <sys/types.h>

struct event;
struct event_base;

namespace cluster {

class ForkedBytes {
 public:
  // error is empty on success. Called on the loop, once; it may destroy the ForkedBytes.
  using Done = std::function<void(std::string bytes, const std::string& error)>;

  // Forks now; the child runs make(), writes what it returns to a pipe and exits (it
  // dies with the parent too). Throws std::runtime_error when pipe or fork fails, and
  // then nothing was started.
  ForkedBytes(event_base* base, const std::function<std::string()>& make, Done done);
  // A child still running is killed and reaped; done is not called.
  ~ForkedBytes();
  ForkedBytes(const ForkedBytes&) = delete;
  ForkedBytes& operator=(const ForkedBytes&) = delete;

 private:
  static void on_readable(int fd, short, void* arg);
  void finish(const std::string& error);

  int fd_ = -1;
  pid_t child_ = -1;
  event* readable_ = nullptr;
  std::string bytes_;
  Done done_;
};

}  // namespace cluster
