// replica.h: what makes a Pipeline's aggregation replicable besides the Aggregator: the
// log entry (staged by the leader without changing any state, then validated and
// applied by every node through apply()), the series dictionary and the source table
// that entries refer to, and checkpoints of all of it. Layouts are in
// docs/architecture.md (Replication); the Pipeline wraps them in its public API.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ingest/replica/id_index.h"
#include "ingest/window/window.h"

namespace ingest {

// Replication (docs/architecture.md, Replication). One tick's samples as every node
// applies them are a log entry: binary, versioned (kLogFormatVersion), zstd-compressed.
// It carries its sequence number, the tick's clock (Unix ns, the leader's tick time: the
// only "now" that apply and build use), the leader's settings that affect aggregation
// (interval, window, stale_after, expire_after, max_series, max_series_per_source,
// prom_series_limit), its source URLs and statuses, and the samples after parsing, in
// the order the leader applied them. A series is spelled out in the first entry that
// has it; later entries refer to it by a number (a dictionary that is part of the
// replicated state and of checkpoints). Checkpoints carry the same version.
inline constexpr uint32_t kLogFormatVersion = 1;

class Replica {
 public:
  // The header in front of an entry's zstd frame: magic, format version, seq, clock
  // and a hash of them; a checkpoint's has no clock.
  static constexpr size_t kEntryHeaderBytes = 32;
  static constexpr size_t kCheckpointHeaderBytes = 24;
  // Larger payloads are refused: far past what max_series samples could take.
  static constexpr size_t kMaxEntryPayload = size_t{1} << 31;
  static constexpr size_t kMaxCheckpointPayload = size_t{1} << 36;

  // The aggregator source id of a URL, given when it first appears, and the table
  // brought to urls: URLs gone lose their series (forget_source), new ones get ids.
  uint32_t source_id(std::string_view url) const;
  void reconcile_sources(std::span<const std::string> urls, Aggregator& aggregator);

  // Leader: one tick's entry payload, staged while sources answer. Reads the
  // dictionary, changes nothing: a tick abandoned half-way leaves no trace.
  void stage_begin(const Config& settings, std::span<const std::string> urls);
  // Returns the samples left out: a value not finite, a negative time, the histogram
  // kind or a series no entry may hold (which the parsers never give).
  size_t stage(uint32_t url_index, std::span<const Sample> samples, int64_t clock);
  // The staged payload (settings, sources, groups), ready for apply() without statuses.
  std::string take_staged();

  // Decodes a payload (settings, sources, sample groups, then the statuses when
  // statuses is not null) and checks all of it, then applies it to aggregator at the
  // entry's clock: the only way replicated state changes. Throws std::invalid_argument
  // on bad bytes, before changing anything. stats: per source of the entry.
  void apply(std::string_view payload, uint64_t seq, int64_t clock, Aggregator& aggregator,
             std::vector<ApplyStats>* stats, std::vector<shm::SourceStatus>* statuses);
  static void put_statuses(std::string& out, const std::vector<shm::SourceStatus>& statuses);

  // Entries: header + zstd frame of the payload.
  static std::string seal_entry(uint64_t seq, int64_t clock, std::string_view payload);
  // The header's seq and clock; throws std::invalid_argument naming what is wrong
  // (length, magic, version).
  static void read_entry_header(std::string_view entry, uint64_t* seq, int64_t* clock);

  // Checkpoint of this replica and aggregator at seq; restore() builds both anew from
  // one (the aggregator from base with the checkpoint's settings) and throws
  // std::invalid_argument on bad bytes.
  std::string checkpoint(const Aggregator& aggregator, uint64_t seq) const;
  static void restore(std::string_view checkpoint, const Config& base, Replica* replica,
                      std::unique_ptr<Aggregator>* aggregator, uint64_t* seq);

  size_t dictionary_size() const { return ids_.size(); }

 private:
  struct DictSeries {
    std::unique_ptr<char[]> text;  // key, metric, suffix, label names and values
    std::string_view key, metric, suffix;
    std::vector<Label> labels;  // sorted by name
    int64_t last_used = 0;      // clock of the last entry that had a sample of it
    bool live = false;
  };
  static DictSeries make_series(std::string_view key, std::string_view metric, std::string_view suffix,
                                std::span<const Label> labels);
  uint32_t define(std::string_view metric, std::string_view suffix,
                  std::span<const Label> labels);
  void sweep(int64_t clock, const Config& settings);

  std::vector<std::pair<std::string, uint32_t>> sources_;
  uint32_t next_source_id_ = 0;
  std::vector<DictSeries> dict_;
  std::vector<uint32_t> free_ids_;  // reused last freed first
  IdIndex ids_;  // key -> id of the live series
  auto key_of() const {
    return [this](uint32_t id) { return dict_[id].key; };
  }

  // Leader scratch: the payload being staged, and per URL the dictionary id of each
  // sample position of its last body (a guess, checked, as in the Aggregator).
  std::string staged_;  // settings and sources
  std::string groups_;  // the groups staged so far
  uint64_t staged_groups_ = 0;
  std::vector<std::string> staged_urls_;
  std::unordered_map<std::string, std::vector<uint32_t>> positions_;
  std::vector<Label> label_scratch_;
  std::string key_scratch_;
};

// --- partitions: logs with several writers ------------------------------------------
//
// In a partitioned cluster each partition has a log of its own (docs/architecture.md,
// Partitions of the data), appended to by several writers: each source's puller, and the
// nodes that take pushes. A partition entry holds one source's samples of one tick that
// belong to that partition: binary, versioned (kLogFormatVersion), zstd-compressed behind
// a header with the tick and the writer's clock. A writer numbers the series it sends
// within its epoch (its term for the source; a new writer of the source, a higher epoch)
// and defines each number in an entry before it uses it; the partition keeps the
// numbers of a source's newest epoch. So entries stay small (a number, not a key, per
// sample) although no writer sees the others' dictionaries.

// The writer's side: one per source and epoch. Not thread-safe.
class PartitionWriter {
 public:
  PartitionWriter(std::string source, uint64_t epoch, uint32_t partitions);
  ~PartitionWriter();
  PartitionWriter(PartitionWriter&&) noexcept;
  PartitionWriter& operator=(PartitionWriter&&) noexcept;

  struct Entry {
    uint32_t partition;
    std::string bytes;
  };
  // One tick's samples of the source (ticks count intervals, from 1), split by their series' partition: one entry per
  // partition that has any, in partition order. A number is defined again in every
  // entry until one that defined it is settled as in the log. *left_out: samples no
  // entry may hold (a value not finite, a negative time, a series the parsers never
  // give), as Replica::stage.
  std::vector<Entry> encode(uint64_t tick, int64_t clock, std::span<const Sample> samples,
                            const Config& settings, const shm::SourceStatus& status,
                            size_t* left_out = nullptr);
  // What the log answered for this writer's entry of tick in partition: in the log (the
  // append script's OK or DUP), or not (refused, or no answer: then the numbers it
  // defined are defined again, which is harmless if it was in the log after all).
  void settle(uint32_t partition, uint64_t tick, bool in_log);

  const std::string& source() const;
  uint64_t epoch() const;
  size_t numbered(uint32_t partition) const;  // series numbers in use

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A partition's replicated state: its Aggregator, each source's numbers, newest epoch and
// tick, and status. A deterministic function of the entries applied in log order.
class PartitionState {
 public:
  PartitionState(uint32_t partition, const Config& base);
  ~PartitionState();
  PartitionState(PartitionState&&) noexcept;
  PartitionState& operator=(PartitionState&&) noexcept;

  // Decodes and checks the entry at seq (throws std::invalid_argument naming what is
  // wrong, before changing anything), then applies it, unless its source has this tick
  // or a later one already: skipped, as the append script would have refused it (never
  // counted twice, whoever wrote it). Either way seq is applied. An entry of another
  // epoch than the source's last starts its numbers afresh.
  enum class Applied { applied, skipped };
  Applied apply(std::string_view entry, uint64_t seq);

  uint32_t partition() const;
  uint64_t applied_seq() const;
  int64_t clock() const;  // the newest entry clock applied: the partition's "now"
  Aggregator& aggregator();
  const Aggregator& aggregator() const;
  std::vector<shm::SourceStatus> statuses() const;  // by source, in order of first entry

  // The whole state at applied_seq(), and back (restore throws std::invalid_argument on
  // bad bytes). The same state gives the same bytes.
  std::string checkpoint() const;
  static PartitionState restore(std::string_view checkpoint, const Config& base);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The partitions a node holds, by number: what its cluster host is made of (the writer's,
// server/writer_partitioned.cc, and the tests'). apply() answers false with the reason
// instead of throwing, as the cluster's host interface wants.
class HeldPartitions {
 public:
  explicit HeldPartitions(Config base) : base_(std::move(base)) {}
  void hold(uint32_t partition) { parts_.insert_or_assign(partition, PartitionState(partition, base_)); }
  void release(uint32_t partition) { parts_.erase(partition); }
  uint64_t applied_seq(uint32_t partition) const {
    auto it = parts_.find(partition);
    return it == parts_.end() ? 0 : it->second.applied_seq();
  }
  bool apply(uint32_t partition, uint64_t seq, std::string_view entry, std::string* error);
  std::string checkpoint(uint32_t partition) const { return parts_.at(partition).checkpoint(); }
  void restore(uint32_t partition, std::string_view bytes) {
    parts_.insert_or_assign(partition, PartitionState::restore(bytes, base_));
  }
  std::map<uint32_t, PartitionState>& states() { return parts_; }
  const std::map<uint32_t, PartitionState>& states() const { return parts_; }

 private:
  Config base_;
  std::map<uint32_t, PartitionState> parts_;
};

}  // namespace ingest
