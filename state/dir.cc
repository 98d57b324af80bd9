// state/dir.cc: the state directory (state.h): the log files, checkpoints written on a
// thread, recovery and trimming.
#include "state/state.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstring>
#include <ctime>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "shm/shm.h"

namespace state {

namespace {

constexpr char kLogMagic[4] = {'t', 'd', 's', 'l'};
constexpr char kCheckpointMagic[4] = {'t', 'd', 's', 'c'};
constexpr size_t kLogHeaderBytes = 16;
constexpr size_t kFrameHeaderBytes = 24;
constexpr size_t kCheckpointHeaderBytes = 32;
// Far past any entry (Replica::kMaxEntryPayload compressed is less); a length beyond it
// is damage, not an entry to allocate for.
constexpr uint64_t kMaxFrameBytes = uint64_t{1} << 32;

void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t get_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}
uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}

// A frame's hash covers its seq and length too: a frame moved or a length damaged
// fails it like damaged bytes do.
uint64_t frame_hash(uint64_t seq, uint64_t length, std::string_view bytes) {
  return shm::hash_bytes(bytes.data(), bytes.size(), seq * 0x9e3779b97f4a7c15ULL ^ length);
}

std::string errno_text() { return std::strerror(errno); }

bool write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool read_file(const std::string& path, std::string* out, std::string* error) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = errno_text();
    return false;
  }
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    *error = errno_text();
    ::close(fd);
    return false;
  }
  out->resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < out->size()) {
    ssize_t n = ::read(fd, out->data() + got, out->size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *error = n < 0 ? errno_text() : "shorter than its size";
      ::close(fd);
      return false;
    }
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  return true;
}

void sync_dir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// A file name "PREFIX.<20 digits>": its number, or nullopt.
std::optional<uint64_t> numbered(std::string_view name, std::string_view prefix) {
  if (name.size() != prefix.size() + 21 || name.substr(0, prefix.size()) != prefix || name[prefix.size()] != '.')
    return std::nullopt;
  uint64_t v = 0;
  for (char c : name.substr(prefix.size() + 1)) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

struct Listing {
  std::vector<uint64_t> checkpoints;  // ascending
  std::vector<uint64_t> logs;         // ascending FIRST
  std::vector<std::string> temporaries;
};

Listing list(const std::string& path) {
  Listing l;
  if (DIR* d = opendir(path.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string_view name = e->d_name;
      if (auto s = numbered(name, "checkpoint")) l.checkpoints.push_back(*s);
      else if (auto f = numbered(name, "log")) l.logs.push_back(*f);
      else if (name.size() > 4 && name.substr(name.size() - 4) == ".tmp") l.temporaries.emplace_back(name);
    }
    closedir(d);
  }
  std::sort(l.checkpoints.begin(), l.checkpoints.end());
  std::sort(l.logs.begin(), l.logs.end());
  return l;
}

uint64_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::optional<Fsync> parse_fsync(std::string_view text) {
  if (text == "always") return Fsync::always;
  if (text == "checkpoint") return Fsync::checkpoint;
  if (text == "never") return Fsync::never;
  return std::nullopt;
}

std::string_view fsync_name(Fsync fsync) {
  switch (fsync) {
    case Fsync::always: return "always";
    case Fsync::checkpoint: return "checkpoint";
    case Fsync::never: break;
  }
  return "never";
}

// A checkpoint being written. `done` is stored (release) by the thread after it filled
// `result`, and loaded (acquire) by poll() before it reads it.
struct Dir::Worker {
  std::thread thread;
  std::atomic<bool> done{false};
  CheckpointResult result;
};

Dir::Dir(std::string path, Fsync fsync) : path_(std::move(path)), fsync_(fsync) {
  if (::mkdir(path_.c_str(), 0750) != 0 && errno != EEXIST)
    throw std::runtime_error(fmt::format("state-dir {}: cannot create it: {}", path_, errno_text()));
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw std::runtime_error(fmt::format("state-dir {}: not a directory", path_));
  std::string lock = path_ + "/lock";
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (lock_fd_ < 0) throw std::runtime_error(fmt::format("state-dir {}: cannot open {}: {}", path_, lock, errno_text()));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    std::string why = errno == EWOULDBLOCK ? "another telemetryd uses it" : errno_text();
    ::close(lock_fd_);
    throw std::runtime_error(fmt::format("state-dir {}: cannot lock it: {}", path_, why));
  }
}

Dir::~Dir() {
  if (thread_) thread_->thread.join();
  if (log_fd_ >= 0) ::close(log_fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

std::string Dir::file(std::string_view prefix, uint64_t seq) const {
  return fmt::format("{}/{}.{:020}", path_, prefix, seq);
}

// --- recovery ------------------------------------------------------------------------

namespace {
uint64_t thread_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1'000'000;
}
}  // namespace

Recovery Dir::recover(const RestoreFn& restore, const ReplayFn& replay, const std::function<void()>& beat) {
  const auto start = std::chrono::steady_clock::now();
  const uint64_t cpu_start = thread_cpu_ms();
  Recovery r;
  Listing l = list(path_);
  for (const std::string& t : l.temporaries) ::unlink((path_ + "/" + t).c_str());
  for (uint64_t s : l.checkpoints) r.highest_seq = std::max(r.highest_seq, s);
  for (uint64_t f : l.logs) r.highest_seq = std::max(r.highest_seq, f - 1);  // FIRST: the next one
  restore_newest(l.checkpoints, restore, beat, r);

  // The log after it, file by file, until the first thing that does not follow.
  bool cut = false;
  uint64_t last_file_end = 0;  // the seq the last file read ends at
  for (size_t i = 0; i < l.logs.size(); ++i) {
    const uint64_t first = l.logs[i];
    const std::string name = file("log", first);
    if (cut) {
      r.notes.push_back(fmt::format("state: log file {} removed: it follows a cut", name));
      ::unlink(name.c_str());
      continue;
    }
    // Wholly behind the state (the next file starts at or before the entry it needs).
    if (i + 1 < l.logs.size() && l.logs[i + 1] <= r.last_seq + 1) continue;
    beat();
    std::string why;
    size_t good = 0;  // bytes of the file that stay
    const uint64_t end = replay_file(name, first, replay, beat, r, &why, &good);
    if (good > 0) last_file_end = end;  // its header was sound
    if (why.empty()) continue;
    cut = true;
    ++r.log_cuts;
    if (good <= kLogHeaderBytes) {
      r.notes.push_back(fmt::format("state: log file {} removed: {}", name, why));
      ::unlink(name.c_str());
    } else {
      r.notes.push_back(fmt::format("state: log file {} cut at byte {} (after entry {}): {}", name, good,
                                    r.last_seq, why));
      if (::truncate(name.c_str(), static_cast<off_t>(good)) != 0) {
        r.notes.push_back(fmt::format("state: cannot truncate {}: {}", name, errno_text()));
        last_file_end = UINT64_MAX;  // not to be appended to
      }
    }
  }
  open_tail(r, last_file_end);
  r.elapsed_ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count());
  r.cpu_ms = thread_cpu_ms() - cpu_start;
  return r;
}

// The newest checkpoint that reads back whole and that restore() takes; the others
// tried before it are removed.
void Dir::restore_newest(const std::vector<uint64_t>& checkpoints, const RestoreFn& restore,
                         const std::function<void()>& beat, Recovery& r) {
  std::string bytes, error;
  for (auto it = checkpoints.rbegin(); it != checkpoints.rend(); ++it) {
    beat();
    const std::string name = file("checkpoint", *it);
    std::string why;
    if (!read_file(name, &bytes, &error)) {
      why = error;
    } else if (bytes.size() < kCheckpointHeaderBytes || std::memcmp(bytes.data(), kCheckpointMagic, 4) != 0) {
      why = "not a telemetryd checkpoint (damaged or truncated)";
    } else if (uint32_t v = get_u32(bytes.data() + 4); v != kStateFormatVersion) {
      why = fmt::format("state format version {}; this build reads version {}", v, kStateFormatVersion);
    } else if (get_u64(bytes.data() + 8) != *it || get_u64(bytes.data() + 16) != bytes.size() - kCheckpointHeaderBytes) {
      why = "truncated or damaged (its seq or length does not match)";
    } else {
      std::string_view body(bytes.data() + kCheckpointHeaderBytes, bytes.size() - kCheckpointHeaderBytes);
      if (get_u64(bytes.data() + 24) != frame_hash(*it, body.size(), body)) {
        why = "damaged (hash mismatch)";
      } else {
        try {
          restore(body);
          r.checkpoint_seq = *it;
          r.last_seq = *it;
          last_.checkpoint_seq = *it;
          last_.checkpoint_bytes = bytes.size();
          return;
        } catch (const std::exception& e) {
          why = e.what();
        }
      }
    }
    ++r.checkpoints_skipped;
    r.notes.push_back(fmt::format("state: checkpoint {} skipped and removed: {}", name, why));
    ::unlink(name.c_str());
  }
}

// Replays the entries of one log file that follow the state. Returns the seq the file's
// whole entries end at; *why says what stopped it before its end ("" when nothing did),
// *good how many of its bytes stay.
uint64_t Dir::replay_file(const std::string& name, uint64_t first, const ReplayFn& replay,
                          const std::function<void()>& beat, Recovery& r, std::string* why, size_t* good) {
  std::string data, error;
  if (!read_file(name, &data, &error)) {
    *why = error;
  } else if (data.size() < kLogHeaderBytes || std::memcmp(data.data(), kLogMagic, 4) != 0) {
    *why = "not a telemetryd log (damaged or truncated header)";
  } else if (uint32_t v = get_u32(data.data() + 4); v != kStateFormatVersion) {
    *why = fmt::format("state format version {}; this build reads version {}", v, kStateFormatVersion);
  } else if (get_u64(data.data() + 8) != first) {
    *why = "its header names another first entry";
  }
  if (!why->empty()) return 0;
  uint64_t end = first - 1;
  for (*good = kLogHeaderBytes; *good < data.size();) {
    if (data.size() - *good < kFrameHeaderBytes) {
      *why = "a torn entry at its end";
      break;
    }
    const char* h = data.data() + *good;
    uint64_t seq = get_u64(h), length = get_u64(h + 8), hash = get_u64(h + 16);
    if (length > kMaxFrameBytes || length > data.size() - *good - kFrameHeaderBytes) {
      *why = length > kMaxFrameBytes ? "a damaged entry length" : "a torn entry at its end";
      break;
    }
    std::string_view entry(h + kFrameHeaderBytes, length);
    if (hash != frame_hash(seq, length, entry)) {
      *why = fmt::format("entry {} damaged (hash mismatch)", seq);
      break;
    }
    if (seq > r.last_seq + 1) {
      *why = fmt::format("a gap: entry {} follows {}", seq, r.last_seq);
      break;
    }
    if (seq == r.last_seq + 1) {
      std::string refused;
      if (!replay(seq, entry, &refused)) {
        *why = fmt::format("entry {} refused: {}", seq, refused);
        break;
      }
      r.last_seq = seq;
      ++r.entries;
      if (r.entries % 8 == 0) beat();
    }
    r.highest_seq = std::max(r.highest_seq, seq);
    end = seq;
    *good += kFrameHeaderBytes + length;
  }
  return end;
}

// Appends go to the last log file if it ends where the state does (after a cut too: the
// files after it are gone); else a checkpoint (the caller's) must begin a new one.
void Dir::open_tail(const Recovery& r, uint64_t last_file_end) {
  log_end_ = r.last_seq;
  Listing now = list(path_);
  older_log_bytes_ = 0;
  for (uint64_t f : now.logs) older_log_bytes_ += file_size(file("log", f));
  if (!now.logs.empty() && last_file_end == r.last_seq) {
    std::string name = file("log", now.logs.back());
    log_fd_ = ::open(name.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (log_fd_ >= 0) {
      log_first_ = now.logs.back();
      log_size_ = file_size(name);
      older_log_bytes_ -= log_size_;
    }
  } else if (now.logs.empty() && r.highest_seq == 0) {
    std::string ignored;
    open_log(1, &ignored);  // a fresh state: the log from entry 1 needs no checkpoint
  }
}

// --- the log ---------------------------------------------------------------------------

bool Dir::open_log(uint64_t first, std::string* error) {
  if (log_fd_ >= 0) {
    if (fsync_ != Fsync::never) ::fdatasync(log_fd_);
    ::close(log_fd_);
    older_log_bytes_ += log_size_;
  }
  log_fd_ = -1;
  log_size_ = 0;
  log_first_ = first;
  const std::string name = file("log", first);
  int fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    *error = fmt::format("cannot create {}: {}", name, errno_text());
    return false;
  }
  std::string header(kLogMagic, 4);
  put_u32(header, kStateFormatVersion);
  put_u64(header, first);
  if (!write_all(fd, header.data(), header.size())) {
    *error = fmt::format("cannot write {}: {}", name, errno_text());
    ::close(fd);
    ::unlink(name.c_str());
    return false;
  }
  log_fd_ = fd;
  log_size_ = header.size();
  return true;
}

bool Dir::append(uint64_t seq, std::string_view entry, std::string* error) {
  if (broken_ || log_fd_ < 0) {
    *error = "the log is not open (an earlier write failed): waiting for a checkpoint";
    return false;
  }
  if (seq != log_end_ + 1) {
    *error = fmt::format("entry {} does not follow the log's last, {}", seq, log_end_);
    broken_ = true;
    return false;
  }
  std::string frame;
  frame.reserve(kFrameHeaderBytes + entry.size());
  put_u64(frame, seq);
  put_u64(frame, entry.size());
  put_u64(frame, frame_hash(seq, entry.size(), entry));
  frame.append(entry);
  if (shm::failpoint("state.append.torn")) {
    // A test's crash half-way through a write: half the frame reaches the file.
    write_all(log_fd_, frame.data(), frame.size() / 2);
    ::kill(::getpid(), SIGKILL);
  }
  if (!write_all(log_fd_, frame.data(), frame.size()) ||
      (fsync_ == Fsync::always && ::fdatasync(log_fd_) != 0)) {
    *error = fmt::format("cannot append entry {} to {}: {}", seq, file("log", log_first_), errno_text());
    // What was half-written goes, so that the file ends at a whole entry.
    if (::ftruncate(log_fd_, static_cast<off_t>(log_size_)) != 0) {
      // Recovery cuts it then.
    }
    broken_ = true;
    return false;
  }
  log_size_ += frame.size();
  log_end_ = seq;
  return true;
}

void Dir::close_log() {
  if (log_fd_ < 0) return;
  if (fsync_ != Fsync::never) ::fdatasync(log_fd_);
  ::close(log_fd_);
  log_fd_ = -1;
  older_log_bytes_ += log_size_;
  log_size_ = 0;
}

// --- checkpoints -----------------------------------------------------------------------

bool Dir::begin_checkpoint(uint64_t seq, std::string bytes, std::string* log_error) {
  if (thread_) return false;
  // The log goes on in a file of its own from seq + 1: until this checkpoint is
  // written, recovery uses the previous one and replays both files.
  broken_ = !open_log(seq + 1, log_error);
  log_end_ = seq;
  thread_ = std::make_unique<Worker>();
  Worker* w = thread_.get();
  w->result.seq = seq;
  std::string final_name = file("checkpoint", seq);
  std::string tmp = final_name + ".tmp";
  w->thread = std::thread([w, seq, final_name, tmp, dir = path_, sync = fsync_ != Fsync::never,
                           bytes = std::move(bytes)] {
    const auto start = std::chrono::steady_clock::now();
    std::string header(kCheckpointMagic, 4);
    put_u32(header, kStateFormatVersion);
    put_u64(header, seq);
    put_u64(header, bytes.size());
    put_u64(header, frame_hash(seq, bytes.size(), bytes));
    std::string& error = w->result.error;
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
      error = fmt::format("cannot create {}: {}", tmp, errno_text());
    } else {
      bool ok = write_all(fd, header.data(), header.size()) && write_all(fd, bytes.data(), bytes.size());
      // A test's crash with the checkpoint written but not yet renamed.
      shm::failpoint("state.checkpoint.before_rename");
      if (ok && sync) ok = ::fdatasync(fd) == 0;
      if (!ok) error = fmt::format("cannot write {}: {}", tmp, errno_text());
      ::close(fd);
      if (ok && ::rename(tmp.c_str(), final_name.c_str()) != 0)
        error = fmt::format("cannot rename {}: {}", tmp, errno_text());
      if (!error.empty()) ::unlink(tmp.c_str());
      else if (sync) sync_dir(dir);
    }
    w->result.bytes = header.size() + bytes.size();
    w->result.elapsed_ms = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count());
    w->done.store(true, std::memory_order_release);  // pairs with the acquire in poll()
  });
  return true;
}

std::optional<CheckpointResult> Dir::poll() {
  if (!thread_ || !thread_->done.load(std::memory_order_acquire)) return std::nullopt;
  thread_->thread.join();
  CheckpointResult result = std::move(thread_->result);
  thread_.reset();
  if (result.error.empty()) {
    last_.checkpoint_seq = result.seq;
    last_.checkpoint_bytes = result.bytes;
    last_.checkpoint_unix_ms = unix_ms();
    trim();
  }
  return result;
}

// Keeps the newest two checkpoints (the older one is the fallback when the newest does
// not read back) and the log files from the older one on.
void Dir::trim() {
  Listing l = list(path_);
  if (l.checkpoints.size() < 2) return;
  const uint64_t keep_from = l.checkpoints[l.checkpoints.size() - 2];
  for (uint64_t s : l.checkpoints)
    if (s < keep_from) ::unlink(file("checkpoint", s).c_str());
  for (size_t i = 0; i + 1 < l.logs.size(); ++i) {
    if (l.logs[i + 1] > keep_from + 1) break;  // file i holds entries after keep_from
    std::string name = file("log", l.logs[i]);
    older_log_bytes_ -= std::min(older_log_bytes_, file_size(name));
    ::unlink(name.c_str());
  }
}

Stats Dir::stats() const {
  Stats s = last_;
  s.log_bytes = older_log_bytes_ + log_size_;
  return s;
}

std::string remove_dir(const std::string& path) {
  DIR* d = opendir(path.c_str());
  if (!d) return errno == ENOENT ? "" : fmt::format("{}: {}", path, errno_text());
  while (dirent* e = readdir(d)) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    ::unlink((path + "/" + std::string(name)).c_str());
  }
  closedir(d);
  if (::rmdir(path.c_str()) != 0 && errno != ENOENT) return fmt::format("{}: {}", path, errno_text());
  return "";
}

}  // namespace state
