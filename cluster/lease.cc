// cluster/lease.cc: the leader lease. A node takes a free lease with a new term
// (kAcquireScript), renews it every third of its length while the renewal is its own
// (kRenewScript), and steps down the moment its lease may have run out: the deadline
// is counted from before the request was sent, so the node's idea of its lease always
// ends before Redis's does (clock rates aside), and a node paused past its lease finds
// the deadline gone when it runs again.
#include <algorithm>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "cluster/node_impl.h"
#include "common/log.h"

namespace cluster {

void Node::Impl::acquire() {
  int64_t sent = monotonic_ns();
  uint64_t floor = std::max({term, applied_term, highest_term});
  acquiring = commands.command(
      {"EVAL", kAcquireScript, "6", keys.lease, keys.term, keys.log_end, keys.checkpoints, keys.nodes, keys.node_info,
       settings.node_id, std::to_string(settings.lease.count()), std::to_string(floor),
       std::to_string(host.applied_seq())},
      [this, sent](const redisReply* r, const std::string& error) {
        acquiring = false;
        if (!r) {
          problem("taking the lease: " + error);
          return;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 3) return;
        if (r->element[0]->integer == 1) {
          if (role == Role::leader) return;
          lease_deadline_ns = sent + settings.lease.count() * 1'000'000;
          renewed_at_ns = sent;
          if (r->elements < 4) return;
          become_leader(uint64_t(r->element[1]->integer), parse_u64(std::string_view(r->element[2]->str, r->element[2]->len)),
                        parse_hash(std::string_view(r->element[3]->str, r->element[3]->len)));
        } else if (r->element[1]->type == REDIS_REPLY_STRING) {
          std::string holder(r->element[1]->str, r->element[1]->len);
          if (holder == lease_value() && role == Role::leader) return;  // our own lease
          size_t space = holder.rfind(' ');
          leader_id = holder.substr(0, space);
          if (space != std::string::npos) term = std::max<uint64_t>(term, parse_u64(std::string_view(holder).substr(space + 1)));
          seen_pttl_ms = r->element[2]->integer;
          seen_pttl_at_ns = monotonic_ns();
          highest_term = std::max(highest_term, term);
          role = Role::follower;
        }
      });
}

void Node::Impl::renew() {
  int64_t sent = monotonic_ns();
  renewed_at_ns = sent;
  uint64_t renewing = term;
  commands.command({"EVAL", kRenewScript, "1", keys.lease, lease_value(), std::to_string(settings.lease.count())},
                   [this, sent, renewing](const redisReply* r, const std::string& error) {
                     if (role != Role::leader || term != renewing) return;
                     if (!r) {
                       problem("renewing the lease: " + error);
                       return;
                     }
                     if (r->integer != 1) {
                       step_down("the lease is no longer this node's");
                       return;
                     }
                     lease_deadline_ns = sent + settings.lease.count() * 1'000'000;
                     arm_expiry();
                   });
}

void Node::Impl::arm_expiry() {
  int64_t left_us = std::max<int64_t>(0, (lease_deadline_ns - monotonic_ns()) / 1000);
  timeval tv{time_t(left_us / 1'000'000), suseconds_t(left_us % 1'000'000)};
  evtimer_add(expiry, &tv);
}

}  // namespace cluster
