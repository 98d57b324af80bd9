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
#include <deque>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <netdb.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <fmt/format.h>

#include "server/admin.h"
#include "server/log.h"
#include "server/reader.h"
#include "server/service.h"
#include "server/writer.h"
#include "shm/shm.h"

namespace server {

namespace {

using ms = std::chrono::milliseconds;
constexpr ms kTick{100};
constexpr ms kReloadTimeout{10000};
constexpr ms kRollingStepTimeout{10000};
constexpr int kSignals[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGCHLD};

uint64_t ms_to_ns(ms d) { return uint64_t(d.count()) * 1000000; }

std::string iso_time(uint64_t unix_ns) {
  if (unix_ns == 0) return "-";
  time_t s = time_t(unix_ns / 1000000000);
  tm utc;
  gmtime_r(&s, &utc);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buf;
}

double age_seconds(uint64_t unix_ns) {
  if (unix_ns == 0) return 0;
  uint64_t now = shm::realtime_ns();
  return now > unix_ns ? double(now - unix_ns) / 1e9 : 0.0;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return fmt::format("killed by signal {} ({}){}", WTERMSIG(status), strsignal(WTERMSIG(status)),
                       WCOREDUMP(status) ? ", core dumped" : "");
  return fmt::format("ended with wait status {}", status);
}

// ---------------------------------------------------------------------------------
// Signals: handlers only write the signal number into a pipe the loop reads.
// ---------------------------------------------------------------------------------

int g_signal_pipe[2] = {-1, -1};

void on_signal(int signal) {
  int saved = errno;
  unsigned char byte = static_cast<unsigned char>(signal);
  (void)!::write(g_signal_pipe[1], &byte, 1);
  errno = saved;
}

void install_signal_pipe() {
  if (pipe2(g_signal_pipe, O_NONBLOCK | O_CLOEXEC) != 0)
    throw std::runtime_error(fmt::format("pipe: {}", std::strerror(errno)));
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  for (int s : kSignals) sigaction(s, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

sigset_t handled_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kSignals) sigaddset(&set, s);
  return set;
}

// SIGUSR1 in a reader, before (or instead of) the reader's own handling: open, dup2 and
// close are async-signal-safe, which is all reopen_file() does.
void reader_reopen_log(int) {
  int saved = errno;
  log::reopen_file();
  errno = saved;
}

// ---------------------------------------------------------------------------------
// sd_notify, by hand: one datagram to $NOTIFY_SOCKET (systemd, or start-stop-daemon
// --notify-await). An abstract socket is written with a leading '@'.
// ---------------------------------------------------------------------------------

void sd_notify(const std::string& state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (!path || !*path) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  size_t len = std::strlen(path);
  if (len >= sizeof addr.sun_path) return;
  std::memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  socklen_t alen = socklen_t(offsetof(sockaddr_un, sun_path) + len);
  // start-stop-daemon --notify-await listens only until READY=1: a socket gone by
  // STOPPING=1 is expected, anything else is worth a line.
  if (sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), alen) < 0 &&
      errno != ENOENT && errno != ECONNREFUSED)
    log::warn("sd_notify {}: {}", path, std::strerror(errno));
  close(fd);
}

// ---------------------------------------------------------------------------------
// Sockets and files
// ---------------------------------------------------------------------------------

// The one listening socket every reader shares (bound before any fork, so a client is
// never refused while a reader is replaced: the kernel queues it for the others).
int bind_listener(const std::string& listen) {
  auto [host, port] = parse_listen(listen);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  std::string service = std::to_string(port);
  if (int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0)
    throw std::runtime_error(fmt::format("listen {}: {}", listen, gai_strerror(rc)));
  std::string why = "no address";
  for (addrinfo* a = found; a; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, SOMAXCONN) == 0) {
      freeaddrinfo(found);
      return fd;
    }
    why = std::strerror(errno);
    close(fd);
  }
  freeaddrinfo(found);
  throw std::runtime_error(fmt::format("listen {}: {}", listen, why));
}

void write_pidfile(const std::string& path) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << getpid() << "\n";
    if (!f) throw std::runtime_error(fmt::format("cannot write pidfile {}", tmp));
  }
  if (rename(tmp.c_str(), path.c_str()) != 0)
    throw std::runtime_error(fmt::format("cannot write pidfile {}: {}", path, std::strerror(errno)));
}

void remove_pidfile(const std::string& path) {
  std::ifstream f(path);
  long pid = 0;
  if (f >> pid && pid == getpid()) unlink(path.c_str());  // not one a newer instance wrote
}

// In a child: close every descriptor the supervisor had open (its loop, the admin
// socket and its clients, the signal pipe) except those the child needs, so that no
// admin client waits on a reply a child holds open.
void close_inherited_fds(std::initializer_list<int> keep) {
  std::vector<int> fds;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) {
      int fd = std::atoi(e->d_name);
      if (fd > 2 && fd != dirfd(d)) fds.push_back(fd);
    }
    closedir(d);
  }
  for (int fd : fds)
    if (std::find(keep.begin(), keep.end(), fd) == keep.end()) close(fd);
}

// ---------------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------------

enum class Role { writer, reader };
enum class State { running, backoff, stopping, stopped, failed };

std::string_view state_name(State s) {
  switch (s) {
    case State::running: return "running";
    case State::backoff: return "backoff";
    case State::stopping: return "stopping";
    case State::stopped: return "stopped";
    case State::failed: return "failed";
  }
  return "?";
}

struct Child {
  Role role = Role::reader;
  uint32_t slot = 0;  // readers: the shm slot
  pid_t pid = 0;
  State state = State::stopped;
  uint64_t started_ns = 0;    // Unix time, for show workers
  uint64_t started_mono = 0;  // CLOCK_MONOTONIC, for timeouts
  uint64_t restart_at = 0;    // CLOCK_MONOTONIC, in State::backoff
  uint32_t restarts = 0;
  std::deque<uint64_t> crashes;  // CLOCK_MONOTONIC of recent crashes (crash-loop detection)
  bool retiring = false;         // stopped on purpose (rolling restart): not restarted
  bool stuck_killed = false;     // killed by the stuck check: restarted at once

  std::string name() const { return role == Role::writer ? "writer" : fmt::format("reader {}", slot); }
};

struct PendingReload {
  uint64_t request = 0;
  uint64_t deadline = 0;
  std::vector<std::string> restart_needed;
  ReplyFn reply;
  Command command;
};

// `restart readers`: replace each reader of `old_pids`, one at a time, starting the
// new one (on a free slot) before stopping the old.
struct RollingRestart {
  std::deque<pid_t> old_pids;
  pid_t replacement = 0;  // started, not yet ready
  pid_t retiring = 0;     // told to stop, not yet reaped
  uint64_t step_deadline = 0;
  uint32_t replaced = 0;
  std::vector<std::pair<Command, ReplyFn>> waiters;
};

class Supervisor {
 public:
  Supervisor(const CommandLine& command_line, Options options, int ready_fd)
      : command_line_(command_line), options_(std::move(options)), ready_fd_(ready_fd) {}

  int run();

 private:
  // Setup and teardown.
  void open_store();
  void cleanup();

  // Children.
  void spawn(Child& child);
  [[noreturn]] void child_main(Child& child);
  void reap();
  void on_exit(Child& child, int status);
  void schedule_restart(Child& child);
  Child* find(pid_t pid);
  std::optional<uint32_t> free_slot() const;
  bool reader_ready(const Child& child, const shm::StoreInfo& info) const;

  // The housekeeping tick.
  static void on_tick(evutil_socket_t, short, void* self);
  static void on_signal_pipe(evutil_socket_t fd, short, void* self);
  void tick();
  void restart_due(uint64_t now);
  void kill_stuck_readers(uint64_t now, const shm::StoreInfo& info);
  void advance_rolling_restart(uint64_t now, const shm::StoreInfo& info);
  void answer_reloads(uint64_t now);
  void check_ready(const shm::StoreInfo& info);
  void handle_signal(int signal);

  // Operations (signals and admin commands).
  void begin_shutdown(int exit_code, const std::string& why);
  void reload(const Command& command, ReplyFn reply);
  void restart_readers(const Command& command, ReplyFn reply);
  void forward(int signal);

  // Admin commands.
  void on_command(const Command& command, ReplyFn reply);
  Report show_info() const;
  Report show_workers() const;
  Report show_sources() const;
  Report show_snapshot() const;
  std::string show_series(const Command& command, const std::string& key);
  Report child_report(const Child& c, const shm::StoreInfo& info) const;

  const CommandLine& command_line_;
  Options options_;
  int ready_fd_;
  bool ready_ = false;
  pid_t self_pid_ = getpid();
  uint64_t started_ns_ = shm::realtime_ns();

  std::unique_ptr<shm::Store> store_;
  std::unique_ptr<shm::Reader> peek_;  // the supervisor's own slot: show series / snapshot
  int listen_fd_ = -1;
  event_base* base_ = nullptr;
  event* tick_event_ = nullptr;
  event* signal_event_ = nullptr;
  std::unique_ptr<AdminServer> admin_;

  Child writer_;
  std::vector<std::unique_ptr<Child>> readers_;
  std::vector<PendingReload> reloads_;
  std::optional<RollingRestart> rolling_;
  std::string last_reload_error_;
  uint64_t last_reload_ns_ = 0;

  bool stopping_ = false;
  uint64_t stop_deadline_ = 0;
  bool killed_stragglers_ = false;
  int exit_code_ = kExitOk;
};

// ---------------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------------

void Supervisor::open_store() {
  shm::StoreOptions so;
  so.name = options_.shm_name;
  so.buffer_count = 3;
  // Slots 0..readers-1: the readers; slot `readers`: a spare for the reader started by
  // a rolling restart before the one it replaces stops; slot `workers`: our own.
  so.reader_slots = options_.workers + 1;
  store_ = shm::Store::create(so);
  peek_ = std::make_unique<shm::Reader>(*store_, options_.workers);
  store_->service_counter(kWorkers).store(options_.readers(), std::memory_order_relaxed);
  store_->service_counter(kStartedAtNs).store(started_ns_, std::memory_order_relaxed);
  store_->service_counter(kLogLevel).store(uint64_t(*log::parse_level(options_.log_level)), std::memory_order_relaxed);
  log::set_level_source(&store_->service_counter(kLogLevel));
}

// libevent's own warnings become log lines too (children inherit the callback).
void libevent_log(int severity, const char* message) {
  if (severity >= EVENT_LOG_ERR) log::error("libevent: {}", message);
  else if (severity >= EVENT_LOG_WARN) log::warn("libevent: {}", message);
  else log::debug("libevent: {}", message);
}

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
  signal_event_ = event_new(base_, g_signal_pipe[0], EV_READ | EV_PERSIST, &Supervisor::on_signal_pipe, this);
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
  if (!options_.pidfile.empty()) remove_pidfile(options_.pidfile);
  if (ready_fd_ >= 0) close(ready_fd_);
}

// ---------------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------------

void Supervisor::spawn(Child& child) {
  // Blocked across fork: the child resets the handlers, then unblocks once its own loop
  // can take the signals (a SIGHUP that arrived in between is delivered then, not lost,
  // and does not kill it with the default action).
  sigset_t blocked = handled_signals(), old;
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
}

void Supervisor::child_main(Child& child) {
  int code = kExitFailure;
  try {
    // If the supervisor dies without stopping us (SIGKILL), stop too: an orphan
    // would hold the shm writer role or the listening port against the next start.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != self_pid_) _exit(kExitFailure);
    for (int s : kSignals) signal(s, SIG_DFL);
    log::set_role(child.name());
    if (child.role == Role::writer) {
      close_inherited_fds({log::file_fd()});
      code = run_writer(*store_, command_line_, options_);
    } else {
      close_inherited_fds({log::file_fd(), listen_fd_});
      struct sigaction sa{};
      sa.sa_handler = reader_reopen_log;
      sigemptyset(&sa.sa_mask);
      sigaction(SIGUSR1, &sa, nullptr);
      signal(SIGHUP, SIG_IGN);  // reloads are the writer's business
      sigset_t set = handled_signals();
      sigprocmask(SIG_UNBLOCK, &set, nullptr);
      ReaderOptions ro;
      ro.listen_fd = listen_fd_;
      ro.slot = child.slot;
      ro.idle_timeout = options_.idle_timeout;
      ro.request_timeout = options_.request_timeout;
      ro.healthz_max_age = options_.healthz_max_age;
      // The reader's own grace is shorter than ours, so it finishes before we SIGKILL.
      ro.shutdown_grace = std::max(ms(100), options_.shutdown_timeout - ms(1000));
      ro.max_header_bytes = options_.max_header_bytes;
      ro.prom_series_limit = options_.ingest.prom_series_limit;
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
  advance_rolling_restart(now, info);
  answer_reloads(now);
  check_ready(info);
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

// ---------------------------------------------------------------------------------
// Rolling restart of the readers
// ---------------------------------------------------------------------------------

void Supervisor::restart_readers(const Command& command, ReplyFn reply) {
  if (rolling_) {  // one already runs: answer when it ends
    rolling_->waiters.emplace_back(command, std::move(reply));
    return;
  }
  RollingRestart r;
  for (auto& c : readers_)
    if (c->state == State::running) r.old_pids.push_back(c->pid);
  r.waiters.emplace_back(command, std::move(reply));
  log::info("restart readers: replacing {} reader(s), one at a time", r.old_pids.size());
  rolling_ = std::move(r);
}

void Supervisor::advance_rolling_restart(uint64_t now, const shm::StoreInfo& info) {
  if (!rolling_) return;
  RollingRestart& r = *rolling_;
  auto finish = [&](const std::string& error) {
    for (auto& [c, reply] : r.waiters)
      reply(error.empty() ? report_reply(c, Report().add("restarted", r.replaced)) : error_reply(c, error));
    if (error.empty()) log::info("restart readers: done, {} replaced", r.replaced);
    else log::error("restart readers: {}", error);
    rolling_.reset();
  };
  if (r.retiring != 0) {  // waiting for the old one to go
    if (now >= r.step_deadline) {
      kill(r.retiring, SIGKILL);
      r.step_deadline = now + ms_to_ns(kRollingStepTimeout);
    }
    return;
  }
  if (r.replacement != 0) {  // waiting for the new one to serve
    Child* c = find(r.replacement);
    if (!c || c->state != State::running) return finish("the new reader died before it was ready");
    if (!reader_ready(*c, info)) {
      if (now >= r.step_deadline) finish("the new reader was not ready in time");
      return;
    }
    r.replacement = 0;
    pid_t old = r.old_pids.front();
    r.old_pids.pop_front();
    if (Child* o = find(old); o && o->state == State::running) {
      o->retiring = true;
      o->state = State::stopping;
      kill(old, SIGTERM);
      r.retiring = old;
      r.step_deadline = now + ms_to_ns(options_.shutdown_timeout);
    }
    ++r.replaced;
    return;
  }
  while (!r.old_pids.empty() && !find(r.old_pids.front())) r.old_pids.pop_front();  // died meanwhile
  if (r.old_pids.empty()) return finish("");
  std::optional<uint32_t> slot = free_slot();
  if (!slot) return finish("no free reader slot");
  auto fresh = std::make_unique<Child>();
  fresh->slot = *slot;
  spawn(*fresh);
  if (fresh->pid <= 0) return finish("fork failed");
  r.replacement = fresh->pid;
  r.step_deadline = now + ms_to_ns(kRollingStepTimeout);
  readers_.push_back(std::move(fresh));
}

// ---------------------------------------------------------------------------------
// Admin commands
// ---------------------------------------------------------------------------------

constexpr std::string_view kHelp =
    "help: this list\n"
    "ping: check that the service answers\n"
    "show version: the version\n"
    "show info: pid, uptime, workers, snapshot generation, age and size\n"
    "show workers: every child process with its state and counters\n"
    "show sources: every upstream source with its last fetch\n"
    "show snapshot: the current snapshot and the store's buffers\n"
    "show series KEY: one series body from the current snapshot\n"
    "reload: re-read the configuration and apply it (waits for the outcome)\n"
    "restart readers: replace the readers one at a time, without refusing connections\n"
    "set log-level LEVEL: debug, info, warn or error, in every process\n"
    "shutdown: stop the service gracefully\n"
    "(end any command with 'json' for a JSON reply; join commands with ';')";

void Supervisor::on_command(const Command& c, ReplyFn reply) {
  const auto& w = c.words;
  auto is = [&](std::initializer_list<std::string_view> words) {
    return w.size() == words.size() && std::equal(words.begin(), words.end(), w.begin());
  };
  try {
    if (is({"help"})) return reply(c.json ? Report().add("help", std::string(kHelp)).json() : std::string(kHelp));
    if (is({"ping"})) return reply(report_reply(c, Report().add("ping", "pong")));
    if (is({"show", "version"})) return reply(report_reply(c, Report().add("version", std::string(kVersion))));
    if (is({"show", "info"})) return reply(report_reply(c, show_info()));
    if (is({"show", "workers"})) return reply(report_reply(c, show_workers()));
    if (is({"show", "sources"})) return reply(report_reply(c, show_sources()));
    if (is({"show", "snapshot"})) return reply(report_reply(c, show_snapshot()));
    if (w.size() == 3 && w[0] == "show" && w[1] == "series") return reply(show_series(c, w[2]));
    if (is({"reload"})) {
      if (stopping_) return reply(error_reply(c, "the service is stopping"));
      return reload(c, std::move(reply));
    }
    if (is({"restart", "readers"})) {
      if (stopping_) return reply(error_reply(c, "the service is stopping"));
      return restart_readers(c, std::move(reply));
    }
    if (w.size() == 3 && w[0] == "set" && w[1] == "log-level") {
      auto level = log::parse_level(w[2]);
      if (!level) return reply(error_reply(c, fmt::format("unknown log level '{}': debug, info, warn or error", w[2])));
      store_->service_counter(kLogLevel).store(uint64_t(*level), std::memory_order_relaxed);
      log::info("log level set to {}", log::level_name(*level));
      return reply(report_reply(c, Report().add("log_level", std::string(log::level_name(*level)))));
    }
    if (is({"shutdown"})) {
      reply(report_reply(c, Report().add("shutdown", "in progress")));
      return begin_shutdown(kExitOk, "shutdown requested on the admin socket");
    }
    if (w.empty()) return reply(error_reply(c, "empty command; try help"));
    reply(error_reply(c, fmt::format("unknown command '{}'; try help", c.line())));
  } catch (const std::exception& e) {
    reply(error_reply(c, e.what()));
  }
}

Report Supervisor::show_info() const {
  shm::StoreInfo info = store_->info();
  uint64_t buffers = 0;
  for (uint64_t b : info.buffer_capacity) buffers += b;
  size_t running = std::count_if(readers_.begin(), readers_.end(), [](const auto& r) { return r->state == State::running; });
  Report r;
  r.add("version", std::string(kVersion))
      .add("pid", int64_t(getpid()))
      .add("uptime_s", uint64_t(age_seconds(started_ns_)))
      .add("started", iso_time(started_ns_))
      .add("state", stopping_ ? "stopping" : ready_ ? "ready" : "starting")
      .add("listen", options_.listen)
      .add("admin_socket", options_.admin_socket)
      .add("config_file", options_.config_file.empty() ? "-" : options_.config_file)
      .add("workers", options_.workers)
      .add("readers", options_.readers())
      .add("readers_running", uint64_t(running))
      .add("writer_pid", int64_t(writer_.pid))
      .add("generation", info.generation)
      .add("snapshot_built", iso_time(info.built_at_ns))
      .add("snapshot_age_s", age_seconds(info.built_at_ns))
      .add("snapshot_bytes", info.snapshot_bytes)
      .add("snapshot_records", info.snapshot_records)
      .add("shm_name", "/" + info.name)
      .add("shm_buffers", info.buffer_count)
      .add("shm_buffer_bytes", buffers)
      .add("publishes", info.publishes)
      .add("publish_skipped", info.publish_skipped)
      .add("ticks", store_->service_counter(kTicks).load(std::memory_order_relaxed))
      .add("samples_accepted", store_->service_counter(kSamplesAccepted).load(std::memory_order_relaxed))
      .add("samples_dropped", store_->service_counter(kSamplesDropped).load(std::memory_order_relaxed))
      .add("restarts_writer", store_->service_counter(kRestartsWriter).load(std::memory_order_relaxed))
      .add("restarts_reader", store_->service_counter(kRestartsReader).load(std::memory_order_relaxed))
      .add("stuck_readers_killed", store_->service_counter(kStuckReadersKilled).load(std::memory_order_relaxed))
      .add("log_level", std::string(log::level_name(log::level())))
      .add("last_reload", iso_time(last_reload_ns_))
      .add("last_reload_error", last_reload_error_.empty() ? "-" : last_reload_error_);
  return r;
}

Report Supervisor::child_report(const Child& c, const shm::StoreInfo& info) const {
  Report r;
  r.add("role", c.role == Role::writer ? "writer" : "reader")
      .add("slot", c.role == Role::writer ? int64_t(-1) : int64_t(c.slot))
      .add("pid", int64_t(c.pid))
      .add("state", std::string(state_name(c.state)))
      .add("started", iso_time(c.started_ns))
      .add("restarts", c.restarts);
  if (c.role == Role::reader && c.slot < info.readers.size()) {
    const shm::ReaderInfo& s = info.readers[c.slot];
    bool mine = s.pid == c.pid && c.pid != 0;
    uint64_t now = shm::monotonic_ns();
    r.add("requests", mine ? s.requests : 0)
        .add("connections_open", mine ? store_->reader_counter(c.slot, kConnectionsOpen) : 0)
        .add("reading_generation", mine ? s.reading_generation : 0)
        .add("heartbeat_age_ms", mine && now > s.heartbeat_ns ? (now - s.heartbeat_ns) / 1000000 : 0);
  } else {
    r.add("requests", uint64_t(0))
        .add("connections_open", uint64_t(0))
        .add("reading_generation", info.generation)
        .add("heartbeat_age_ms", uint64_t(0));
  }
  return r;
}

Report Supervisor::show_workers() const {
  shm::StoreInfo info = store_->info();
  std::vector<Report> items{child_report(writer_, info)};
  std::vector<const Child*> sorted;
  for (auto& r : readers_) sorted.push_back(r.get());
  std::sort(sorted.begin(), sorted.end(), [](const Child* a, const Child* b) { return a->slot < b->slot; });
  for (const Child* c : sorted) items.push_back(child_report(*c, info));
  return Report().add("generation", info.generation).add_list("worker", std::move(items));
}

Report Supervisor::show_sources() const {
  std::vector<Report> items;
  for (const shm::SourceStatus& s : store_->sources()) {
    items.push_back(Report()
                        .add("url", s.url)
                        .add("format", s.format.empty() ? "-" : s.format)
                        .add("last_status", int64_t(s.last_status))
                        .add("last_fetch", iso_time(s.last_fetch_ns))
                        .add("last_latency_us", s.last_latency_us)
                        .add("bytes", s.bytes)
                        .add("samples", s.samples)
                        .add("dropped", s.dropped)
                        .add("errors", s.errors)
                        .add("last_error", s.last_error.empty() ? "-" : s.last_error)
                        .add("last_error_time", iso_time(s.last_error_ns)));
  }
  return Report().add("sources", uint64_t(items.size())).add_list("source", std::move(items));
}

Report Supervisor::show_snapshot() const {
  shm::StoreInfo info = store_->info();
  Report r;
  r.add("generation", info.generation)
      .add("built", iso_time(info.built_at_ns))
      .add("age_s", age_seconds(info.built_at_ns))
      .add("bytes", info.snapshot_bytes)
      .add("records", info.snapshot_records);
  uint64_t series = 0, lists = 0;
  if (auto guard = peek_->enter()) {
    series = guard->view().list(ingest::kSeriesList).size();
    lists = guard->view().list_count();
  }
  r.add("series", series)
      .add("lists", lists)
      .add("current_buffer", info.current_buffer)
      .add("buffer_count", info.buffer_count);
  for (uint32_t i = 0; i < info.buffer_capacity.size(); ++i) r.add(fmt::format("buffer_{}_bytes", i), info.buffer_capacity[i]);
  r.add("publishes", info.publishes)
      .add("publish_skipped", info.publish_skipped)
      .add("buffer_grows", info.buffer_grows)
      .add("stale_slots_cleared", info.stale_slots_cleared)
      .add("last_publish", iso_time(info.last_publish_ns))
      .add("last_build_us", info.last_build_ns / 1000);
  return r;
}

std::string Supervisor::show_series(const Command& c, const std::string& key) {
  auto guard = peek_->enter();
  if (!guard) return error_reply(c, "no snapshot published yet");
  auto body = guard->view().find(ingest::series_record_key(key));
  if (!body) return error_reply(c, fmt::format("no series '{}' in generation {}", key, guard->generation()));
  if (c.json)
    return fmt::format("{{\"key\":{},\"generation\":{},\"series\":{}}}", json_string(key), guard->generation(), *body);
  return Report().add("key", key).add("generation", guard->generation()).add("series", std::string(*body)).text();
}

}  // namespace

int run_supervisor(const CommandLine& command_line, Options options, int ready_fd) {
  Supervisor s(command_line, std::move(options), ready_fd);
  return s.run();
}

}  // namespace server
