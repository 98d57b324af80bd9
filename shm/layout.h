// shm/layout.h: the bytes of the control segment and of a snapshot, field by field.
//
// Internal to shm/ (and to the tests and the spin model, which mirror it). Every struct
// here lives in shared memory or in a snapshot that may cross machines: fixed-width
// fields, no pointers, explicit padding, and static_asserts on every size the format
// depends on. Changing a struct changes kLayoutVersion or kFormatVersion.
#pragma once

#include <atomic>
#include <cstdint>

#include "shm/shm.h"

namespace shm {

// ---------------------------------------------------------------------------------
// Snapshot (one data buffer holds one snapshot at offset 0)
// ---------------------------------------------------------------------------------
//
//   SnapshotHeader                      64 bytes
//   record directory   u64[record_count]   offset of each record, in insertion order
//   record index       IndexSlot[record_buckets]   open addressing, linear probing
//   list directory     u64[list_count]     offset of each list, in insertion order
//   list index         IndexSlot[list_buckets]
//   records            { u32 key_len, u32 value_len, key bytes, value bytes } (8-aligned)
//   lists              { u32 name_len, u32 count, u64 record_offset[count], name bytes }
//
// All offsets are from the start of the snapshot, so the bytes mean the same wherever
// they are mapped or copied. The checksum covers bytes [sizeof(SnapshotHeader), size).

constexpr uint64_t kSnapshotMagic = 0x31504e534d4c4554ull;  // "TELMSNP1" little-endian
constexpr uint32_t kFormatVersion = 1;

struct SnapshotHeader {
  uint64_t magic;
  uint32_t format_version;
  uint32_t header_size;
  uint64_t generation;
  uint64_t built_at_ns;    // Unix time
  uint64_t size;           // bytes of the whole snapshot
  uint32_t record_count;
  uint32_t record_buckets;  // power of two
  uint32_t list_count;
  uint32_t list_buckets;    // power of two
  uint64_t checksum;        // hash_bytes(body, seed = generation)
};
static_assert(sizeof(SnapshotHeader) == 64);

// One bucket of an index. offset == 0 means empty (no entry starts at offset 0: the
// header is there). tag is the high half of the key's hash, so most mismatches are
// rejected without touching the entry.
struct IndexSlot {
  uint32_t tag;
  uint32_t reserved;
  uint64_t offset;
};
static_assert(sizeof(IndexSlot) == 16);

struct RecordHeader {
  uint32_t key_len;
  uint32_t value_len;
};
struct ListHeader {
  uint32_t name_len;
  uint32_t count;
};

// ---------------------------------------------------------------------------------
// Control segment
// ---------------------------------------------------------------------------------

constexpr uint64_t kControlMagic = 0x4c52544344594d54ull;  // "TMYDCTRL" little-endian
constexpr uint32_t kLayoutVersion = 2;
constexpr size_t kSourceUrlBytes = 256;
constexpr size_t kSourceErrorBytes = 256;

// The current snapshot, packed into one word so that a reader gets generation and
// buffer with a single load: generation in the high 56 bits, buffer index in the low 8.
// 0 means "nothing published yet" (generations start at 1).
constexpr uint64_t pack_current(uint64_t generation, uint32_t buffer) {
  return (generation << 8) | buffer;
}
constexpr uint64_t current_generation(uint64_t word) { return word >> 8; }
constexpr uint32_t current_buffer(uint64_t word) { return static_cast<uint32_t>(word & 0xff); }

// One data buffer. Written by the writer only, and only while the buffer is neither
// current nor announced by any reader slot; readers read it after an acquire load of
// Control::current that observed a word naming this buffer ([P2] pairs with [P1]).
struct alignas(64) BufferDesc {
  std::atomic<uint64_t> seq;         // incarnation: segment name is /NAME.I.SEQ; 0 = none yet
  std::atomic<uint64_t> capacity;    // bytes of that segment, for info(): mappings are sized by fstat
  std::atomic<uint64_t> generation;  // generation of the snapshot it holds, 0 = none
  std::atomic<uint64_t> size;        // bytes of that snapshot
  std::atomic<uint64_t> records;     // its record count
  std::atomic<uint64_t> built_at_ns; // its build time (Unix ns)
};

// One reader process. Cache-line sized so that readers never share a line.
//
// pid/start_token identify the owner: pid alone is not enough, since a dead reader's pid
// can be reused by an unrelated process; start_token is the process start time in clock
// ticks since boot (field 22 of /proc/PID/stat), so (pid, start_token) names one process
// for the life of the machine.
//
// reading is the protocol word: 0 when idle, else the Control::current word the reader
// observed and is (or is about to be) reading. Stored by the owner [P3], fenced [P4],
// and cleared with release [P5]; loaded by the writer after its fence [P6]. Cleared by
// the supervisor or the writer only once the owner is known dead.
struct alignas(64) ReaderSlot {
  std::atomic<int32_t> pid;           // 0 = free
  uint32_t reserved;
  std::atomic<uint64_t> start_token;
  std::atomic<uint64_t> reading;
  std::atomic<uint64_t> heartbeat_ns;  // CLOCK_MONOTONIC; relaxed, for the supervisor
  std::atomic<uint64_t> requests;      // relaxed counter
  std::atomic<uint64_t> counters[kReaderCounters];  // for server/'s use, relaxed
};

// Per-source ingest status, guarded by a seqlock: the writer makes seq odd, writes,
// makes it even (release); a reader copies between two equal even loads of seq. A
// writer killed in between leaves it odd: the next one rounds it up to even first.
struct SourceSlot {
  std::atomic<uint64_t> seq;
  char url[kSourceUrlBytes];
  char format[16];
  int32_t last_status;
  uint32_t reserved;
  uint64_t last_fetch_ns;
  uint64_t last_latency_us;
  uint64_t bytes;
  uint64_t samples;
  uint64_t dropped;
  uint64_t errors;
  char last_error[kSourceErrorBytes];
  uint64_t last_error_ns;
};

// Free text the writer publishes for the supervisor (server/ keeps the cluster status
// there), under the same seqlock as SourceSlot.
struct StatusTextSlot {
  std::atomic<uint64_t> seq;
  uint32_t length;
  uint32_t reserved;
  char text[kStatusTextBytes];
};

struct Store::Control {
  // Identity: written once by create() before any other process can open the segment.
  // open() validates buffer_count, reader_slots and reclaim_timeout_ms and keeps its
  // own copies: the shared fields are never read again.
  uint64_t magic;
  uint32_t layout_version;
  uint32_t uid;
  int32_t creator_pid;
  uint32_t buffer_count;
  uint64_t creator_start_token;
  uint64_t start_id;          // random, unique to this service start
  uint32_t reader_slots;
  uint32_t reserved0;
  uint64_t reclaim_timeout_ms;
  char name[128];

  // The protocol word: see pack_current(). Stored with release by the writer [P1],
  // loaded with acquire by readers [P2] and with the fence [P6] by the writer.
  alignas(64) std::atomic<uint64_t> current;

  // Writer role: pid/start token of the process allowed to publish (0 = none).
  alignas(64) std::atomic<int32_t> writer_pid;
  std::atomic<uint64_t> writer_start_token;

  // Writer statistics: written by the writer (relaxed), read by anyone.
  std::atomic<uint64_t> publishes;
  std::atomic<uint64_t> publish_skipped;
  std::atomic<uint64_t> buffer_grows;
  std::atomic<uint64_t> stale_slots_cleared;
  std::atomic<uint64_t> last_publish_ns;
  std::atomic<uint64_t> last_build_ns;
  std::atomic<uint32_t> source_count;

  // Free for server/ (restarts per role, reload outcome, ...), relaxed.
  alignas(64) std::atomic<uint64_t> service[kServiceCounters];

  BufferDesc buffers[kMaxBuffers];
  ReaderSlot slots[kMaxReaders];
  SourceSlot sources[kMaxSources];
  StatusTextSlot status_text;
};

static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared-memory atomics must be lock-free");
static_assert(std::atomic<int32_t>::is_always_lock_free, "shared-memory atomics must be lock-free");
static_assert(sizeof(ReaderSlot) % 64 == 0);

}  // namespace shm
