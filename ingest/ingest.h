// ingest: pulls telemetry from upstream sources, parses it, aggregates it per series
// over a sliding window and renders the snapshot bodies the HTTP readers serve.
//
// Layers, each usable on its own:
//
//   Parser      body bytes -> samples (native JSON or OTLP/JSON metrics with simdjson,
//               the Prometheus / OpenMetrics text format by hand). No sockets, no
//               clock: tests feed it strings.
//   Aggregator  samples of one source at one fetch time -> per-series window state;
//               build() renders every body into a shm::SnapshotBuilder.
//   Pipeline    the event-driven loop on a caller's libevent event_base: every interval
//               fetches all sources at once (http://, file://, synthetic://), applies
//               them, builds a snapshot and hands it to the caller (the writer process
//               publishes it).
//
// Time is Unix nanoseconds (CLOCK_REALTIME) everywhere in this API; the Aggregator never
// reads a clock itself, so every time-dependent rule is testable.
//
// Each layer is a sub-folder with its own header: format/format.h (Parser, series keys,
// limits), window/window.h (Aggregator, the snapshot key conventions the HTTP readers
// rely on), source/source.h (file://, synthetic://, push sources), replica/replica.h
// (log entries, the series dictionary, checkpoints). This header is the Pipeline that
// glues them, and includes the first three, so that users of ingest include just this.
// Formats, limits, drop rules and the sketch are described in docs/ingest.md.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ingest/config.h"
#include "ingest/format/format.h"
#include "ingest/source/source.h"
#include "ingest/window/window.h"
#include "shm/shm.h"

struct event_base;

namespace ingest {

// ---------------------------------------------------------------------------------
// Pipeline
// ---------------------------------------------------------------------------------

// Receives every built snapshot, the status of each configured source, in the
// configuration's order (index i is Config::sources[i], then each push source; a
// follower gets the leader's),
// and the generation to publish it as: the log sequence number (seq) of the tick or
// entry. Called on the event loop, inside a libevent callback: it must not throw
// (handle publish errors inside it). It may call Pipeline::reconfigure().
using PublishFn = std::function<void(const shm::SnapshotBuilder&,
                                     const std::vector<shm::SourceStatus>&, uint64_t seq)>;

// Replication (docs/architecture.md, Replication): one tick's samples as every node
// applies them are a log entry (replica/replica.h, kLogFormatVersion).

class Pipeline {
 public:
  // Resolves config (throws std::invalid_argument on a bad one). Does not fetch until
  // start() or run_once(). base must outlive the Pipeline.
  Pipeline(event_base* base, Config config, PublishFn publish);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Starts a tick now and then every interval, on base's loop. stop() cancels the
  // timer and any fetch in flight; nothing is published after it.
  void start();
  void stop();

  // Applies a new configuration (SIGHUP). Throws std::invalid_argument and keeps the
  // old one when it is bad. Sources whose URL is unchanged keep their series and
  // counters; removed sources' series go at once. A tick in flight completes first with
  // the old source list.
  void reconfigure(Config config);

  // Adds a source that pushes instead of being fetched, before start(); it stays
  // through reconfigure() and its status comes after the configured sources'. source
  // must outlive the Pipeline.
  void add_push_source(PushSource* source);

  // Runs one whole tick synchronously (fetch everything, apply, build, publish) by
  // looping base until it is done. For tests and tools; not from a callback of base.
  void run_once();

  // --- replication: how a writer is a cluster's leader or follower ---------------
  //
  // Standalone (no sink, fetching) each tick is applied as its sources answer and
  // published as seq applied_seq() + 1, encoding nothing. A leader (a sink set) stages
  // each tick's samples without changing any state; when the tick completes it makes
  // the entry for seq = applied_seq() + 1, applies it through apply_entry()'s own
  // decode-and-apply path, builds, publishes (generation = seq), then hands the entry
  // to the sink. If the sink cannot append it, this Pipeline holds an entry the log
  // does not: restore() a checkpoint (or replay the log into a fresh Pipeline) before
  // following. A follower does not fetch: its state changes only through
  // apply_entry() and restore().

  // The seq of the last entry applied or tick published (0: none). A standalone
  // writer starts it from the store's generation, so generations stay monotonic.
  uint64_t applied_seq() const;
  void set_applied_seq(uint64_t seq);  // before start(), or after restore()

  // Empty: standalone. Takes effect at the next tick; clearing it abandons a leader's
  // tick in flight (which changed nothing), so that no entry is applied here without
  // going to a sink. The sink is called inside the tick's libevent callback; it must
  // not throw. A follower becoming leader sets a sink, then set_fetching(true); a
  // leader losing its lease calls set_fetching(false) and clears the sink.
  using EntrySink = std::function<void(uint64_t seq, std::string entry)>;
  void set_entry_sink(EntrySink sink);

  // With a sink: a tick's snapshot is built and published only once publish_committed()
  // says its entry is in the log (the state moves on at once; the next tick stages
  // against it). So a leader never shows data under a generation that the log then
  // gives other data (its append refused, its lease lost). publish_committed(seq) does
  // nothing unless seq is the applied seq and not yet published: of several ticks
  // waiting, only the newest is built.
  void publish_committed(uint64_t seq);

  // Off: no fetch timer, a tick in flight is abandoned (it changed nothing if it was a
  // leader's). On (the default): start() runs ticks. Turning it on while started
  // starts a tick now.
  void set_fetching(bool on);
  bool fetching() const;

  // Applies one log entry: decode, check version and seq, apply, then (show) build and
  // publish. seq <= applied_seq(): duplicate, ignored. seq > applied_seq() + 1: gap
  // (the caller loads a checkpoint). Bad bytes or an unknown version: bad, *error says
  // why, and nothing changes. Not while a tick is in flight (bad). A node catching up
  // applies several with show false and calls show_applied() once after the last.
  enum class EntryResult { applied, duplicate, gap, bad };
  EntryResult apply_entry(std::string_view entry, std::string* error = nullptr, bool show = true);
  // Builds and publishes the last entry applied, if apply_entry() did not.
  void show_applied();

  // A tick's clock is the node's own, but never less than the last tick's (or entry's)
  // plus the interval: after a failover to a node whose clock is behind, ticks go on
  // from the log's time instead of stamping samples in its past. How far the tick
  // clock ran ahead of this node's clock at the last tick (0: not at all).
  int64_t clock_behind_ns() const;
  // The entry's seq from its header only (cheap); 0 when it is not an entry of this
  // format version.
  static uint64_t entry_seq(std::string_view entry);

  // The whole replicated state (aggregator, series dictionary, source table,
  // applied_seq, the leader's settings) as compressed bytes, and back. restore() throws
  // std::invalid_argument on bad bytes or an unknown version and then changes nothing.
  // It publishes nothing: the next entry applied does; a tick in flight is abandoned.
  // Both take seconds at a million series (docs/performance.md, Replication).
  std::string checkpoint() const;
  void restore(std::string_view checkpoint);

  // --- a partitioned cluster's puller ------------------------------------------------
  //
  // With a tap, a tick fetches only the sources named by set_pulled() and hands each
  // one's samples to the tap (its URL and status, the tick's clock) instead of applying
  // them, then calls tick_done with the clock. Nothing is aggregated, built or published
  // here: the partitions' holders do that from their logs. Set before start().
  struct Tapped {
    std::string_view url;
    std::span<const Sample> samples;
    const shm::SourceStatus& status;
    int64_t clock;
  };
  using SampleTap = std::function<void(const Tapped& tapped)>;
  void set_sample_tap(SampleTap tap, std::function<void(int64_t clock)> tick_done);
  void set_pulled(std::vector<std::string> urls);
  std::vector<std::string> source_urls() const;  // configured, in order

  const Config& config() const;
  std::vector<shm::SourceStatus> statuses() const;
  // Its config() holds the settings aggregation follows: a follower's are the last
  // entry's, whatever its own configuration says.
  const Aggregator& aggregator() const;
  uint64_t ticks() const;          // completed ticks
  uint64_t ticks_skipped() const;  // timer fired while a tick was still in flight
  // The highest total of bytes that fetches in flight held at once (at most
  // fetch_memory_limit), and the bytes that fetch and parse buffers keep between ticks.
  size_t fetch_memory_peak() const;
  size_t buffer_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ingest
