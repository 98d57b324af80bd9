// bench_cluster_entry: the cost of replication on the ingest side (ingest/replica/replica.h).
//
// A synthetic source (synthetic://?hosts=H&metrics=10: gauges and counters, one sample
// per series per tick) feeds a leader's Replica and Aggregator for a full window
// (60 s of 2 s ticks), and a follower applies every entry. Per tick after the first:
//   entry bytes per sample (zstd frame and header, as appended to the log),
//   leader: stage, apply (checks + Aggregator::apply), seal (statuses + zstd) per sample,
//   follower: unseal (zstd) + apply per sample,
//   standalone: Aggregator::apply of the same samples, for comparison;
// and the first entry (every series defined), the checkpoint of the full window (bytes,
// time to write and to restore), and that leader and follower checkpoints are equal.
//
// Usage: bench_cluster_entry [series=100000] [ticks=31]. Times are this thread's CPU
// time; per-tick figures are medians.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "bench/measure.h"

#include "ingest/ingest.h"
#include "ingest/replica/replica.h"
#include "ingest/replica/wire.h"
#include "ingest/source/synthetic.h"

using namespace ingest;

using bench::kSec;
using bench::kT0;
using bench::median;
using bench::thread_cpu_now;

// Long as one piece: the benchmark read top to bottom (set-up, timed ticks, checkpoint, report).
int main(int argc, char** argv) {
  size_t series = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 100'000;
  int ticks = argc > 2 ? std::atoi(argv[2]) : 31;
  if (series < 10 || ticks < 2) {
    fmt::print(stderr, "usage: bench_cluster_entry [series>=10] [ticks>=2]\n");
    return 2;
  }
  Config config;
  config.interval = std::chrono::milliseconds(2000);
  config.window = std::chrono::milliseconds(60000);
  config.max_series = config.max_series_per_source = series;
  config = config.resolved();
  const std::string url = fmt::format("synthetic://?hosts={}&metrics=10&seed=1", series / 10);
  SyntheticSource source(url);
  const std::vector<std::string> urls{url};
  Aggregator leader_agg(config), follower_agg(config), standalone(config);
  Replica leader, follower;
  std::vector<shm::SourceStatus> statuses(1);
  statuses[0].url = url;

  std::vector<double> stage_s, apply_s, seal_s, follow_s, alone_s, bytes;
  size_t first_bytes = 0;
  for (int t = 0; t < ticks; ++t) {
    const int64_t clock = kT0 + t * 2 * kSec;
    std::span<const Sample> samples = source.generate(clock);
    double t0 = thread_cpu_now();
    leader.stage_begin(config, urls);
    leader.stage(0, samples, clock);
    double t1 = thread_cpu_now();
    std::string payload = leader.take_staged();
    leader.apply(payload, t + 1, clock, leader_agg, nullptr, nullptr);
    double t2 = thread_cpu_now();
    Replica::put_statuses(payload, statuses);
    std::string entry = Replica::seal_entry(t + 1, clock, payload);
    double t3 = thread_cpu_now();
    uint64_t seq;
    int64_t entry_clock;
    Replica::read_entry_header(entry, &seq, &entry_clock);
    std::string got = wire::decompress(std::string_view(entry).substr(Replica::kEntryHeaderBytes), size_t{1} << 31);
    std::vector<shm::SourceStatus> got_statuses;
    follower.apply(got, seq, entry_clock, follower_agg, nullptr, &got_statuses);
    double t4 = thread_cpu_now();
    standalone.apply(0, samples, clock);
    double t5 = thread_cpu_now();
    if (t == 0) {
      first_bytes = entry.size();
      continue;
    }
    const double n = static_cast<double>(samples.size());
    stage_s.push_back((t1 - t0) / n);
    apply_s.push_back((t2 - t1) / n);
    seal_s.push_back((t3 - t2) / n);
    follow_s.push_back((t4 - t3) / n);
    alone_s.push_back((t5 - t4) / n);
    bytes.push_back(static_cast<double>(entry.size()) / n);
  }
  double c0 = thread_cpu_now();
  std::string checkpoint = leader.checkpoint(leader_agg, static_cast<uint64_t>(ticks));
  double c1 = thread_cpu_now();
  Replica restored;
  std::unique_ptr<Aggregator> restored_agg;
  uint64_t seq = 0;
  Replica::restore(checkpoint, config, &restored, &restored_agg, &seq);
  double c2 = thread_cpu_now();
  bool same = follower.checkpoint(follower_agg, static_cast<uint64_t>(ticks)) == checkpoint;

  fmt::print("series {}  ticks {} (2 s apart, 60 s window)\n", series, ticks);
  fmt::print("  entry: first (every series defined) {:.1f} MB = {:.1f} B/sample; "
             "steady {:.2f} B/sample ({:.2f} MB per interval)\n",
             static_cast<double>(first_bytes) / 1e6, static_cast<double>(first_bytes) / static_cast<double>(series),
             median(bytes), median(bytes) * static_cast<double>(series) / 1e6);
  fmt::print("  leader ns/sample: stage {:.0f}  apply {:.0f}  seal {:.0f}  (standalone apply {:.0f})\n",
             median(stage_s) * 1e9, median(apply_s) * 1e9, median(seal_s) * 1e9, median(alone_s) * 1e9);
  fmt::print("  follower ns/sample: unseal + apply {:.0f}\n", median(follow_s) * 1e9);
  fmt::print("  checkpoint of the full window: {:.1f} MB ({:.0f} B/series), write {:.0f} ms, restore {:.0f} ms; "
             "leader and follower checkpoints {}\n",
             static_cast<double>(checkpoint.size()) / 1e6,
             static_cast<double>(checkpoint.size()) / static_cast<double>(series), (c1 - c0) * 1e3,
             (c2 - c1) * 1e3, same ? "equal" : "DIFFER");
  return same ? 0 : 1;
}
