// state/state.h: a standalone node's replicated state on local disk, "a log of one".
// The writer hands every sealed log entry (the bytes a cluster leader appends to Redis)
// to append(), and now and then a checkpoint (Pipeline::checkpoint()'s bytes) to
// begin_checkpoint(); a new writer gets them back through recover(), which restores the
// newest checkpoint that reads back whole and replays the log after it. This component
// knows nothing of what the bytes mean: ingest/ checks them when they are applied.
//
// On disk (docs/architecture.md, "State directory"), in the directory DIR:
//   lock                     flock()ed by the one writer using DIR
//   checkpoint.SEQ           32-byte header (magic "tdsc", kStateFormatVersion, seq,
//                            length, hash of the bytes), then the checkpoint's bytes
//   log.FIRST                16-byte header (magic "tdsl", version, FIRST), then frames:
//                            seq, length, hash of seq + length + bytes (24 bytes), the
//                            entry's bytes. FIRST is the seq its first entry has.
//   *.tmp                    a checkpoint being written; renamed when whole
//
// Failpoints (shm::failpoint) for the tests: state.checkpoint.before_rename (on the
// checkpoint's thread, the file written, not renamed; `kill` it), state.append.torn
// (`error`: half the frame is written, then the process SIGKILLs itself).
// SEQ and FIRST are 20 decimal digits, so that names sort as numbers. A new log file is
// begun with every checkpoint (the checkpoint at S, then log.S+1), so that trimming is
// unlinking whole files: once a checkpoint is written, checkpoints older than the newest
// two and the log files wholly behind the older of those two go.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace state {

inline constexpr uint32_t kStateFormatVersion = 1;

// When the writer calls fsync (docs/operations.md says what each costs):
//   always      the log after every entry, and every checkpoint: a power loss loses
//               at most the interval in flight
//   checkpoint  checkpoints only (the default): a process crash loses nothing written,
//               a power loss what the kernel had not written back of the log since the
//               last checkpoint
//   never       nothing is fsynced (a state dir on tmpfs)
enum class Fsync { always, checkpoint, never };
std::optional<Fsync> parse_fsync(std::string_view text);
std::string_view fsync_name(Fsync fsync);

// What recover() did, for the writer's log and counters.
struct Recovery {
  uint64_t checkpoint_seq = 0;   // the checkpoint restored; 0: none (an empty state)
  uint64_t entries = 0;          // log entries replayed after it
  uint64_t last_seq = 0;         // the seq the state is at now
  uint64_t highest_seq = 0;      // the highest seq any file named (cut or not)
  uint64_t log_cuts = 0;         // log tails cut (torn, damaged, refused, after a gap)
  uint64_t checkpoints_skipped = 0;
  std::vector<std::string> notes;  // one log line per cut or skipped file, saying why
  uint64_t elapsed_ms = 0;
  uint64_t cpu_ms = 0;  // of the calling thread: what a loaded host's wall time hides
};

// Outcome of a checkpoint written on the thread, collected on the loop by poll().
struct CheckpointResult {
  uint64_t seq = 0;
  uint64_t bytes = 0;
  uint64_t elapsed_ms = 0;  // writing, fsync and rename, on the thread
  std::string error;         // "" when written
};

struct Stats {
  uint64_t log_bytes = 0;          // every log file's size
  uint64_t checkpoint_bytes = 0;   // the newest checkpoint written (file size)
  int64_t checkpoint_unix_ms = 0;  // when it was written; 0: none since this writer began
  uint64_t checkpoint_seq = 0;
};

class Dir {
 public:
  // Creates path if it is missing (mode 0750) and takes its lock. Throws
  // std::runtime_error naming path and the reason (permission, a file in the way,
  // another telemetryd using it).
  Dir(std::string path, Fsync fsync);
  ~Dir();  // waits for a checkpoint being written
  Dir(const Dir&) = delete;
  Dir& operator=(const Dir&) = delete;

  // restore(bytes) loads a checkpoint and throws std::exception when it cannot;
  // replay(seq, bytes, &error) applies the entry after the state's last and returns
  // false (with why) when it cannot; beat() is called between files and entries (the
  // writer's heartbeat: recovery may take seconds). Checkpoints are tried newest
  // first; a damaged or refused one is removed and noted. The log after the one
  // restored is replayed up to its first bad frame, refused entry or gap, where it is
  // cut (the file truncated, later files removed) and noted. Never throws on bad files:
  // at worst the state is empty. After it, append() continues the log.
  using RestoreFn = std::function<void(std::string_view checkpoint)>;
  using ReplayFn = std::function<bool(uint64_t seq, std::string_view entry, std::string* error)>;
  Recovery recover(const RestoreFn& restore, const ReplayFn& replay, const std::function<void()>& beat);

  // Appends entry seq, which must follow the last one (else a checkpoint must come
  // first: false, with why). False with the reason (ENOSPC...) when the write fails:
  // what was half-written is cut back, and later appends are refused until
  // begin_checkpoint() begins a new log file. With Fsync::always, fdatasync() first.
  bool append(uint64_t seq, std::string_view entry, std::string* error);
  // True once an append failed, until the next begin_checkpoint().
  bool log_broken() const { return broken_; }
  uint64_t log_end() const { return log_end_; }  // the seq of the last entry appended

  // Starts writing checkpoint bytes of the state at seq (temporary file, fsync unless
  // Fsync::never, rename, directory fsync) on a thread of its own, and begins the log
  // file for seq + 1 on, so that append(seq + 1) follows (when that file cannot be
  // begun, *log_error says why and the log stays broken). False (nothing done) while an
  // earlier checkpoint is still being written.
  bool begin_checkpoint(uint64_t seq, std::string bytes, std::string* log_error);
  bool checkpoint_busy() const { return thread_ != nullptr; }
  // On the loop: the result of a checkpoint that has finished (the thread joined), and
  // on success the trim of what it made unneeded. nullopt while none has finished.
  std::optional<CheckpointResult> poll();

  // Closes the log (fsync unless Fsync::never): for a clean stop.
  void close_log();

  Stats stats() const;
  const std::string& path() const { return path_; }

 private:
  struct Worker;
  void restore_newest(const std::vector<uint64_t>& checkpoints, const RestoreFn& restore,
                      const std::function<void()>& beat, Recovery& r);
  uint64_t replay_file(const std::string& name, uint64_t first, const ReplayFn& replay,
                       const std::function<void()>& beat, Recovery& r, std::string* why, size_t* good);
  void open_tail(const Recovery& r, uint64_t last_file_end);
  bool open_log(uint64_t first, std::string* error);
  void trim();
  std::string file(std::string_view prefix, uint64_t seq) const;

  std::string path_;
  Fsync fsync_;
  int lock_fd_ = -1;
  int log_fd_ = -1;
  uint64_t log_first_ = 0;  // FIRST of the open log file
  uint64_t log_end_ = 0;
  uint64_t log_size_ = 0;   // of the open log file
  uint64_t older_log_bytes_ = 0;  // the other log files
  bool broken_ = false;
  std::unique_ptr<Worker> thread_;
  Stats last_;
};

// Removes path and what it holds (one level of files, as a Dir leaves it); for the
// supervisor's default state dir. Missing is fine. Returns "" or the reason.
std::string remove_dir(const std::string& path);

}  // namespace state
