// cluster/partition_follow.cc: one partition a partitioned node holds (partitioned.h):
// loaded from its newest checkpoint, then its log tailed with XREAD BLOCK on a
// connection of its own and applied entry by entry while each follows the one before
// (field q = the chain hash applied last); a gap (the log trimmed behind a checkpoint)
// or another history loads it again. Its ready holders contend for its primary lease;
// the primary writes a checkpoint every checkpoint_every entries, which also trims the
// log behind the older of the two kept.
#include <event2/event.h>
#include <hiredis/hiredis.h>

#include <sstream>

#include "cluster/partitioned_impl.h"
#include "common/log.h"
#include "common/partitions.h"

namespace cluster {

namespace log = common::log;

namespace {
constexpr int kTailBlockMs = 500;
constexpr size_t kTailBatch = 16;
constexpr int64_t kChunkTtlMs = 10 * 60 * 1000;
constexpr size_t kChunk = 1 << 20;
const std::string kNoHash = "0000000000000000";

std::string str(const redisReply* r) {
  if (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)) return std::string(r->str, r->len);
  if (r && r->type == REDIS_REPLY_INTEGER) return std::to_string(r->integer);
  return {};
}
}  // namespace

void PartitionedNode::Impl::take(uint32_t p) {
  auto h = std::make_unique<Held>(p, common::partition_tag(settings.name, p));
  h->tail = std::make_unique<Connection>(base, settings.redis, "partition " + std::to_string(p) + " log",
                                         [this, p](bool up) {
                                           if (Held* x = held(p); x && up && x->loaded) tail_next(*x);
                                         },
                                         sentinel.get(), slots.get(), h->keys.tag);
  h->tail->start();
  host.hold(p);
  ++moves_in;
  h->taken_at_ms = uint64_t(monotonic_ns() / 1'000'000);
  log::info("partitioned cluster: holding partition {}", p);
  Held& ref = *h;
  holding.emplace(p, std::move(h));
  load(ref);
}

void PartitionedNode::Impl::drop(uint32_t p) {
  host.release(p);
  holding.erase(p);
  ++moves_out;
  log::info("partitioned cluster: partition {} released (its holders have it ready)", p);
}

// The newest checkpoint's manifest ("SEQ TERM CHUNKS UNIX_MS ENTRY_TERM HASH"), then its
// chunks, then the state restored from them; without a checkpoint the log is whole from
// its first entry (it is trimmed only behind checkpoints).
void PartitionedNode::Impl::load(Held& h) {
  if (h.loading || !commands_for(h.partition).up()) return;
  h.loading = true;
  const uint32_t p = h.partition;
  bool sent = commands_for(p).command({"LINDEX", h.keys.checkpoints, "0"}, [this, p](const redisReply* r,
                                                                                       const std::string& error) {
    Held* x = held(p);
    if (!x) return;
    if (!r) {
      x->loading = false;
      x->problem = "reading its checkpoints: " + error;
      return;
    }
    std::istringstream in(str(r));
    uint64_t seq = 0, term = 0, chunks = 0, entry_term = 0;
    int64_t ms = 0;
    std::string hash;
    if (!(in >> seq >> term >> chunks >> ms >> entry_term >> hash) || chunks == 0) {
      x->loading = false;
      x->loaded = true;
      tail_next(*x);
      return;
    }
    auto parts = std::make_shared<std::vector<std::string>>(chunks);
    auto left = std::make_shared<size_t>(chunks);
    auto failed = std::make_shared<std::string>();
    std::string prefix = x->keys.chunk_prefix + std::to_string(seq) + ":" + std::to_string(term) + ":";
    for (uint64_t i = 0; i < chunks; ++i) {
      bool ok = commands_for(p).command({"GET", prefix + std::to_string(i)}, [this, p, parts, left, failed, i, seq, hash](
                                                                                const redisReply* c, const std::string& err) {
        if (!c || c->type != REDIS_REPLY_STRING) *failed = c ? "a chunk is gone" : err;
        else (*parts)[i].assign(c->str, c->len);
        if (--*left != 0) return;
        Held* y = held(p);
        if (!y) return;
        y->loading = false;
        if (!failed->empty()) {
          y->problem = "loading checkpoint " + std::to_string(seq) + ": " + *failed;
          return;  // the next period tries again
        }
        std::string bytes;
        for (const std::string& part : *parts) bytes += part;
        y->loaded_bytes += bytes.size();
        try {
          host.restore(p, bytes);
        } catch (const std::exception& e) {
          y->problem = "checkpoint " + std::to_string(seq) + " cannot be restored: " + e.what();
          return;
        }
        y->applied_hash = hash;
        y->loaded = true;
        y->problem.clear();
        y->since_checkpoint = 0;
        y->log_end = std::max(y->log_end, seq);
        log::info("partitioned cluster: partition {} restored from its checkpoint at {}", p, seq);
        tail_next(*y);
      });
      if (!ok) {
        *failed = "disconnected";
        if ((*left -= chunks - i) == 0) held(p)->loading = false;
        return;
      }
    }
  });
  if (!sent) h.loading = false;
}

void PartitionedNode::Impl::tail_next(Held& h) {
  if (h.tailing || !h.loaded || !h.tail->up()) return;
  h.tailing = true;
  const uint32_t p = h.partition;
  bool sent = h.tail->command({"XREAD", "COUNT", std::to_string(kTailBatch), "BLOCK", std::to_string(kTailBlockMs),
                               "STREAMS", h.keys.log, std::to_string(host.applied_seq(p)) + "-0"},
                              [this, p](const redisReply* r, const std::string& error) {
                                Held* x = held(p);
                                if (!x) return;
                                x->tailing = false;
                                if (!r) {
                                  x->problem = "reading its log: " + error;
                                  return;
                                }
                                on_entries(*x, r);
                              },
                              std::chrono::milliseconds(kTailBlockMs + 3000));
  if (!sent) h.tailing = false;
}

// A reply of [[stream, [[id, [field, value...]]...]]], or nil when nothing came within
// the block: the partition has applied all its log had, and is ready.
void PartitionedNode::Impl::on_entries(Held& h, const redisReply* r) {
  const uint32_t p = h.partition;
  size_t count = 0;
  if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements == 2) {
    const redisReply* entries = r->element[0]->element[1];
    count = entries->elements;
    for (size_t i = 0; i < entries->elements; ++i) {
      const redisReply* e = entries->element[i];
      uint64_t seq = std::strtoull(e->element[0]->str, nullptr, 10);
      std::string_view q, hash, bytes;
      const redisReply* fields = e->element[1];
      for (size_t f = 0; f + 1 < fields->elements; f += 2) {
        std::string_view name(fields->element[f]->str, fields->element[f]->len);
        std::string_view value(fields->element[f + 1]->str, fields->element[f + 1]->len);
        if (name == "q") q = value;
        else if (name == "h") hash = value;
        else if (name == "e") bytes = value;
      }
      h.log_end = std::max(h.log_end, seq);
      if (seq != host.applied_seq(p) + 1) return resync(h, "its log continues at " + std::to_string(seq) +
                                                             " after " + std::to_string(host.applied_seq(p)));
      if (q != h.applied_hash) return resync(h, "entry " + std::to_string(seq) + " follows another history");
      std::string error;
      if (!host.apply(p, seq, bytes, &error)) {
        h.problem = "entry " + std::to_string(seq) + " cannot be applied: " + error;
        problem("partition " + std::to_string(p) + ": " + h.problem);
        return;  // stops following it; the next period's load tries again
      }
      h.applied_hash = std::string(hash);
      ++entries_applied;
      if (h.state == HoldState::syncing) h.loaded_bytes += bytes.size();
      ++h.since_checkpoint;
    }
    host.show_applied();
  }
  if (count < kTailBatch && h.state == HoldState::syncing) {
    h.state = HoldState::ready;
    h.problem.clear();
    move_ms += uint64_t(monotonic_ns() / 1'000'000) - h.taken_at_ms;
    move_bytes += h.loaded_bytes;
    log::info("partitioned cluster: partition {} ready at {}", p, host.applied_seq(p));
  }
  if (!h.lease.empty() && h.since_checkpoint >= settings.checkpoint_every) write_checkpoint(h);
  tail_next(h);
}

void PartitionedNode::Impl::resync(Held& h, const std::string& why) {
  log::warn("partitioned cluster: partition {}: {}; loading it again", h.partition, why);
  h.problem = why;
  ++reloads;
  host.release(h.partition);
  host.hold(h.partition);
  h.applied_hash = kNoHash;
  h.state = HoldState::syncing;
  h.loaded = false;
  h.since_checkpoint = 0;
  load(h);
}

// Only a ready holder contends: a primary checkpoints what the log has, so it must have
// applied it. A holder that is leaving lets its lease run out.
void PartitionedNode::Impl::lease(Held& h) {
  if (h.state != HoldState::ready || !commands_for(h.partition).up()) {
    h.lease.clear();
    return;
  }
  const uint32_t p = h.partition;
  const uint64_t applied = host.applied_seq(p);  // what Redis's log held before it answers
  commands_for(p).command({"EVAL", kPartitionLeaseScript, "4", h.keys.lease, h.keys.term, h.keys.log_end,
                           h.keys.checkpoints, settings.node_id, std::to_string(settings.lease.count()), h.lease},
                          [this, p, applied](const redisReply* r, const std::string&) {
                            Held* x = held(p);
                            if (!x) return;
                            if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
                              x->lease.clear();
                              return;
                            }
                            if (r->element[0]->integer != 1) {
                              x->lease.clear();
                              return;
                            }
                            std::string value = settings.node_id + " " + std::to_string(r->element[1]->integer);
                            if (x->lease != value) log::info("partitioned cluster: primary of partition {}", p);
                            x->lease = value;
                            // Redis lost the log behind this state (it restarted empty, or a
                            // failover lost the tail): a checkpoint of the state carries the
                            // log on from it, as the unpartitioned leader re-seeds its log.
                            uint64_t end = std::strtoull(str(r->element[2]).c_str(), nullptr, 10);
                            // (Against the seq applied when the lease was asked: entries
                            // appended since may have been applied through the tail.)
                            if (end < applied && !x->checkpointing) {
                              log::warn("partitioned cluster: partition {}'s log in Redis ends at {}, before this node's "
                                        "state at {}: writing a checkpoint of it to carry the log on",
                                        p, end, applied);
                              write_checkpoint(*x);
                            }
                          });
}

// The state as bytes, in chunks, then recorded by kCommitCheckpointScript (which checks
// the lease). A partition's state is its share of the node's, so it is serialised here,
// on the loop.
void PartitionedNode::Impl::write_checkpoint(Held& h) {
  if (h.checkpointing || h.lease.empty() || !commands_for(h.partition).up()) return;
  const uint32_t p = h.partition;
  const uint64_t seq = host.applied_seq(p);
  const std::string hash = h.applied_hash;
  const std::string lease_value = h.lease;
  const std::string term = lease_value.substr(lease_value.rfind(' ') + 1);
  std::string bytes = host.checkpoint(p);
  size_t chunks = std::max<size_t>(1, (bytes.size() + kChunk - 1) / kChunk);
  std::string prefix = h.keys.chunk_prefix + std::to_string(seq) + ":" + term + ":";
  h.checkpointing = true;
  h.since_checkpoint = 0;
  Connection& c = commands_for(p);
  for (size_t i = 0; i < chunks; ++i) {
    std::string chunk = bytes.substr(std::min(bytes.size(), i * kChunk), kChunk);
    c.command({"SET", prefix + std::to_string(i), chunk, "PX", std::to_string(kChunkTtlMs)},
              [](const redisReply*, const std::string&) {});
  }
  // Commands on one connection run in order: the chunks are written before the commit.
  bool sent = c.command({"EVAL", kCommitCheckpointScript, "3", h.keys.lease, h.keys.checkpoints, h.keys.log,
                         lease_value, std::to_string(seq), term, std::to_string(chunks), h.keys.chunk_prefix,
                         std::to_string(unix_ms()), "0", hash},
                        [this, p, seq](const redisReply* r, const std::string& error) {
                          Held* x = held(p);
                          if (!x) return;
                          x->checkpointing = false;
                          if (!r) x->problem = "checkpoint " + std::to_string(seq) + ": " + error;
                          else log::debug("partitioned cluster: partition {} checkpoint at {}", p, seq);
                        });
  if (!sent) h.checkpointing = false;
}

}  // namespace cluster
