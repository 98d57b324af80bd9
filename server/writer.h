// server/writer.h: the writer process: the ingest pipeline on its own event loop,
// publishing every snapshot it builds into the shm store.
#pragma once

#include <vector>

#include <event2/event.h>

#include "server/config.h"
#include "shm/shm.h"

namespace ingest {
struct OtlpOptions;
}

namespace server {

// Runs until SIGTERM/SIGINT. SIGHUP re-reads the configuration (file + command line)
// and applies it to the pipeline, answering through the kReloadDone / kReloadFailed
// service counters; SIGUSR1 reopens the log file. The handled signals must be blocked
// on entry (the supervisor forks with them blocked); they are unblocked once the loop
// can take them. Returns the process's exit code (server::ExitCode).
int run_writer(shm::Store& store, const CommandLine& command_line, const Options& options);
// run_writer's part for a partitioned cluster's node (partitions > 1; writer_partitioned.cc).
int run_partitioned_writer(shm::Store& store, const Options& options);

// The OTLP/HTTP receiver's settings from the service's (otlp-listen and its limits),
// its push source named `name`.
ingest::OtlpOptions otlp_receiver_options(const Options& options, std::string name);

// What every writer process arms alike on its loop: SIGTERM, SIGINT, SIGHUP and SIGUSR1
// (then unblocked: one sent before arrives now) and a heartbeat every `beat_every`.
class WriterEvents {
 public:
  WriterEvents(event_base* base, event_callback_fn on_signal, event_callback_fn on_beat, void* arg,
               timeval beat_every);
  ~WriterEvents();
  WriterEvents(const WriterEvents&) = delete;
  WriterEvents& operator=(const WriterEvents&) = delete;

 private:
  std::vector<event*> events_;
};

}  // namespace server
