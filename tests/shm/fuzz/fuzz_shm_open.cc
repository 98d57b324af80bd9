// fuzz_shm_open: any bytes as a control segment and a snapshot buffer (format in
// fuzz_shm_open.h), written into real POSIX shm segments and opened the way a reader
// process opens them: Store::open, info(), sources(), the counters, a Reader's claim and
// enter(), and every SnapshotView accessor on what it maps. Whatever the bytes, each
// call either works or throws shm::Error; anything else (a crash, an out-of-bounds read,
// another exception type) is a finding. Seeds: tests/data/fuzz/fuzz_shm_open, made by
// fuzz_shm_open_seeds (make_seeds.cc) from a real store.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>
#include <string>
#include <vector>

#include "shm/layout.h"
#include "tests/shm/fuzz/fuzz_shm_open.h"

namespace {

using namespace shm;

// Writes bytes into a new segment of at least min_size bytes (zero-padded).
void write_segment(const std::string& path, const std::byte* data, size_t size, size_t min_size) {
  shm_unlink(path.c_str());
  int fd = shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) std::abort();
  for (size_t done = 0; done < size;) {
    ssize_t n = write(fd, data + done, size - done);
    if (n <= 0) std::abort();
    done += size_t(n);
  }
  if (size < min_size && ftruncate(fd, off_t(min_size)) != 0) std::abort();
  close(fd);
}

// Reads every byte of s, so that AddressSanitizer sees a view that leaves its buffer.
volatile unsigned char sink;
void touch(std::string_view s) {
  unsigned char x = 0;
  for (char ch : s) x ^= static_cast<unsigned char>(ch);
  sink = x;
}

// Unlinks the segments of fuzzing processes that were killed mid-input (a timeout, the
// end of a timed run), so that long runs do not fill /dev/shm.
void remove_dead_runs() {
  DIR* d = opendir("/dev/shm");
  if (!d) return;
  std::vector<std::string> dead;
  while (dirent* e = readdir(d)) {
    std::string_view n = e->d_name;
    if (!n.starts_with("fuzz-shm-open-")) continue;
    pid_t pid = std::atoi(e->d_name + std::strlen("fuzz-shm-open-"));
    if (pid > 0 && kill(pid, 0) != 0 && errno == ESRCH) dead.push_back(fmt::format("/{}", n));
  }
  closedir(d);
  for (const std::string& path : dead) shm_unlink(path.c_str());
}

void exercise(const SnapshotView& v) {
  sink = static_cast<unsigned char>(v.generation() ^ v.built_at_ns() ^ v.size() ^ v.record_count() ^ v.list_count());
  const size_t records = std::min<size_t>(v.record_count() + 1, 256);
  for (size_t i = 0; i < records; ++i) {
    auto r = v.record(i);
    if (!r) continue;
    touch(r->key);
    touch(r->value);
    if (auto found = v.find(r->key)) touch(*found);
  }
  if (auto none = v.find("no such key")) touch(*none);
  std::vector<std::string_view> names = v.list_names();
  if (names.size() > 64) names.resize(64);
  names.push_back("no such list");
  for (std::string_view name : names) {
    touch(name);
    for (const Record& r : v.list(name)) {
      touch(r.key);
      touch(r.value);
    }
  }
  std::string why;
  v.verify(&why);
}

void open_store(const std::string& name) {
  try {
    auto store = Store::open(name);
    StoreInfo info = store->info();
    sink = static_cast<unsigned char>(info.generation ^ info.buffer_capacity.size() ^ info.readers.size());
    for (const SourceStatus& s : store->sources()) {
      touch(s.url);
      touch(s.format);
      touch(s.last_error);
    }
    for (uint32_t i = 0; i < kServiceCounters; ++i) sink = static_cast<unsigned char>(store->service_counter(i).load());
    for (uint32_t i = 0; i <= store->reader_slots(); ++i) sink = static_cast<unsigned char>(store->reader_counter(i, 0));
    Reader reader(*store, 0);
    reader.heartbeat();
    reader.count_requests(1);
    for (int round = 0; round < 2; ++round) {  // the second enter() uses the cached mapping
      if (auto guard = reader.enter()) exercise(guard->view());
    }
  } catch (const Error&) {
    // A refusal is a correct answer to bad bytes.
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  using namespace fuzz_shm_open;
  if (size < kHeaderBytes) return 0;
  const uint8_t flags = data[0];
  uint32_t control_len;
  std::memcpy(&control_len, data + 1, 4);
  const size_t control_bytes = std::min<size_t>(control_len, size - kHeaderBytes);
  const unsigned char* buffer = data + kHeaderBytes + control_bytes;
  const size_t buffer_bytes = size - kHeaderBytes - control_bytes;

  // The control bytes, in a zeroed image of a whole control segment.
  static auto* image = new Store::Control;
  std::memset(static_cast<void*>(image), 0, sizeof *image);
  std::memcpy(static_cast<void*>(image), data + kHeaderBytes, std::min(control_bytes, sizeof *image));
  image->uid ^= geteuid();
  // A slot marked busy by a live process makes Reader::Reader wait 100,000 rounds
  // before it refuses: correct, but it would slow the fuzzer a hundredfold. Such a
  // mark is cleared; dead or impossible holders are kept.
  const int32_t holder = image->slots[0].pid.load();
  if (holder < 0 && holder != INT32_MIN && kill(-holder, 0) == 0) image->slots[0].pid.store(0);
  std::vector<std::byte> control(reinterpret_cast<const std::byte*>(image),
                                 reinterpret_cast<const std::byte*>(image) + sizeof *image);
  if (control_bytes > sizeof *image)
    control.insert(control.end(), reinterpret_cast<const std::byte*>(data) + kHeaderBytes + sizeof *image,
                   reinterpret_cast<const std::byte*>(buffer));
  if (flags & kExactControl) control.resize(control_bytes);

  static const std::string name = [] {
    remove_dead_runs();
    return fmt::format("fuzz-shm-open-{}", getpid());
  }();
  const std::string control_path = "/" + name;
  write_segment(control_path, control.data(), control.size(), 0);
  std::string buffer_path;
  const uint32_t b = current_buffer(image->current.load());
  if (buffer_bytes > 0 && b < kMaxBuffers) {
    buffer_path = fmt::format("/{}.{}.{}", name, b, image->buffers[b].seq.load());
    write_segment(buffer_path, reinterpret_cast<const std::byte*>(buffer), buffer_bytes, 0);
  }

  open_store(name);
  // The snapshot bytes on their own, as a replica would open a copy.
  std::vector<std::byte> copy(reinterpret_cast<const std::byte*>(buffer),
                              reinterpret_cast<const std::byte*>(buffer) + buffer_bytes);
  if (auto view = SnapshotView::open(copy, nullptr)) exercise(*view);

  shm_unlink(control_path.c_str());
  if (!buffer_path.empty()) shm_unlink(buffer_path.c_str());
  return 0;
}
