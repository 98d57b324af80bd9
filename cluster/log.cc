// cluster/log.cc: the replicated log, a Redis stream with one entry per interval whose
// ID is the entry's seq. The leader appends through kAppendScript, which checks the
// lease and the chain inside Redis (fencing); every other node tails the stream with
// XREAD BLOCK on its own connection and applies an entry only when its chain hash says
// it follows the entry applied last.
#include <bit>
#include <charconv>
#include <cstring>

#include <fmt/format.h>
#include <hiredis/hiredis.h>

#include "cluster/node_impl.h"
#include "common/log.h"

namespace cluster {

namespace log = common::log;

namespace {
constexpr int kTailBlockMs = 500;
constexpr int kTailBatch = 4;  // an entry of 1,000,000 series is ~16 MB: keep replies small
constexpr size_t kRecentHashes = 4096;  // over two hours of entries at 2 s

uint64_t mix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}
}  // namespace

// Eight bytes a step, each word mixed before it is folded in (so that equal words at
// different places do not cancel), the length and the previous hash in the seed. Not
// cryptographic: it guards against histories mixed by accident, not by an adversary
// who can write to Redis.
uint64_t chain_hash(uint64_t previous, std::string_view entry) {
  uint64_t h = mix64(previous ^ 0x9e3779b97f4a7c15ULL) ^ mix64(entry.size());
  size_t i = 0;
  for (; i + 8 <= entry.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, entry.data() + i, 8);
    h = std::rotl(h ^ mix64(w + i), 27) * 0x9e3779b97f4a7c15ULL + 0x52dce729;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, entry.data() + i, entry.size() - i);
  return mix64(h ^ mix64(tail + i));
}

std::string hash_text(uint64_t hash) { return fmt::format("{:016x}", hash); }

uint64_t parse_hash(std::string_view text) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v, 16);
  return ec == std::errc() && end == text.data() + text.size() ? v : 0;
}

void Node::Impl::remember_hash(uint64_t seq, uint64_t hash) {
  while (!recent_hashes.empty() && recent_hashes.back().first >= seq) recent_hashes.pop_back();
  recent_hashes.emplace_back(seq, hash);
  if (recent_hashes.size() > kRecentHashes) recent_hashes.pop_front();
}

bool Node::Impl::applied_hash_at(uint64_t seq, uint64_t* hash) const {
  for (auto it = recent_hashes.rbegin(); it != recent_hashes.rend(); ++it)
    if (it->first == seq) return *hash = it->second, true;
  return false;
}

void Node::Impl::append(uint64_t seq, std::string entry) {
  if (role == Role::leader && monotonic_ns() >= lease_deadline_ns)
    step_down("the lease ran out before it could be renewed");
  if (!leading) {
    // The host applied this entry (a tick that ended after the step-down, e.g. when
    // the process ran again after a stop): its state is not the log's any more.
    resync("entry " + std::to_string(seq) + " was applied here after this node stopped leading", true);
    return;
  }
  uint64_t prev = applied_hash;
  applied_hash = chain_hash(prev, entry);
  applied_term = term;  // the entry is applied here already, under this term
  remember_hash(seq, applied_hash);
  pending_bytes += entry.size();
  pending.push_back(Entry{seq, term, prev, applied_hash, unix_ms(), std::move(entry)});
  while (pending_bytes > settings.max_pending_bytes && pending.size() > 1) {
    // Bounded memory while Redis does not take entries: what falls out is covered by a
    // checkpoint, written before the next append.
    pending_bytes -= pending.front().bytes.size();
    pending.pop_front();
    ++pending_dropped;
    if (!checkpoint_due) problem("over " + std::to_string(settings.max_pending_bytes) +
                                 " bytes of entries wait for Redis; a checkpoint will replace them");
    checkpoint_due = true;
  }
  pump();
}

void Node::Impl::pump() {
  if (!leading_now() || appending || waiting || checkpointing || !commands.up()) return;
  if (checkpoint_due) {
    write_checkpoint();
    return;
  }
  if (pending.empty()) return;
  const Entry& e = pending.front();
  uint64_t seq = e.seq;
  uint32_t replicas = replicas_to_wait();
  if (e.appended) return wait_for_replicas(seq, replicas);
  uint64_t appending_term = term;
  // The stream's cap: far behind the checkpoints, which trim it; only a leader that
  // cannot record checkpoints for long lets it grow to this.
  uint64_t max_len = std::max<uint64_t>(256, 8 * uint64_t(settings.checkpoint_every));
  appending = commands.command(
      {"EVAL", kAppendScript, "4", keys.lease, keys.log, keys.log_end, keys.checkpoints, lease_value(),
       std::to_string(seq), std::to_string(e.term), std::to_string(e.publish_ms), e.bytes, hash_text(e.prev_hash),
       hash_text(e.hash), std::to_string(max_len)},
      [this, seq, appending_term, replicas](const redisReply* r, const std::string& error) {
        appending = false;
        if (role != Role::leader || term != appending_term) return;
        if (!r) return on_append_refused(seq, error);
        if (pending.empty() || pending.front().seq != seq) return;
        pending.front().appended = true;
        if (replicas == 0) commit_front(seq);
      });
  // Right behind the append on the same connection: Redis runs it once the append is done.
  if (appending && replicas > 0) wait_for_replicas(seq, replicas);
}

// Acknowledged means replicated: a master that fails over loses what its replicas had
// not received, so an entry is shown (and counted as appended) only once `replicas` of
// them have it. A short answer leaves the entry waiting and asks again; nothing after
// it is appended meanwhile.
void Node::Impl::wait_for_replicas(uint64_t seq, uint32_t replicas) {
  uint64_t waiting_term = term;
  int64_t timeout_ms = std::min<int64_t>(settings.lease.count() / 3, 1000);
  waiting = commands.command(
      {"WAIT", std::to_string(replicas), std::to_string(timeout_ms)},
      [this, seq, replicas, waiting_term](const redisReply* r, const std::string& error) {
        waiting = false;
        if (role != Role::leader || term != waiting_term) return;
        if (pending.empty() || pending.front().seq != seq || !pending.front().appended) return pump();
        if (!r) return problem("waiting for replicas to take entry " + std::to_string(seq) + ": " + error);
        if (r->type == REDIS_REPLY_INTEGER && uint64_t(r->integer) >= replicas) return commit_front(seq);
        ++replica_waits;
        problem("entry " + std::to_string(seq) + " is on " + std::to_string(r->integer) + " of " +
                std::to_string(replicas) + " replicas; it is shown once they have it");
        pump();
      },
      std::chrono::milliseconds(timeout_ms + 3000));
}

void Node::Impl::commit_front(uint64_t seq) {
  pending_bytes -= pending.front().bytes.size();
  pending.pop_front();
  host.publish_to(seq);
  ++entries_appended;
  log_end = std::max(log_end, seq);
  last_problem.clear();
  // A checkpoint is of the state as applied here, so while entries still wait for the
  // log it would cover them and leave them out of the log: followers would have to
  // reload instead of reading them. It waits until the log has caught up.
  if (++appended_since_checkpoint >= settings.checkpoint_every && pending.empty()) checkpoint_due = true;
  pump();
}

// The master's replicas, asked every period: "auto" waits for one only where one exists.
void Node::Impl::ask_role() {
  commands.command({"ROLE"}, [this](const redisReply* r, const std::string&) {
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 3 && r->element[2]->type == REDIS_REPLY_ARRAY)
      replicas_seen = uint32_t(r->element[2]->elements);
  });
}

// "GAP/DIVERGED the log ends at SEQ HASH": the log lost entries this node appended (a
// Redis failover, or a restart) or holds another history. Only where the log's end is
// a point of this node's own history may a checkpoint of its state cover the rest;
// anything else would overwrite entries another leader appended: this node reloads
// the log's state and leads on from there instead.
void Node::Impl::on_append_refused(uint64_t seq, const std::string& error) {
  bool gap = error.rfind("GAP", 0) == 0, diverged_log = error.rfind("DIVERGED", 0) == 0;
  if (!gap && !diverged_log) {
    if (error.rfind("FENCED", 0) == 0 || error.find("equal or smaller") != std::string::npos) {
      ++appends_refused;
      step_down("append of " + std::to_string(seq) + " refused: " + error);
    } else {
      problem("appending " + std::to_string(seq) + ": " + error);
    }
    return;
  }
  unsigned long long end = 0;
  char hex[17] = {};
  std::sscanf(error.c_str(), "%*s the log ends at %llu %16s", &end, hex);
  uint64_t mine = 0;
  bool own_point = gap && (end == 0 || (applied_hash_at(end, &mine) && mine == parse_hash(hex)));
  if (own_point) {
    problem("append of " + std::to_string(seq) + ": " + error + "; writing a checkpoint first");
    checkpoint_due = true;
    pump();
    return;
  }
  ++appends_refused;
  follow_from(end);
}

void Node::Impl::follow_from(uint64_t end) {
  takeover_end = end;
  resync("the log's end (" + std::to_string(end) + ") is not on this node's history", true);
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
        bool applied_any = false;
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
              else if (name == "h") e.hash = parse_hash(value);
              else if (name == "p") e.publish_ms = int64_t(parse_u64(value));
              else if (name == "e") e.bytes = value;
            }
            if (!on_entry(e)) break;
            applied_any = true;
          }
        }
        if (applied_any) host.show_applied();
        update_synced();
        tail_next();
      },
      std::chrono::milliseconds(kTailBlockMs + 3000));
}

bool Node::Impl::on_entry(const LogEntry& e) {
  uint64_t applied = host.applied_seq();
  if (e.seq <= applied) return false;  // applied already (XREAD reads after `applied`)
  if (e.seq > applied + 1) {
    resync("the log continues at " + std::to_string(e.seq) + " but " + std::to_string(applied) + " is applied", false);
    return false;
  }
  if (chain_hash(applied_hash, e.bytes) != e.hash) {
    // The entry follows another entry `applied` than the one applied here (this node
    // applied entries the log lost, and another leader went on from an earlier point),
    // or its bytes are not what its leader hashed. Applying it would mix two histories.
    resync("entry " + std::to_string(e.seq) + " (term " + std::to_string(e.term) +
               ") does not follow the entry applied here (term " + std::to_string(applied_term) + ")",
           true);
    return false;
  }
  std::string error;
  switch (host.apply(e.seq, e.bytes, &error)) {
    case Host::Applied::applied:
      applied_term = e.term;
      applied_hash = e.hash;
      highest_term = std::max(highest_term, e.term);
      remember_hash(e.seq, e.hash);
      follow_problem.clear();
      ++entries_applied;
      if (e.publish_ms) lag_ms = unix_ms() - e.publish_ms;
      if (role == Role::leader && !leading && e.seq >= takeover_end) enable_leading();
      return true;
    case Host::Applied::duplicate: return false;
    case Host::Applied::gap:
      resync("entry " + std::to_string(e.seq) + " does not follow the applied state", false);
      return false;
    case Host::Applied::bad:
      log::error("cluster: entry {} of term {} cannot be applied: {}", e.seq, e.term, error);
      follow_problem = "entry " + std::to_string(e.seq) + " cannot be applied: " + error;
      resync("an entry could not be applied", false);
      return false;
  }
  return false;
}

}  // namespace cluster
