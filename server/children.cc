// server/children.cc: the supervisor's children: forking a writer or a reader, what a
// child does before it runs its role, reaping, the restart policy (immediate, then
// doubling backoff, then a crash loop that stops the service), the watchdog that kills
// a reader whose loop stopped, and readiness.
#include <sys/prctl.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <fmt/format.h>

#include "common/log.h"
#include "server/process.h"
#include "server/service.h"
#include "server/supervisor_impl.h"
#include "server/reader.h"
#include "server/writer.h"

namespace server {

namespace log = common::log;

// ---------------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------------

void Supervisor::spawn(Child& child) {
  // Blocked across fork: the child resets the handlers, then unblocks once its own loop
  // can take the signals (a SIGHUP that arrived in between is delivered then, not lost,
  // and does not kill it with the default action).
  sigset_t blocked = handled_signals(), old;
  // A new writer reads nothing on SIGHUP: it starts from options_, which already holds
  // every configuration the supervisor accepted. So the reloads asked of its
  // predecessor (which may have died before answering) are done by this start.
  const uint64_t reloads_asked = store_->service_counter(kReloadRequests).load(std::memory_order_acquire);
  sigprocmask(SIG_BLOCK, &blocked, &old);
  pid_t pid = fork();
  if (pid == 0) child_main(child);
  sigprocmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) {
    log::error("fork for {} failed: {}", child.name(), std::strerror(errno));
    schedule_restart(child);
    return;
  }
  child.pid = pid;
  child.state = State::running;
  child.started_ns = shm::realtime_ns();
  child.started_mono = shm::monotonic_ns();
  child.retiring = child.stuck_killed = false;
  log::info("started {} (pid {})", child.name(), pid);
  if (child.role == Role::writer && !reloads_.empty()) {
    log::info("reload {}: the new writer starts with the accepted configuration", reloads_asked);
    store_->service_counter(kReloadDone).store(reloads_asked, std::memory_order_release);
  }
}

void Supervisor::child_main(Child& child) {
  int code = kExitFailure;
  try {
    // If the supervisor dies without stopping us (SIGKILL), stop too: an orphan
    // would hold the shm writer role or the listening port against the next start.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != self_pid_) _exit(kExitFailure);
    restore_default_signals();
    log::set_role(child.name());
    if (child.role == Role::writer) {
      close_inherited_fds({log::file_fd()});
      code = run_writer(*store_, command_line_, options_);
    } else {
      close_inherited_fds({log::file_fd(), listen_fd_});
      reopen_log_on_sigusr1();
      signal(SIGHUP, SIG_IGN);  // reloads are the writer's business
      sigset_t set = handled_signals();
      sigprocmask(SIG_UNBLOCK, &set, nullptr);
      ReaderOptions ro;
      ro.listen_fd = listen_fd_;
      ro.slot = child.slot;
      ro.idle_timeout = options_.idle_timeout;
      ro.request_timeout = options_.request_timeout;
      ro.healthz_max_age = options_.healthz_max_age;
      ro.fanout_deadline = options_.query_deadline;
      // The reader's own grace is shorter than ours, so it finishes before we SIGKILL.
      ro.shutdown_grace = std::max(ms(100), options_.shutdown_timeout - ms(1000));
      ro.max_header_bytes = options_.max_header_bytes;
      ro.max_connections = options_.max_connections_per_reader;
      ro.prom_series_limit = options_.ingest.prom_series_limit;
      ro.state_dir = options_.effective_state_dir();
      ro.engine = parse_reader_engine(options_.reader_engine).value_or(ReaderEngine::automatic);  // checked at load
      code = run_reader(*store_, ro);
    }
  } catch (const std::exception& e) {
    log::error("{} failed: {}", child.name(), e.what());
  }
  // _exit: the supervisor's objects in this copy of memory (admin socket, store) must
  // not run their destructors here.
  _exit(code);
}

Child* Supervisor::find(pid_t pid) {
  if (writer_.pid == pid) return &writer_;
  for (auto& r : readers_)
    if (r->pid == pid) return r.get();
  return nullptr;
}

std::optional<uint32_t> Supervisor::free_slot() const {
  for (uint32_t s = 0; s < options_.workers; ++s) {  // slot `workers` is ours
    bool used = std::any_of(readers_.begin(), readers_.end(), [s](const auto& r) { return r->slot == s; });
    if (!used) return s;
  }
  return std::nullopt;
}

bool Supervisor::reader_ready(const Child& c, const shm::StoreInfo& info) const {
  if (c.state != State::running || c.slot >= info.readers.size()) return false;
  const shm::ReaderInfo& r = info.readers[c.slot];
  return r.pid == c.pid && r.heartbeat_ns >= c.started_mono;
}

void Supervisor::reap() {
  int status = 0;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    if (Child* c = find(pid)) on_exit(*c, status);
  }
}

void Supervisor::on_exit(Child& c, int status) {
  pid_t pid = c.pid;
  if (c.role == Role::writer) {
    store_->clear_writer(pid);
  } else {
    store_->clear_reader_slot(c.slot, pid);
  }
  c.pid = 0;
  bool bad_config = WIFEXITED(status) && WEXITSTATUS(status) == kExitBadConfig;
  if (stopping_ || c.retiring) {
    log::info("{} (pid {}) {}", c.name(), pid, describe_status(status));
    c.state = State::stopped;
    if (c.retiring) {
      if (rolling_ && rolling_->retiring == pid) rolling_->retiring = 0;
      readers_.erase(std::remove_if(readers_.begin(), readers_.end(), [&](const auto& r) { return r.get() == &c; }),
                     readers_.end());
    }
    return;
  }
  if (bad_config) {
    c.state = State::failed;
    log::error("{} (pid {}) {}: its configuration can never work; not restarting it", c.name(), pid,
               describe_status(status));
    begin_shutdown(kExitBadConfig, c.name() + " cannot run with this configuration");
    return;
  }
  log::warn("{} (pid {}) {}", c.name(), pid, describe_status(status));
  schedule_restart(c);
}

// Backoff: the first crash within crash-loop-window restarts at once, then 100ms,
// 200ms, ... up to restart-backoff-max; crash-loop-limit crashes within the window
// stop the service rather than spin.
void Supervisor::schedule_restart(Child& c) {
  uint64_t now = shm::monotonic_ns();
  store_->service_counter(c.role == Role::writer ? kRestartsWriter : kRestartsReader).fetch_add(1, std::memory_order_relaxed);
  ++c.restarts;
  if (c.stuck_killed) {
    c.state = State::backoff;
    c.restart_at = now;
    return;
  }
  c.crashes.push_back(now);
  while (!c.crashes.empty() && now - c.crashes.front() > ms_to_ns(options_.crash_loop_window)) c.crashes.pop_front();
  if (c.crashes.size() > options_.crash_loop_limit) {
    c.state = State::failed;
    log::error("{} crashed {} times within {}ms: crash loop, giving up", c.name(), c.crashes.size(),
               options_.crash_loop_window.count());
    begin_shutdown(kExitFailure, c.name() + " is in a crash loop");
    return;
  }
  ms delay{0};
  if (c.crashes.size() > 1)
    delay = std::min(options_.restart_backoff_max, ms(100) * (int64_t(1) << std::min<size_t>(c.crashes.size() - 2, 20)));
  c.state = State::backoff;
  c.restart_at = now + ms_to_ns(delay);
  if (delay.count() > 0) log::info("restarting {} in {}ms", c.name(), delay.count());
}

void Supervisor::restart_due(uint64_t now) {
  if (writer_.state == State::backoff && now >= writer_.restart_at) spawn(writer_);
  for (auto& r : readers_)
    if (r->state == State::backoff && now >= r->restart_at) spawn(*r);
}

// A reader whose loop has not ticked for stuck-timeout is not serving its connections
// either: kill it and start another on its slot.
void Supervisor::kill_stuck_readers(uint64_t now, const shm::StoreInfo& info) {
  const uint64_t limit = ms_to_ns(options_.stuck_timeout);
  for (auto& r : readers_) {
    if (r->state != State::running || r->stuck_killed || r->slot >= info.readers.size()) continue;
    const shm::ReaderInfo& slot = info.readers[r->slot];
    uint64_t last = slot.pid == r->pid ? std::max(slot.heartbeat_ns, r->started_mono) : r->started_mono;
    if (now <= last || now - last <= limit) continue;
    log::error("{} (pid {}) made no progress for {}ms: killing it", r->name(), r->pid, (now - last) / 1000000);
    r->stuck_killed = true;
    kill(r->pid, SIGKILL);
    store_->service_counter(kStuckReadersKilled).fetch_add(1, std::memory_order_relaxed);
  }
}

// The writer's loop beats kWriterHeartbeatNs every 100ms and after each publish. One
// that has not beaten for writer-stuck-timeout is spinning or blocked: readers keep
// serving the last snapshot, and a fresh writer continues from its generation.
void Supervisor::kill_stuck_writer(uint64_t now) {
  if (writer_.state != State::running || writer_.stuck_killed) return;
  uint64_t beat = store_->service_counter(kWriterHeartbeatNs).load(std::memory_order_relaxed);
  uint64_t last = std::max(beat, writer_.started_mono);
  if (now <= last || now - last <= ms_to_ns(options_.writer_stuck_timeout)) return;
  log::error("writer (pid {}) made no progress for {}ms: killing it", writer_.pid, (now - last) / 1000000);
  writer_.stuck_killed = true;
  kill(writer_.pid, SIGKILL);
  store_->service_counter(kStuckWritersKilled).fetch_add(1, std::memory_order_relaxed);
}

void Supervisor::check_ready(const shm::StoreInfo& info) {
  if (ready_ || info.generation == 0) return;
  for (auto& r : readers_)
    if (!reader_ready(*r, info)) return;
  ready_ = true;
  log::info("ready: {} reader(s) serving generation {} on {}", readers_.size(), info.generation, options_.listen);
  sd_notify(fmt::format("READY=1\nMAINPID={}\nSTATUS=serving on {}", getpid(), options_.listen));
  if (ready_fd_ >= 0) {
    (void)!::write(ready_fd_, "R", 1);
    close(ready_fd_);
    ready_fd_ = -1;
  }
}

}  // namespace server
