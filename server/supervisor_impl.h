// server/supervisor_impl.h: the supervisor's state, shared by the files that implement it:
//   supervisor.cc       setup, the housekeeping tick, signals, shutdown, reload
//   children.cc         forking, reaping and restarting children; crash loops; watchdogs
//   rolling_restart.cc  `restart readers`: replacing readers one at a time
//   commands.cc         the admin commands
// Not a public header: server/supervisor.h is the supervisor's manual.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <event2/event.h>
#include <fmt/format.h>

#include "server/admin.h"
#include "server/config.h"
#include "shm/shm.h"

namespace server {

using ms = std::chrono::milliseconds;
inline constexpr ms kTick{100};
inline constexpr ms kReloadTimeout{10000};
inline constexpr ms kRollingStepTimeout{10000};

inline uint64_t ms_to_ns(ms d) { return uint64_t(d.count()) * 1000000; }

enum class Role { writer, reader };
enum class State { running, backoff, stopping, stopped, failed };

inline std::string_view state_name(State s) {
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
  void remove_default_state_dir();

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
  void kill_stuck_writer(uint64_t now);
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
  void add_state_info(Report& r) const;
  Report show_workers() const;
  Report show_sources() const;
  Report show_snapshot() const;
  std::string show_cluster(const Command& command) const;
  std::string show_series(const Command& command, const std::string& key);
  Report child_report(const Child& c, const shm::StoreInfo& info) const;
  std::string running_engines() const;

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

}  // namespace server
