// bench_writer: the writer's tick at scale, driven in process with a synthetic clock.
//
// A standalone writer's tick is apply (the synthetic source's samples) + build (expiry,
// aggregates, rendering every body into a shm::SnapshotBuilder) + publish (serialize
// into the shared buffer). This runs that loop on `synthetic://?hosts=N/100&metrics=100`
// (N series, one sample per series per tick) at 2 s ticks of a 60 s window without
// sleeping: 31 ticks fill the window (30 one-sample intervals; only the last of them
// builds), then TICKS ticks are measured. Reported, with each figure's ratio to its
// target (targets scaled linearly from a million series):
//   writer CPU per tick (this process, all threads) and wall time per tick, split into
//   apply / build / serialize; writer RSS (VmRSS: state, builder and one serialized
//   buffer; a real writer maps two shared buffers); state bytes per series
//   (Aggregator::memory_bytes); snapshot bytes per series; checkpoint bytes per series
//   and its write / restore time.
//
// With PARTS > 1, the same samples also go, split by common::partition_of(key, PARTS),
// to PARTS aggregators, and each measured tick also builds them as one snapshot
// (build_parts, a node holding PARTS partitions): its CPU time against the single
// build's, and whether the bytes are the same (they must be); and builds them again with
// partition views (BuildPartsOptions), whose CPU time is given against the build
// without, the two alternating which goes first. RSS then counts all of them.
//
// Usage: bench_writer [series=1000000] [ticks=5] [threads=0: the default] [parts=1].
// Figures are medians over the measured ticks.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "bench/measure.h"

#include "common/partitions.h"
#include "ingest/ingest.h"
#include "ingest/internal.h"
#include "ingest/replica/replica.h"
#include "ingest/source/synthetic.h"

using namespace ingest;

namespace {

using bench::kSec;
using bench::kT0;
using bench::median;

double clock_s(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}
double cpu_now() { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }
double wall_now() { return clock_s(CLOCK_MONOTONIC); }

size_t rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
  return 0;
}

struct Phase {
  std::vector<double> cpu, wall;
  void add(double c, double w) {
    cpu.push_back(c);
    wall.push_back(w);
  }
};

}  // namespace

// Long as one piece: the benchmark read top to bottom (set-up, timed ticks, report).
int main(int argc, char** argv) {
  size_t series = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1'000'000;
  int ticks = argc > 2 ? std::atoi(argv[2]) : 5;
  size_t threads = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 0;
  const auto n_parts = static_cast<uint32_t>(argc > 4 ? std::strtoul(argv[4], nullptr, 10) : 1);
  if (series < 100 || ticks < 1 || n_parts < 1) {
    fmt::print(stderr, "usage: bench_writer [series>=100] [ticks>=1] [threads, 0: default] "
                       "[parts>=1]\n");
    return 2;
  }
  Config config;
  config.interval = std::chrono::milliseconds(2000);
  config.window = std::chrono::milliseconds(60000);
  config.max_series = config.max_series_per_source = series;
  config.writer_threads = threads;
  config = config.resolved();
  const std::string url = fmt::format("synthetic://?hosts={}&metrics=100", series / 100);
  SyntheticSource source(url);
  const std::vector<std::string> urls{url};
  Aggregator aggregator(config);
  Replica replica;
  replica.reconcile_sources(urls, aggregator);
  const uint32_t source_id = replica.source_id(url);
  shm::SnapshotBuilder builder;
  std::vector<std::byte> shared;  // stands for the shared buffer the writer publishes into
  std::vector<Aggregator> parts;  // parts > 1: the same series split by partition
  for (uint32_t p = 0; n_parts > 1 && p < n_parts; ++p) parts.emplace_back(config);
  std::vector<std::vector<Sample>> split(n_parts);
  std::vector<Label> label_scratch;
  std::string key;
  shm::SnapshotBuilder parts_builder, views_builder;
  Phase parts_build, views_build;  // build_parts without and with partition views
  bool parts_same = true;

  constexpr int kFill = 31;  // ticks 0..30: 30 intervals of the 60 s window
  Phase apply, build, serialize, total;
  for (int t = 0; t < kFill + ticks; ++t) {
    const int64_t clock = kT0 + t * 2 * kSec;
    std::span<const Sample> samples = source.generate(clock);
    const double c0 = cpu_now(), w0 = wall_now();
    aggregator.apply(source_id, samples, clock);
    const double c1 = cpu_now(), w1 = wall_now();
    if (n_parts > 1) {
      for (auto& v : split) v.clear();
      for (const Sample& s : samples) {
        key.clear();
        append_series_key(key, s.metric, s.suffix, sorted_sample_labels(s, label_scratch));
        split[common::partition_of(key, n_parts)].push_back(s);
      }
      for (uint32_t p = 0; p < n_parts; ++p) parts[p].apply(source_id, split[p], clock);
    }
    if (t < kFill - 1) {
      aggregator.expire(clock);
      for (Aggregator& p : parts) p.expire(clock);
      continue;
    }
    aggregator.build(builder, clock);
    const double c2 = cpu_now(), w2 = wall_now();
    if (shared.size() < builder.serialized_size()) shared.resize(builder.serialized_size() * 5 / 4);
    builder.serialize_into(shared, static_cast<uint64_t>(t + 1), static_cast<uint64_t>(clock));
    const double c3 = cpu_now(), w3 = wall_now();
    if (n_parts > 1) {
      std::vector<AggregatorPart> given;
      for (uint32_t p = 0; p < n_parts; ++p) given.push_back(AggregatorPart{&parts[p], clock, p});
      // Alternately first, so that neither build always finds the caches the other left.
      for (int k = 0; k < 2; ++k) {
        const bool views = (k + t) % 2 == 1;
        const double c4 = cpu_now(), w4 = wall_now();
        build_parts(views ? views_builder : parts_builder, given,
                    BuildPartsOptions{.partition_views = views});
        if (t >= kFill) (views ? views_build : parts_build).add(cpu_now() - c4, wall_now() - w4);
      }
      parts_same = parts_same && parts_builder.serialize(1, 0) == builder.serialize(1, 0);
    }
    if (t < kFill) continue;
    apply.add(c1 - c0, w1 - w0);
    build.add(c2 - c1, w2 - w1);
    serialize.add(c3 - c2, w3 - w2);
    total.add(c3 - c0, w3 - w0);
  }
  const size_t rss = rss_bytes();
  const size_t state = aggregator.memory_bytes();
  const size_t snapshot = builder.serialized_size();
  const double c0 = cpu_now();
  std::string checkpoint = replica.checkpoint(aggregator, static_cast<uint64_t>(kFill + ticks));
  const double c1 = cpu_now();
  Replica restored;
  std::unique_ptr<Aggregator> restored_agg;
  uint64_t seq = 0;
  Replica::restore(checkpoint, config, &restored, &restored_agg, &seq);
  const double c2 = cpu_now();

  const double n = static_cast<double>(series);
  const double scale = n / 1e6;  // targets are for a million series
  auto ratio = [](double v, double target) { return fmt::format("{:.2f}x target", v / target); };
  fmt::print("bench_writer: {} series (synthetic hosts={} metrics=100), 2 s ticks, 60 s window full, "
             "{} ticks measured, writer_threads {}\n", series, series / 100, ticks,
             config.writer_threads);
  fmt::print("  writer CPU per tick    {:8.1f} ms  (apply {:.1f}, build {:.1f}, serialize {:.1f})  "
             "target <= {:.0f} ms: {}\n",
             median(total.cpu) * 1e3, median(apply.cpu) * 1e3, median(build.cpu) * 1e3,
             median(serialize.cpu) * 1e3, 1000 * scale, ratio(median(total.cpu), 1.0 * scale));
  fmt::print("  writer wall per tick   {:8.1f} ms  (apply {:.1f}, build {:.1f}, serialize {:.1f})  "
             "target <= {:.0f} ms on 2 threads: {}\n",
             median(total.wall) * 1e3, median(apply.wall) * 1e3, median(build.wall) * 1e3,
             median(serialize.wall) * 1e3, 600 * scale, ratio(median(total.wall), 0.6 * scale));
  if (n_parts > 1)
    fmt::print("  build over {} parts    {:8.1f} ms CPU, {:.1f} wall: {:.2f}x the single build's CPU; "
               "bytes {}\n",
               n_parts, median(parts_build.cpu) * 1e3, median(parts_build.wall) * 1e3,
               median(parts_build.cpu) / median(build.cpu),
               parts_same ? "the same" : "DIFFERENT (a fault)");
  if (n_parts > 1)
    fmt::print("  with partition views   {:8.1f} ms CPU, {:.1f} wall: {:.3f}x the build over parts "
               "without (CPU); snapshot {:.1f} B per series ({:.1f} without)\n",
               median(views_build.cpu) * 1e3, median(views_build.wall) * 1e3,
               median(views_build.cpu) / median(parts_build.cpu),
               views_builder.serialized_size() / n, parts_builder.serialized_size() / n);
  fmt::print("  writer RSS             {:8.1f} MB  target <= {:.0f} MB: {}\n", rss / 1e6, 2500 * scale,
             ratio(static_cast<double>(rss), 2.5e9 * scale));
  fmt::print("  state per series       {:8.1f} B   target <= 1024 B: {}\n", state / n,
             ratio(state / n, 1024));
  fmt::print("  snapshot per series    {:8.1f} B   target <= 400 B: {}\n", snapshot / n,
             ratio(snapshot / n, 400));
  fmt::print("  checkpoint per series  {:8.1f} B   target <= 64 B: {}  (write {:.0f} ms = {:.0f} MB/s "
             "of state, restore {:.0f} ms)\n",
             checkpoint.size() / n, ratio(checkpoint.size() / n, 64), (c1 - c0) * 1e3,
             state / 1e6 / (c1 - c0), (c2 - c1) * 1e3);
  return parts_same ? 0 : 1;
}
