// bench_shm: the two figures the store promises.
//   read:    enter a read, look up a random existing key among 1,000,000, leave (ns/op)
//   publish: build and publish 1,000,000 records of about 200 bytes (s)
//   dram:    one dependent random load in a buffer as large as the snapshot (ns): the
//            floor under any lookup whose data is not in cache, measured in the same run
//            so the lookup can be read as a number of memory round trips
// Each figure is the median of several rounds; run on an otherwise idle machine.
//   usage: bench_shm [keys=1000000] [rounds=7]
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fmt/format.h>
#include <random>
#include <unistd.h>
#include <vector>

#include "shm/shm.h"

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string key_of(size_t i) { return fmt::format("s:cpu.usage{{dc=\"eu-{}\",host=\"h{:06}\"}}", i % 4, i); }

shm::SnapshotBuilder make_snapshot(size_t keys) {
  shm::SnapshotBuilder b;
  std::string value(200, 'v');
  for (size_t i = 0; i < keys; ++i) {
    auto s = fmt::format("{{\"key\":{},\"count\":{}}}", i, i * 7);
    value.replace(0, s.size(), s);
    b.add(key_of(i), value);
  }
  return b;
}

// Pointer chase through a random cycle of cache lines: every load depends on the last.
double dram_latency_ns(size_t bytes) {
  size_t lines = bytes / 64;
  std::vector<size_t> order(lines);
  for (size_t i = 0; i < lines; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937_64(7));
  std::vector<size_t> next(lines * 8);
  for (size_t i = 0; i < lines; ++i) next[order[i] * 8] = order[(i + 1) % lines] * 8;
  constexpr size_t kLoads = 4'000'000;
  size_t at = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < kLoads; ++i) at = next[at];
  double ns = seconds_since(t0) * 1e9 / kLoads;
  return at == size_t(-1) ? 0 : ns;
}

}  // namespace

int main(int argc, char** argv) {
  const size_t keys = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1'000'000;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 7;
  const std::string name = fmt::format("tmyd-bench-{}", getpid());
  shm::StoreOptions o;
  o.name = name;
  auto store = shm::Store::create(o);
  shm::Writer writer(*store);

  // Publish: the builder is filled once (that is ingest's cost, measured there); each
  // round times serialize + checksum + publish, growing the buffer in the first rounds.
  auto t_fill = std::chrono::steady_clock::now();
  shm::SnapshotBuilder snapshot = make_snapshot(keys);
  double fill_s = seconds_since(t_fill);
  std::vector<double> publish_s;
  for (int r = 0; r < rounds; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    if (writer.publish(snapshot) == 0) return fmt::print(stderr, "publish skipped\n"), 1;
    publish_s.push_back(seconds_since(t0));
  }

  // Read: random keys chosen up front so the loop measures the store, not the RNG.
  shm::Reader reader(*store, 0);
  std::mt19937_64 rng(42);
  constexpr size_t kLookups = 2'000'000;
  std::vector<std::string> probe(std::min<size_t>(keys, 1'000'000));  // not cache-resident
  for (auto& k : probe) k = key_of(rng() % keys);
  std::vector<double> read_ns;
  size_t found = 0;
  for (int r = 0; r < rounds; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < kLookups; ++i) {
      auto guard = reader.enter();
      found += guard->view().find(probe[i % probe.size()]).has_value();
    }
    read_ns.push_back(seconds_since(t0) * 1e9 / kLookups);
  }
  if (found != kLookups * size_t(rounds)) return fmt::print(stderr, "lookups missed\n"), 1;

  std::vector<double> dram_ns;
  for (int r = 0; r < 3; ++r) dram_ns.push_back(dram_latency_ns(store->info().snapshot_bytes));

  shm::StoreInfo info = store->info();
  fmt::print("keys                 {}\n", keys);
  fmt::print("snapshot bytes       {} ({:.1f} MiB)\n", info.snapshot_bytes, info.snapshot_bytes / 1048576.0);
  fmt::print("builder fill         {:.3f} s (once)\n", fill_s);
  fmt::print("build+publish median {:.3f} s  (rounds: {})\n", median(publish_s), fmt::join(publish_s, " "));
  fmt::print("read median          {:.1f} ns/lookup (enter + find + leave; rounds: {:.1f})\n", median(read_ns),
             fmt::join(read_ns, " "));
  fmt::print("dram random load      {:.1f} ns (same size as the snapshot; rounds: {:.1f})\n", median(dram_ns),
             fmt::join(dram_ns, " "));
  fmt::print("read / dram           {:.2f}\n", median(read_ns) / median(dram_ns));
  shm::Store::remove(name);
  return 0;
}
