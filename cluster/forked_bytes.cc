// cluster/forked_bytes.cc: see forked_bytes.h.
#include "cluster/forked_bytes.h"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <utility>

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

namespace cluster {

namespace {
constexpr size_t kReadBytes = 1 << 20;  // per turn of the loop

// The child: no destructors, no atexit handlers, nothing of the parent's loop touched.
[[noreturn]] void run_child(int fd, const std::function<std::string()>& make) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  std::string bytes;
  try {
    bytes = make();
  } catch (...) {
    _exit(2);
  }
  size_t at = 0;
  while (at < bytes.size()) {
    ssize_t n = write(fd, bytes.data() + at, bytes.size() - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) _exit(3);
    at += size_t(n);
  }
  _exit(0);
}
}  // namespace

ForkedBytes::ForkedBytes(event_base* base, const std::function<std::string()>& make, Done done)
    : done_(std::move(done)) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  child_ = fork();
  if (child_ < 0) {
    int e = errno;
    close(fds[0]);
    close(fds[1]);
    throw std::runtime_error(std::string("fork: ") + std::strerror(e));
  }
  if (child_ == 0) {
    close(fds[0]);
    run_child(fds[1], make);
  }
  close(fds[1]);
  fd_ = fds[0];
  fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
  readable_ = event_new(base, fd_, EV_READ | EV_PERSIST, &ForkedBytes::on_readable, this);
  event_add(readable_, nullptr);
}

ForkedBytes::~ForkedBytes() {
  if (readable_) event_free(readable_);
  if (fd_ >= 0) close(fd_);
  if (child_ > 0) {
    kill(child_, SIGKILL);
    waitpid(child_, nullptr, 0);
  }
}

void ForkedBytes::on_readable(int fd, short, void* arg) {
  auto* self = static_cast<ForkedBytes*>(arg);
  size_t had = self->bytes_.size();
  self->bytes_.resize(had + kReadBytes);
  ssize_t n = read(fd, self->bytes_.data() + had, kReadBytes);
  self->bytes_.resize(had + size_t(std::max<ssize_t>(n, 0)));
  if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR))) return;
  if (n < 0) return self->finish(std::string("reading from the child: ") + std::strerror(errno));
  self->finish("");
}

// End of the pipe: the child has written everything (or died). Its exit status says which.
void ForkedBytes::finish(const std::string& error) {
  event_del(readable_);
  close(fd_);
  fd_ = -1;
  int status = 0;
  pid_t child = std::exchange(child_, -1);
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  std::string why = error;
  if (why.empty() && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    why = WIFSIGNALED(status) ? "the child was killed by signal " + std::to_string(WTERMSIG(status))
                              : "the child failed (exit " + std::to_string(WEXITSTATUS(status)) + ")";
  Done done = std::move(done_);
  std::string bytes = why.empty() ? std::move(bytes_) : std::string();
  done(std::move(bytes), why);  // may destroy this: nothing after
}

}  // namespace cluster
