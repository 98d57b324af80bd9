// fuzz_shm_open_seeds DIR: writes the seed inputs of fuzz_shm_open into DIR (format in
// fuzz_shm_open.h), taken from a real store: Store::create, a Writer that publishes a
// snapshot of five records and a list, and the bytes of its control segment (trimmed
// of its zero tail, which the fuzzer pads back) and of the current buffer (trimmed to
// the snapshot). Then broken variants: a truncated control segment, a truncated
// snapshot, a missing buffer, a buffer count of 9, a current word naming buffer 7, a
// snapshot header claiming a huge record count, and reader slot 0 marked busy by the
// impossible holder -INT32_MIN.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstddef>
#include <cstring>
#include <fmt/format.h>
#include <fstream>
#include <string>
#include <vector>

#include "shm/layout.h"
#include "tests/shm/fuzz/fuzz_shm_open.h"

namespace {

using Bytes = std::vector<unsigned char>;

Bytes read_segment(const std::string& path) {
  int fd = shm_open(path.c_str(), O_RDONLY, 0);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) throw std::runtime_error("cannot read " + path);
  Bytes bytes(size_t(st.st_size));
  if (pread(fd, bytes.data(), bytes.size(), 0) != ssize_t(bytes.size())) throw std::runtime_error("short read " + path);
  close(fd);
  return bytes;
}

void write_seed(const std::string& dir, const std::string& name, uint8_t flags, const Bytes& control,
                const Bytes& buffer) {
  Bytes out{flags};
  const uint32_t len = uint32_t(control.size());
  out.insert(out.end(), reinterpret_cast<const unsigned char*>(&len), reinterpret_cast<const unsigned char*>(&len) + 4);
  out.insert(out.end(), control.begin(), control.end());
  out.insert(out.end(), buffer.begin(), buffer.end());
  std::ofstream(dir + "/" + name, std::ios::binary).write(reinterpret_cast<const char*>(out.data()), std::streamsize(out.size()));
}

template <class T>
void poke(Bytes& bytes, size_t at, T value) {
  std::memcpy(bytes.data() + at, &value, sizeof value);
}

// Offset of a field of the control segment (offsetof does not apply: it holds atomics).
const shm::Store::Control probe{};
size_t offset(const void* field) {
  return size_t(static_cast<const char*>(field) - reinterpret_cast<const char*>(&probe));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    fmt::print(stderr, "usage: fuzz_shm_open_seeds DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  const std::string name = fmt::format("fuzz-shm-seeds-{}", getpid());
  shm::StoreOptions o;
  o.name = name;
  o.buffer_count = 2;
  o.reader_slots = 4;
  o.initial_buffer_bytes = 4096;
  Bytes control, buffer;
  {
    auto store = shm::Store::create(o);
    shm::Writer writer(*store);
    shm::SnapshotBuilder b;
    for (int i = 0; i < 5; ++i) b.add(fmt::format("series/cpu{}", i), fmt::format("{{\"value\":{}}}", i));
    b.add_list("metric/cpu", std::vector<std::string>{"series/cpu0", "series/cpu3"});
    writer.publish(b);
    const shm::StoreInfo info = store->info();
    control = read_segment("/" + name);
    buffer = read_segment(fmt::format("/{}.{}.1", name, info.current_buffer));
    buffer.resize(info.snapshot_bytes);
  }
  shm::Store::remove(name);

  // Zero tail dropped (the fuzzer pads it back); uid 0 means the fuzzing process's uid.
  while (!control.empty() && control.back() == 0) control.pop_back();
  poke<uint32_t>(control, offset(&probe.uid), 0);

  write_seed(dir, "valid", 0, control, buffer);
  write_seed(dir, "missing-buffer", 0, control, {});
  Bytes short_control(control.begin(), control.begin() + 100);
  write_seed(dir, "truncated-control", fuzz_shm_open::kExactControl, short_control, buffer);
  Bytes half(buffer.begin(), buffer.begin() + buffer.size() / 2);
  write_seed(dir, "truncated-snapshot", 0, control, half);
  Bytes nine = control;
  poke<uint32_t>(nine, offset(&probe.buffer_count), 9);
  write_seed(dir, "buffer-count-9", 0, nine, buffer);
  Bytes seven = control;
  const size_t current_at = offset(&probe.current);
  uint64_t word;
  std::memcpy(&word, seven.data() + current_at, 8);
  poke<uint64_t>(seven, current_at, (word & ~uint64_t{0xff}) | 7);
  write_seed(dir, "current-buffer-7", 0, seven, buffer);
  Bytes huge = buffer;
  poke<uint32_t>(huge, offsetof(shm::SnapshotHeader, record_count), 0x7fffffff);
  write_seed(dir, "huge-record-count", 0, control, huge);
  Bytes busy = control;  // reader slot 0 busy, its holder "pid" -INT32_MIN
  busy.resize(offset(&probe.slots[1]));
  poke<int32_t>(busy, offset(&probe.slots[0].pid), INT32_MIN);
  write_seed(dir, "slot-busy-int-min", 0, busy, buffer);
  fmt::print("wrote 8 seeds to {} (control {} bytes, snapshot {} bytes)\n", dir, control.size(), buffer.size());
  return 0;
}
