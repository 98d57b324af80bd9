// cluster/scripts.h: the Lua scripts that make each cluster step atomic inside Redis
// (lease, fenced append, checkpoint commit, heartbeat), and the key names.
#pragma once

#include <string>

namespace cluster {

// Every key is NAME:<what>, so clusters of different names never meet.
struct Keys {
  explicit Keys(const std::string& name)
      : lease(name + ":lease"), term(name + ":term"), log(name + ":log"), log_end(name + ":log-end"),
        checkpoints(name + ":checkpoints"), chunk_prefix(name + ":checkpoint:"), nodes(name + ":nodes"), node_info(name + ":node-info") {}
  std::string lease;         // "NODE_ID TERM", expires after the lease
  std::string term;          // the highest term handed out (INCR)
  std::string log;           // stream: ID "SEQ-0", fields t (term), q (the term of entry SEQ-1),
                             // p (leader publish, Unix ms), e (entry)
  std::string log_end;       // the seq of the last entry appended
  std::string checkpoints;   // list, newest first: "SEQ TERM CHUNKS UNIX_MS ENTRY_TERM" (TERM: the
                             // writer's; ENTRY_TERM: the term of entry SEQ)
  std::string chunk_prefix;  // + "SEQ:TERM:I": chunk I (<= 1 MB) of that checkpoint
  std::string nodes;         // zset: node id -> expiry (Redis time, ms)
  std::string node_info;     // hash: node id -> "ROLE APPLIED LAG_MS"
};

// KEYS lease term log_end checkpoints nodes node_info; ARGV node_id lease_ms term_floor
// applied. Takes a free lease with a term above every term handed out and above
// term_floor (the highest term the node has seen: Redis may have restarted empty),
// unless a live node has applied more (it takes over, so nothing applied is lost).
// -> {1, term, log_end} or {0, holder or "", pttl}.
extern const char* const kAcquireScript;
// KEYS lease; ARGV "NODE_ID TERM" lease_ms -> 1 renewed, 0 not ours any more.
extern const char* const kRenewScript;
// KEYS lease log log_end checkpoints; ARGV "NODE_ID TERM" seq term publish_ms entry
// prev_term -> the ID, or an error: "FENCED ..." when the lease is not this node's in
// this term or the log already holds seq; "GAP ..." when the log ends before seq - 1
// (a Redis failover lost its tail, or Redis restarted empty): a checkpoint must cover
// the entries the log lost before the next append.
extern const char* const kAppendScript;
// KEYS lease checkpoints log; ARGV "NODE_ID TERM" seq term chunks chunk_prefix unix_ms
// entry_term.
// Records a checkpoint whose chunks are written (with an expiry, so that the chunks of
// a checkpoint never recorded go away by themselves: this makes them persistent),
// keeps the newest two, deletes the older ones' chunks and trims the log behind the
// oldest kept one.
extern const char* const kCommitCheckpointScript;
// KEYS nodes node_info term lease log_end checkpoints; ARGV node_id info ttl_ms term_floor.
// -> {holder or "", lease pttl, log_end, newest checkpoint or "", now_ms, id, info, ...}
extern const char* const kHeartbeatScript;

}  // namespace cluster
