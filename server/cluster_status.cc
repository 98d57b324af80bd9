// server/cluster_status.cc: see cluster_status.h.
#include "server/cluster_status.h"

#include "server/admin.h"
#include "server/service.h"

namespace server {

namespace {

// `show cluster`'s settings notes, one report a note.
std::vector<Report> note_reports(const std::vector<std::string>& notes) {
  std::vector<Report> out;
  for (const std::string& n : notes) out.push_back(Report().add("note", n));
  return out;
}

// What `show cluster` reads from the snapshot: the report's text, a NUL, then its JSON.
void set_status_report(shm::Writer& writer, const Report& r) {
  std::string text = r.text();
  text += '\0';
  text += r.json();
  writer.set_status_text(text);
}

}  // namespace

void publish_cluster_status(shm::Store& store, shm::Writer& writer, const cluster::Status& s,
                            uint64_t published_generation) {
  auto set = [&](ServiceCounter c, uint64_t v) { store.service_counter(c).store(v, std::memory_order_relaxed); };
  set(kClusterSynced, s.synced ? 1 : 0);
  set(kClusterRole, uint64_t(s.role) + 1);
  set(kClusterTerm, s.term);
  set(kClusterLagMs, uint64_t(std::max<int64_t>(0, s.lag_ms)));
  set(kClusterApplied, s.entries_applied);
  set(kClusterRedisErrors, s.redis_errors);
  set(kClusterCheckpointAgeS, s.checkpoint_age_s < 0 ? 0 : uint64_t(s.checkpoint_age_s) + 1);
  set(kClusterDegraded, s.degraded ? 1 : 0);
  set(kClusterReloads, s.reloads);
  set(kClusterCannotFollow, s.follow_problem.empty() ? 0 : 1);
  set(kClusterPendingDropped, s.pending_dropped);

  std::vector<Report> nodes;
  for (const cluster::Member& m : s.members)
    nodes.push_back(Report()
                        .add("node_id", m.node_id)
                        .add("role", m.role)
                        .add("applied", m.applied)
                        .add("lag_ms", m.lag_ms)
                        .add("may_lead", m.may_lead));
  Report r;
  r.add("node_id", s.node_id)
      .add("role", std::string(cluster::role_name(s.role)))
      .add("term", s.term)
      .add("leader_id", s.leader_id.empty() ? "-" : s.leader_id)
      .add("lease_remaining_ms", s.lease_remaining_ms)
      .add("synced", s.synced)
      .add("degraded", s.degraded)
      .add("follow_problem", s.follow_problem.empty() ? "-" : s.follow_problem)
      .add("applied", s.applied_seq)
      .add("published_generation", published_generation)
      .add("applied_term", s.applied_term)
      .add("applied_hash", cluster::hash_text(s.applied_hash))
      .add("log_end", s.log_end_seq)
      .add("replication_lag_ms", s.lag_ms)
      .add("redis", std::string(cluster::redis_state_name(s.redis)))
      .add("redis_address", s.redis_address)
      .add("checkpoint_age_s", s.checkpoint_age_s)
      .add("checkpoint_seq", s.checkpoint_seq)
      .add("entries_applied", s.entries_applied)
      .add("entries_appended", s.entries_appended)
      .add("appends_refused", s.appends_refused)
      .add("pending_appends", s.pending)
      .add("pending_bytes", s.pending_bytes)
      .add("redis_replicas", s.replicas)
      .add("replica_waits", s.replica_waits)
      .add("pending_dropped", s.pending_dropped)
      .add("reloads", s.reloads)
      .add("redis_errors", s.redis_errors)
      .add_list("node", std::move(nodes))
      .add_list("settings_note", note_reports(s.notes));
  set_status_report(writer, r);
}

void publish_partitioned_status(shm::Store& store, shm::Writer& writer, const cluster::PartitionedStatus& s,
                                uint64_t published_generation) {
  auto set = [&](ServiceCounter c, uint64_t v) { store.service_counter(c).store(v, std::memory_order_relaxed); };
  set(kClusterSynced, s.ready ? 1 : 0);
  set(kClusterApplied, s.entries_applied);
  set(kClusterDegraded, s.redis == cluster::RedisState::down ? 1 : 0);
  set(kClusterReloads, s.reloads);
  bool cannot_follow = false;
  std::vector<Report> held;
  for (const cluster::HeldPartition& h : s.held) {
    cannot_follow |= !h.problem.empty();
    held.push_back(Report()
                       .add("partition", h.partition)
                       .add("state", std::string(cluster::hold_state_name(h.state)))
                       .add("primary", h.primary)
                       .add("generation", h.generation)
                       .add("log_end", h.log_end)
                       .add("problem", h.problem.empty() ? "-" : h.problem));
  }
  set(kClusterCannotFollow, cannot_follow ? 1 : 0);
  uint64_t ready = 0, primary = 0;
  for (const cluster::HeldPartition& h : s.held) {
    ready += h.state == cluster::HoldState::ready;
    primary += h.primary;
  }
  set(kPartitionsHeld, s.held.size());
  set(kPartitionsReady, ready);
  set(kPartitionsPrimary, primary);
  set(kPartitionMovesIn, s.moves_in);
  set(kPartitionMovesOut, s.moves_out);
  set(kPartitionMoveMs, s.move_ms);
  set(kPartitionMoveBytes, s.move_bytes);
  set(kPartitionDraining, s.draining ? 1 : 0);
  auto list = [](const std::vector<uint32_t>& partitions) {
    std::string text;
    for (uint32_t p : partitions) {
      if (!text.empty()) text += ',';
      text += std::to_string(p);
    }
    return text.empty() ? std::string("-") : text;
  };
  std::vector<Report> nodes;
  for (const cluster::PartitionedMember& m : s.members)
    nodes.push_back(Report().add("node_id", m.node_id).add("may_pull", m.may_pull).add("http", m.http_address).add("partitions", list(m.ready)));
  std::vector<Report> pulling;
  for (const auto& [url, epoch] : s.pulling) pulling.push_back(Report().add("source", url).add("epoch", epoch));
  Report r;
  r.add("node_id", s.node_id)
      .add("ready", s.ready)
      .add("redis", std::string(cluster::redis_state_name(s.redis)))
      .add("published_generation", published_generation)
      .add_object("partitioning", Report()
                                      .add("partitions", s.partitions)
                                      .add("replication_factor", s.replication)
                                      .add_list("held", std::move(held)))
      .add("entries_applied", s.entries_applied)
      .add("entries_appended", s.entries_appended)
      .add("appends_refused", s.appends_refused)
      .add("reloads", s.reloads)
      .add("moves_in", s.moves_in)
      .add("moves_out", s.moves_out)
      .add("move_ms", s.move_ms)
      .add("move_bytes", s.move_bytes)
      .add("draining", s.draining)
      .add("drained", s.draining && s.held.empty())
      .add_list("pulling", std::move(pulling))
      .add_list("node", std::move(nodes))
      .add_list("settings_note", note_reports(s.notes));
  set_status_report(writer, r);
}

}  // namespace server
