// server/writer_state.h: the writer's side of a standalone node's state dir (state/):
// its entries go to the local log as a cluster leader's go to Redis, checkpoints are
// taken every checkpoint-every entries, and a new writer recovers the state before its
// first publish. Used by writer.cc only.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "ingest/ingest.h"
#include "server/config.h"
#include "shm/shm.h"
#include "state/state.h"

namespace server {

class WriterState {
 public:
  // Opens (creates) options.effective_state_dir(); throws std::runtime_error when the
  // directory cannot be used (permission, another telemetryd holds it).
  WriterState(shm::Store& store, const Options& options);

  // Before the pipeline starts: restores the newest good checkpoint, replays the log
  // after it, logs what it did (and every cut or skipped file), and brings the
  // pipeline's seq to the highest of the state's, the store's generation and any seq
  // the directory named, so that generations keep growing. Publishes the recovered
  // state when it is newer than the store's. beat: the writer's heartbeat.
  void recover(ingest::Pipeline& pipeline, uint64_t store_generation, const std::function<void()>& beat);

  // The pipeline's entry sink: appends the entry. A failed append is logged once (the
  // state dir then waits for a checkpoint) and never stops the tick's publish.
  void append(uint64_t seq, const std::string& entry);

  // On the loop, outside the pipeline's callbacks (after each publish_committed and on
  // the writer's 100 ms heartbeat): collects a finished checkpoint, begins one when
  // due, updates the service counters.
  void tend(const ingest::Pipeline& pipeline);

  // A clean stop: the log is closed (and fsynced, unless state-fsync never).
  void close();

 private:
  void begin_checkpoint(const ingest::Pipeline& pipeline);
  void failed(const std::string& what);
  std::atomic<uint64_t>& counter(uint32_t c) { return store_.service_counter(c); }

  shm::Store& store_;
  const Options& options_;
  std::unique_ptr<state::Dir> dir_;
  uint64_t since_checkpoint_ = 0;  // entries appended since the last checkpoint began
  bool checkpoint_needed_ = false;  // the log does not continue the state: one now
  bool failing_ = false;           // a write failed; cleared by a checkpoint written
  uint64_t retry_after_ns_ = 0;    // monotonic: no checkpoint attempt before this
};

}  // namespace server
