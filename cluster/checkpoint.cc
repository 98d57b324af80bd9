// cluster/checkpoint.cc: checkpoints of the replicated state. The leader writes one
// every checkpoint_every entries (and on taking over, or when entries waiting for
// Redis overflowed): the bytes in chunks of at most 1 MB under keys of their own, then
// kCommitCheckpointScript records it (fenced like an append), keeps the newest two and
// trims the log behind the older. A node that starts, or finds a gap in the log or
// that its state is not the log's, loads the newest and tails the log after it.
#include <event2/event.h>
#include <hiredis/hiredis.h>

#include <memory>
#include <sstream>

#include "cluster/forked_bytes.h"
#include "cluster/node_impl.h"
#include "common/log.h"

namespace cluster {

namespace log = common::log;

namespace {
constexpr timeval kReloadRetry{0, 200'000};
// A chunk expires unless its checkpoint is recorded: a leader that dies or is fenced off
// between writing the chunks and recording them leaves nothing behind for good.
constexpr int64_t kChunkTtlMs = 10 * 60 * 1000;

struct Manifest {
  uint64_t seq = 0, term = 0, chunks = 0;
  int64_t unix_ms = 0;
  uint64_t entry_term = 0;  // the term of entry seq
  uint64_t hash = 0;        // the chain hash of entry seq: what the next entry must follow
};

bool parse_manifest(std::string_view text, Manifest& m) {
  std::istringstream in{std::string(text)};
  std::string hash;
  if (!(in >> m.seq >> m.term >> m.chunks >> m.unix_ms >> m.entry_term >> hash) || hash.size() != 16) return false;
  m.hash = parse_hash(hash);
  return true;
}

// The newest checkpoint's manifest and the log-end key, in one round trip: with no
// checkpoint, whether the log is empty decides what a node's own state is worth.
const char* const kNewestScript =
    "return {redis.call('LINDEX', KEYS[1], 0) or '', redis.call('GET', KEYS[2]) or ''}\n";
}  // namespace

// The state is serialised in a forked child (ForkedBytes: a copy-on-write image of the
// writer at this moment), so the loop goes on renewing the lease and appending however
// long that takes; the seq, term and hash are the ones of that moment. Where fork fails
// it is done here, on the loop.
void Node::Impl::write_checkpoint() {
  if (checkpointing || !leading_now() || !commands.up()) return;
  checkpointing = true;
  uint64_t seq = host.applied_seq();
  uint64_t ckpt_term = term;
  uint64_t entry_term = applied_term;
  uint64_t hash = applied_hash;
  auto done = [this, seq, ckpt_term, entry_term, hash](std::string bytes, const std::string& error) {
    checkpoint_child.reset();
    if (role != Role::leader || term != ckpt_term || !commands.up()) {
      checkpointing = false;
      return;
    }
    if (!error.empty()) {
      checkpointing = false;
      problem("making checkpoint " + std::to_string(seq) + ": " + error);
      return;
    }
    send_checkpoint(seq, ckpt_term, entry_term, hash, std::move(bytes));
  };
  try {
    checkpoint_child = std::make_unique<ForkedBytes>(base, [this] { return host.checkpoint(); }, done);
  } catch (const std::exception& e) {
    problem(std::string("checkpoint in a child: ") + e.what() + "; making it on the loop");
    done(host.checkpoint(), "");
  }
}

void Node::Impl::send_checkpoint(uint64_t seq, uint64_t ckpt_term, uint64_t entry_term, uint64_t hash,
                                 std::string bytes) {
  size_t chunks = std::max<size_t>(1, (bytes.size() + kChunkBytes - 1) / kChunkBytes);
  std::string prefix = keys.chunk_prefix + std::to_string(seq) + ":" + std::to_string(ckpt_term) + ":";
  auto left = std::make_shared<size_t>(chunks);
  auto failed = std::make_shared<std::string>();
  int64_t written_ms = unix_ms() + redis_now_offset_ms;
  auto commit = [this, seq, ckpt_term, entry_term, hash, chunks, written_ms](const std::string& failure) {
    if (role != Role::leader || term != ckpt_term) {
      checkpointing = false;
      return;
    }
    if (!failure.empty()) {
      checkpointing = false;
      problem("writing checkpoint " + std::to_string(seq) + ": " + failure);
      return;
    }
    bool sent = commands.command(
        {"EVAL", kCommitCheckpointScript, "3", keys.lease, keys.checkpoints, keys.log, lease_value(),
         std::to_string(seq), std::to_string(ckpt_term), std::to_string(chunks), keys.chunk_prefix,
         std::to_string(written_ms), std::to_string(entry_term), hash_text(hash)},
        [this, seq, ckpt_term, written_ms](const redisReply* r, const std::string& error) {
          checkpointing = false;
          if (role != Role::leader || term != ckpt_term) return;
          if (!r) {
            if (error.rfind("FENCED", 0) == 0) step_down("checkpoint refused: " + error);
            else problem("recording checkpoint " + std::to_string(seq) + ": " + error);
            return;
          }
          checkpoint_due = false;
          appended_since_checkpoint = 0;
          newest_checkpoint_seq = seq;
          newest_checkpoint_ms = written_ms;
          log_end = std::max(log_end, seq);
          while (!pending.empty() && pending.front().seq <= seq) {
            pending_bytes -= pending.front().bytes.size();
            pending.pop_front();
          }
          host.publish_to(seq);
          log::debug("cluster: checkpoint at {} written", seq);
          pump();
        });
    if (!sent) checkpointing = false;
  };
  for (size_t i = 0; i < chunks; ++i) {
    std::string chunk = bytes.substr(std::min(bytes.size(), i * kChunkBytes), kChunkBytes);
    bool sent = commands.command({"SET", prefix + std::to_string(i), chunk, "PX", std::to_string(kChunkTtlMs)},
                                 [left, failed, commit](const redisReply* r, const std::string& error) {
                                   if (!r && failed->empty()) *failed = error;
                                   if (--*left == 0) commit(*failed);
                                 });
    if (!sent) {
      // Disconnected midway: the chunks already sent fail too and end the attempt.
      *failed = "disconnected";
      if ((*left -= chunks - i) == 0) checkpointing = false;
      return;
    }
  }
}

void Node::Impl::load_checkpoint() {
  if (loading || !commands.up()) {
    if (!loading) evtimer_add(retry, &kReloadRetry);
    return;
  }
  loading = true;
  synced = false;
  bool sent = commands.command({"EVAL", kNewestScript, "2", keys.checkpoints, keys.log_end},
                               [this](const redisReply* r, const std::string& error) {
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
      loading = false;
      problem("reading the checkpoint list: " + (r ? std::string("unexpected reply") : error));
      evtimer_add(retry, &kReloadRetry);
      return;
    }
    Manifest m;
    std::string_view newest(r->element[0]->str, r->element[0]->len);
    bool log_empty = r->element[1]->len == 0;
    if (newest.empty() || !parse_manifest(newest, m)) {
      loading = false;
      if (log_empty && host.applied_seq() > 0) {
        // Redis holds neither checkpoint nor log (it restarted empty): nothing on it
        // contradicts this node's state, which is the most anyone has if this node
        // takes the lease (it then writes a checkpoint of it first). Never reset.
        log::warn("cluster: Redis holds no log; keeping the state at {} to seed it", host.applied_seq());
        want_checkpoint = false;
        diverged = false;
      } else if (diverged) {
        // The log is whole from its first entry (trimmed only behind checkpoints): a
        // state that is not the log's starts again from nothing and replays it.
        host.reset();
        applied_term = 0;
        applied_hash = 0;
        recent_hashes.clear();
        ++reloads;
        diverged = false;
        want_checkpoint = false;
      } else if (!want_checkpoint) {
        // A gap with no checkpoint yet: wait for the leader's.
        evtimer_add(retry, &kReloadRetry);
        return;
      }
      want_checkpoint = false;
      update_synced();
      tail_next();
      return;
    }
    auto chunks = std::make_shared<std::vector<std::string>>(m.chunks);
    auto left = std::make_shared<size_t>(m.chunks);
    auto failed = std::make_shared<std::string>();
    std::string prefix = keys.chunk_prefix + std::to_string(m.seq) + ":" + std::to_string(m.term) + ":";
    for (uint64_t i = 0; i < m.chunks; ++i) {
      bool sent = commands.command(
          {"GET", prefix + std::to_string(i)},
          [this, chunks, left, failed, i, m](const redisReply* c, const std::string& err) {
            if (!c) *failed = err;
            else if (c->type != REDIS_REPLY_STRING) *failed = "chunk " + std::to_string(i) + " is gone";
            else (*chunks)[i].assign(c->str, c->len);
            if (--*left != 0) return;
            loading = false;
            if (!failed->empty()) {
              problem("loading checkpoint " + std::to_string(m.seq) + ": " + *failed + "; trying again");
              evtimer_add(retry, &kReloadRetry);
              return;
            }
            std::string bytes;
            for (const auto& piece : *chunks) bytes += piece;
            try {
              host.restore(bytes);
            } catch (const std::exception& e) {
              problem("checkpoint " + std::to_string(m.seq) + " cannot be restored: " + e.what());
              evtimer_add(retry, &kReloadRetry);
              return;
            }
            log::info("cluster: state restored from the checkpoint at {} (term {}, {} bytes)", m.seq, m.term,
                      bytes.size());
            want_checkpoint = false;
            diverged = false;
            applied_term = m.entry_term;
            applied_hash = m.hash;
            highest_term = std::max(highest_term, std::max(m.term, m.entry_term));
            remember_hash(m.seq, m.hash);
            follow_problem.clear();
            ++reloads;
            newest_checkpoint_seq = m.seq;
            newest_checkpoint_ms = m.unix_ms;
            if (role == Role::leader && host.applied_seq() >= takeover_end) enable_leading();
            update_synced();
            tail_next();
          });
      if (!sent) {
        loading = false;
        evtimer_add(retry, &kReloadRetry);
        return;
      }
    }
  });
  if (!sent) {
    // The connection is going (a drop is pending): try again once it is back.
    loading = false;
    evtimer_add(retry, &kReloadRetry);
  }
}

}  // namespace cluster
