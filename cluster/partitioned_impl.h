// cluster/partitioned_impl.h: the state of a partitioned node (PartitionedNode::Impl),
// shared by partitioned.cc (settings, membership, the holder map, pullers, appends,
// status) and partition_follow.cc (a held partition: its checkpoint, its log's tail, its
// primary lease and checkpoints). Private to those files. Everything runs on one loop.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "cluster/partitioned.h"
#include "cluster/redis.h"
#include "cluster/scripts.h"
#include "cluster/sentinel.h"
#include "cluster/slots.h"

struct event;

namespace cluster {

struct PartitionedNode::Impl {
  Impl(event_base* base, PartitionedSettings settings, PartitionHost& host);
  ~Impl();

  // A partition this node holds.
  struct Held {
    uint32_t partition = 0;
    Keys keys;
    std::unique_ptr<Connection> tail;  // XREAD BLOCK on its log: a blocked connection serves nothing else
    HoldState state = HoldState::syncing;
    bool loading = false, tailing = false;
    bool loaded = false;           // the checkpoint (or its absence) was looked at
    std::string applied_hash = "0000000000000000";  // of the entry applied last
    uint64_t log_end = 0;
    std::string lease;             // "NODE_ID TERM" while primary, else ""
    uint64_t since_checkpoint = 0; // entries applied since the newest checkpoint
    bool checkpointing = false;
    std::string problem;
    uint64_t taken_at_ms = 0;   // monotonic: the move's start, for its duration once ready
    uint64_t loaded_bytes = 0;  // checkpoint and entry bytes read while syncing
    explicit Held(uint32_t p, const std::string& tag) : partition(p), keys(tag) {}
  };

  // partitioned.cc
  void start();
  void on_period();
  void settle_partitioning(const std::string& value);
  void heartbeat();
  void on_members(const redisReply* r);
  void place();  // hold and release by the holder map, choose pullers
  void choose_pullers(const std::vector<std::string>& pullers);
  void take_epoch(const std::string& url, uint64_t floor);
  void on_stale(const std::string& url, uint64_t epoch, const std::string& error);
  void on_partition_connection(uint32_t partition, bool up);
  std::string member_info() const;
  void problem(const std::string& text);

  // partition_follow.cc
  void take(uint32_t partition);   // begins holding
  void drop(uint32_t partition);   // ends holding
  void load(Held& h);              // the newest checkpoint, then the tail
  void tail_next(Held& h);
  void on_entries(Held& h, const redisReply* r);
  void resync(Held& h, const std::string& why);
  void lease(Held& h);             // take or renew the primary lease (ready holders only)
  void write_checkpoint(Held& h);

  Held* held(uint32_t partition);
  Connection& commands_for(uint32_t partition);

  event_base* base;
  PartitionedSettings settings;
  PartitionHost& host;
  Keys keys;  // the cluster's own: membership, partitioning, epochs
  std::unique_ptr<Sentinel> sentinel;
  std::unique_ptr<Slots> slots;  // redis-cluster://: each connection goes to its keys' slot's master
  Connection commands;  // membership, partitioning, epochs
  std::vector<std::unique_ptr<Connection>> partition_commands;  // per partition: appends, leases, checkpoints
  std::vector<bool> partition_connected;  // per partition: connected once (a later connect is a reconnect)
  event* period = nullptr;

  uint32_t partitions = 0, replication = 0;  // the cluster's, once known
  std::map<uint32_t, std::unique_ptr<Held>> holding;
  std::vector<PartitionedMember> members;
  bool members_known = false;
  std::vector<std::pair<std::string, uint64_t>> pulling;
  std::set<std::string> taking_epoch;  // sources whose epoch is being asked for
  std::map<std::string, uint64_t> epoch_floor;  // per source: the highest epoch a STALE named
  // Per partition, for appends: whether its log is known to have begun (an append of this
  // node went in), and since when (Unix ms) appends have found it empty (kPartitionAppendScript's begun).
  struct LogKnown {
    bool begun = false;
    int64_t empty_since_ms = 0;
  };
  std::vector<LogKnown> logs;
  std::vector<std::string> notes;
  std::string last_problem;
  uint64_t entries_applied = 0, entries_appended = 0, appends_refused = 0, reloads = 0;
  uint64_t moves_in = 0, moves_out = 0;
  uint64_t move_ms = 0, move_bytes = 0;  // of the moves in that became ready
  bool draining = false;                 // drain(): hands every partition over, pulls nothing
};

}  // namespace cluster
