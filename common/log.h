// common/log.h: the logging of every telemetryd process (supervisor, writer, readers)
// and of the components they run (cluster/, ingest/). One line per event:
//   2024-05-01T12:00:00.123Z INFO  supervisor[1234] reader 2 exited with status 1, restarting in 200ms
// Lines go to stderr, or to --log-file (opened O_APPEND, so the supervisor and its
// children can share it; SIGUSR1 reopens it for logrotate). The level may live in
// shared memory (the kLogLevel service counter), so `set log-level` on the supervisor
// changes every process at once without a message to each.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace common::log {

enum class Level : uint64_t { debug = 0, info = 1, warn = 2, error = 3 };

std::string_view level_name(Level level);
// "debug", "info", "warn"/"warning", "error"; nullopt otherwise.
std::optional<Level> parse_level(std::string_view text);

// The role printed in each line ("supervisor", "writer", "reader 2"); set after fork.
void set_role(std::string role);
// Where the level is read from on every call: a process-local value at first, then
// the shm counter once the store exists.
void set_level_source(std::atomic<uint64_t>* level);
void set_level(Level level);
Level level();

// Opens (or, with an empty path, stops using) the log file. Throws std::runtime_error
// naming the path when it cannot be opened.
void open_file(const std::string& path);
// SIGUSR1: reopens the current file under the same path; false (and the old file kept)
// when that fails.
bool reopen_file();
// The log file's fd, or -1: kept open across fork by the supervisor.
int file_fd();

void write(Level level, std::string_view message);

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::debug) write(Level::debug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::info) write(Level::info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::warn) write(Level::warn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::error, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace common::log
