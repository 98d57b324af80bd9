// cluster/node_impl.h: the state of a cluster node (Node::Impl), shared by the files
// that implement its concerns: node.cc (roles, timers, status), lease.cc, log.cc,
// checkpoint.cc and membership.cc. Everything runs on one event loop.
#pragma once

#include <deque>
#include <string>

#include "cluster/cluster.h"
#include "cluster/forked_bytes.h"
#include "cluster/redis.h"
#include "cluster/scripts.h"
#include "cluster/sentinel.h"
#include "cluster/slots.h"

struct event;

namespace cluster {

inline constexpr size_t kChunkBytes = 1 << 20;

// A number in Redis's text (the keys may hold anything another client wrote): 0 when
// it is not one, never an exception inside a hiredis callback.
uint64_t parse_u64(std::string_view text);  // Redis values stay small (see docs/architecture.md)

struct Node::Impl {
  Impl(event_base* base, Settings settings, Host& host);
  ~Impl();

  // node.cc
  void start();
  void on_period();
  void try_lead();
  void on_commands_change(bool up);
  void on_master_switch(const HostPort& master);
  void become_leader(uint64_t new_term, uint64_t end, uint64_t end_hash);
  void enable_leading();
  void step_down(const std::string& why);
  void resync(const std::string& why, bool diverged);
  void follow_from(uint64_t end);  // leader: reload the log's state up to end, then lead on
  void update_synced();
  bool leading_now() const { return role == Role::leader && leading; }
  Status status() const;

  // lease.cc
  void acquire();
  void renew();
  void arm_expiry();
  std::string lease_value() const { return settings.node_id + " " + std::to_string(term); }

  // log.cc
  void append(uint64_t seq, std::string entry);
  void pump();
  void tail_next();
  struct LogEntry {
    uint64_t seq = 0, term = 0;
    uint64_t hash = 0;  // chain_hash(hash of entry seq - 1, bytes)
    int64_t publish_ms = 0;
    std::string_view bytes;
  };
  // False when the entry was not applied and the node stops reading this batch.
  bool on_entry(const LogEntry& e);
  void on_append_refused(uint64_t seq, const std::string& error);
  void commit_front(uint64_t seq);  // the front entry is in the log (and on the replicas asked)
  void wait_for_replicas(uint64_t seq, uint32_t replicas);
  uint32_t replicas_to_wait() const {
    return settings.wait_replicas >= 0 ? uint32_t(settings.wait_replicas) : std::min<uint32_t>(1, replicas_seen);
  }
  void ask_role();
  // The chain hash this node applied at seq, if it still remembers it.
  bool applied_hash_at(uint64_t seq, uint64_t* hash) const;
  void remember_hash(uint64_t seq, uint64_t hash);

  // checkpoint.cc
  void write_checkpoint();
  void send_checkpoint(uint64_t seq, uint64_t ckpt_term, uint64_t entry_term, uint64_t hash, std::string bytes);
  void load_checkpoint();

  // membership.cc
  void heartbeat();

  event_base* base;
  Settings settings;
  Host& host;
  Keys keys;
  std::unique_ptr<Sentinel> sentinel;  // redis-sentinel://: finds the master; outlives the connections
  std::unique_ptr<Slots> slots;        // redis-cluster://: the master of the keys' slot; outlives them too
  Connection commands;  // everything but the tail
  Connection tail;      // XREAD BLOCK: a blocked connection serves nothing else
  event* period = nullptr;  // every third of the lease (at most 1s): heartbeat, renew or acquire
  event* expiry = nullptr;  // leader: the lease runs out
  event* retry = nullptr;   // a checkpoint load that found nothing usable, tried again

  Role role;
  uint64_t term = 0;          // the lease's term: held (leader) or last seen
  std::string leader_id;
  int64_t lease_deadline_ns = 0;  // leader: monotonic; measured from before the request
  int64_t renewed_at_ns = 0;      // leader: when the last acquire or renewal was sent
  int64_t seen_pttl_ms = 0, seen_pttl_at_ns = 0;
  bool leading = false;       // host.set_leading(true) in force
  bool acquiring = false;     // an acquire is in flight: never two at once
  uint64_t takeover_end = 0;  // leader: apply up to here before producing entries
  uint64_t applied_term = 0;  // the term of the last entry applied (its leader's)
  uint64_t applied_hash = 0;  // the chain hash of the last entry applied (or restored)
  uint64_t highest_term = 0;  // the highest term this node has seen anywhere: terms never go back
  // (seq, chain hash) of the entries applied lately, oldest first: whether the log's
  // end is a point of this node's own history (a GAP after a failover).
  std::deque<std::pair<uint64_t, uint64_t>> recent_hashes;
  uint64_t log_end = 0;
  uint32_t heartbeats = 0;    // answered since the connection came up
  int64_t connected_at_ns = 0;
  int64_t down_since_ns = 0;  // the commands connection is down since (monotonic), 0: up
  bool synced = false;
  bool want_checkpoint = true;  // at start: load the newest checkpoint before tailing
  bool loading = false;
  bool diverged = false;      // the state holds entries the log does not: reset if no checkpoint
  std::string follow_problem; // why the node cannot follow the log, shown until it can
  bool tailing = false;

  // An entry applied here and waiting for the log, with its place in the chain.
  struct Entry {
    uint64_t seq;
    uint64_t term;       // the leader's term when it produced the entry (field t)
    uint64_t prev_hash;  // the chain hash of entry seq - 1
    uint64_t hash;       // its own (field h)
    int64_t publish_ms;
    std::string bytes;
    bool appended = false;  // in the master's log, waiting for replicas
  };
  std::deque<Entry> pending;  // leader: applied locally, not yet in the log (or not acknowledged)
  uint64_t pending_bytes = 0;
  bool appending = false;
  bool waiting = false;        // a WAIT for the front entry is in flight
  uint32_t replicas_seen = 0;  // replicas the master listed at the last ROLE
  uint64_t replica_waits = 0;
  bool checkpoint_due = false;
  bool checkpointing = false;
  std::unique_ptr<ForkedBytes> checkpoint_child;  // the state being serialised, off the loop
  uint64_t appended_since_checkpoint = 0;

  uint64_t newest_checkpoint_seq = 0;
  int64_t newest_checkpoint_ms = 0;  // 0: none
  int64_t redis_now_offset_ms = 0;   // Redis time - local time, from the last heartbeat
  std::vector<Member> members;
  int64_t lag_ms = 0;

  uint64_t entries_applied = 0, entries_appended = 0, appends_refused = 0, pending_dropped = 0, reloads = 0;
  std::string last_problem;  // logged once until something else happens
  void problem(const std::string& text);
};

}  // namespace cluster
