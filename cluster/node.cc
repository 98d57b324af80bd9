// cluster/node.cc: a cluster node's roles (candidate, follower, leader), its timers,
// and its status; the public face of Node (cluster.h).
#include <charconv>
#include <stdexcept>

#include <event2/event.h>

#include "cluster/node_impl.h"
#include "common/log.h"

namespace cluster {

namespace log = common::log;

uint64_t parse_u64(std::string_view text) {
  uint64_t v = 0;
  std::from_chars(text.data(), text.data() + text.size(), v);
  return v;
}

std::string_view role_name(Role role) {
  switch (role) {
    case Role::follower: return "follower";
    case Role::candidate: return "candidate";
    case Role::leader: return "leader";
  }
  return "?";
}

std::string_view redis_state_name(RedisState state) {
  switch (state) {
    case RedisState::down: return "down";
    case RedisState::connecting: return "connecting";
    case RedisState::connected: return "connected";
  }
  return "?";
}

Node::Impl::Impl(event_base* b, Settings s, Host& h)
    : base(b), settings(std::move(s)), host(h), keys(cluster_tag(settings.name)),
      sentinel(settings.redis.via_sentinel()
                   ? std::make_unique<Sentinel>(b, settings.redis.sentinels, settings.redis.master)
                   : nullptr),
      slots(settings.redis.via_cluster() ? std::make_unique<Slots>(b, settings.redis.cluster_seeds) : nullptr),
      commands(b, settings.redis, "commands", [this](bool up) { on_commands_change(up); }, sentinel.get(),
               slots.get(), keys.tag),
      tail(b, settings.redis, "log tail", [this](bool up) {
        tailing = false;
        if (up) tail_next();
      }, sentinel.get(), slots.get(), keys.tag),
      role(settings.may_lead ? Role::candidate : Role::follower) {
  if (settings.node_id.empty()) throw std::invalid_argument("cluster: the node id is empty");
  if (settings.node_id.find(' ') != std::string::npos)
    throw std::invalid_argument("cluster: the node id '" + settings.node_id + "' contains a space");
  if (settings.lease < std::chrono::milliseconds(300))
    throw std::invalid_argument("cluster: the lease must be at least 300ms");
  period = event_new(b, -1, EV_PERSIST, [](int, short, void* a) { static_cast<Impl*>(a)->on_period(); }, this);
  expiry = evtimer_new(b, [](int, short, void* a) {
    auto* self = static_cast<Impl*>(a);
    if (self->role == Role::leader && monotonic_ns() >= self->lease_deadline_ns)
      self->step_down("the lease ran out before it could be renewed");
  }, this);
  retry = evtimer_new(b, [](int, short, void* a) { static_cast<Impl*>(a)->load_checkpoint(); }, this);
}

Node::Impl::~Impl() {
  event_free(period);
  event_free(expiry);
  event_free(retry);
}

void Node::Impl::start() {
  // Heartbeats at least every second, so that a long lease does not slow down noticing
  // a free lease or a node that joined; renewals stay every third of the lease.
  int64_t every_ms = std::min<int64_t>(settings.lease.count() / 3, 1000);
  timeval tv{time_t(every_ms / 1000), suseconds_t(every_ms % 1000 * 1000)};
  event_add(period, &tv);
  if (sentinel) sentinel->watch([this](const HostPort& master) { on_master_switch(master); });
  commands.start();
  tail.start();
}

// Sentinel announced a failover: move now instead of waiting for the old master's
// connection to fail (it may be partitioned, and answer nothing for a while).
void Node::Impl::on_master_switch(const HostPort& master) {
  for (Connection* c : {&commands, &tail})
    if (c->server().text() != master.text()) c->drop("sentinel: the master moved to " + master.text());
}

void Node::Impl::problem(const std::string& text) {
  if (text == last_problem) return;
  last_problem = text;
  log::warn("cluster: {}", text);
}

void Node::Impl::on_period() {
  if (!commands.up()) return;
  heartbeat();
  ask_role();
  if (role == Role::leader) {
    if (monotonic_ns() >= renewed_at_ns + settings.lease.count() * 1'000'000 / 3 - 50'000'000) renew();
    pump();
  } else {
    try_lead();
  }
  if (!tailing) tail_next();
}

// A candidate takes a free lease: from the period, and at once from the heartbeat that
// found it free (waiting for the next period cost up to a second more without a leader).
void Node::Impl::try_lead() {
  if (role == Role::leader || acquiring || !settings.may_lead || loading || want_checkpoint || !leader_id.empty() ||
      heartbeats < 1 || monotonic_ns() < connected_at_ns + settings.lease.count() * 1'000'000)
    return;
  // A lease's time after connecting first: Redis may have restarted empty and forgotten
  // the nodes, which need that long to be heard again. The node that has applied the
  // most among those that may lead takes over, so no appended entry is lost; what a
  // node applied past the log's end was never acknowledged and counts as the end. The
  // acquire script checks the same inside Redis.
  uint64_t highest = 0;
  auto counted = [this](uint64_t applied) { return log_end > 0 ? std::min(applied, log_end) : applied; };
  for (const Member& m : members)
    if (m.node_id != settings.node_id && m.may_lead) highest = std::max(highest, counted(m.applied));
  if (counted(host.applied_seq()) >= highest) acquire();
}

void Node::Impl::on_commands_change(bool up) {
  heartbeats = 0;
  acquiring = false;
  connected_at_ns = monotonic_ns();
  if (!up && down_since_ns == 0) down_since_ns = connected_at_ns;
  if (up) down_since_ns = 0;
  appending = false;
  waiting = false;
  checkpointing = false;
  checkpoint_child.reset();
  if (!up) return;
  if (want_checkpoint) load_checkpoint();
  on_period();
}

void Node::Impl::become_leader(uint64_t new_term, uint64_t end, uint64_t end_hash) {
  role = Role::leader;
  term = new_term;
  highest_term = std::max(highest_term, term);
  leader_id = settings.node_id;
  uint64_t applied = host.applied_seq();
  log::info("cluster: leader in term {} (log ends at {}, applied {})", term, end, applied);
  if (newest_checkpoint_ms == 0) checkpoint_due = true;
  takeover_end = end;
  // Holding the log's end, or more, is leading on from it only if the log's end is a
  // point of this node's history; otherwise the log's state is taken first.
  uint64_t mine = 0;
  if (end > 0 && applied >= end && !(applied_hash_at(end, &mine) && mine == end_hash)) {
    follow_from(end);
  } else if (!loading && applied >= takeover_end) {
    enable_leading();
  }
  arm_expiry();
  update_synced();
}

void Node::Impl::enable_leading() {
  if (leading) return;
  leading = true;
  host.set_leading(true);
  update_synced();
  pump();
}

void Node::Impl::step_down(const std::string& why) {
  if (role != Role::leader) return;
  log::warn("cluster: no longer leader (term {}): {}", term, why);
  role = settings.may_lead ? Role::candidate : Role::follower;
  leader_id.clear();
  evtimer_del(expiry);
  // A node that cannot reach Redis stops ingesting too: whoever leads next appends the
  // same seqs with other data, so nothing may be shown here that the log did not take.
  // Readers keep the last committed snapshot; the node reports itself degraded.
  if (leading) host.set_leading(false);
  leading = false;
  if (!pending.empty()) resync("entries applied here were never appended", true);
}

void Node::Impl::resync(const std::string& why, bool state_diverged) {
  diverged = diverged || state_diverged;
  log::warn("cluster: reloading the state from the newest checkpoint: {}", why);
  follow_problem = why;
  if (leading) host.set_leading(false);
  leading = false;
  pending.clear();
  pending_bytes = 0;
  waiting = false;
  synced = false;
  if (!loading) load_checkpoint();
}

void Node::Impl::update_synced() {
  if (leading_now() || (heartbeats > 0 && !loading && !want_checkpoint && host.applied_seq() >= log_end)) synced = true;
}

Status Node::Impl::status() const {
  Status s;
  s.node_id = settings.node_id;
  s.role = role;
  s.term = term;
  s.leader_id = leader_id;
  int64_t now = monotonic_ns();
  if (role == Role::leader) s.lease_remaining_ms = std::max<int64_t>(0, (lease_deadline_ns - now) / 1'000'000);
  else if (!leader_id.empty())
    s.lease_remaining_ms = std::max<int64_t>(0, seen_pttl_ms - (now - seen_pttl_at_ns) / 1'000'000);
  s.applied_seq = host.applied_seq();
  s.applied_term = applied_term;
  s.applied_hash = applied_hash;
  s.log_end_seq = log_end;
  s.synced = synced;
  s.redis = commands.state();
  s.redis_address = commands.where();
  if (newest_checkpoint_ms != 0)
    s.checkpoint_age_s = std::max<int64_t>(0, (unix_ms() + redis_now_offset_ms - newest_checkpoint_ms) / 1000);
  s.checkpoint_seq = newest_checkpoint_seq;
  s.entries_applied = entries_applied;
  s.entries_appended = entries_appended;
  s.appends_refused = appends_refused;
  s.redis_errors = commands.errors() + tail.errors();
  s.pending = pending.size();
  s.pending_bytes = pending_bytes;
  s.replicas = replicas_seen;
  s.replica_waits = replica_waits;
  s.pending_dropped = pending_dropped;
  s.reloads = reloads;
  s.follow_problem = follow_problem;
  s.degraded = !commands.up() && down_since_ns != 0 &&
               now - down_since_ns >= std::min<int64_t>(settings.lease.count() / 3, 1000) * 1'000'000;
  s.members = members;
  s.lag_ms = lag_ms;
  return s;
}

Node::Node(event_base* base, Settings settings, Host& host)
    : impl_(std::make_unique<Impl>(base, std::move(settings), host)) {}
Node::~Node() = default;
void Node::start() { impl_->start(); }
void Node::append(uint64_t seq, std::string entry) { impl_->append(seq, std::move(entry)); }
Status Node::status() const { return impl_->status(); }
bool Node::leading() const { return impl_->leading; }

}  // namespace cluster
