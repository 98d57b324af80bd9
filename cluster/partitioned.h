// cluster/partitioned.h: a node of a partitioned cluster (docs/architecture.md,
// Partitions of the data). The series are spread over P fixed partitions, each with its
// own log, checkpoints and primary lease under the hash tag {NAME:p}; each partition is
// held by R live nodes (common/partitions.h, rendezvous hashing over the members), which
// apply its log; each source is pulled by one node at a time, which appends its samples
// to the partitions' logs. Everything runs on the writer's libevent loop; no call here
// blocks. Entries and checkpoints are opaque bytes: the Host turns them into state.
//
// What it guarantees:
//  - A partition's state here is its log applied in order from a checkpoint: an entry is
//    applied only if it follows the one applied last (its field q is the chain hash of
//    that one); otherwise the partition is loaded again from its newest checkpoint.
//  - A partition is ready once it applied its log up to what the log held when the node
//    last found nothing more to read; until then it is syncing. Membership publishes
//    each node's ready partitions, so a partition that moves is released by its old
//    holder only once every new holder has it ready (it is leaving meanwhile).
//  - Each partition's primary (its lease's holder, a holder that is ready) writes its
//    checkpoints every checkpoint_every entries and trims its log behind them.
//  - A source's puller is the node among those that may pull with the highest weight
//    for the source's URL; on becoming it, the node takes a new epoch for the source
//    (INCR), which fences off the previous puller at its next append.
//  - A Redis that lost a partition's log behind its primary's state (restarted empty, a
//    failover that lost the tail) gets a checkpoint of that state, from which the log
//    goes on; sources fenced off by an epoch Redis handed out again take a higher one.
//  - A puller whose connection to a partition's Redis was lost takes new epochs for its
//    sources once it is back, so no entry it appends refers to series it defined in an
//    entry Redis may have lost with the connection.
// What it does not: order across partitions (each is its own log); keep what was
// appended to a log Redis had lost before its primary noticed (within a lease period).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cluster/cluster.h"

namespace cluster {

struct PartitionedSettings {
  Address redis;
  std::string name = "telemetryd";
  std::string node_id;
  std::string http_address;  // HOST:PORT the other nodes route queries to ("" : none)
  uint32_t partitions = 16;  // asked for; a cluster that exists keeps its own
  uint32_t replication = 2;  // likewise
  bool may_pull = true;      // false: --role follower, holds partitions, never pulls
  std::chrono::milliseconds lease{6000};
  uint32_t checkpoint_every = 30;
};

// What the node's state is made of, supplied by the caller. Called on the loop.
class PartitionHost {
 public:
  virtual ~PartitionHost() = default;
  // Holding partition p begins with an empty state, or ends (its state is dropped).
  virtual void hold(uint32_t partition) = 0;
  virtual void release(uint32_t partition) = 0;
  virtual uint64_t applied_seq(uint32_t partition) const = 0;
  // Applies entry seq of partition p. False on bad bytes, `error` saying why (nothing
  // changed; the node stops following p and says so).
  virtual bool apply(uint32_t partition, uint64_t seq, std::string_view entry, std::string* error) = 0;
  // After a batch of applies: what they made may be shown.
  virtual void show_applied() = 0;
  // Partition p's state as bytes, and back (restore throws std::exception on bad bytes,
  // changing nothing).
  virtual std::string checkpoint(uint32_t partition) const = 0;
  virtual void restore(uint32_t partition, std::string_view bytes) = 0;
  // The sources this node pulls from now on, each with its epoch.
  virtual void pull(std::vector<std::pair<std::string, uint64_t>> sources) = 0;
  // The configured source URLs: the ones a puller is chosen for.
  virtual std::vector<std::string> sources() const = 0;
  // A connection to Redis came back: entries the host appended for streams it numbers
  // itself (not the pulled sources, which the node renumbers) may be lost, so each such
  // stream takes a new epoch before its next append.
  virtual void renumber() {}
};

enum class HoldState { syncing, ready, leaving };
std::string_view hold_state_name(HoldState state);

struct HeldPartition {
  uint32_t partition = 0;
  HoldState state = HoldState::syncing;
  bool primary = false;
  uint64_t generation = 0;  // its applied seq
  uint64_t log_end = 0;     // the newest seq seen in its log
  std::string problem;      // why it cannot follow its log right now, or ""
};

struct PartitionedMember {
  std::string node_id;
  bool may_pull = true;
  bool draining = false;        // handing its partitions over (it holds no new one, pulls nothing)
  std::vector<uint32_t> ready;  // the partitions it holds ready
  std::string http_address;     // where it answers queries, or "" (it named none)
};

struct PartitionedStatus {
  std::string node_id;
  uint32_t partitions = 0, replication = 0;  // the cluster's (0 before Redis answered)
  RedisState redis = RedisState::down;
  bool ready = false;  // knows the holder map, and every partition it holds is ready
  std::vector<HeldPartition> held;
  std::vector<PartitionedMember> members;
  std::vector<std::pair<std::string, uint64_t>> pulling;  // source, epoch
  uint64_t entries_applied = 0, entries_appended = 0, appends_refused = 0, reloads = 0;
  uint64_t moves_in = 0, moves_out = 0;
  // The moves in that became ready: their time from take to ready, and the checkpoint and
  // log bytes they read meanwhile.
  uint64_t move_ms = 0, move_bytes = 0;
  bool draining = false;  // drain() was asked: done once `held` is empty
  std::vector<std::string> notes;  // e.g. a P asked for that is not the cluster's
};

class PartitionedNode {
 public:
  PartitionedNode(event_base* base, PartitionedSettings settings, PartitionHost& host);
  ~PartitionedNode();
  PartitionedNode(const PartitionedNode&) = delete;
  PartitionedNode& operator=(const PartitionedNode&) = delete;

  void start();
  // Appends a puller's entry for (source, epoch, tick) to partition p's log. done runs
  // once, from the loop: in_log true when the log has it (the script's OK or DUP), false
  // with why (OLD, STALE, not connected, no reply: a refused or unknown append).
  using AppendDone = std::function<void(bool in_log, const std::string& why)>;
  void append(uint32_t partition, const std::string& source, uint64_t epoch, uint64_t tick, std::string entry,
              AppendDone done);
  // A planned leave: the node tells the members it is draining, so that each of its
  // partitions gets its next holder; it keeps serving each one (leaving) until every new
  // holder has it ready, then lets it go, and stops pulling its sources (the next puller
  // takes them with a higher epoch). Done once it holds nothing; then stop the node. A
  // node that is the only member keeps what it holds (there is no one to hand it to).
  void drain();
  // Takes an epoch for a source only this node writes (its OTLP push stream): above every
  // epoch taken for the source and above floor (a STALE answer's fence), as a puller's
  // (kEpochScript). done runs once, from the loop: the epoch, or 0 with why.
  using EpochDone = std::function<void(uint64_t epoch, const std::string& why)>;
  void take_own_epoch(const std::string& source, uint64_t floor, EpochDone done);
  PartitionedStatus status() const;
  uint32_t partitions() const;  // the cluster's P; 0 until Redis answered

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace cluster
