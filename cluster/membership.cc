// cluster/membership.cc: membership and the view of the cluster. Every node runs
// kHeartbeatScript every third of the lease (at least every second): it records itself
// (role, applied seq, lag) with an expiry of one lease, forgets nodes whose expiry passed, raises the term
// counter to the highest term this node has seen (so that a Redis restarted empty
// never hands out an old term again), and returns the lease holder, the log's end,
// the newest checkpoint and the live nodes.
#include <algorithm>
#include <sstream>

#include <hiredis/hiredis.h>

#include "cluster/node_impl.h"
#include "common/log.h"

namespace cluster {

namespace {
std::string text_of(const redisReply* r) {
  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) return std::string(r->str, r->len);
  if (r->type == REDIS_REPLY_INTEGER) return std::to_string(r->integer);
  return {};
}
}  // namespace

void Node::Impl::heartbeat() {
  std::string info = std::string(role_name(role)) + " " + std::to_string(host.applied_seq()) + " " +
                     std::to_string(lag_ms) + " " + (settings.may_lead ? "1" : "0");
  int64_t sent_ms = unix_ms();
  commands.command(
      {"EVAL", kHeartbeatScript, "6", keys.nodes, keys.node_info, keys.term, keys.lease, keys.log_end, keys.checkpoints,
       settings.node_id, info, std::to_string(settings.lease.count()), std::to_string(std::max({term, applied_term, highest_term}))},
      [this, sent_ms](const redisReply* r, const std::string& error) {
        if (!r) {
          problem("heartbeat: " + error);
          return;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 5) return;
        std::string holder = text_of(r->element[0]);
        int64_t pttl = r->element[1]->integer;
        log_end = std::max<uint64_t>(role == Role::leader ? log_end : 0, parse_u64(text_of(r->element[2])));
        std::string newest = text_of(r->element[3]);
        int64_t redis_now = int64_t(parse_u64(text_of(r->element[4])));
        redis_now_offset_ms = redis_now - (sent_ms + unix_ms()) / 2;
        if (!newest.empty()) {
          std::istringstream in(newest);
          uint64_t seq = 0, t = 0, chunks = 0;
          int64_t ms = 0;
          if (in >> seq >> t >> chunks >> ms) {
            newest_checkpoint_seq = seq;
            newest_checkpoint_ms = ms;
          }
        } else {
          newest_checkpoint_seq = 0;
          newest_checkpoint_ms = 0;
          if (role == Role::leader) checkpoint_due = true;  // Redis lost them: write one
        }
        members.clear();
        for (size_t i = 5; i + 1 < r->elements; i += 2) {
          Member m;
          m.node_id = text_of(r->element[i]);
          std::istringstream in(text_of(r->element[i + 1]));
          int may_lead = 1;
          in >> m.role >> m.applied >> m.lag_ms >> may_lead;
          m.may_lead = may_lead != 0;
          members.push_back(std::move(m));
        }
        if (role == Role::leader) {
          if (holder != lease_value() && !holder.empty()) step_down("the lease is held by " + holder);
        } else if (holder.empty()) {
          leader_id.clear();
          if (settings.may_lead) role = Role::candidate;
        } else {
          size_t space = holder.rfind(' ');
          leader_id = holder.substr(0, space);
          if (space != std::string::npos) term = std::max<uint64_t>(term, parse_u64(std::string_view(holder).substr(space + 1)));
          seen_pttl_ms = pttl;
          seen_pttl_at_ns = monotonic_ns();
          highest_term = std::max(highest_term, term);
          role = Role::follower;
        }
        ++heartbeats;
        if (holder.empty()) try_lead();  // the lease is free: now, not at the next period
        update_synced();
        pump();
      });
}

}  // namespace cluster
