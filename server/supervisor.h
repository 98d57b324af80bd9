// server/supervisor.h: the telemetryd supervisor: owns the shm store, the listening
// socket and the admin socket; forks the writer and the readers and keeps them running.
#pragma once

#include "server/config.h"

namespace server {

// Runs the service until SIGTERM/SIGINT, `shutdown`, or a child that can never work.
// ready_fd (or -1): written to and closed once the service is ready (--daemon's parent
// waits on it); sd_notify READY=1 is sent at the same moment when NOTIFY_SOCKET is set.
// Returns the process's exit code.
int run_supervisor(const CommandLine& command_line, Options options, int ready_fd);

}  // namespace server
