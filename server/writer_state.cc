// server/writer_state.cc: the writer's state dir (writer_state.h).
#include "server/writer_state.h"

#include <algorithm>
#include <atomic>
#include <chrono>

#include "common/log.h"
#include "server/service.h"

namespace server {

namespace log = common::log;

namespace {
// After a failed write (a full disk), a checkpoint is tried again this often: each
// try serializes the whole state on the loop.
constexpr uint64_t kRetryNs = 5'000'000'000;

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// How the recovered state's settings differ from this configuration's, or "".
std::string settings_change(const ingest::Config& was, const ingest::Config& now) {
  std::string note;
  auto differ = [&](const char* name, auto a, auto b) {
    if (a != b) note += fmt::format("{}{} {} -> {}", note.empty() ? "" : ", ", name, a, b);
  };
  differ("interval", was.interval.count(), now.interval.count());
  differ("window", was.window.count(), now.window.count());
  differ("stale-after", was.stale_after.count(), now.stale_after.count());
  differ("expire-after", was.expire_after.count(), now.expire_after.count());
  differ("max-series", was.max_series, now.max_series);
  differ("max-series-per-source", was.max_series_per_source, now.max_series_per_source);
  differ("prom-series-limit", was.prom_series_limit, now.prom_series_limit);
  return note;
}
}  // namespace

WriterState::WriterState(shm::Store& store, const Options& options) : store_(store), options_(options) {
  // check_options() accepted the setting: parse_fsync() cannot fail here.
  state::Fsync fsync = state::parse_fsync(options.state_fsync).value_or(state::Fsync::checkpoint);
  // The default directory is in /dev/shm: an fsync there buys nothing.
  if (options.state_dir.empty()) fsync = state::Fsync::never;
  dir_ = std::make_unique<state::Dir>(options.effective_state_dir(), fsync);
}

void WriterState::recover(ingest::Pipeline& pipeline, uint64_t store_generation, const std::function<void()>& beat) {
  state::Recovery r = dir_->recover(
      [&](std::string_view bytes) { pipeline.restore(bytes); },
      [&](uint64_t, std::string_view entry, std::string* error) {
        // Applied without a build each: one build at the end (show_applied).
        return pipeline.apply_entry(entry, error, false) == ingest::Pipeline::EntryResult::applied;
      },
      beat);
  for (const std::string& note : r.notes) log::warn("{}", note);
  counter(kStateLogCuts).fetch_add(r.log_cuts, std::memory_order_relaxed);
  counter(kStateCheckpointsSkipped).fetch_add(r.checkpoints_skipped, std::memory_order_relaxed);
  counter(kStateRecoveryEntries).store(r.entries, std::memory_order_relaxed);
  counter(kStateRecoveryMs).store(r.elapsed_ms, std::memory_order_relaxed);
  counter(kStateRecoveredUnixMs).store(uint64_t(unix_ms()), std::memory_order_relaxed);
  if (r.checkpoint_seq || r.entries) {
    log::info("state: recovered from {}: checkpoint {}, {} log entries replayed after it, at entry {}, in {} ms "
              "({} ms of CPU)",
              dir_->path(), r.checkpoint_seq ? std::to_string(r.checkpoint_seq) : "none", r.entries, r.last_seq,
              r.elapsed_ms, r.cpu_ms);
    // The state goes on under this configuration's settings from its next entry, as
    // after a reload; the entries replayed kept the ones they were made with.
    std::string change = settings_change(pipeline.aggregator().config(), options_.ingest.resolved());
    if (!change.empty())
      log::warn("state: the recovered window was aggregated with other settings; this configuration's apply from "
                "the next interval on, as a reload would: {}",
                change);
  } else {
    log::info("state: {} holds no state: starting an empty window", dir_->path());
  }
  // Generations only grow: past the store's (a writer restart) and past every seq the
  // directory named, even one cut off.
  const uint64_t seq = std::max({r.last_seq, store_generation, r.highest_seq});
  if (r.last_seq > store_generation) pipeline.show_applied();
  if (seq != r.last_seq) pipeline.set_applied_seq(seq);
  // The log must continue the state; when it does not (a fresh directory at a later
  // generation, a cut, seqs skipped), a checkpoint now begins a log that does.
  checkpoint_needed_ = dir_->log_end() != seq || seq != r.last_seq;
  tend(pipeline);
}

void WriterState::append(uint64_t seq, const std::string& entry) {
  if (dir_->log_broken() || checkpoint_needed_) return;  // a checkpoint will cover it
  std::string error;
  if (dir_->append(seq, entry, &error)) {
    ++since_checkpoint_;
    return;
  }
  failed(error);
  checkpoint_needed_ = true;
}

void WriterState::failed(const std::string& what) {
  counter(kStateWriteErrors).fetch_add(1, std::memory_order_relaxed);
  counter(kStateWriteFailing).store(1, std::memory_order_relaxed);
  retry_after_ns_ = shm::monotonic_ns() + kRetryNs;
  if (failing_) {
    log::debug("state: {}", what);
    return;
  }
  failing_ = true;
  log::error("state: {}; serving on, what is not in the state dir is written by a checkpoint once it can be "
             "(tried every {} s); a writer crash meanwhile loses the intervals since the last entry written",
             what, kRetryNs / 1'000'000'000);
}

void WriterState::begin_checkpoint(const ingest::Pipeline& pipeline) {
  // Serialized here, on the loop, as a cluster leader's is (seconds at a million
  // series: docs/performance.md); written, fsynced and renamed on a thread.
  if (dir_->checkpoint_busy()) return;
  std::string log_error;
  dir_->begin_checkpoint(pipeline.applied_seq(), pipeline.checkpoint(), &log_error);
  since_checkpoint_ = 0;
  checkpoint_needed_ = false;
  if (dir_->log_broken()) failed(log_error);
}

void WriterState::tend(const ingest::Pipeline& pipeline) {
  if (auto done = dir_->poll()) {
    if (!done->error.empty()) {
      failed("checkpoint " + std::to_string(done->seq) + ": " + done->error);
      checkpoint_needed_ = true;
    } else {
      log::debug("state: checkpoint {} written ({} bytes, {} ms)", done->seq, done->bytes, done->elapsed_ms);
      if (failing_ && !dir_->log_broken()) {
        failing_ = false;
        counter(kStateWriteFailing).store(0, std::memory_order_relaxed);
        log::info("state: written again: checkpoint {} in {} holds the whole state", done->seq, dir_->path());
      }
    }
  }
  const bool due = checkpoint_needed_ || dir_->log_broken() || since_checkpoint_ >= options_.checkpoint_every;
  if (due && !dir_->checkpoint_busy() && shm::monotonic_ns() >= retry_after_ns_) begin_checkpoint(pipeline);
  state::Stats s = dir_->stats();
  counter(kStateLogBytes).store(s.log_bytes, std::memory_order_relaxed);
  counter(kStateCheckpointBytes).store(s.checkpoint_bytes, std::memory_order_relaxed);
  counter(kStateCheckpointUnixMs).store(uint64_t(s.checkpoint_unix_ms), std::memory_order_relaxed);
}

void WriterState::close() { dir_->close_log(); }

}  // namespace server
