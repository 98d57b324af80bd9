// cluster/log.cc: the replicated log, a Redis stream with one entry per interval whose
// ID is the entry's seq. The leader appends through kAppendScript, which checks the
// lease inside Redis (fencing); every other node tails the stream with XREAD BLOCK on
// its own connection and applies the entries in order.
#include <charconv>

#include <hiredis/hiredis.h>

#include "cluster/node_impl.h"
#include "common/log.h"

namespace cluster {

namespace log = server::log;

namespace {
constexpr int kTailBlockMs = 500;
constexpr int kTailBatch = 4;  // an entry of 1,000,000 series is ~16 MB: keep replies small

}  // namespace

void Node::Impl::append(uint64_t seq, std::string entry) {
  if (role == Role::leader && monotonic_ns() >= lease_deadline_ns)
    step_down("the lease ran out before it could be renewed");
  if (!leading) {
    // The host applied this entry (a tick that ended after the step-down, e.g. when
    // the process ran again after a stop): its state is not the log's any more.
    resync("entry " + std::to_string(seq) + " was applied here after this node stopped leading", true);
    return;
  }
  pending.push_back(Entry{seq, term, applied_term, unix_ms(), std::move(entry)});
  applied_term = term;  // the entry is applied here already, under this term
  if (local_only) host.publish_to(seq);  // nobody else can show other data meanwhile
  if (pending.size() > settings.max_pending) {
    // Bounded memory while Redis is away: what falls out is covered by a checkpoint.
    pending.pop_front();
    if (!checkpoint_due) problem("more than " + std::to_string(settings.max_pending) +
                                 " entries wait for Redis; a checkpoint will replace them");
    checkpoint_due = true;
  }
  pump();
}

void Node::Impl::pump() {
  if (!leading_now() || appending || checkpointing || !commands.up()) return;
  if (checkpoint_due) {
    write_checkpoint();
    return;
  }
  if (pending.empty()) return;
  const Entry& e = pending.front();
  uint64_t seq = e.seq;
  uint64_t appending_term = term;
  appending = commands.command(
      {"EVAL", kAppendScript, "4", keys.lease, keys.log, keys.log_end, keys.checkpoints, lease_value(),
       std::to_string(seq), std::to_string(e.term), std::to_string(e.publish_ms), e.bytes, std::to_string(e.prev_term)},
      [this, seq, appending_term](const redisReply* r, const std::string& error) {
        appending = false;
        if (role != Role::leader || term != appending_term) return;
        if (!r) {
          bool refused = error.rfind("FENCED", 0) == 0 || error.find("equal or smaller") != std::string::npos;
          if (refused) {
            ++appends_refused;
            step_down("append of " + std::to_string(seq) + " refused: " + error);
          } else if (error.rfind("GAP", 0) == 0) {
            // The log lost entries this node appended (a Redis failover, or a restart):
            // a checkpoint of this node's state covers them, then appends go on.
            problem("append of " + std::to_string(seq) + ": " + error + "; writing a checkpoint first");
            checkpoint_due = true;
            pump();
          } else {
            problem("appending " + std::to_string(seq) + ": " + error);
          }
          return;
        }
        if (!pending.empty() && pending.front().seq == seq) pending.pop_front();
        host.publish_to(seq);
        ++entries_appended;
        log_end = std::max(log_end, seq);
        last_problem.clear();
        // A checkpoint is of the state as applied here, so while entries still wait for
        // the log it would cover them and leave them out of the log: followers would
        // have to reload instead of reading them. It waits until the log has caught up.
        if (++appended_since_checkpoint >= settings.checkpoint_every && pending.empty()) checkpoint_due = true;
        pump();
      });
}

void Node::Impl::tail_next() {
  if (tailing || !tail.up() || want_checkpoint || loading || leading_now()) return;
  tailing = tail.command(
      {"XREAD", "COUNT", std::to_string(kTailBatch), "BLOCK", std::to_string(kTailBlockMs), "STREAMS", keys.log,
       std::to_string(host.applied_seq()) + "-0"},
      [this](const redisReply* r, const std::string& error) {
        tailing = false;
        if (!r) {
          problem("reading the log: " + error);
          return;  // the next period (or the reconnection) tails again
        }
        // {{key, {{id, {field, value, ...}}, ...}}}, or nil when BLOCK timed out.
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements == 2) {
          const redisReply* entries = r->element[0]->element[1];
          for (size_t i = 0; i < entries->elements && !loading; ++i) {
            const redisReply* item = entries->element[i];
            std::string_view id(item->element[0]->str, item->element[0]->len);
            LogEntry e;
            e.seq = parse_u64(id.substr(0, id.find('-')));
            const redisReply* fields = item->element[1];
            for (size_t f = 0; f + 1 < fields->elements; f += 2) {
              std::string_view name(fields->element[f]->str, fields->element[f]->len);
              std::string_view value(fields->element[f + 1]->str, fields->element[f + 1]->len);
              if (name == "t") e.term = parse_u64(value);
              else if (name == "q") e.prev_term = parse_u64(value), e.has_prev_term = true;
              else if (name == "p") e.publish_ms = int64_t(parse_u64(value));
              else if (name == "e") e.bytes = value;
            }
            on_entry(e);
          }
        }
        update_synced();
        tail_next();
      },
      std::chrono::milliseconds(kTailBlockMs + 3000));
}

void Node::Impl::on_entry(const LogEntry& e) {
  uint64_t applied = host.applied_seq();
  if (e.term < applied_term) {
    ++stale_dropped;
    problem("dropped entry " + std::to_string(e.seq) + " of term " + std::to_string(e.term) + ": term " +
            std::to_string(applied_term) + " is already applied");
    return;
  }
  if (e.seq <= applied) return;  // applied already (XREAD reads after `applied`)
  if (e.seq > applied + 1) {
    resync("the log continues at " + std::to_string(e.seq) + " but " + std::to_string(applied) + " is applied", false);
    return;
  }
  if (e.has_prev_term && e.prev_term != applied_term) {
    // The entry follows a different entry `applied` than the one applied here: this
    // node applied entries the log lost (a Redis failover) and another leader went on
    // from an earlier point. Applying it would mix the two histories.
    resync("entry " + std::to_string(e.seq) + " follows an entry of term " + std::to_string(e.prev_term) +
               ", but the entry applied here is of term " + std::to_string(applied_term),
           true);
    return;
  }
  std::string error;
  switch (host.apply(e.seq, e.bytes, &error)) {
    case Host::Applied::applied:
      applied_term = e.term;
      ++entries_applied;
      if (e.publish_ms) lag_ms = unix_ms() - e.publish_ms;
      if (role == Role::leader && !leading && e.seq >= takeover_end) enable_leading();
      break;
    case Host::Applied::duplicate: break;
    case Host::Applied::gap: resync("entry " + std::to_string(e.seq) + " does not follow the applied state", false); break;
    case Host::Applied::bad:
      log::error("cluster: entry {} of term {} cannot be applied: {}", e.seq, e.term, error);
      resync("an entry could not be applied", false);
      break;
  }
}

}  // namespace cluster
