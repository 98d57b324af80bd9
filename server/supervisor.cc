// server/supervisor.cc: the supervisor process (see supervisor.h).
//
// Everything here runs on one libevent loop in one thread: signals arrive through a
// self-pipe (so the children, which build loops of their own, inherit no libevent
// signal state), a 100ms housekeeping tick restarts children that are due, kills stuck
// readers, advances a rolling restart and answers pending reloads, and the admin socket
// is served on the same loop. Children are fork()ed without exec and never return into
// this file's objects: they _exit() with their role's exit code.
#include "server/supervisor.h"

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
#include "state/state.h"

namespace server {

namespace log = common::log;

// ---------------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------------

void Supervisor::open_store() {
  shm::StoreOptions so;
  so.name = options_.shm_name;
  so.buffer_count = 3;
  // Slots 0..readers-1: the readers; slot `readers`: a spare for the reader started by
  // a rolling restart before the one it replaces stops; slot `workers`: our own.
  so.reader_slots = options_.store_slots();
  store_ = shm::Store::create(so);
  remove_default_state_dir();  // what a service that is gone left: not this one's window
  peek_ = std::make_unique<shm::Reader>(*store_, options_.workers);
  store_->service_counter(kWorkers).store(options_.readers(), std::memory_order_relaxed);
  store_->service_counter(kStartedAtNs).store(started_ns_, std::memory_order_relaxed);
  store_->service_counter(kClusterEnabled).store(options_.cluster.empty() ? 0 : 1, std::memory_order_relaxed);
  store_->service_counter(kLogLevel).store(uint64_t(*log::parse_level(options_.log_level)), std::memory_order_relaxed);
  log::set_level_source(&store_->service_counter(kLogLevel));
}

// libevent's own warnings become log lines too (children inherit the callback).
namespace {

void libevent_log(int severity, const char* message) {
  if (severity >= EVENT_LOG_ERR) log::error("libevent: {}", message);
  else if (severity >= EVENT_LOG_WARN) log::warn("libevent: {}", message);
  else log::debug("libevent: {}", message);
}

}  // namespace

int Supervisor::run() {
  log::set_role("supervisor");
  event_set_log_callback(libevent_log);
  install_signal_pipe();
  open_store();
  listen_fd_ = bind_listener(options_.listen);
  base_ = event_base_new();
  if (!base_) throw std::runtime_error("event_base_new failed");
  admin_ = std::make_unique<AdminServer>(base_, options_.admin_socket,
                                         [this](const Command& c, ReplyFn r) { on_command(c, std::move(r)); });
  if (!options_.pidfile.empty()) write_pidfile(options_.pidfile);
  signal_event_ = event_new(base_, signal_pipe_fd(), EV_READ | EV_PERSIST, &Supervisor::on_signal_pipe, this);
  event_add(signal_event_, nullptr);
  tick_event_ = event_new(base_, -1, EV_PERSIST, &Supervisor::on_tick, this);
  timeval tv{0, int(kTick.count()) * 1000};
  event_add(tick_event_, &tv);

  log::info("telemetryd {} starting: listen {}, {} reader(s) + 1 writer, shm /{}, admin socket {}", kVersion,
            options_.listen, options_.readers(), options_.shm_name, options_.admin_socket);
  writer_.role = Role::writer;
  spawn(writer_);
  for (uint32_t i = 0; i < options_.readers(); ++i) {
    auto r = std::make_unique<Child>();
    r->slot = i;
    spawn(*r);
    readers_.push_back(std::move(r));
  }
  event_base_dispatch(base_);
  cleanup();
  log::info("stopped (exit status {})", exit_code_);
  return exit_code_;
}

void Supervisor::cleanup() {
  admin_.reset();  // unlinks the socket
  if (tick_event_) event_free(tick_event_);
  if (signal_event_) event_free(signal_event_);
  event_base_free(base_);
  if (listen_fd_ >= 0) close(listen_fd_);
  peek_.reset();
  log::Level level = log::level();
  log::set_level_source(nullptr);  // the level lived in the segment we are about to unmap
  log::set_level(level);
  std::string name = store_->name();
  store_.reset();
  shm::Store::remove(name);
  remove_default_state_dir();
  if (!options_.pidfile.empty()) remove_pidfile(options_.pidfile);
  if (ready_fd_ >= 0) close(ready_fd_);
}

// Without a state-dir the writer keeps its state in /dev/shm (Options::
// effective_state_dir): it outlives the writer, not the service, like the store.
void Supervisor::remove_default_state_dir() {
  if (!options_.state_dir.empty() || options_.effective_state_dir().empty()) return;
  std::string error = state::remove_dir(options_.effective_state_dir());
  if (!error.empty()) log::warn("cannot remove the default state dir: {}", error);
}

// ---------------------------------------------------------------------------------
// The tick
// ---------------------------------------------------------------------------------

void Supervisor::on_tick(evutil_socket_t, short, void* self) { static_cast<Supervisor*>(self)->tick(); }

void Supervisor::on_signal_pipe(evutil_socket_t fd, short, void* arg) {
  auto* self = static_cast<Supervisor*>(arg);
  unsigned char buf[64];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0)
    for (ssize_t i = 0; i < n; ++i) self->handle_signal(buf[i]);
}

void Supervisor::handle_signal(int signal) {
  switch (signal) {
    case SIGCHLD: reap(); break;
    case SIGTERM:
    case SIGINT: begin_shutdown(kExitOk, fmt::format("signal {} ({})", signal, strsignal(signal))); break;
    case SIGHUP: reload(Command{}, nullptr); break;
    case SIGUSR1:
      if (!log::reopen_file()) log::error("cannot reopen the log file; still writing to the old one");
      forward(SIGUSR1);
      log::info("log file reopened");
      break;
  }
}

void Supervisor::tick() {
  uint64_t now = shm::monotonic_ns();
  reap();  // in case a SIGCHLD was coalesced with the one we handled
  if (stopping_) {
    bool all_gone = writer_.pid == 0 && std::all_of(readers_.begin(), readers_.end(), [](const auto& r) { return r->pid == 0; });
    if (all_gone) {
      event_base_loopexit(base_, nullptr);
    } else if (now >= stop_deadline_ && !killed_stragglers_) {
      killed_stragglers_ = true;
      log::warn("children still running after {}ms: SIGKILL", options_.shutdown_timeout.count());
      forward(SIGKILL);
    }
    return;
  }
  shm::StoreInfo info = store_->info();
  restart_due(now);
  kill_stuck_readers(now, info);
  kill_stuck_writer(now);
  advance_rolling_restart(now, info);
  answer_reloads(now);
  check_ready(info);
}

void Supervisor::forward(int signal) {
  if (writer_.pid > 0) kill(writer_.pid, signal);
  for (auto& r : readers_)
    if (r->pid > 0) kill(r->pid, signal);
}

void Supervisor::begin_shutdown(int exit_code, const std::string& why) {
  if (stopping_) return;
  stopping_ = true;
  exit_code_ = exit_code;
  stop_deadline_ = shm::monotonic_ns() + ms_to_ns(options_.shutdown_timeout);
  log::info("stopping: {}", why);
  sd_notify("STOPPING=1");
  for (auto& p : reloads_)
    if (p.reply) p.reply(error_reply(p.command, "the service is stopping"));
  reloads_.clear();
  if (rolling_)
    for (auto& [c, reply] : rolling_->waiters) reply(error_reply(c, "the service is stopping"));
  rolling_.reset();
  for (auto& r : readers_)
    if (r->state == State::backoff) r->state = State::stopped;
  if (writer_.state == State::backoff) writer_.state = State::stopped;
  forward(SIGTERM);
}

// ---------------------------------------------------------------------------------
// Reload
// ---------------------------------------------------------------------------------

void Supervisor::reload(const Command& command, ReplyFn reply) {
  Options fresh;
  try {
    fresh = load_options(command_line_);
  } catch (const std::exception& e) {
    last_reload_error_ = e.what();
    last_reload_ns_ = shm::realtime_ns();
    log::error("reload rejected, keeping the running configuration: {}", e.what());
    if (reply) reply(error_reply(command, fmt::format("configuration rejected: {}", e.what())));
    return;
  }
  std::vector<std::string> restart_needed = restart_only_changes(options_, fresh);
  if (!restart_needed.empty())
    log::warn("reload: {} changed; that takes a restart, keeping the running values", fmt::join(restart_needed, ", "));
  // Keep what only a restart can change; take the rest (a writer or reader started
  // from now on gets the new values).
  fresh.listen = options_.listen;
  fresh.workers = options_.workers;
  fresh.admin_socket = options_.admin_socket;
  fresh.shm_name = options_.shm_name;
  fresh.pidfile = options_.pidfile;
  fresh.log_file = options_.log_file;
  fresh.daemon = options_.daemon;
  options_ = fresh;
  store_->service_counter(kLogLevel).store(uint64_t(*log::parse_level(options_.log_level)), std::memory_order_relaxed);
  last_reload_error_.clear();
  last_reload_ns_ = shm::realtime_ns();

  PendingReload p{0, 0, restart_needed, std::move(reply), command};
  if (writer_.pid <= 0 || writer_.state != State::running) {
    log::info("reload: configuration accepted; the writer is not running and will start with it");
    if (p.reply) p.reply(report_reply(command, Report().add("reload", "ok").add("restart_needed", fmt::format("{}", fmt::join(restart_needed, ",")))));
    return;
  }
  p.request = store_->service_counter(kReloadRequests).fetch_add(1, std::memory_order_acq_rel) + 1;
  p.deadline = shm::monotonic_ns() + ms_to_ns(kReloadTimeout);
  log::info("reload {}: configuration accepted, asking the writer (pid {})", p.request, writer_.pid);
  kill(writer_.pid, SIGHUP);
  reloads_.push_back(std::move(p));
}

// The writer answers with the request number it handled; a later number answers the
// earlier requests too (SIGHUPs coalesce, and it read the newest file).
void Supervisor::answer_reloads(uint64_t now) {
  uint64_t done = store_->service_counter(kReloadDone).load(std::memory_order_acquire);
  uint64_t failed = store_->service_counter(kReloadFailed).load(std::memory_order_acquire);
  for (auto it = reloads_.begin(); it != reloads_.end();) {
    std::string answer;
    if (done >= it->request && done >= failed) {
      answer = report_reply(it->command, Report()
                                             .add("reload", "ok")
                                             .add("request", it->request)
                                             .add("restart_needed", fmt::format("{}", fmt::join(it->restart_needed, ","))));
    } else if (failed >= it->request) {
      answer = error_reply(it->command, "the writer rejected the configuration (its reason is in the log)");
    } else if (now >= it->deadline) {
      answer = error_reply(it->command, fmt::format("no answer from the writer within {}ms", kReloadTimeout.count()));
    } else {
      ++it;
      continue;
    }
    if (it->reply) it->reply(answer);
    it = reloads_.erase(it);
  }
}


int run_supervisor(const CommandLine& command_line, Options options, int ready_fd) {
  Supervisor s(command_line, std::move(options), ready_fd);
  return s.run();
}

}  // namespace server
