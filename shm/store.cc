// shm/store.cc: the control segment, the data buffers, and the publish / read / reclaim
// protocol between one Writer and many Readers. The protocol's proof sketch is in
// docs/architecture.md; [Pn] labels mark the loads, stores and fences it talks about.
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <fstream>
#include <random>
#include <sys/mman.h>
#include <sys/stat.h>
#include <thread>
#include <time.h>
#include <unistd.h>
#include <utility>

#include "shm/layout.h"
#include "shm/segment.h"

namespace shm {

uint64_t realtime_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}
uint64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

// ---------------------------------------------------------------------------------
// Process identity: (pid, start time in clock ticks since boot). The start time is
// what tells a live reader from an unrelated process that was given its pid later.
// ---------------------------------------------------------------------------------

namespace {

// Start time of pid (clock ticks since boot), or 0 when no such process runs. A zombie
// counts as gone: it can no longer read, and only its parent's wait() frees its pid.
uint64_t process_start_token(int32_t pid) {
  std::ifstream f(fmt::format("/proc/{}/stat", pid));
  std::string stat;
  if (!std::getline(f, stat)) return 0;
  // Field 2 (comm) may hold spaces and parentheses: count fields after the last ')'.
  size_t at = stat.rfind(')');
  if (at == std::string::npos || at + 2 >= stat.size()) return 0;
  char state = stat[at + 2];  // field 3
  if (state == 'Z' || state == 'X' || state == 'x') return 0;
  int field = 2;
  for (size_t i = at + 1; i < stat.size(); ++i) {
    if (stat[i] != ' ') continue;
    if (++field == 22) return std::strtoull(stat.c_str() + i + 1, nullptr, 10);
  }
  return 0;
}

// Cached per process: a forked child must not inherit its parent's token.
uint64_t self_start_token() {
  static thread_local int32_t cached_pid = 0;
  static thread_local uint64_t token = 0;
  if (cached_pid != getpid()) {
    cached_pid = getpid();
    token = process_start_token(cached_pid);
  }
  return token;
}

// True while the process that registered (pid, token) still runs.
bool process_alive(int32_t pid, uint64_t token) {
  if (pid <= 0) return false;
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  uint64_t now = process_start_token(pid);
  return now == 0 ? false : now == token;
}


// A failpoint (shm.h) whose error action fails the call in progress.
void fail_at(std::string_view point) {
  if (failpoint(point)) throw Error(fmt::format("failpoint {}", point));
}

// Longest StoreOptions::reclaim_timeout: a publish never waits longer for a buffer.
constexpr uint64_t kMaxReclaimMs = 3'600'000;

// Why a control segment cannot be used, or "" if it can.
std::string identity_problem(const Store::Control& c, const std::string& path) {
  if (c.magic != kControlMagic) return fmt::format("shm {} is not a telemetryd control segment (wrong magic)", path);
  if (c.layout_version != kLayoutVersion)
    return fmt::format("shm {} has layout version {}, this build uses {}; stop the service that made it, "
                       "or remove it (rm /dev/shm{}*) if none runs",
                       path, c.layout_version, kLayoutVersion, path);
  if (c.uid != geteuid()) return fmt::format("shm {} was created by uid {}, not {}", path, c.uid, geteuid());
  if (c.buffer_count < 2 || c.buffer_count > kMaxBuffers)
    return fmt::format("shm {} has an invalid buffer count {}", path, c.buffer_count);
  if (c.reader_slots < 1 || c.reader_slots > kMaxReaders)
    return fmt::format("shm {} has an invalid reader slot count {}", path, c.reader_slots);
  if (c.reclaim_timeout_ms > kMaxReclaimMs)
    return fmt::format("shm {} has an invalid reclaim timeout {} ms", path, c.reclaim_timeout_ms);
  return "";
}

// The counts of a control segment, validated once by create() or open() and used from
// then on instead of the shared fields, which any process of the uid can overwrite.
struct Shape {
  uint32_t buffers = 0;
  uint32_t slots = 0;
  uint64_t reclaim_timeout_ms = 0;
};
Shape shape_of(const Store::Control& c) { return {c.buffer_count, c.reader_slots, c.reclaim_timeout_ms}; }

void copy_text(char* dst, size_t cap, std::string_view src) {
  size_t n = std::min(cap - 1, src.size());
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

}  // namespace

// ---------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------

struct Store::Impl {
  std::string name;
  Segment control;
  Shape shape;
  Segment writer_maps[kMaxBuffers];  // this process's read-write mappings, when it writes
  Control& c() const { return *reinterpret_cast<Control*>(control.data()); }
};

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;
const std::string& Store::name() const { return impl_->name; }
uint32_t Store::reader_slots() const { return impl_->shape.slots; }
Store::Control& Store::control() const { return impl_->c(); }

void Store::remove(const std::string& name) {
  check_name(name);
  for (auto [index, seq] : list_buffers(name)) remove_segment(buffer_name(name, index, seq).c_str());
  remove_segment(control_name(name).c_str());
}

std::unique_ptr<Store> Store::create(const StoreOptions& o) {
  check_name(o.name);
  if (o.buffer_count < 2 || o.buffer_count > kMaxBuffers)
    throw Error(fmt::format("buffer_count must be 2..{}, not {}", kMaxBuffers, o.buffer_count));
  if (o.reader_slots < 1 || o.reader_slots > kMaxReaders)
    throw Error(fmt::format("reader_slots must be 1..{}, not {}", kMaxReaders, o.reader_slots));
  if (o.reclaim_timeout.count() < 0 || uint64_t(o.reclaim_timeout.count()) > kMaxReclaimMs)
    throw Error(fmt::format("reclaim_timeout must be 0..{} ms, not {}", kMaxReclaimMs, o.reclaim_timeout.count()));
  const std::string path = control_name(o.name);

  // An earlier run's segments: refuse foreign or live ones, clear stale ones.
  if (Segment old = open_segment(path, false, /*missing_ok=*/true); old.data()) {
    if (old.size() < sizeof(Control)) throw Error(fmt::format("shm {} is not a telemetryd control segment (too small)", path));
    const Control& c = *reinterpret_cast<const Control*>(old.data());
    if (std::string why = identity_problem(c, path); !why.empty()) throw Error(why);
    if (process_alive(c.creator_pid, c.creator_start_token))
      throw Error(fmt::format("shm {} is in use by a running telemetryd (pid {})", path, c.creator_pid));
    Store::remove(o.name);
  }

  auto impl = std::make_unique<Impl>();
  impl->name = o.name;
  impl->control = create_segment(path, page_round(sizeof(Control)));
  Control& c = impl->c();  // a new segment is zero-filled; atomics of zero bytes are valid zeros
  c.magic = kControlMagic;
  c.layout_version = kLayoutVersion;
  c.uid = geteuid();
  c.creator_pid = getpid();
  c.creator_start_token = self_start_token();
  c.start_id = std::random_device{}() | (uint64_t(std::random_device{}()) << 32);
  c.buffer_count = o.buffer_count;
  c.reader_slots = o.reader_slots;
  c.reclaim_timeout_ms = uint64_t(o.reclaim_timeout.count());
  copy_text(c.name, sizeof c.name, o.name);
  impl->shape = shape_of(c);
  size_t bytes = page_round(std::max<size_t>(o.initial_buffer_bytes, 4096));
  for (uint32_t i = 0; i < o.buffer_count; ++i) {
    impl->writer_maps[i] = create_segment(buffer_name(o.name, i, 1), bytes);
    impl->writer_maps[i].seq = 1;
    c.buffers[i].capacity.store(bytes, std::memory_order_relaxed);
    c.buffers[i].seq.store(1, std::memory_order_relaxed);
  }
  // Other processes open the store only after this one forks them or after it is
  // created; fork/exec and shm_open order these plain stores before their loads.
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

std::unique_ptr<Store> Store::open(const std::string& name) {
  check_name(name);
  const std::string path = control_name(name);
  auto impl = std::make_unique<Impl>();
  impl->name = name;
  impl->control = open_segment(path, true);
  if (impl->control.size() < sizeof(Control))
    throw Error(fmt::format("shm {} is not a telemetryd control segment (too small)", path));
  if (std::string why = identity_problem(impl->c(), path); !why.empty()) throw Error(why);
  impl->shape = shape_of(impl->c());
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

StoreInfo Store::info() const {
  const Control& c = impl_->c();
  const Shape& shape = impl_->shape;
  constexpr auto R = std::memory_order_relaxed;
  StoreInfo s;
  s.name = impl_->name;
  s.start_id = c.start_id;
  s.creator_pid = c.creator_pid;
  s.uid = c.uid;
  s.writer_pid = c.writer_pid.load(R);
  uint64_t cur = c.current.load(std::memory_order_acquire);
  s.generation = current_generation(cur);
  s.current_buffer = current_buffer(cur);
  s.buffer_count = shape.buffers;
  for (uint32_t i = 0; i < shape.buffers; ++i) s.buffer_capacity.push_back(c.buffers[i].capacity.load(R));
  if (cur != 0 && s.current_buffer < shape.buffers) {
    const BufferDesc& d = c.buffers[s.current_buffer];
    s.snapshot_bytes = d.size.load(R);
    s.snapshot_records = d.records.load(R);
    s.built_at_ns = d.built_at_ns.load(R);
  }
  s.publishes = c.publishes.load(R);
  s.publish_skipped = c.publish_skipped.load(R);
  s.buffer_grows = c.buffer_grows.load(R);
  s.stale_slots_cleared = c.stale_slots_cleared.load(R);
  s.last_publish_ns = c.last_publish_ns.load(R);
  s.last_build_ns = c.last_build_ns.load(R);
  for (uint32_t i = 0; i < shape.slots; ++i) {
    const ReaderSlot& r = c.slots[i];
    ReaderInfo ri;
    ri.slot = i;
    ri.pid = r.pid.load(R);
    ri.reading_generation = current_generation(r.reading.load(R));
    ri.requests = r.requests.load(R);
    ri.heartbeat_ns = r.heartbeat_ns.load(R);
    s.readers.push_back(ri);
  }
  return s;
}

std::vector<SourceStatus> Store::sources() const {
  const Control& c = impl_->c();
  uint32_t n = std::min(c.source_count.load(std::memory_order_acquire), kMaxSources);
  std::vector<SourceStatus> out(n);
  for (uint32_t i = 0; i < n; ++i) {
    const SourceSlot& s = c.sources[i];
    // A copy taken between two equal even loads of seq is consistent. A writer killed
    // inside set_source_status leaves seq odd until the next writer rewrites the slot:
    // then, after a bounded number of tries, the last copy is taken as it is (wrong at
    // worst; its text is terminated below, so never read out of bounds).
    SourceSlot copy;
    for (int tries = 0; tries < 1000; ++tries) {
      uint64_t before = s.seq.load(std::memory_order_acquire);
      std::memcpy(static_cast<void*>(&copy), static_cast<const void*>(&s), sizeof copy);
      std::atomic_thread_fence(std::memory_order_acquire);
      if (!(before & 1) && s.seq.load(std::memory_order_relaxed) == before) break;
    }
    copy.url[kSourceUrlBytes - 1] = copy.format[sizeof copy.format - 1] = copy.last_error[kSourceErrorBytes - 1] = 0;
    out[i] = SourceStatus{copy.url, copy.format, copy.last_status, copy.last_fetch_ns, copy.last_latency_us,
                          copy.bytes, copy.samples, copy.dropped, copy.errors, copy.last_error, copy.last_error_ns};
  }
  return out;
}

// The same seqlock as sources().
std::string Store::status_text() const {
  const StatusTextSlot& s = impl_->c().status_text;
  std::string out;
  for (int tries = 0; tries < 1000; ++tries) {
    uint64_t before = s.seq.load(std::memory_order_acquire);
    uint32_t length = std::min<uint32_t>(s.length, kStatusTextBytes);
    out.assign(s.text, length);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (!(before & 1) && s.seq.load(std::memory_order_relaxed) == before) break;
  }
  return out;
}

namespace {

// ReaderSlot::pid (and Control::writer_pid) is 0 when free, the owner's pid when owned,
// and -P while process P moves it from one state to another (claims it, or frees a dead
// owner's). Every change first CASes pid from the value the changer judged to its own
// -P, so no one else can claim or clear the slot in between: without that, clearing a
// dead owner's `reading` could erase the announcement of a new owner that claimed the
// slot after the clearer looked (a counterexample the spin model found). Naming the
// holder lets anyone finish the job if the holder dies inside it (another spin finding:
// an anonymous busy mark left behind by a killed process blocked the slot for good).
// Both kinds of change end in the same state when their holder dies, free, because a
// slot is only claimed from free or from a dead owner.
int32_t busy_mark() { return -getpid(); }
// INT32_MIN names no process (and cannot be negated): a corrupt mark, taken as dead.
bool busy_holder_alive(int32_t pid) { return pid < 0 && pid != INT32_MIN && process_start_token(-pid) != 0; }

// Frees slot s if its pid is still `pid`: a dead owner (> 0) or the busy mark of a dead
// holder (< 0). True if this call freed it.
bool free_dead_slot(ReaderSlot& s, int32_t pid) {
  int32_t expected = pid;
  if (pid == 0 || !s.pid.compare_exchange_strong(expected, busy_mark(), std::memory_order_acq_rel)) return false;
  s.reading.store(0, std::memory_order_release);  // [P5'] as if the dead reader had left
  s.pid.store(0, std::memory_order_release);
  return true;
}

}  // namespace

void Store::clear_reader_slot(uint32_t slot, int32_t pid) {
  if (slot >= reader_slots() || pid <= 0) return;
  // The reaped process either owned the slot, or died while claiming or freeing it.
  ReaderSlot& s = impl_->c().slots[slot];
  if (free_dead_slot(s, pid) || free_dead_slot(s, -pid))
    impl_->c().stale_slots_cleared.fetch_add(1, std::memory_order_relaxed);
}

void Store::clear_writer(int32_t pid) {
  if (pid <= 0) return;
  int32_t expected = pid;
  if (impl_->c().writer_pid.compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) return;
  expected = -pid;  // died while claiming the role
  impl_->c().writer_pid.compare_exchange_strong(expected, 0, std::memory_order_acq_rel);
}

std::atomic<uint64_t>& Store::service_counter(uint32_t i) const {
  if (i >= kServiceCounters) throw Error(fmt::format("service counter {} out of range", i));
  return impl_->c().service[i];
}

uint64_t Store::reader_counter(uint32_t slot, uint32_t i) const {
  if (slot >= reader_slots() || i >= kReaderCounters) return 0;
  return impl_->c().slots[slot].counters[i].load(std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------

namespace {

// Unlinks every buffer segment of the store that no BufferDesc names: what a writer
// killed in the middle of a growth leaves (the new incarnation before it was recorded,
// or the old one after), and buffers beyond buffer_count. Safe under running readers:
// they map only the incarnation a descriptor names, and only this writer changes those.
void remove_unrecorded_buffers(const Store::Control& c, const std::string& name, uint32_t buffers) {
  for (auto [index, seq] : list_buffers(name))
    if (index >= buffers || seq != c.buffers[index].seq.load(std::memory_order_relaxed))
      remove_segment(buffer_name(name, index, seq).c_str());
}

}  // namespace

Writer::Writer(Store& store) : store_(store) {
  // The same hand-over as a reader slot's (see busy_mark): pid goes through -getpid()
  // so that the start token stored here is the one any later acquire of writer_pid sees.
  Store::Control& c = store_.control();
  int32_t owner = c.writer_pid.load(std::memory_order_acquire);
  for (;;) {
    bool live = owner > 0 ? owner != getpid() &&
                                process_alive(owner, c.writer_start_token.load(std::memory_order_relaxed))
                          : owner < 0 && busy_holder_alive(owner);
    if (live) throw Error(fmt::format("shm /{} already has a live writer (pid {})", store_.name(), std::abs(owner)));
    if (c.writer_pid.compare_exchange_weak(owner, busy_mark(), std::memory_order_acq_rel)) break;
  }
  c.writer_start_token.store(self_start_token(), std::memory_order_relaxed);
  c.writer_pid.store(getpid(), std::memory_order_release);
  remove_unrecorded_buffers(c, store_.name(), store_.impl_->shape.buffers);
}

Writer::~Writer() { store_.clear_writer(getpid()); }

uint64_t Writer::generation() const {
  return current_generation(store_.control().current.load(std::memory_order_acquire));
}

namespace {

// Whether reader slot s announces buffer b. A slot of a dead owner is cleared on the
// way (the LMDB reader-table check, with the start token guarding against pid reuse).
bool slot_holds(Store::Control& c, ReaderSlot& s, uint32_t b, bool check_liveness) {
  // [P6b] acquire: pairs with the reader's release in leave() [P5], so the reader's
  // loads from the buffer happen before our reuse of it.
  uint64_t w = s.reading.load(std::memory_order_acquire);
  if (w == 0 || current_buffer(w) != b) return false;
  if (!check_liveness) return true;
  // acquire: pairs with the release store of pid in Reader::Reader, so start_token is
  // the one its owner stored.
  int32_t pid = s.pid.load(std::memory_order_acquire);
  if (pid == 0) return true;  // its owner just left: look again next round
  bool alive = pid > 0 ? process_alive(pid, s.start_token.load(std::memory_order_relaxed)) : busy_holder_alive(pid);
  if (alive) return true;
  if (!free_dead_slot(s, pid)) return true;  // someone else got there first: look again
  c.stale_slots_cleared.fetch_add(1, std::memory_order_relaxed);
  return false;
}

// A buffer other than `current` that no live reader announces, or -1 once the
// deadline passes with every candidate held.
int acquire_free_buffer(Store::Control& c, const Shape& shape, uint32_t current, bool have_current) {
  const uint64_t deadline = monotonic_ns() + shape.reclaim_timeout_ms * 1000000;
  for (uint32_t round = 0;; ++round) {
    // [P6] Orders our earlier store of Control::current [P1] before the loads of the
    // slots below. Paired with the reader's fence [P4] between its slot store [P3] and
    // its re-check load: either the reader sees the new current word and retries, or we
    // see its announcement and do not reuse the buffer it may read.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // Liveness costs system calls: only while held, not every round, and always on the
    // last round, so that a dead reader never makes a publish skip.
    const bool last_round = monotonic_ns() >= deadline;
    const bool check_liveness = round % 16 == 1 || last_round;
    for (uint32_t k = 1; k <= shape.buffers; ++k) {
      uint32_t b = (current + k) % shape.buffers;
      if (have_current && b == current) continue;
      bool held = false;
      for (uint32_t i = 0; i < shape.slots && !held; ++i) held = slot_holds(c, c.slots[i], b, check_liveness);
      if (!held) return int(b);
    }
    if (last_round) return -1;
    if (round < 16) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
}

// Buffer b's writable mapping `seg`, brought up to the incarnation `seq` its descriptor
// records: mapped by name when this process has not mapped that incarnation yet
// (another writer grew it). Empty when the segment is gone, or when its name no longer
// leads to our mapping (unlinked under a running service): readers may still map the
// old segment under this seq, so the caller replaces it with a new incarnation, whose
// new seq makes them re-map.
void map_recorded(Segment& seg, const std::string& path, uint64_t seq) {
  if (seg.seq == seq && seg.data()) {
    if (!still_named(seg, path)) seg = Segment{};
    return;
  }
  seg = open_segment(path, true, /*missing_ok=*/true);
  seg.seq = seq;
}

// Replaces buffer b (mapped in seg, or empty) by incarnation seq + 1 with room for
// `size` bytes, filled by fill(). At every instant the descriptor names a segment that
// exists, so a writer killed at any step leaves every buffer mappable: create and fill
// the new segment, record it, only then unlink the old one. What a killed writer leaves
// behind (the new segment before the record, the old one after it) the next Writer
// removes. Nobody reads b now (acquire_free_buffer); readers that mapped the old
// incarnation see the new seq when b is current again, after [P1], and re-map; the old
// memory is freed when the last of them unmaps it.
template <class Fill>
void grow_buffer(Store::Control& c, const std::string& name, uint32_t b, Segment& seg, size_t size, Fill fill) {
  BufferDesc& d = c.buffers[b];
  const uint64_t seq = d.seq.load(std::memory_order_relaxed);
  const size_t capacity = page_round(std::max(size + size / 4, 2 * seg.size()));
  Segment grown = create_segment(buffer_name(name, b, seq + 1), capacity);
  grown.seq = seq + 1;
  fail_at("shm.grow.after_create");
  fill(grown);
  d.seq.store(seq + 1, std::memory_order_relaxed);
  d.capacity.store(capacity, std::memory_order_relaxed);
  fail_at("shm.grow.after_record");
  remove_segment(buffer_name(name, b, seq).c_str());  // gone already if it was missing
  fail_at("shm.grow.after_unlink");
  seg = std::move(grown);
  c.buffer_grows.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

uint64_t Writer::publish(const SnapshotBuilder& builder) {
  return publish(builder, generation() + 1);
}

uint64_t Writer::publish(const SnapshotBuilder& builder, uint64_t generation) {
  Store::Control& c = store_.control();
  if (c.writer_pid.load(std::memory_order_relaxed) != getpid())
    throw Error(fmt::format("shm /{}: this process no longer holds the writer role", store_.name()));
  const uint64_t t0 = monotonic_ns();
  const uint64_t cur = c.current.load(std::memory_order_acquire);
  if (generation <= current_generation(cur))
    throw Error(fmt::format("shm /{}: cannot publish generation {}: generation {} is already published "
                            "(generations only increase)", store_.name(), generation, current_generation(cur)));
  if (generation >= (uint64_t{1} << 56))
    throw Error(fmt::format("shm /{}: generation {} does not fit in 56 bits", store_.name(), generation));
  int b = acquire_free_buffer(c, store_.impl_->shape, current_buffer(cur), cur != 0);
  if (b < 0) {
    c.publish_skipped.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  BufferDesc& d = c.buffers[b];
  Segment& seg = store_.impl_->writer_maps[b];
  const size_t size = builder.serialized_size();
  const uint64_t built_at = realtime_ns();
  auto fill = [&](Segment& into) { builder.serialize_into(std::span(into.data(), into.size()), generation, built_at); };

  // Sized by the mapping, not by BufferDesc::capacity: only the mapping is sure to be
  // what it says.
  const uint64_t seq = d.seq.load(std::memory_order_relaxed);
  map_recorded(seg, buffer_name(store_.name(), uint32_t(b), seq), seq);
  if (seg.size() < size) {
    grow_buffer(c, store_.name(), uint32_t(b), seg, size, fill);
  } else {
    fill(seg);
  }
  d.generation.store(generation, std::memory_order_relaxed);
  d.size.store(size, std::memory_order_relaxed);
  d.records.store(builder.record_count(), std::memory_order_relaxed);
  d.built_at_ns.store(built_at, std::memory_order_relaxed);
  // [P1] release: the snapshot bytes and the descriptor above happen before any
  // reader's acquire load [P2] that observes this word.
  c.current.store(pack_current(generation, uint32_t(b)), std::memory_order_release);

  c.publishes.fetch_add(1, std::memory_order_relaxed);
  c.last_publish_ns.store(realtime_ns(), std::memory_order_relaxed);
  c.last_build_ns.store(monotonic_ns() - t0, std::memory_order_relaxed);
  return generation;
}

void Writer::set_source_count(uint32_t n) {
  store_.control().source_count.store(std::min(n, kMaxSources), std::memory_order_release);
}

void Writer::set_source_status(uint32_t index, const SourceStatus& st) {
  if (index >= kMaxSources) return;
  SourceSlot& s = store_.control().sources[index];
  // Rounded up to even: a writer killed inside this function left seq odd, and one more
  // increment would turn the parity round for good (every complete write odd).
  const uint64_t seq = (s.seq.load(std::memory_order_relaxed) + 1) & ~uint64_t{1};
  s.seq.store(seq + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  copy_text(s.url, sizeof s.url, st.url);
  copy_text(s.format, sizeof s.format, st.format);
  s.last_status = st.last_status;
  s.last_fetch_ns = st.last_fetch_ns;
  s.last_latency_us = st.last_latency_us;
  s.bytes = st.bytes;
  s.samples = st.samples;
  fail_at("shm.source.mid_write");
  s.dropped = st.dropped;
  s.errors = st.errors;
  copy_text(s.last_error, sizeof s.last_error, st.last_error);
  s.last_error_ns = st.last_error_ns;
  s.seq.store(seq + 2, std::memory_order_release);
}

void Writer::set_status_text(std::string_view text) {
  StatusTextSlot& s = store_.control().status_text;
  const uint64_t seq = (s.seq.load(std::memory_order_relaxed) + 1) & ~uint64_t{1};
  s.seq.store(seq + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  size_t n = std::min(text.size(), kStatusTextBytes);
  std::memcpy(s.text, text.data(), n);
  s.length = uint32_t(n);
  s.seq.store(seq + 2, std::memory_order_release);
}

// ---------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------

struct Reader::Mapping {
  Segment segment;
};

Reader::Reader(Store& store, uint32_t slot) : store_(store), slot_(slot), maps_(kMaxBuffers) {
  if (slot >= store.reader_slots())
    throw Error(fmt::format("reader slot {} out of range (store has {})", slot, store.reader_slots()));
  ReaderSlot& s = store.control().slots[slot];
  int32_t owner = s.pid.load(std::memory_order_acquire);
  for (int busy_rounds = 0;;) {
    if (owner < 0 && busy_holder_alive(owner)) {  // another process is mid hand-over: brief
      if (++busy_rounds > 100000) throw Error(fmt::format("reader slot {} stays busy (pid {})", slot, -owner));
      std::this_thread::yield();
      owner = s.pid.load(std::memory_order_acquire);
      continue;
    }
    if (owner > 0 && owner != getpid() && process_alive(owner, s.start_token.load(std::memory_order_relaxed)))
      throw Error(fmt::format("reader slot {} is held by live pid {}", slot, owner));
    if (s.pid.compare_exchange_weak(owner, busy_mark(), std::memory_order_acq_rel)) break;
  }
  // The slot is ours; a dead previous owner's announcement goes with it.
  s.start_token.store(self_start_token(), std::memory_order_relaxed);
  s.reading.store(0, std::memory_order_relaxed);
  s.heartbeat_ns.store(monotonic_ns(), std::memory_order_relaxed);
  // release: whoever acquires this pid sees the token above with it.
  s.pid.store(getpid(), std::memory_order_release);
}

Reader::~Reader() {
  ReaderSlot& s = store_.control().slots[slot_];
  s.reading.store(0, std::memory_order_release);
  int32_t self = getpid();
  s.pid.compare_exchange_strong(self, 0, std::memory_order_acq_rel);
}

std::optional<Reader::Guard> Reader::enter() {
  Store::Control& c = store_.control();
  ReaderSlot& s = c.slots[slot_];
  if (s.reading.load(std::memory_order_relaxed) != 0)
    throw Error("Reader::enter() while a guard of this reader is alive");
  // [P2] acquire: pairs with [P1]; everything the writer wrote into the buffer before
  // publishing this word is visible to us.
  uint64_t w = c.current.load(std::memory_order_acquire);
  for (;;) {
    if (w == 0) return std::nullopt;
    s.reading.store(w, std::memory_order_relaxed);  // [P3] announce
    // [P4] The announce must be visible before we re-check current: with [P6] on the
    // writer's side, this rules out "writer missed our announce and we missed its
    // publish", the one interleaving in which it could reuse the buffer under us.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    uint64_t again = c.current.load(std::memory_order_acquire);  // [P2'] re-check
    if (again == w) break;
    w = again;  // a publish came in between: announce the newer word instead
  }
  const uint32_t b = current_buffer(w);
  try {
    const uint32_t buffers = store_.impl_->shape.buffers;
    if (b >= buffers) throw Error(fmt::format("shm /{}: current names buffer {} of {}", store_.name(), b, buffers));
    const uint64_t seq = c.buffers[b].seq.load(std::memory_order_relaxed);  // ordered by [P2]
    std::unique_ptr<Mapping>& m = maps_[b];
    if (!m || m->segment.seq != seq) {
      // Rare: first sight of this buffer, or it grew. The only system calls of a read.
      auto fresh = std::make_unique<Mapping>();
      fresh->segment = open_segment(buffer_name(store_.name(), b, seq), false);
      fresh->segment.seq = seq;
      m = std::move(fresh);
    }
    std::string why;
    auto view = SnapshotView::open(std::span<const std::byte>(m->segment.data(), m->segment.size()), &why);
    if (!view) throw Error(fmt::format("shm /{} buffer {}: {}", store_.name(), b, why));
    if (view->generation() != current_generation(w))
      throw Error(fmt::format("shm /{} buffer {}: holds generation {}, expected {}", store_.name(), b,
                              view->generation(), current_generation(w)));
    return Guard(this, *view);
  } catch (...) {
    leave();
    throw;
  }
}

void Reader::leave() {
  // [P5] release: our loads from the buffer happen before the writer's acquire load
  // [P6b] that sees 0 and lets it reuse the buffer.
  store_.control().slots[slot_].reading.store(0, std::memory_order_release);
}

Reader::Guard::Guard(Guard&& other) noexcept : reader_(other.reader_), view_(other.view_) {
  other.reader_ = nullptr;
}
Reader::Guard::~Guard() {
  if (reader_) reader_->leave();
}

void Reader::count_requests(uint64_t n) {
  // Only the owner writes its slot's counters: a plain load and store, no locked add.
  auto& r = store_.control().slots[slot_].requests;
  r.store(r.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}
void Reader::heartbeat() {
  store_.control().slots[slot_].heartbeat_ns.store(monotonic_ns(), std::memory_order_relaxed);
}
std::atomic<uint64_t>& Reader::counter(uint32_t i) {
  if (i >= kReaderCounters) throw Error(fmt::format("reader counter {} out of range", i));
  return store_.control().slots[slot_].counters[i];
}

}  // namespace shm
