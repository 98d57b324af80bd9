// cluster/node_impl.h: the state of a cluster node (Node::Impl), shared by the files
// that implement its concerns: node.cc (roles, timers, status), lease.cc, log.cc,
// checkpoint.cc and membership.cc. Everything runs on one event loop.
#pragma once

#include <deque>
#include <string>

#include "cluster/cluster.h"
#include "cluster/redis.h"
#include "cluster/scripts.h"
#include "cluster/sentinel.h"

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
  void on_commands_change(bool up);
  void on_master_switch(const HostPort& master);
  void become_leader(uint64_t new_term, uint64_t end);
  void enable_leading();
  void step_down(const std::string& why);
  void resync(const std::string& why, bool diverged);
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
    uint64_t prev_term = 0;  // the term of entry seq - 1 in the leader's log
    bool has_prev_term = false;
    int64_t publish_ms = 0;
    std::string_view bytes;
  };
  void on_entry(const LogEntry& e);

  // checkpoint.cc
  void write_checkpoint();
  void load_checkpoint();

  // membership.cc
  void heartbeat();

  event_base* base;
  Settings settings;
  Host& host;
  Keys keys;
  std::unique_ptr<Sentinel> sentinel;  // redis-sentinel://: finds the master; outlives the connections
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
  bool local_only = false;    // lease lost while Redis was away: ingest on, append later
  uint64_t takeover_end = 0;  // leader: apply up to here before producing entries
  uint64_t applied_term = 0;  // the term of the last entry applied (its leader's)
  uint64_t log_end = 0;
  uint32_t heartbeats = 0;    // answered since the connection came up
  int64_t connected_at_ns = 0;
  bool synced = false;
  bool want_checkpoint = true;  // at start: load the newest checkpoint before tailing
  bool loading = false;
  bool diverged = false;      // the state holds entries the log does not: reset if no checkpoint
  bool tailing = false;

  // An entry keeps the term it was produced under: a leader that ingested alone while
  // Redis was away appends those entries after taking the lease again in a new term,
  // and each must still name the term of the one before it as followers applied it.
  struct Entry {
    uint64_t seq;
    uint64_t term;       // the leader's term when it produced the entry (field t)
    uint64_t prev_term;  // the term of entry seq - 1 (field q)
    int64_t publish_ms;
    std::string bytes;
  };
  std::deque<Entry> pending;  // leader: applied locally, not yet in the log
  bool appending = false;
  bool checkpoint_due = false;
  bool checkpointing = false;
  uint64_t appended_since_checkpoint = 0;

  uint64_t newest_checkpoint_seq = 0;
  int64_t newest_checkpoint_ms = 0;  // 0: none
  int64_t redis_now_offset_ms = 0;   // Redis time - local time, from the last heartbeat
  std::vector<Member> members;
  int64_t lag_ms = 0;

  uint64_t entries_applied = 0, entries_appended = 0, appends_refused = 0, stale_dropped = 0;
  std::string last_problem;  // logged once until something else happens
  void problem(const std::string& text);
};

}  // namespace cluster
