// replica.h: what makes a Pipeline's aggregation replicable besides the Aggregator: the
// log entry (staged by the leader without changing any state, then validated and
// applied by every node through apply()), the series dictionary and the source table
// that entries refer to, and checkpoints of all of it. Layouts are in
// docs/architecture.md (Replication); the Pipeline wraps them in its public API.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

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
  uint32_t define(std::string_view metric, std::string_view suffix,
                  std::span<const Label> labels);
  void sweep(int64_t clock, const Config& settings);

  std::vector<std::pair<std::string, uint32_t>> sources_;
  uint32_t next_source_id_ = 0;
  std::vector<DictSeries> dict_;
  std::vector<uint32_t> free_ids_;  // reused last freed first
  std::unordered_map<std::string_view, uint32_t> ids_;

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

}  // namespace ingest
