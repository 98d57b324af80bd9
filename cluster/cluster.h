// cluster/cluster.h: several telemetryd nodes over one Redis: a leader lease with
// fencing, the replicated sample log (a Redis stream), checkpoints and membership.
// Everything runs on the writer's libevent loop through hiredis's async API; no call
// here blocks. The payloads (log entries, checkpoints) are opaque bytes: the node's
// Host turns them into state (ingest::Pipeline in the writer).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct event_base;

namespace cluster {

struct HostPort {
  std::string host;
  int port = 6379;
  std::string text() const;  // HOST:PORT
};

// Where the cluster's Redis is: one server (redis://HOST:PORT[/DB]), the master of a
// Redis Sentinel deployment, asked from the sentinels whenever a connection is made
// (redis-sentinel://H1:P1[,H2:P2...]/MASTERNAME[/DB]), or a Redis Cluster, whose
// nodes are asked which master serves the slot of the cluster's keys
// (redis-cluster://H1:P1[,H2:P2...]: seed nodes; no /DB, a Redis Cluster has only db
// 0). parse_address throws std::invalid_argument with a message on anything else.
struct Address {
  HostPort server;                     // redis://: the server
  std::vector<HostPort> sentinels;     // redis-sentinel://: the sentinels, in the order given
  std::string master;                  // redis-sentinel://: the master's name
  std::vector<HostPort> cluster_seeds; // redis-cluster://: the nodes to ask first, in the order given
  int db = 0;
  bool via_sentinel() const { return !sentinels.empty(); }
  bool via_cluster() const { return !cluster_seeds.empty(); }
  std::string text() const;  // the URL, with /DB (but for redis-cluster://)
};
Address parse_address(std::string_view url);

// The log's chain: an entry's hash covers the hash of the entry before it and its own
// bytes (0 before the first entry). Two nodes whose last applied entries have the same
// hash applied the same history, whatever the terms say (terms are counters in an
// asynchronously replicated Redis: two leaders can be handed the same one).
uint64_t chain_hash(uint64_t previous, std::string_view entry);
std::string hash_text(uint64_t hash);     // 16 lower-case hex digits, as Redis holds it
uint64_t parse_hash(std::string_view text);  // 0 on anything else

struct Settings {
  Address redis;
  std::string name = "telemetryd";  // prefix of every key
  std::string node_id;
  std::chrono::milliseconds lease{6000};  // renewed every third of it
  bool may_lead = true;                    // false: --role follower, never takes the lease
  uint32_t checkpoint_every = 30;          // entries between two checkpoints the leader writes
  uint64_t max_pending_bytes = 256 << 20;  // leader: entry bytes kept while Redis does not take them
  // Replicas that must hold an entry (WAIT) before the leader shows it: -1 is one when
  // the master has a replica (ROLE, asked every period), 0 never waits.
  int wait_replicas = -1;
};

enum class Role { follower, candidate, leader };
std::string_view role_name(Role role);
enum class RedisState { down, connecting, connected };
std::string_view redis_state_name(RedisState state);

// What the node's state is made of, supplied by the caller. Called on the loop.
class Host {
 public:
  virtual ~Host() = default;
  enum class Applied { applied, duplicate, gap, bad };
  // The seq of the last entry applied (0: none).
  virtual uint64_t applied_seq() const = 0;
  // Applies one entry of the log (seq from the stream). `error` says why on bad. What
  // an entry applied may be shown only at show_applied(), which the node calls after
  // the last entry of a batch it read: a node catching up builds only what it shows.
  virtual Applied apply(uint64_t seq, std::string_view entry, std::string* error) = 0;
  virtual void show_applied() {}
  // The whole state as bytes, and back (restore throws std::exception on bad bytes,
  // changing nothing then). reset() empties the state (seq 0).
  virtual std::string checkpoint() const = 0;
  virtual void restore(std::string_view bytes) = 0;
  virtual void reset() = 0;
  // Leader: produce entries (ingest) or stop at once.
  virtual void set_leading(bool leading) = 0;
  // Leader: the entries up to `seq` are in the log: what they hold may be shown.
  virtual void publish_to(uint64_t seq) = 0;
};

struct Member {
  std::string node_id;
  std::string role;
  uint64_t applied = 0;
  int64_t lag_ms = 0;
  bool may_lead = true;  // false: started with --role follower
};

struct Status {
  std::string node_id;
  Role role = Role::candidate;
  uint64_t term = 0;              // term of the lease this node holds or last saw
  std::string leader_id;          // empty: none known
  int64_t lease_remaining_ms = 0; // leader: its own lease; others: as last seen
  uint64_t applied_seq = 0;
  uint64_t applied_term = 0;
  uint64_t applied_hash = 0;      // chain hash of the last entry applied
  uint64_t log_end_seq = 0;       // the newest seq seen in Redis
  bool synced = false;            // applied what the leader had appended when last looked
  RedisState redis = RedisState::down;
  std::string redis_address;
  int64_t checkpoint_age_s = -1;  // the newest checkpoint in Redis; -1: none
  uint64_t checkpoint_seq = 0;
  uint64_t entries_applied = 0;   // from the log, by this node since start
  uint64_t entries_appended = 0;
  uint64_t appends_refused = 0;
  uint64_t redis_errors = 0;
  uint64_t pending = 0;           // leader: entries waiting for Redis
  uint64_t pending_bytes = 0;
  uint64_t replicas = 0;          // replicas the master reported (ROLE)
  uint64_t replica_waits = 0;     // WAITs that came back short: an entry not yet shown
  uint64_t pending_dropped = 0;   // entries dropped past max_pending_bytes (a checkpoint covered them)
  uint64_t reloads = 0;           // state reloaded from a checkpoint since start
  std::string follow_problem;     // why this node cannot follow the log right now, or ""
  bool degraded = false;          // Redis unreachable: serving the last committed snapshot
  int64_t lag_ms = 0;             // the last applied entry: leader's publish to ours
  std::vector<Member> members;    // live nodes, as of the last heartbeat
  std::vector<std::string> notes; // e.g. settings that differ from the leader's
};

class Node {
 public:
  Node(event_base* base, Settings settings, Host& host);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  void start();
  // Leader: the entry for `seq` is applied locally; append it to the log. Entries are
  // kept (at most max_pending_bytes) while Redis does not take them and appended in
  // order; past that a checkpoint replaces them.
  void append(uint64_t seq, std::string entry);
  Status status() const;
  bool leading() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace cluster
