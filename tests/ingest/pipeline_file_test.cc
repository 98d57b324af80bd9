// pipeline_file_test.cc: file:// sources through the pipeline: a FIFO nobody writes
// times out alone, a read blocked in the kernel neither stalls the tick nor the
// pipeline's destruction, and a read that has not ended is not started again.

#include "pipeline_fixture.h"

using namespace ingest;
using namespace ingest_test;
using namespace pipeline_fixture;

namespace {

// A FIFO in a directory of its own, removed with it.
struct Fifo {
  std::string dir, path;
  Fifo() {
    char name[] = "/tmp/telemetryd-fifo-XXXXXX";
    REQUIRE(mkdtemp(name));
    dir = name;
    path = dir + "/fifo";
    REQUIRE(mkfifo(path.c_str(), 0600) == 0);
  }
  ~Fifo() {
    unlink(path.c_str());
    rmdir(dir.c_str());
  }
  std::string url() const { return "file://" + path; }
};

// Bounds how long a reader that blocks on a FIFO can hang a test: unless stopped
// within `after`, it opens the FIFO for writing and closes it again (an end of file
// for whoever waits to read it), over and over until it is stopped.
class FifoWatchdog {
 public:
  FifoWatchdog(const std::string& path, std::chrono::seconds after)
      : thread_([this, path, after] {
          std::unique_lock lock(mu_);
          if (cv_.wait_for(lock, after, [this] { return stop_; })) return;
          while (!stop_) {
            lock.unlock();
            int fd = open(path.c_str(), O_WRONLY | O_NONBLOCK);  // ENXIO while nobody reads
            if (fd >= 0) close(fd);
            lock.lock();
            cv_.wait_for(lock, std::chrono::milliseconds(10), [this] { return stop_; });
          }
        }) {}
  ~FifoWatchdog() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace

TEST_CASE("a file source on a FIFO nobody writes times out alone - the others are fetched and published every tick") {
  Fifo fifo;
  FifoWatchdog watchdog(fifo.path, std::chrono::seconds(30));
  Base b;
  Upstream upstream(b.base);
  const std::string synthetic = "synthetic://?hosts=2&metrics=2";
  Config c;
  c.source_timeout = std::chrono::milliseconds(300);
  c.sources = {fifo.url(), upstream.url("/native"), synthetic};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  for (int tick = 1; tick <= 3; ++tick) {
    pipeline.run_once();
    REQUIRE(pub.count == tick);
    const auto& read = status_of(pub, fifo.url());
    INFO(read.last_error);
    CHECK(read.last_error == "timeout after 300ms");
    CHECK(read.errors == static_cast<uint64_t>(tick));
    CHECK(status_of(pub, upstream.url("/native")).last_error.empty());
    CHECK(status_of(pub, upstream.url("/native")).samples == static_cast<uint64_t>(tick));
    CHECK(status_of(pub, synthetic).samples == static_cast<uint64_t>(4 * tick));
  }
}

TEST_CASE("destroying a pipeline does not wait for a file read blocked on a FIFO") {
  Fifo fifo;
  FifoWatchdog watchdog(fifo.path, std::chrono::seconds(30));
  Base b;
  Config c;
  c.source_timeout = std::chrono::milliseconds(60000);
  c.sources = {fifo.url(), "synthetic://?hosts=1&metrics=1"};
  auto started = std::chrono::steady_clock::now();
  {
    Pipeline pipeline(b.base, c, nullptr);
    pipeline.start();  // the FIFO's read is now in flight, for up to a minute
    event_base_loop(b.base, EVLOOP_NONBLOCK);
  }
  // Generous: it takes microseconds; the watchdog ends a blocked test after 30 s.
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(20));
}

// Run by the next test in a process of its own, where every file read spins at its
// start (failpoint ingest.file_read.start=spin), as one stuck in the kernel would.
TEST_CASE("file read stuck - in a child process", "[.]") {
  Base b;
  Config c;
  c.source_timeout = std::chrono::milliseconds(200);
  const std::string path = data_path("good/native.json");
  const std::string synthetic = "synthetic://?hosts=1&metrics=1";
  c.sources = {"file://" + path, synthetic};
  Published pub;
  Pipeline pipeline(b.base, c, recorder(pub));
  pipeline.run_once();
  CHECK(pub.statuses[0].last_error == "timeout after 200ms");
  pipeline.run_once();
  const std::string& error = pub.statuses[0].last_error;
  INFO(error);
  CHECK(error.rfind("the read of " + path + " started ", 0) == 0);
  CHECK(error.find("ms ago has not ended") != std::string::npos);
  CHECK(pub.statuses[0].errors == 2);
  CHECK(status_of(pub, synthetic).samples == 2);
}

TEST_CASE("a file read that has not ended is reported as such - not started again beside it") {
  int out[2];
  REQUIRE(pipe(out) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    setenv("TELEMETRYD_FAILPOINTS", "ingest.file_read.start=spin", 1);
    execl("/proc/self/exe", "ingest_test", "file read stuck - in a child process", nullptr);
    _exit(127);
  }
  close(out[1]);
  std::string report;
  char buf[4096];
  // The report ends when the child exits (its spinning thread dies with it); it takes
  // two 200 ms ticks, so a minute means it hangs.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    pollfd p{out[0], POLLIN, 0};
    if (poll(&p, 1, 100) == 1) {
      ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      report.append(buf, static_cast<size_t>(n));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      FAIL("the child hangs: " << report);
    }
  }
  close(out[0]);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  INFO(report);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(report.find("All tests passed") != std::string::npos);
}
