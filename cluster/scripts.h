// cluster/scripts.h: the Lua scripts that make each cluster step atomic inside Redis
// (lease, fenced append, checkpoint commit, heartbeat), and the key names.
#pragma once

#include <string>

namespace cluster {

// Every key is {NAME}:<what>, so clusters of different names never meet. The braces
// make NAME the keys' hash tag: on a Redis Cluster they all live in one hash slot, as
// the scripts that touch several of them at once require (cluster/slots.h); a single
// server or a Sentinel deployment ignores them.
struct Keys {
  explicit Keys(const std::string& name)
      : tag("{" + name + "}"), lease(tag + ":lease"), term(tag + ":term"), log(tag + ":log"),
        log_end(tag + ":log-end"), checkpoints(tag + ":checkpoints"), chunk_prefix(tag + ":checkpoint:"),
        nodes(tag + ":nodes"), node_info(tag + ":node-info") {}
  std::string tag;           // "{NAME}": the slot of every key below is the slot of NAME
  std::string lease;         // "NODE_ID TERM", expires after the lease
  std::string term;          // the highest term handed out (INCR)
  std::string log;           // stream: ID "SEQ-0", fields t (term), h (chain hash, 16 hex digits:
                             // chain_hash of entry SEQ-1's and this entry's bytes),
                             // p (leader publish, Unix ms), e (entry)
  std::string log_end;       // "SEQ HASH": the last entry appended and its chain hash
  std::string checkpoints;   // list, newest first: "SEQ TERM CHUNKS UNIX_MS ENTRY_TERM HASH" (TERM:
                             // the writer's; ENTRY_TERM and HASH: the term and chain hash of entry SEQ)
  std::string chunk_prefix;  // + "SEQ:TERM:I": chunk I (<= 1 MB) of that checkpoint
  std::string nodes;         // zset: node id -> expiry (Redis time, ms)
  std::string node_info;     // hash: node id -> "ROLE APPLIED LAG_MS MAY_LEAD" (MAY_LEAD 0: --role follower)
};

// KEYS lease term log_end checkpoints nodes node_info; ARGV node_id lease_ms term_floor
// applied. Takes a free lease with a term above every term handed out and above
// term_floor (the highest term the node has seen: Redis may have restarted empty),
// unless a live node that may lead has applied more (it takes over, so nothing applied
// is lost; follower-only nodes never hold the lease up).
// -> {1, term, log_end, log_end's chain hash} or {0, holder or "", pttl}.
extern const char* const kAcquireScript;
// KEYS lease; ARGV "NODE_ID TERM" lease_ms -> 1 renewed, 0 not ours any more.
extern const char* const kRenewScript;
// KEYS lease log log_end checkpoints; ARGV "NODE_ID TERM" seq term publish_ms entry
// prev_hash hash max_len -> the ID; "DUP" when the log holds this seq with this hash
// already (a resend after a lost reply); or an error: "FENCED ..." when the lease is
// not this node's in this term or the log already holds another entry at seq;
// "GAP the log ends at SEQ HASH" when the log ends before seq - 1 (a Redis failover
// lost its tail, or Redis restarted empty); "DIVERGED the log ends at SEQ HASH" when
// the log's entry seq - 1 is not the one this entry follows (another history). The
// stream is also capped at about max_len entries, a safety net behind checkpoints.
extern const char* const kAppendScript;
// KEYS lease checkpoints log; ARGV "NODE_ID TERM" seq term chunks chunk_prefix unix_ms
// entry_term hash.
// Records a checkpoint whose chunks are written (with an expiry, so that the chunks of
// a checkpoint never recorded go away by themselves: this makes them persistent),
// keeps the newest two, deletes the older ones' chunks and trims the log behind the
// oldest kept one.
extern const char* const kCommitCheckpointScript;
// KEYS nodes node_info term lease log_end checkpoints; ARGV node_id info ttl_ms term_floor.
// -> {holder or "", lease pttl, log_end, newest checkpoint or "", now_ms, id, info, ...}
extern const char* const kHeartbeatScript;

}  // namespace cluster
