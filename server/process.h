// server/process.h: the supervisor's process plumbing: signals through a self-pipe,
// sd_notify, the shared listening socket, the pidfile, the descriptors a forked child
// closes, and the few formatting helpers the supervisor's files share. Internal to
// server/: nothing here is part of the service's interface.
#pragma once

#include <signal.h>

#include <cstdint>
#include <initializer_list>
#include <string>

namespace server {

// Signals the supervisor handles: each handler only writes the signal number into a
// pipe whose read end the loop watches (signal_pipe_fd()). SIGPIPE is ignored.
void install_signal_pipe();
int signal_pipe_fd();
sigset_t handled_signals();
// In a forked child: back to the default action for every handled signal.
void restore_default_signals();
// In a reader: SIGUSR1 reopens the log file (async-signal-safe).
void reopen_log_on_sigusr1();

// One datagram to $NOTIFY_SOCKET (systemd, start-stop-daemon --notify-await), if set.
void sd_notify(const std::string& state);

// Binds and listens on "HOST:PORT"; non-blocking, close-on-exec. Throws with the reason.
int bind_listener(const std::string& listen);

void write_pidfile(const std::string& path);   // atomically (write + rename); throws
void remove_pidfile(const std::string& path);  // only if it still holds our pid

// In a child: closes every inherited descriptor above 2 except `keep`.
void close_inherited_fds(std::initializer_list<int> keep);

std::string iso_time(uint64_t unix_ns);    // "-" for 0
double age_seconds(uint64_t unix_ns);      // 0 for 0 or the future
std::string describe_status(int status);   // a wait() status in words

}  // namespace server
