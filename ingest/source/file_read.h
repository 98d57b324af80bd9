// file_read.h: one read of a file:// source, done on a thread of its own so that a slow
// disk, a hung NFS mount or a FIFO nobody writes stalls only that source, never the
// writer's event loop (the other sources, the publish).
//
// The Pipeline and the thread share the FileRead, and each lets go of it when done
// with it, so either may finish first: the thread is detached and never touches the
// Pipeline. The read is bounded like an HTTP fetch: a deadline, max_body_bytes, and
// the shared fetch memory budget.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "ingest/source/fetch_budget.h"

namespace ingest {

// An eventfd: signal() from any thread wakes whoever polls fd(). Writing an eventfd
// never blocks and never raises SIGPIPE, and the descriptor lives as long as its last
// owner, so a late signal can never land on a reused descriptor.
class WakeFd {
 public:
  WakeFd();  // throws std::runtime_error
  ~WakeFd();
  WakeFd(const WakeFd&) = delete;
  WakeFd& operator=(const WakeFd&) = delete;
  int fd() const { return fd_; }
  void signal();
  void clear();

 private:
  int fd_;
};

class FileRead {
 public:
  // The read gives up at deadline_ns (monotonic) with "timeout after <timeout>ms".
  FileRead(std::string path, size_t max_bytes, int64_t deadline_ns,
           std::chrono::milliseconds timeout, std::shared_ptr<FetchBudget> budget,
           std::shared_ptr<WakeFd> done_signal);
  ~FileRead();  // gives back what the read took from the budget
  FileRead(const FileRead&) = delete;
  FileRead& operator=(const FileRead&) = delete;

  // Starts the read on a detached thread, which signals done_signal when it has ended.
  // False, with error() set, when no thread could be started.
  static bool start(const std::shared_ptr<FileRead>& read);
  // The loop has given up on the read: a wait in it ends at once.
  void cancel();

  // Once done() (an acquire: the thread's results are visible after it):
  // body() holds size() bytes followed by padding zero bytes; or error() is set.
  bool done() const { return done_.load(std::memory_order_acquire); }
  const std::string& body() const { return body_; }
  size_t size() const { return size_; }
  const std::string& error() const { return error_; }

 private:
  void run();
  void fail(std::string error);
  bool wait_readable(int fd, int64_t deadline_ns);

  const std::string path_;
  const size_t max_bytes_;
  const int64_t deadline_ns_;
  const std::chrono::milliseconds timeout_;
  const std::shared_ptr<FetchBudget> budget_;
  const std::shared_ptr<WakeFd> done_signal_;
  WakeFd cancel_signal_;
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> done_{false};
  size_t taken_ = 0;  // from budget_, for body_
  std::string body_;
  size_t size_ = 0;
  std::string error_;
};

}  // namespace ingest
