// file_read.cc: reading a file:// source on a thread of its own (see file_read.h).
//
// The file is opened with O_NONBLOCK, so opening a FIFO never waits for a writer, and
// every wait for data is a poll() bounded by the deadline that cancel() cuts short: a
// FIFO nobody writes costs the thread one timeout. A regular file is read with plain
// reads (poll() says a regular file is always ready); one stuck in the kernel (a hung
// NFS server) keeps its thread, which is why the thread is detached: the Pipeline can
// always be destroyed, the source reports its read as still running instead of
// starting another, and threads stuck like that are capped for the whole process.
#include "ingest/source/file_read.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <thread>

#include <fmt/format.h>

#include "ingest/source/source.h"
#include "shm/shm.h"

namespace ingest {

namespace {

constexpr size_t kReadBytes = 64 * 1024;  // per read() call, taken from the budget first
// At most one read runs per source, so more threads than this are reads stuck in the
// kernel, left behind by sources that were removed or pipelines that were destroyed.
constexpr size_t kMaxThreads = 2 * shm::kMaxSources;
std::atomic<size_t> live_threads{0};

}  // namespace

WakeFd::WakeFd() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (fd_ < 0) throw std::runtime_error(fmt::format("eventfd: {}", std::strerror(errno)));
}

WakeFd::~WakeFd() { ::close(fd_); }

void WakeFd::signal() {
  uint64_t one = 1;
  // Fails only when the counter would overflow, which leaves it readable anyway.
  [[maybe_unused]] ssize_t n = ::write(fd_, &one, sizeof one);
}

void WakeFd::clear() {
  uint64_t count;
  [[maybe_unused]] ssize_t n = ::read(fd_, &count, sizeof count);
}

FileRead::FileRead(std::string path, size_t max_bytes, int64_t deadline_ns,
                   std::chrono::milliseconds timeout, std::shared_ptr<FetchBudget> budget,
                   std::shared_ptr<WakeFd> done_signal)
    : path_(std::move(path)),
      max_bytes_(max_bytes),
      deadline_ns_(deadline_ns),
      timeout_(timeout),
      budget_(std::move(budget)),
      done_signal_(std::move(done_signal)) {}

FileRead::~FileRead() { budget_->give_back(taken_); }

bool FileRead::start(const std::shared_ptr<FileRead>& read) {
  if (live_threads.fetch_add(1, std::memory_order_relaxed) >= kMaxThreads) {
    live_threads.fetch_sub(1, std::memory_order_relaxed);
    read->error_ = fmt::format("{} file reads are stuck (hung disk or NFS?): not starting another",
                               kMaxThreads);
    return false;
  }
  // The thread starts with every signal blocked (it inherits this thread's mask), so
  // the writer's signals are all taken by its event loop's thread.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  bool started = true;
  try {
    // The thread owns a reference: the FileRead outlives whichever side lets go last.
    std::thread([read] {
      read->run();
      live_threads.fetch_sub(1, std::memory_order_relaxed);
    }).detach();
  } catch (const std::system_error& e) {
    live_threads.fetch_sub(1, std::memory_order_relaxed);
    read->error_ = fmt::format("cannot start a thread to read {}: {}", read->path_, e.what());
    started = false;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return started;
}

void FileRead::cancel() {
  cancelled_.store(true, std::memory_order_relaxed);
  cancel_signal_.signal();
}

void FileRead::fail(std::string error) {
  error_ = std::move(error);
  std::string().swap(body_);
  budget_->give_back(std::exchange(taken_, 0));
}

// True when fd has data or its end; false at the deadline or on cancel().
bool FileRead::wait_readable(int fd, int64_t deadline_ns) {
  pollfd fds[2] = {{fd, POLLIN, 0}, {cancel_signal_.fd(), POLLIN, 0}};
  int64_t left_ms = (deadline_ns - static_cast<int64_t>(shm::monotonic_ns()) + 999'999) / 1'000'000;
  if (left_ms <= 0) return false;
  int n = ::poll(fds, 2, static_cast<int>(std::min<int64_t>(left_ms, 60'000)));
  return n > 0 && fds[0].revents != 0;
}

void FileRead::run() {
  shm::failpoint("ingest.file_read.start");  // "spin": a read stuck in the kernel
  const int64_t deadline_ns = deadline_ns_;
  int fd = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    fail(fmt::format("cannot open {}: {}", path_, std::strerror(errno)));
  } else {
    struct stat st;
    bool regular = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    size_t size = 0;
    if (regular && static_cast<uint64_t>(st.st_size) > max_bytes_) {
      fail(fmt::format("body of {} bytes over the limit of {}", st.st_size, max_bytes_));
    } else {
      if (regular) body_.reserve(static_cast<size_t>(st.st_size) + Parser::padding());
      for (;;) {
        if (cancelled_.load(std::memory_order_relaxed) ||
            static_cast<int64_t>(shm::monotonic_ns()) >= deadline_ns) {
          fail(fmt::format("timeout after {}ms", timeout_.count()));
          break;
        }
        if (!regular && !wait_readable(fd, deadline_ns)) continue;
        // One byte past the limit tells an oversized body from one that fits exactly.
        size_t room = std::min(kReadBytes, max_bytes_ + 1 - size);
        if (!budget_->take(room)) {
          fail(fmt::format("over fetch_memory_limit: fetches in flight hold {} of {} bytes",
                           budget_->used(), budget_->limit()));
          break;
        }
        taken_ += room;
        body_.resize(size + room);
        ssize_t n = ::read(fd, body_.data() + size, room);
        size_t got = n > 0 ? static_cast<size_t>(n) : 0;
        budget_->give_back(room - got);
        taken_ -= room - got;
        size += got;
        body_.resize(size);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
          fail(fmt::format("cannot read {}: {}", path_, std::strerror(errno)));
          break;
        }
        if (size > max_bytes_) {
          fail(fmt::format("body over the limit of {} bytes", max_bytes_));
          break;
        }
        if (n == 0) {
          size_ = size;
          body_.append(Parser::padding(), '\0');
          break;
        }
      }
    }
    ::close(fd);
  }
  done_.store(true, std::memory_order_release);
  done_signal_->signal();
}

}  // namespace ingest
