// cluster/partitioned.cc: a partitioned node's view of the cluster (partitioned.h): the
// cluster's P and R (kept in Redis by the first node), membership with each node's ready
// partitions, the holder map that decides what this node holds and releases, the
// sources it pulls, and the appends of its pullers. A held partition's own life (its
// checkpoint, its log, its lease) is in partition_follow.cc.
#include <event2/event.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <sstream>

#include "cluster/partitioned_impl.h"
#include "common/log.h"
#include "common/partitions.h"

namespace cluster {

namespace log = common::log;

namespace {
std::string text_of(const redisReply* r) {
  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) return std::string(r->str, r->len);
  if (r->type == REDIS_REPLY_INTEGER) return std::to_string(r->integer);
  return {};
}

// "MODE READY [HTTP]": MODE 1 may pull, 0 never pulls, 2 draining (holds nothing new,
// pulls nothing); READY the comma-separated ready partitions, or "-"; HTTP the node's
// query address (a node of an older version names none).
PartitionedMember parse_member(std::string id, const std::string& info) {
  PartitionedMember m;
  m.node_id = std::move(id);
  std::istringstream in(info);
  int may_pull = 1;
  std::string ready;
  in >> may_pull >> ready >> m.http_address;
  m.may_pull = may_pull == 1;
  m.draining = may_pull == 2;
  std::istringstream list(ready);
  std::string item;
  while (std::getline(list, item, ','))
    if (!item.empty() && item != "-") m.ready.push_back(uint32_t(std::stoul(item)));
  return m;
}
}  // namespace

std::string_view hold_state_name(HoldState state) {
  switch (state) {
    case HoldState::syncing: return "syncing";
    case HoldState::ready: return "ready";
    case HoldState::leaving: return "leaving";
  }
  return "?";
}

PartitionedNode::Impl::Impl(event_base* b, PartitionedSettings s, PartitionHost& h)
    : base(b), settings(std::move(s)), host(h), keys(cluster_tag(settings.name)),
      sentinel(settings.redis.via_sentinel()
                   ? std::make_unique<Sentinel>(b, settings.redis.sentinels, settings.redis.master)
                   : nullptr),
      slots(settings.redis.via_cluster() ? std::make_unique<Slots>(b, settings.redis.cluster_seeds) : nullptr),
      commands(b, settings.redis, "partitioned cluster", [](bool) {}, sentinel.get(), slots.get(), keys.tag) {
  period = event_new(base, -1, EV_PERSIST, [](int, short, void* self) { static_cast<Impl*>(self)->on_period(); }, this);
}

PartitionedNode::Impl::~Impl() { event_free(period); }

void PartitionedNode::Impl::start() {
  commands.start();
  auto every = std::min<std::chrono::milliseconds>(settings.lease / 3, std::chrono::milliseconds(1000));
  timeval tv{long(every.count() / 1000), long(every.count() % 1000) * 1000};
  event_add(period, &tv);
}

void PartitionedNode::Impl::problem(const std::string& text) {
  if (text == last_problem) return;
  last_problem = text;
  log::warn("partitioned cluster: {}", text);
}

void PartitionedNode::Impl::on_period() {
  if (!commands.up()) return;
  // Every period, not only at start: a Redis that restarted empty gets it again (from the
  // P this node follows), before a new node could set another.
  std::string asked = partitions ? std::to_string(partitions) + " " + std::to_string(replication)
                                 : std::to_string(settings.partitions) + " " + std::to_string(settings.replication);
  commands.command({"EVAL", kPartitioningScript, "1", keys.partitioning, asked},
                   [this](const redisReply* r, const std::string& error) {
                     if (!r) return problem("reading the cluster's partitioning: " + error);
                     if (partitions == 0) settle_partitioning(text_of(r));
                   });
  if (partitions == 0) return;
  heartbeat();
  for (auto& [p, h] : holding) {
    if (!h->loaded && !h->loading) load(*h);
    else if (h->loaded && !h->tailing) tail_next(*h);
    lease(*h);
  }
}

void PartitionedNode::Impl::settle_partitioning(const std::string& value) {
  std::istringstream in(value);
  uint32_t p = 0, r = 0;
  if (!(in >> p >> r) || p == 0 || r == 0) return problem("the cluster's partitioning is '" + value + "', not \"P R\"");
  if (p != settings.partitions || r != settings.replication) {
    std::string note = "this node asked for " + std::to_string(settings.partitions) + " partitions and replication " +
                       std::to_string(settings.replication) + "; the cluster has " + std::to_string(p) + " and " +
                       std::to_string(r) + ", which it follows";
    log::warn("partitioned cluster: {}", note);
    notes.push_back(note);
  }
  partitions = p;
  replication = r;
  for (uint32_t i = 0; i < partitions; ++i) {
    partition_commands.push_back(std::make_unique<Connection>(
        base, settings.redis, "partition " + std::to_string(i), [this, i](bool up) { on_partition_connection(i, up); },
        sentinel.get(), slots.get(), common::partition_tag(settings.name, i)));
    partition_commands.back()->start();
  }
  log::info("partitioned cluster: {} partitions, each held by {} nodes", partitions, replication);
  heartbeat();
}

// A partition's connection back after it was lost: Redis may have lost entries this node
// appended (a restart, a failover) whose series definitions later entries of the same
// epoch would refer to, which no holder could then apply. So every stream this node
// numbers takes a new epoch, for which holders number afresh: its pulled sources (their
// epochs above the ones they had) and the host's own (its pushes).
void PartitionedNode::Impl::on_partition_connection(uint32_t p, bool up) {
  if (!up) return;
  if (partition_connected.size() < partitions) partition_connected.resize(partitions);
  if (!partition_connected[p]) {
    partition_connected[p] = true;  // the first connection: nothing was appended before it
    return;
  }
  if (!pulling.empty()) log::info("partitioned cluster: partition {} reconnected: its sources take new epochs", p);
  for (const auto& [url, epoch] : pulling) epoch_floor[url] = std::max(epoch_floor[url], epoch);
  if (!pulling.empty()) {
    pulling.clear();
    host.pull(pulling);
  }
  host.renumber();
  if (members_known) place();
}

std::string PartitionedNode::Impl::member_info() const {
  std::string info = draining ? "2 " : settings.may_pull ? "1 " : "0 ";
  size_t listed = 0;
  for (const auto& [p, h] : holding) {
    if (h->state == HoldState::syncing) continue;
    if (listed++) info += ',';
    info += std::to_string(p);
  }
  if (!listed) info += '-';
  if (!settings.http_address.empty()) info.append(" ").append(settings.http_address);
  return info;
}

void PartitionedNode::Impl::heartbeat() {
  commands.command({"EVAL", kMembersScript, "2", keys.nodes, keys.node_info, settings.node_id, member_info(),
                    std::to_string(settings.lease.count())},
                   [this](const redisReply* r, const std::string& error) {
                     if (!r) return problem("heartbeat: " + error);
                     on_members(r);
                   });
}

void PartitionedNode::Impl::on_members(const redisReply* r) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 1) return;
  members.clear();
  for (size_t i = 1; i + 1 < r->elements; i += 2)
    members.push_back(parse_member(text_of(r->element[i]), text_of(r->element[i + 1])));
  std::sort(members.begin(), members.end(),
            [](const PartitionedMember& a, const PartitionedMember& b) { return a.node_id < b.node_id; });
  members_known = true;
  place();
}

// What this node holds follows the holder map: it takes what it is now a holder of, and
// lets go of what it is not once every holder has it ready (so that a move never leaves
// a partition with fewer ready holders than it had).
void PartitionedNode::Impl::place() {
  std::vector<std::string> ids, may_pull;  // draining members hold and pull nothing new
  for (const PartitionedMember& m : members) {
    if (m.draining) continue;
    ids.push_back(m.node_id);
    if (m.may_pull) may_pull.push_back(m.node_id);
  }
  if (ids.empty()) return;  // no one to hand over to: keep what is held
  if (draining) may_pull.clear();
  auto ready_on = [this](const std::string& id, uint32_t p) {
    for (const PartitionedMember& m : members)
      if (m.node_id == id) return std::find(m.ready.begin(), m.ready.end(), p) != m.ready.end();
    return false;
  };
  for (uint32_t p = 0; p < partitions; ++p) {
    std::vector<std::string> holders = common::holders(p, ids, replication);
    bool mine = std::find(holders.begin(), holders.end(), settings.node_id) != holders.end();
    Held* h = held(p);
    if (mine && !h) {
      take(p);
    } else if (mine && h->state == HoldState::leaving) {
      h->state = HoldState::ready;  // the map came back before it left
    } else if (!mine && h) {
      h->state = HoldState::leaving;
      bool all_ready = std::all_of(holders.begin(), holders.end(), [&](const std::string& id) { return ready_on(id, p); });
      if (all_ready) drop(p);
    }
  }
  std::vector<std::string> mine;
  for (const std::string& url : host.sources()) {
    std::vector<std::string> puller = common::holders(uint32_t(common::fnv1a64(url)), may_pull, 1);
    if (!puller.empty() && puller[0] == settings.node_id) mine.push_back(url);
  }
  choose_pullers(mine);
}

// A source this node becomes the puller of gets a new epoch first (INCR: above every
// epoch any puller had for it), which fences the previous puller off at its next append.
void PartitionedNode::Impl::choose_pullers(const std::vector<std::string>& mine) {
  size_t before = pulling.size();
  pulling.erase(std::remove_if(pulling.begin(), pulling.end(),
                               [&](const auto& s) { return std::find(mine.begin(), mine.end(), s.first) == mine.end(); }),
                pulling.end());
  if (pulling.size() != before) host.pull(pulling);
  for (const std::string& url : mine) {
    bool have = std::any_of(pulling.begin(), pulling.end(), [&](const auto& s) { return s.first == url; });
    if (have || taking_epoch.count(url)) continue;
    take_epoch(url, epoch_floor[url]);
  }
}

// floor: an epoch the append script has seen for the source (a STALE answer's): the new
// one goes above it, so that a counter Redis lost never hands out a fenced-off epoch.
void PartitionedNode::Impl::take_epoch(const std::string& url, uint64_t floor) {
  if (!taking_epoch.insert(url).second) return;
  bool sent = commands.command(
      {"EVAL", kEpochScript, "1", keys.tag + ":epoch:" + url, std::to_string(floor)},
      [this, url](const redisReply* r, const std::string& error) {
        taking_epoch.erase(url);
        if (!r || r->type != REDIS_REPLY_INTEGER) return problem("epoch of " + url + ": " + error);
        auto it = std::find_if(pulling.begin(), pulling.end(), [&](const auto& s) { return s.first == url; });
        if (it != pulling.end()) it->second = uint64_t(r->integer);
        else pulling.emplace_back(url, uint64_t(r->integer));
        log::info("partitioned cluster: pulling {} (epoch {})", url, r->integer);
        host.pull(pulling);
      });
  if (!sent) taking_epoch.erase(url);
}

// An append refused as STALE names the epoch that fenced ours off: another node pulls
// the source now, or Redis lost the epoch counter and handed that epoch out again. This
// node stops pulling it; if the next heartbeat still makes it the source's puller, it
// takes an epoch above the fence (deciding at once would let two nodes whose views of the
// members differ for a moment fence each other off in turn).
void PartitionedNode::Impl::on_stale(const std::string& url, uint64_t epoch, const std::string& error) {
  size_t at = error.rfind("epoch ");
  uint64_t fence = at == std::string::npos ? 0 : std::strtoull(error.c_str() + at + 6, nullptr, 10);
  auto it = std::find_if(pulling.begin(), pulling.end(), [&](const auto& s) { return s.first == url; });
  if (it == pulling.end() || it->second != epoch) return;
  log::info("partitioned cluster: {} was fenced off at epoch {} by epoch {}; not pulling it until the members say", url,
            epoch, fence);
  epoch_floor[url] = std::max(epoch_floor[url], fence);
  pulling.erase(it);
  host.pull(pulling);
}

PartitionedNode::Impl::Held* PartitionedNode::Impl::held(uint32_t partition) {
  auto it = holding.find(partition);
  return it == holding.end() ? nullptr : it->second.get();
}

Connection& PartitionedNode::Impl::commands_for(uint32_t partition) { return *partition_commands.at(partition); }

// --- the node ----------------------------------------------------------------------------

PartitionedNode::PartitionedNode(event_base* base, PartitionedSettings settings, PartitionHost& host)
    : impl_(std::make_unique<Impl>(base, std::move(settings), host)) {}
PartitionedNode::~PartitionedNode() = default;
void PartitionedNode::start() { impl_->start(); }
uint32_t PartitionedNode::partitions() const { return impl_->partitions; }

void PartitionedNode::drain() {
  Impl& m = *impl_;
  if (m.draining) return;
  m.draining = true;
  log::info("partitioned cluster: draining: handing {} partitions over, pulling nothing", m.holding.size());
  m.choose_pullers({});
  m.heartbeat();  // the members learn it now, not a third of a lease later
}

void PartitionedNode::append(uint32_t partition, const std::string& source, uint64_t epoch, uint64_t tick,
                             std::string entry, AppendDone done) {
  Impl& m = *impl_;
  auto later = [&m](AppendDone d, std::string why) {
    // done runs from the loop, never inside this call.
    auto* call = new std::pair<AppendDone, std::string>(std::move(d), std::move(why));
    event_base_once(m.base, -1, EV_TIMEOUT, [](int, short, void* arg) {
      std::unique_ptr<std::pair<AppendDone, std::string>> c(static_cast<std::pair<AppendDone, std::string>*>(arg));
      c->first(false, c->second);
    }, call, nullptr);
  };
  if (partition >= m.partitions) return later(std::move(done), "no such partition");
  Keys k(common::partition_tag(m.settings.name, partition));
  uint32_t max_len = std::max<uint32_t>(256, 8 * m.settings.checkpoint_every);
  if (m.logs.size() < m.partitions) m.logs.resize(m.partitions);
  // A log this node knew had begun, found empty, is one Redis lost: the script refuses it
  // until the primary's checkpoint (an entry appended before that would never be applied).
  // Not for ever: a partition whose holders went with Redis starts again from nothing.
  const Impl::LogKnown& known = m.logs[partition];
  const int64_t now = unix_ms();
  const bool begun = (known.begun || m.host.applied_seq(partition) > 0) &&
                     !(known.empty_since_ms && now - known.empty_since_ms > 2 * m.settings.lease.count());
  auto shared = std::make_shared<AppendDone>(std::move(done));
  bool sent = m.commands_for(partition).command(
      {"EVAL", kPartitionAppendScript, "4", k.log, k.log_end, k.checkpoints, k.sources, source, std::to_string(epoch),
       std::to_string(tick), std::to_string(now), std::move(entry), std::to_string(max_len), begun ? "1" : "0"},
      [&m, shared, source, epoch, partition](const redisReply* r, const std::string& error) {
        Impl::LogKnown& log_known = m.logs[partition];
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 2) {
          log_known = Impl::LogKnown{true, 0};
          ++m.entries_appended;
          (*shared)(true, "");
          return;
        }
        ++m.appends_refused;
        if (!r && error.rfind("EMPTY", 0) == 0 && !log_known.empty_since_ms) log_known.empty_since_ms = unix_ms();
        if (!r && error.rfind("STALE", 0) == 0) m.on_stale(source, epoch, error);
        (*shared)(false, r ? "unexpected reply" : error);
      });
  if (!sent) later(std::move(*shared), "not connected to Redis");
}

void PartitionedNode::take_own_epoch(const std::string& source, uint64_t floor, EpochDone done) {
  Impl& m = *impl_;
  auto shared = std::make_shared<EpochDone>(std::move(done));
  bool sent = m.commands.command(
      {"EVAL", kEpochScript, "1", m.keys.tag + ":epoch:" + source, std::to_string(floor)},
      [shared](const redisReply* r, const std::string& error) {
        if (r && r->type == REDIS_REPLY_INTEGER && r->integer > 0) return (*shared)(uint64_t(r->integer), "");
        (*shared)(0, r ? "unexpected reply" : error);
      });
  if (sent) return;
  // done runs from the loop, never inside this call.
  auto* call = new std::shared_ptr<EpochDone>(std::move(shared));
  event_base_once(m.base, -1, EV_TIMEOUT, [](int, short, void* arg) {
    std::unique_ptr<std::shared_ptr<EpochDone>> c(static_cast<std::shared_ptr<EpochDone>*>(arg));
    (**c)(0, "not connected to Redis");
  }, call, nullptr);
}

PartitionedStatus PartitionedNode::status() const {
  const Impl& m = *impl_;
  PartitionedStatus s;
  s.node_id = m.settings.node_id;
  s.partitions = m.partitions;
  s.replication = m.replication;
  s.redis = m.commands.state();
  s.ready = m.members_known && std::all_of(m.holding.begin(), m.holding.end(), [](const auto& entry) {
    return entry.second->state != HoldState::syncing;
  });
  for (const auto& [p, h] : m.holding)
    s.held.push_back(HeldPartition{p, h->state, !h->lease.empty(), m.host.applied_seq(p), h->log_end, h->problem});
  s.members = m.members;
  s.pulling = m.pulling;
  s.entries_applied = m.entries_applied;
  s.entries_appended = m.entries_appended;
  s.appends_refused = m.appends_refused;
  s.reloads = m.reloads;
  s.moves_in = m.moves_in;
  s.moves_out = m.moves_out;
  s.move_ms = m.move_ms;
  s.move_bytes = m.move_bytes;
  s.draining = m.draining;
  s.notes = m.notes;
  return s;
}

}  // namespace cluster
