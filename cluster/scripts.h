// cluster/scripts.h: the Lua scripts that make each cluster step atomic inside Redis
// (lease, fenced append, checkpoint commit, heartbeat), and the key names.
#pragma once

#include <string>

namespace cluster {

// Every key is PREFIX:<what>, and PREFIX is a hash tag: {NAME} for the cluster's log
// (cluster_tag), {NAME:P} for partition P's (common::partition_tag). So clusters of
// different names never meet, and on a Redis Cluster the keys of one log all live in one
// hash slot, as the scripts that touch several of them at once require
// (cluster/slots.h); a single server or a Sentinel deployment ignores the braces.
inline std::string cluster_tag(const std::string& name) { return "{" + name + "}"; }

struct Keys {
  explicit Keys(const std::string& prefix)
      : tag(prefix), lease(prefix + ":lease"), term(prefix + ":term"), log(prefix + ":log"),
        log_end(prefix + ":log-end"), checkpoints(prefix + ":checkpoints"), chunk_prefix(prefix + ":checkpoint:"),
        nodes(prefix + ":nodes"), node_info(prefix + ":node-info"), partitioning(prefix + ":partitioning"),
        sources(prefix + ":sources") {}
  std::string tag;           // the prefix: the slot of every key below is the slot of its hash tag
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
  std::string partitioning;  // partitioned: "P R", set once by the first node
  std::string sources;       // partition: hash: source -> "EPOCH TICK SEQ FENCE": the epoch, tick and seq of
                             // the source's newest entry, and the highest epoch seen for it (>= EPOCH)
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
// A partition's log has several writers (the pullers of its sources, and the nodes that
// take pushes), so it is not fenced by a lease; what keeps it exact is checked here,
// atomically with the append. KEYS log log_end checkpoints sources; ARGV source epoch
// tick publish_ms entry max_len [begun]. Appends the entry after the log's end (seq = end + 1)
// with its chain hash computed here: the first 16 hex digits of SHA-1(the end's hash ..
// entry), so every holder applies one history however the writers interleave. Per
// source, epochs (a puller's term for it) and ticks (the interval grid) only go up:
// -> {"OK", seq, hash}; {"DUP", seq} when this source's newest entry has this epoch and
// tick (a resend after a lost reply); an error "STALE ..." when a newer epoch was seen
// for the source (a puller that lost it), "OLD ..." when the source's newest tick is at
// or past this one (a paused puller's late entry, or two pullers during a hand-over: one
// of them counted the tick). A newer epoch refused as OLD still fences the older one
// off, without becoming the epoch of the entry already there (which it did not write:
// its resend must not pass for a DUP).
// The stream is capped at about max_len entries, a safety net behind checkpoints.
// begun (optional) "1": the writer knows this log had entries or a checkpoint, so an empty
// one is a log Redis lost (a restart without persistence): refused ("EMPTY ...") until the
// partition's primary writes the checkpoint of its state that the log goes on from, since
// an entry appended before that would be covered by that checkpoint, never applied.
extern const char* const kPartitionAppendScript;
// A partitioned cluster's P and R, fixed by the first node: KEYS partitioning; ARGV
// "P R" -> the value the cluster has ("P R"), set to ARGV[1] if it had none.
extern const char* const kPartitioningScript;
// A partitioned cluster's membership: KEYS nodes node_info; ARGV node_id info ttl_ms.
// Records the node until Redis time + ttl, forgets nodes whose time passed, and returns
// {now_ms, id, info, id, info...} of the live ones.
extern const char* const kMembersScript;
// A partition's primary lease: KEYS lease term log_end checkpoints; ARGV node_id
// lease_ms held ("NODE_ID TERM" when renewing, else ""). -> {1, term, log end} taken or
// renewed; {0, holder, log end} when another node holds it (or ours expired and another
// took it). The log's end tells a primary whether Redis lost the log behind its state.
extern const char* const kPartitionLeaseScript;
// A source's new epoch: KEYS epoch; ARGV floor -> INCR, raised above floor (the epoch
// the append script last saw for the source: after a Redis that restarted empty the
// counter starts again, and epochs must only grow).
extern const char* const kEpochScript;
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
