// server/config.h: telemetryd's settings, from a TOML file (--config) and command-line
// flags that override it. Every setting has one name: the long flag `--stuck-timeout`
// is the file key `stuck-timeout`, so what an operator reads in --help is what they
// write in the file. The table of settings is in config.cc; docs/operations.md lists it.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ingest/ingest.h"

namespace server {

inline constexpr std::string_view kVersion = "0.1.0";

struct Options {
  std::string config_file;  // "" when none

  // Processes and sockets (a change needs a restart).
  std::string listen = "127.0.0.1:8080";
  uint32_t workers = 0;  // 0 until resolved: the number of cores, at least 2
  std::string admin_socket;  // "" until resolved: see default_admin_socket()
  std::string shm_name = "telemetryd";
  std::string pidfile;
  bool daemon = false;

  // Logging.
  std::string log_file;
  std::string log_level = "info";

  // Ingest (reloadable).
  ingest::Config ingest;

  // The OTLP/HTTP receiver, run by the writer (a change needs a restart).
  std::string otlp_listen;  // HOST:PORT; "" when off
  size_t otlp_max_body = size_t{4} << 20;
  size_t otlp_max_pending = 100'000;

  // Cluster (a change needs a restart). An empty `cluster` is a standalone node.
  std::string cluster;                    // redis://HOST:PORT[/DB]
  std::string cluster_name = "telemetryd";  // prefix of every Redis key
  std::string node_id;                    // "" until resolved: HOSTNAME:PORT of listen
  std::string advertise;                  // HOST:PORT the other nodes reach our listen at; "" until resolved
  std::chrono::milliseconds lease{6000};
  std::string role = "auto";              // auto or follower (never leads)
  uint32_t checkpoint_every = 30;         // the leader checkpoints every N entries
  uint32_t partitions = 1;                // > 1: a partitioned cluster (fixed when it is created)
  uint32_t replication_factor = 2;        // partitioned: the nodes that hold each partition
  int cluster_wait_replicas = -1;         // replicas that must have an entry before it is shown; -1: auto

  // The standalone node's state (state/state.h; a change needs a restart). state_dir
  // "": none given, and the writer keeps its state in default_state_dir() (shared
  // memory), which covers a writer crash but not a restart of the service.
  std::string state_dir;
  std::string state_fsync = "checkpoint";  // always, checkpoint or never

  // Supervision.
  std::chrono::milliseconds stuck_timeout{5000};
  std::chrono::milliseconds writer_stuck_timeout{60000};
  std::chrono::milliseconds shutdown_timeout{10000};  // SIGTERM -> SIGKILL of children
  std::chrono::milliseconds restart_backoff_max{30000};
  uint32_t crash_loop_limit = 10;  // restarts of one child within crash_loop_window
  std::chrono::milliseconds crash_loop_window{60000};

  // Readers (see server::ReaderOptions).
  std::chrono::milliseconds idle_timeout{60000};
  std::chrono::milliseconds request_timeout{10000};
  std::chrono::milliseconds healthz_max_age{10000};
  std::chrono::milliseconds query_deadline{1000};
  size_t max_header_bytes = 8192;
  size_t max_connections_per_reader = 10000;  // capped by each reader's RLIMIT_NOFILE
  std::string reader_engine = "auto";          // auto, io_uring or epoll (server::ReaderEngine)

  uint32_t readers() const { return workers - 1; }
  // Where the writer keeps its state: state_dir, or without one /dev/shm/SHM_NAME.state,
  // which the supervisor empties when it starts and removes when it stops. "" for a
  // cluster node, whose state is the cluster's log.
  std::string effective_state_dir() const {
    if (!cluster.empty()) return "";
    return state_dir.empty() ? "/dev/shm/" + shm_name + ".state" : state_dir;
  }
  // Reader slots the shm store needs: one per reader, a spare (a rolling restart starts
  // the new reader before the old one stops) and the supervisor's own.
  uint32_t store_slots() const { return workers + 1; }
};

// A setting given on the command line: reapplied over the file on every reload, so a
// flag keeps winning after SIGHUP.
struct Override {
  std::string name;
  std::vector<std::string> values;
};

// The outcome of parsing argv.
struct CommandLine {
  std::string config_file;
  std::vector<Override> overrides;
  bool check_config = false;
  bool exit_now = false;  // --help / --version were printed
  int exit_code = 0;      // when exit_now
};

// Parses argv with CLI11. Prints --help / --version itself (exit_now). Throws
// std::invalid_argument with a one-line reason on a bad flag.
CommandLine parse_command_line(int argc, char** argv);

// Defaults, then the file, then the overrides; every value checked (check_options).
// Throws std::invalid_argument naming the setting (and the file) on any problem, and
// nothing else but std::bad_alloc.
Options load_options(const CommandLine& command_line);

// The same from TOML text instead of the file; `origin` names the text in messages.
Options load_options_from_text(std::string_view toml_text, const std::string& origin,
                               const std::vector<Override>& overrides = {});

// Fills in the defaults that depend on the machine and checks every setting against
// what the service can really start with, so that --check-config, start and reload
// accept exactly the same values. Throws std::invalid_argument naming the setting.
void check_options(Options& options);

// $XDG_RUNTIME_DIR/telemetryd.sock when XDG_RUNTIME_DIR is set, else /tmp/telemetryd.sock.
// Inline: telemetryctl uses it without linking the configuration code.
inline std::string default_admin_socket() {
  const char* dir = std::getenv("XDG_RUNTIME_DIR");
  if (dir && *dir) return std::string(dir) + "/telemetryd.sock";
  return "/tmp/telemetryd.sock";
}

// "HOST:PORT" -> (host, port); throws std::invalid_argument.
std::pair<std::string, uint16_t> parse_listen(const std::string& text);

// Names of settings that differ between a and b but only take effect at a restart.
std::vector<std::string> restart_only_changes(const Options& a, const Options& b);

}  // namespace server
