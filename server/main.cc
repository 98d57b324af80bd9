// server/main.cc: telemetryd's entry point: parse the configuration, optionally detach
// (--daemon), and run the supervisor. Exit status: 0 after a graceful stop, 2 when the
// configuration is bad (a one-line reason on stderr), 1 on any other failure.
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <iostream>
#include <sys/stat.h>
#include <unistd.h>

#include "server/config.h"
#include "common/log.h"
#include "server/service.h"
#include "server/supervisor.h"

namespace {

namespace log = common::log;

// --daemon changes the working directory to /: resolve relative paths first, so that a
// reload still finds the config file and the sockets stay where the operator said.
std::string absolute(const std::string& path) {
  if (path.empty() || path.front() == '/') return path;
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) return path;
  return std::string(cwd) + "/" + path;
}

// Detaches (double fork, setsid). The original process waits until the service is
// ready and exits 0, or exits 1 when the service gives up before that, so that an init
// script learns about a failed start. Returns, in the daemon, the fd to report
// readiness on.
int daemonize() {
  int ready[2];
  if (pipe(ready) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid > 0) {
    close(ready[1]);
    char byte = 0;
    ssize_t n;
    while ((n = read(ready[0], &byte, 1)) < 0 && errno == EINTR) {
    }
    _exit(n == 1 ? 0 : 1);
  }
  close(ready[0]);
  setsid();
  pid = fork();
  if (pid < 0) _exit(1);
  if (pid > 0) _exit(0);
  if (chdir("/") != 0) _exit(1);
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) {
    dup2(null, STDIN_FILENO);
    dup2(null, STDOUT_FILENO);
    // stderr is kept until here for the early errors; with --daemon the log goes to
    // --log-file (or nowhere).
    dup2(null, STDERR_FILENO);
    if (null > 2) close(null);
  }
  return ready[1];
}

}  // namespace

int main(int argc, char** argv) {
  using namespace server;
  CommandLine command_line;
  Options options;
  try {
    command_line = parse_command_line(argc, argv);
    if (command_line.exit_now) return command_line.exit_code;
    command_line.config_file = absolute(command_line.config_file);
    options = load_options(command_line);
  } catch (const std::exception& e) {
    std::cerr << "telemetryd: " << e.what() << "\n";
    return kExitBadConfig;
  }
  if (command_line.check_config) {  // load_options() checked every setting and source
    std::cout << "configuration ok: listen " << options.listen << ", " << options.workers << " workers, "
              << options.ingest.sources.size() << " source(s)\n";
    return kExitOk;
  }
  options.admin_socket = absolute(options.admin_socket);
  options.pidfile = absolute(options.pidfile);
  options.log_file = absolute(options.log_file);
  try {
    log::set_level(*log::parse_level(options.log_level));
    log::open_file(options.log_file);
    int ready_fd = options.daemon ? daemonize() : -1;
    return run_supervisor(command_line, std::move(options), ready_fd);
  } catch (const std::exception& e) {
    log::error("cannot start: {}", e.what());
    if (log::file_fd() >= 0) std::cerr << "telemetryd: cannot start: " << e.what() << "\n";
    return kExitFailure;
  }
}
