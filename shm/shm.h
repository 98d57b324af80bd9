// shm: the shared-memory snapshot store of telemetryd.
//
// What it is
// ----------
// One writer process builds immutable snapshots (a flat key -> bytes table plus named
// lists of keys) and publishes them; many reader processes look keys up in the current
// snapshot without taking a lock or making a system call. Everything lives in POSIX
// shared memory:
//
//   /NAME          the control segment: identity (magic, layout version, uid, start id),
//                  the current generation, the buffer descriptors, the reader slot
//                  table, and counters the supervisor can read without asking anyone.
//   /NAME.I.SEQ    data buffer I (0 <= I < buffer_count), incarnation SEQ. A buffer
//                  that is too small for a snapshot is replaced by a bigger incarnation.
//
// Guarantees
// ----------
// - A reader inside a read (between Reader::enter() and the guard's destruction) sees
//   one complete snapshot: the writer never writes into a buffer that a live reader's
//   slot still announces.
// - Generations only grow, across writer restarts too: a new writer continues from the
//   current generation.
// - The writer never waits for ever: a dead reader's slot is cleared (by the supervisor
//   when it reaps it, or by the writer when the slot's pid and start token no longer
//   name a live process); a stopped reader makes the writer skip a publish after
//   StoreOptions::reclaim_timeout, and the skip is counted.
// - A snapshot is position independent and self-describing (offsets only, fixed-width
//   little-endian fields, a checksum), so a buffer may be copied byte for byte to another
//   machine and opened there with SnapshotView.
// - A corrupt or truncated snapshot is reported as an error by SnapshotView, never read
//   out of bounds. A corrupt control segment is refused by Store::open; the counts it
//   was opened with are kept, so later damage to the segment gives wrong numbers or an
//   error, never an access out of bounds.
// - Every failure is an shm::Error (a system call's names the segment, the call and the
//   OS's reason), never another exception type and never a signal: a buffer segment
//   that is missing (unlinked under a running service) or cannot be mapped fails the
//   read that needs it, and the writer replaces it when it next writes that buffer.
// - A writer killed at any instant, even in the middle of growing a buffer, leaves the
//   store readable: every buffer descriptor names a segment that exists, and the next
//   Writer removes the segments the dead one left unrecorded.
//
// Not guaranteed
// --------------
// - Fairness or freshness for a reader: a reader that holds a guard keeps an old
//   snapshot alive (and may make the writer skip publishes) for as long as it holds it.
// - Several writers at once: Writer refuses to start while another live writer holds
//   the store.
// - Portability to big-endian machines: such a machine refuses the snapshot (magic
//   mismatch) instead of misreading it.
//
// The protocol and its memory-ordering argument are in docs/architecture.md; the labels
// [P1] .. [P5] in the code refer to it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace shm {

// Every failure of this library: a message that says what and where. The calls below
// say when they throw it; the only other exception any of them lets out is
// std::bad_alloc.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------------
// Snapshot format
// ---------------------------------------------------------------------------------

// A snapshot's stable 64-bit hash of bytes (keys and the checksum use it). Part of the
// format: changing it changes kFormatVersion.
uint64_t hash_bytes(const void* data, size_t size, uint64_t seed = 0);

// Collects records and lists, then lays them out into a buffer. Not thread-safe.
// Keys are unique: adding a key twice keeps the last value. A list names keys that
// must be added as records too (serialize_into() throws otherwise).
class SnapshotBuilder {
 public:
  SnapshotBuilder();
  ~SnapshotBuilder();
  SnapshotBuilder(SnapshotBuilder&&) noexcept;
  SnapshotBuilder& operator=(SnapshotBuilder&&) noexcept;

  // Returns the record's id (its index in insertion order), which add_list() accepts.
  uint32_t add(std::string_view key, std::string_view value);
  // A hint that key is about to be add()ed: starts loading the part of the duplicate
  // table it will probe. At a million records each add() is otherwise a cache miss; a
  // caller that knows its next keys issues this a few records ahead. Returns the key's
  // hash, which the add() below takes back instead of hashing the key again.
  uint64_t prefetch(std::string_view key) const;
  // add() of a key whose hash prefetch() returned.
  uint32_t add(std::string_view key, std::string_view value, uint64_t prefetched_hash);
  // A named list of records, in the order given (e.g. the series of one metric). By id
  // is the fast form; by key looks each key up and throws if it is not a record.
  void add_list(std::string_view name, std::span<const uint32_t> records);
  void add_list(std::string_view name, std::span<const std::string_view> keys);
  void add_list(std::string_view name, const std::vector<std::string>& keys);
  // Room for this many records and key + value bytes, so that a build of known size
  // does not regrow its buffers. clear() keeps the capacity.
  void reserve(size_t records, size_t bytes);

  size_t record_count() const;
  size_t list_count() const;
  // Exact number of bytes serialize_into() writes.
  size_t serialized_size() const;
  // Writes the snapshot into out (out.size() >= serialized_size()). built_at is Unix
  // time in nanoseconds.
  void serialize_into(std::span<std::byte> out, uint64_t generation, uint64_t built_at_ns) const;
  // Convenience for tests and replication: a fresh byte vector.
  std::vector<std::byte> serialize(uint64_t generation, uint64_t built_at_ns) const;
  void clear();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One record of a snapshot: views into the snapshot's bytes.
struct Record {
  std::string_view key;
  std::string_view value;
};

// A named list of a snapshot, read in place: size() is O(1) and at(i) one bounds-checked
// load, so a reader can page through a list of millions without copying it. Valid as
// long as the snapshot's bytes are.
class ListView {
 public:
  ListView() = default;
  size_t size() const { return count_; }
  // Entry i, or nullopt when i >= size() or the entry is corrupt.
  std::optional<Record> at(size_t i) const;

 private:
  friend class SnapshotView;
  ListView(std::span<const std::byte> bytes, size_t offsets_at, uint32_t count, size_t body_end)
      : bytes_(bytes), offsets_at_(offsets_at), count_(count), body_end_(body_end) {}
  std::span<const std::byte> bytes_;
  size_t offsets_at_ = 0;
  uint32_t count_ = 0;
  size_t body_end_ = 0;
};

// Read-only, bounds-checked view of one serialized snapshot. Cheap to construct
// (checks the header and table bounds: O(1)); verify() also checks the checksum and
// every record (O(size)). All accessors stay inside the buffer whatever its contents.
class SnapshotView {
 public:
  SnapshotView() = default;
  // Throws shm::Error if the header is not a valid snapshot that fits in bytes.
  explicit SnapshotView(std::span<const std::byte> bytes);
  // Like the constructor, but returns the reason instead of throwing.
  static std::optional<SnapshotView> open(std::span<const std::byte> bytes, std::string* why);

  uint64_t generation() const;
  uint64_t built_at_ns() const;
  size_t size() const;  // bytes of the whole snapshot
  size_t record_count() const;
  size_t list_count() const;

  // O(1) expected. nullopt when absent (or when the entry is corrupt).
  std::optional<std::string_view> find(std::string_view key) const;
  // Record i in the order they were added (0 <= i < record_count()).
  std::optional<Record> record(size_t i) const;
  // The records of a named list, in list order; empty when there is no such list.
  std::vector<Record> list(std::string_view name) const;
  // The same list without copying it (an empty ListView when absent).
  ListView find_list(std::string_view name) const;
  // Names of all lists, in the order they were added.
  std::vector<std::string_view> list_names() const;

  // Full check: checksum over the body and the bounds of every entry.
  bool verify(std::string* why = nullptr) const;
  std::span<const std::byte> bytes() const { return bytes_; }

  // Where the tables are, validated once by open().
  struct Layout {
    size_t record_dir = 0, record_index = 0, list_dir = 0, list_index = 0, body_end = 0;
    uint32_t record_count = 0, record_buckets = 0, list_count = 0, list_buckets = 0;
  };

 private:
  std::span<const std::byte> bytes_;
  Layout layout_;
};

// ---------------------------------------------------------------------------------
// The store: control segment, buffers, publish / read / reclaim
// ---------------------------------------------------------------------------------

constexpr uint32_t kMaxBuffers = 8;
constexpr uint32_t kMaxReaders = 256;
constexpr uint32_t kMaxSources = 64;
constexpr uint32_t kServiceCounters = 64;  // Store::service_counter(): meaning set by server/
constexpr uint32_t kReaderCounters = 32;   // Reader::counter(): meaning set by server/
// Writer::set_status_text(). A partitioned node's cluster status lists each partition it
// holds twice (text and JSON, ~300 bytes) and each member's ready partitions: 2 MB holds
// the 4096 partitions a cluster may have (16 KB cut the JSON past ~50). Pages of the
// control segment are touched only as far as the text goes.
constexpr size_t kStatusTextBytes = 2 << 20;

struct StoreOptions {
  // POSIX shm name without the leading '/': 1-100 characters, no '/', and not ending in
  // .DIGITS.DIGITS (the form of a buffer's name: "x.1.2" is buffer 1 of store "x").
  std::string name = "telemetryd";
  uint32_t buffer_count = 3;        // 2..kMaxBuffers; a spare lets the writer step around a stopped reader
  uint32_t reader_slots = 64;       // 1..kMaxReaders
  size_t initial_buffer_bytes = 1 << 20;
  // How long publish() waits for a buffer that a live reader still holds before it
  // skips this publish. At most one hour.
  std::chrono::milliseconds reclaim_timeout{100};
};

// A snapshot of the store's counters, copied out of the control segment.
struct ReaderInfo {
  uint32_t slot = 0;
  int32_t pid = 0;  // 0: free slot
  uint64_t reading_generation = 0;  // 0: idle
  uint64_t requests = 0;
  uint64_t heartbeat_ns = 0;  // CLOCK_MONOTONIC of the reader's last event-loop tick
};
struct StoreInfo {
  std::string name;
  uint64_t start_id = 0;
  int32_t creator_pid = 0;
  uint32_t uid = 0;
  int32_t writer_pid = 0;
  uint64_t generation = 0;      // current; 0 before the first publish
  uint32_t current_buffer = 0;
  uint64_t built_at_ns = 0;     // of the current snapshot
  uint64_t snapshot_bytes = 0;
  uint64_t snapshot_records = 0;
  uint32_t buffer_count = 0;
  std::vector<uint64_t> buffer_capacity;
  uint64_t publishes = 0;
  uint64_t publish_skipped = 0;  // no free buffer within reclaim_timeout
  uint64_t buffer_grows = 0;
  uint64_t stale_slots_cleared = 0;
  uint64_t last_publish_ns = 0;  // CLOCK_REALTIME of the last successful publish
  uint64_t last_build_ns = 0;    // duration of the last serialize + publish
  std::vector<ReaderInfo> readers;
};

// Per-source ingest status, written by the writer and read by anyone (seqlock).
struct SourceStatus {
  std::string url;
  std::string format;       // "native", "otlp", "" before the first fetch
  int32_t last_status = 0;  // HTTP status, 0 when no response
  uint64_t last_fetch_ns = 0;   // CLOCK_REALTIME
  uint64_t last_latency_us = 0;
  uint64_t bytes = 0;           // total bytes fetched
  uint64_t samples = 0;         // total samples accepted
  uint64_t dropped = 0;         // total samples dropped (dedup, window, limits)
  uint64_t errors = 0;          // total failed fetches or parses
  std::string last_error;       // "" when the last fetch was good
  uint64_t last_error_ns = 0;
};

class Store;

// The publishing side. One per store at a time.
class Writer {
 public:
  // Claims the store's writer role, then unlinks the buffer segments no descriptor
  // names (left by a writer killed while it grew a buffer). Throws shm::Error if another
  // live writer holds the role.
  explicit Writer(Store& store);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Builds generation current+1 into a buffer no reader uses, then makes it current.
  // Returns the new generation, or 0 when the publish was skipped because every
  // non-current buffer is held by a live reader past reclaim_timeout (counted).
  // A buffer too small for the snapshot, or whose segment has gone, is replaced by a
  // new incarnation (/NAME.I.SEQ+1): created and filled, recorded in its descriptor,
  // and only then is the old one unlinked.
  // Throws shm::Error if this process no longer holds the writer role, or if a buffer
  // segment cannot be opened, created (e.g. /dev/shm full: posix_fallocate ENOSPC) or
  // mapped. After a throw the current snapshot is unchanged and readable; a segment
  // the failed publish left unrecorded is removed by the next Writer.
  uint64_t publish(const SnapshotBuilder& builder);
  // The same, as the given generation rather than current+1 (a cluster's log sequence
  // number, the same on every node for the same data). Throws shm::Error, changing
  // nothing, unless generation is greater than the current one and fits in 56 bits.
  uint64_t publish(const SnapshotBuilder& builder, uint64_t generation);
  uint64_t generation() const;  // the last generation published by anyone

  // Never throw, but at an armed failpoint (an index >= kMaxSources is ignored; text
  // is truncated to its field).
  void set_source_status(uint32_t index, const SourceStatus& status);
  void set_source_count(uint32_t n);
  // Free text for server/ (truncated to kStatusTextBytes), read with Store::status_text().
  void set_status_text(std::string_view text);

 private:
  Store& store_;
};

// The reading side: one per reader process, bound to one slot of the table.
class Reader {
 public:
  // Claims slot `slot` for this process (pid + start token). Throws shm::Error if the
  // slot is out of range, holds another live process, or stays busy (another process
  // in the middle of a hand-over) for 100,000 yields.
  Reader(Store& store, uint32_t slot);
  ~Reader();  // releases the slot
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  // A read in progress: the snapshot stays valid and unchanged while the guard lives.
  class Guard {
   public:
    Guard(Guard&& other) noexcept;
    Guard& operator=(Guard&&) = delete;
    ~Guard();
    const SnapshotView& view() const { return view_; }
    const SnapshotView* operator->() const { return &view_; }
    uint64_t generation() const { return view_.generation(); }

   private:
    friend class Reader;
    Guard(Reader* r, SnapshotView v) : reader_(r), view_(v) {}
    Reader* reader_;
    SnapshotView view_;
  };

  // Enters a read of the current snapshot. nullopt before the first publish. Takes no
  // lock; makes no system call except to map a buffer the first time it is seen (or
  // after it grew). Throws shm::Error, after leaving the read, if a guard of this
  // reader is still alive, or if the current buffer's segment is missing, not this
  // uid's, cannot be mapped, or does not hold a valid snapshot of the current
  // generation; a later enter() succeeds once a publish names a sound buffer.
  std::optional<Guard> enter();

  // Counters kept in the slot (relaxed; read by the supervisor and the admin socket).
  void count_requests(uint64_t n);
  void heartbeat();  // stores CLOCK_MONOTONIC now
  // Per-reader counters in the slot, free for server/'s use (relaxed increments).
  // Throws shm::Error if i >= kReaderCounters.
  std::atomic<uint64_t>& counter(uint32_t i);
  uint32_t slot() const { return slot_; }

 private:
  void leave();
  struct Mapping;
  Store& store_;
  uint32_t slot_;
  std::vector<std::unique_ptr<Mapping>> maps_;
};

// The control segment and the buffers. A process opens the store once (create() in
// the supervisor, open() in the children) and keeps it for its life.
class Store {
 public:
  // Creates the segments (mode 0600, their memory allocated at once). Segments left
  // under the same name by an earlier run whose creator is gone are removed first.
  // Throws shm::Error for invalid options, for a store whose creator is alive or whose
  // control segment has a wrong magic, layout version, owner or counts, and when a
  // segment cannot be opened, created or mapped (e.g. /dev/shm full).
  static std::unique_ptr<Store> create(const StoreOptions& options);
  // Opens an existing store. Throws shm::Error for an invalid name, a missing or
  // unmappable control segment, and one that is too small or has a wrong magic, layout
  // version, owner, buffer count, slot count or reclaim timeout.
  static std::unique_ptr<Store> open(const std::string& name);
  // Unlinks the control segment /NAME and every /NAME.I.SEQ (I < kMaxBuffers) in
  // /dev/shm, and nothing else (not the segments of a store named "NAME.1"). Safe if
  // absent. Throws shm::Error only for an invalid name.
  static void remove(const std::string& name);

  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::string& name() const;
  uint32_t reader_slots() const;
  // Copies of the control segment's fields. Never throw: whatever the segment holds now,
  // they read inside it (the counts are those validated at open).
  StoreInfo info() const;
  std::vector<SourceStatus> sources() const;
  std::string status_text() const;

  // Supervisor: frees a reader slot whose process has exited (pid must match).
  void clear_reader_slot(uint32_t slot, int32_t pid);
  // Supervisor: frees the writer role of a writer that has exited.
  void clear_writer(int32_t pid);

  // Service-wide counters in the control segment, free for server/'s use. Throws
  // shm::Error if i >= kServiceCounters.
  std::atomic<uint64_t>& service_counter(uint32_t i) const;
  // Counter i of reader slot `slot` (see Reader::counter); 0 when out of range.
  uint64_t reader_counter(uint32_t slot, uint32_t i) const;

  struct Control;  // the layout, in shm/layout.h
  Control& control() const;

 private:
  friend class Writer;
  friend class Reader;
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Clock helpers shared by the components.
uint64_t realtime_ns();
uint64_t monotonic_ns();

// Failpoints: named places in the code where a test makes this process fail on purpose,
// deterministically, instead of racing a kill against a sleep. The environment variable
// TELEMETRYD_FAILPOINTS holds `name=action` pairs separated by ','; actions:
//   kill   SIGKILL this process (a crash at exactly this point)
//   stop   SIGSTOP this process (a hang; the process can be continued)
//   spin   loop for ever on the CPU (a stuck process that still runs)
//   error  failpoint() returns true: the caller takes its error path
// An action written `action@FILE` is armed only while FILE exists and fires in the one
// process that manages to unlink it: exactly once, however many processes pass there
// (a replacement child does not fail again).
// The variable is read once per process, on the first call; without it a failpoint
// costs one predictable branch. Forked children inherit the parsed table (so a test
// that arms failpoints in a child must exec a fresh program, or fork before anything
// in the parent has called failpoint()).
//
// This library's failpoints (with `error`, the call in progress throws shm::Error):
//   shm.grow.after_create   Writer::publish growing a buffer: new segment created, not filled
//   shm.grow.after_record   ... filled and recorded in the BufferDesc, old one not unlinked
//   shm.grow.after_unlink   ... old one unlinked, the snapshot not yet published
//   shm.source.mid_write    Writer::set_source_status: the slot half written (seq odd)
bool failpoint(std::string_view name);

}  // namespace shm
