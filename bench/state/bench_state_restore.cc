// bench_state_restore: what recovering a standalone writer's window from its state dir
// costs, in process (bench/state_recovery.sh measures the whole service).
//
// A synthetic source (synthetic://?hosts=N/100&metrics=100: N series, one sample per
// series per tick) feeds a Replica and an Aggregator through the leader's path (stage,
// apply: the dictionary is filled as a state dir's writer fills it) until a 60 s window
// is full at the given interval; then the checkpoint of it is written RUNS times and
// restored RUNS times (Replica::restore, what Pipeline::restore runs), and its steps
// timed on their own: the zstd frame decompressed, Aggregator::load of the window's
// part; the rest of a restore is the settings, sources and dictionary. Then the restored
// state replays the next two ticks' entries as recovery replays the log after the
// checkpoint (unseal, apply, expire; the first after a restore finds every series by its
// key). The restored state's checkpoint must equal the original's (the exit status says
// so), and after the entries the leader's.
//
// Also printed: what the window's values would take encoded as Gorilla encodes them (each
// value XORed with the series' previous one, its meaningful bits only, bit-packed; times
// regular, so 1 bit each): a bound on what a compact checkpoint of these values can
// reach, since the synthetic gauges carry full-precision random mantissas.
//
// Usage: bench_state_restore [series=1000000] [interval_s=2] [runs=3] [file]. With a file
// that exists, its checkpoint is restored instead of filling a window (for a profiler:
// restores only); with one that does not, the checkpoint is also written there. Times are this
// thread's CPU time (CLOCK_THREAD_CPUTIME_ID), medians over the runs; MB/s is of the
// decompressed checkpoint payload.
#include <algorithm>
#include <bit>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "bench/measure.h"

#include "ingest/ingest.h"
#include "ingest/replica/replica.h"
#include "ingest/replica/wire.h"
#include "ingest/source/synthetic.h"

using namespace ingest;

namespace {

using bench::kSec;
using bench::kT0;
using bench::median;
using bench::thread_cpu_now;

// Gorilla's value encoding of a series, in bits (Pelkonen et al., VLDB 2015, 4.1.2).
struct GorillaBits {
  uint64_t previous = 0;
  int lead = -1, trail = 0;  // the previous meaningful window; -1: no value yet
  uint64_t add(double value) {
    uint64_t bits;
    std::memcpy(&bits, &value, 8);
    const uint64_t x = bits ^ previous;
    previous = bits;
    if (lead < 0) {
      lead = 64;
      return 64;
    }
    if (x == 0) return 1;
    const int l = std::min(std::countl_zero(x), 31), t = std::countr_zero(x);
    if (lead <= 63 && l >= lead && t >= trail) return 2 + static_cast<uint64_t>(64 - lead - trail);
    lead = l;
    trail = t;
    return 2 + 5 + 6 + static_cast<uint64_t>(64 - l - t);
  }
};


}  // namespace

int main(int argc, char** argv) {
  const size_t series = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1'000'000;
  const int interval_s = argc > 2 ? std::atoi(argv[2]) : 2;
  const int runs = argc > 3 ? std::atoi(argv[3]) : 3;
  if (series < 100 || interval_s < 1 || interval_s > 60 || runs < 1) {
    fmt::print(stderr, "usage: bench_state_restore [series>=100] [interval_s 1..60] [runs>=1]\n");
    return 2;
  }
  const char* file = argc > 4 ? argv[4] : nullptr;
  Config config;
  config.interval = std::chrono::seconds(interval_s);
  config.window = std::chrono::seconds(60);
  config.max_series = config.max_series_per_source = series;
  config = config.resolved();
  const std::string url = fmt::format("synthetic://?hosts={}&metrics=100", series / 100);
  SyntheticSource source(url);
  const std::vector<std::string> urls{url};
  if (file) {
    std::ifstream in(file, std::ios::binary);
    if (in) {
      std::string checkpoint((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      std::vector<double> restore_s;
      for (int r = 0; r < runs; ++r) {
        Replica restored;
        std::unique_ptr<Aggregator> restored_agg;
        uint64_t seq = 0;
        const double c0 = thread_cpu_now();
        Replica::restore(checkpoint, config, &restored, &restored_agg, &seq);
        restore_s.push_back(thread_cpu_now() - c0);
      }
      fmt::print("bench_state_restore: {}: {:.1f} MB, restore {:.0f} ms (median of {})\n", file,
                 static_cast<double>(checkpoint.size()) / 1e6, median(restore_s) * 1e3, runs);
      return 0;
    }
  }
  Aggregator aggregator(config);
  Replica replica;
  const int ticks = 60 / interval_s + 1;
  std::vector<GorillaBits> gorilla(series);
  uint64_t gorilla_bits = 0, gorilla_values = 0;
  const double f0 = thread_cpu_now();
  for (int t = 0; t < ticks; ++t) {
    const int64_t clock = kT0 + t * interval_s * kSec;
    std::span<const Sample> samples = source.generate(clock);
    for (size_t i = 0; i < samples.size() && i < series; ++i) {
      const uint64_t bits = gorilla[i].add(samples[i].value);
      if (t == 0) continue;  // the window's first value is its series' first: 64 bits, counted below
      gorilla_bits += bits + 1;
      ++gorilla_values;
    }
    replica.stage_begin(config, urls);
    replica.stage(0, samples, clock);
    replica.apply(replica.take_staged(), static_cast<uint64_t>(t + 1), clock, aggregator, nullptr, nullptr);
    aggregator.expire(clock);
  }
  const double fill_s = thread_cpu_now() - f0;
  const auto seq = static_cast<uint64_t>(ticks);

  std::vector<double> write_s, restore_s, decompress_s, load_s, entry_s;
  std::string checkpoint;
  for (int r = 0; r < runs; ++r) {
    const double c0 = thread_cpu_now();
    checkpoint = replica.checkpoint(aggregator, seq);
    write_s.push_back(thread_cpu_now() - c0);
  }
  if (file) std::ofstream(file, std::ios::binary) << checkpoint;
  std::string window;  // the Aggregator's part, the payload's tail
  aggregator.save(window);
  size_t payload_bytes = 0;
  bool same = true;
  for (int r = 0; r < runs; ++r) {
    double c0 = thread_cpu_now();
    std::string payload =
        wire::decompress(std::string_view(checkpoint).substr(Replica::kCheckpointHeaderBytes), size_t{1} << 36);
    decompress_s.push_back(thread_cpu_now() - c0);
    payload_bytes = payload.size();
    {
      Aggregator loaded(config);
      c0 = thread_cpu_now();
      loaded.load(std::string_view(payload).substr(payload.size() - window.size()));
      load_s.push_back(thread_cpu_now() - c0);
    }
    Replica restored;
    std::unique_ptr<Aggregator> restored_agg;
    uint64_t restored_seq = 0;
    c0 = thread_cpu_now();
    Replica::restore(checkpoint, config, &restored, &restored_agg, &restored_seq);
    restore_s.push_back(thread_cpu_now() - c0);
      if (r == 0) same = restored_seq == seq && restored.checkpoint(*restored_agg, seq) == checkpoint;
    if (r + 1 < runs) continue;
    for (int e = 0; e < 2; ++e) {  // the entries after the checkpoint, on the last restored state
      const int64_t clock = kT0 + (ticks + e) * interval_s * kSec;
      replica.stage_begin(config, urls);
      replica.stage(0, source.generate(clock), clock);
      std::string payload = replica.take_staged();
      const std::string entry = Replica::seal_entry(seq + 1 + e, clock, payload);
      replica.apply(payload, seq + 1 + e, clock, aggregator, nullptr, nullptr);
      aggregator.expire(clock);
      c0 = thread_cpu_now();
      std::string got =
          wire::decompress(std::string_view(entry).substr(Replica::kEntryHeaderBytes), Replica::kMaxEntryPayload);
      restored.apply(got, seq + 1 + e, clock, *restored_agg, nullptr, nullptr);
      restored_agg->expire(clock);
      entry_s.push_back(thread_cpu_now() - c0);
    }
    same = same && restored.checkpoint(*restored_agg, seq + 2) == replica.checkpoint(aggregator, seq + 2);
  }
  const double n = static_cast<double>(series);
  const double restore = median(restore_s), decompress = median(decompress_s), load = median(load_s);
  fmt::print("bench_state_restore: {} series (synthetic hosts={} metrics=100), {} s interval, 60 s window, "
             "{} ticks (fill {:.1f} s of CPU), {} runs\n",
             series, series / 100, interval_s, ticks, fill_s, runs);
  fmt::print("  checkpoint  {:.1f} MB = {:.1f} B/series (payload {:.1f} MB = {:.1f} B/series)\n",
             static_cast<double>(checkpoint.size()) / 1e6, static_cast<double>(checkpoint.size()) / n,
             static_cast<double>(payload_bytes) / 1e6, static_cast<double>(payload_bytes) / n);
  const double per_value = static_cast<double>(gorilla_bits) / 8 / static_cast<double>(gorilla_values);
  fmt::print("  Gorilla-encoded values (and regular times) of the window: {:.2f} B per value after the first, "
             "{:.0f} B/series for {} values\n",
             per_value, 8 + per_value * (ticks - 1), ticks);
  fmt::print("  write       {:8.0f} ms ({:.0f} MB/s of payload)\n", median(write_s) * 1e3,
             static_cast<double>(payload_bytes) / 1e6 / median(write_s));
  fmt::print("  restore     {:8.0f} ms ({:.0f} MB/s of payload): decompress {:.0f}, window load {:.0f}, "
             "settings + sources + dictionary {:.0f}\n",
             restore * 1e3, static_cast<double>(payload_bytes) / 1e6 / restore, decompress * 1e3, load * 1e3,
             (restore - decompress - load) * 1e3);
  fmt::print("  entries replayed after it: {:.0f} ms, then {:.0f} ms\n", entry_s[0] * 1e3, entry_s[1] * 1e3);
  fmt::print("  restored state's checkpoint {}\n", same ? "equal" : "DIFFERS");
  return same ? 0 : 1;
}
