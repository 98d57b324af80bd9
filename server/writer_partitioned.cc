// server/writer_partitioned.cc: the writer of a partitioned cluster's node (writer.h;
// docs/architecture.md, Partitions of the data). Its state is one ingest::PartitionState
// per partition it holds, fed by those partitions' logs (cluster::PartitionedNode); its
// snapshot covers them, each at its own clock. As the puller of some sources it fetches
// them every interval (the Pipeline with a tap: nothing applied here) and appends each
// tick's samples to the partitions' logs, one entry per partition, numbered by a
// PartitionWriter per source and epoch. With otlp-listen, what is pushed to it goes to the
// partitions the same way at each tick, as a source of its own (writer_pushes.h).
#include <algorithm>
#include <csignal>
#include <map>

#include <event2/event.h>

#include "cluster/partitioned.h"
#include "common/partitions.h"
#include "common/log.h"
#include "ingest/ingest.h"
#include "ingest/replica/replica.h"
#include "server/cluster_status.h"
#include "server/partition_map.h"
#include "server/service.h"
#include "server/writer.h"
#include "server/writer_pushes.h"

namespace server {

namespace log = common::log;

namespace {

constexpr timeval kBeatEvery{0, 100'000};
constexpr timeval kBuildCoalesce{0, 20'000};

struct PartitionedWriter : cluster::PartitionHost {
  PartitionedWriter(shm::Store& s, const Options& o) : store(s), options(o) {}

  shm::Store& store;
  const Options& options;
  event_base* base = nullptr;
  std::unique_ptr<shm::Writer> writer;
  std::unique_ptr<ingest::Pipeline> pipeline;  // the puller's fetches
  std::unique_ptr<cluster::PartitionedNode> node;
  std::unique_ptr<PartitionedPushes> pushes;  // with otlp-listen
  ingest::HeldPartitions held{options.ingest};
  std::map<std::string, std::unique_ptr<ingest::PartitionWriter>> writers;  // per pulled source
  shm::SnapshotBuilder builder;
  ingest::Aggregator nothing{options.ingest};  // the snapshot of a node that holds no partition
  // A build after applies, kBuildCoalesce after the first of them: a tick's entries reach
  // the node on each partition's own connection within a few milliseconds of each other,
  // and one build covers them all (a build per partition's batch cost P builds a tick).
  event* build_event = nullptr;
  void schedule_build() {
    if (!event_pending(build_event, EV_TIMEOUT, nullptr)) event_add(build_event, &kBuildCoalesce);
  }
  uint64_t generation = 0;
  bool failed = false;

  std::atomic<uint64_t>& counter(ServiceCounter c) { return store.service_counter(c); }
  void heartbeat() { counter(kWriterHeartbeatNs).store(shm::monotonic_ns(), std::memory_order_relaxed); }

  // cluster::PartitionHost
  void hold(uint32_t p) override { held.hold(p); }
  void release(uint32_t p) override {
    held.release(p);
    schedule_build();
  }
  uint64_t applied_seq(uint32_t p) const override { return held.applied_seq(p); }
  bool apply(uint32_t p, uint64_t seq, std::string_view entry, std::string* error) override {
    return held.apply(p, seq, entry, error);
  }
  void show_applied() override { schedule_build(); }
  std::string checkpoint(uint32_t p) const override { return held.checkpoint(p); }
  void restore(uint32_t p, std::string_view bytes) override {
    held.restore(p, bytes);
    schedule_build();
  }
  void pull(std::vector<std::pair<std::string, uint64_t>> sources) override {
    std::map<std::string, std::unique_ptr<ingest::PartitionWriter>> next;
    std::vector<std::string> urls;
    for (const auto& [url, epoch] : sources) {
      auto it = writers.find(url);
      if (it != writers.end() && it->second->epoch() == epoch) next[url] = std::move(it->second);
      else next[url] = std::make_unique<ingest::PartitionWriter>(url, epoch, node->partitions());
      urls.push_back(url);
    }
    writers = std::move(next);
    pipeline->set_pulled(std::move(urls));
  }
  std::vector<std::string> sources() const override { return pipeline->source_urls(); }
  void renumber() override {
    if (pushes) pushes->renumber();
  }

  // A source's samples of one tick: one entry per partition, appended; the writer learns
  // which are in the log. The tick is the interval grid's number of the tick's clock.
  void on_tapped(const ingest::Pipeline::Tapped& t) {
    auto it = writers.find(std::string(t.url));
    if (it == writers.end()) return;
    ingest::PartitionWriter* w = it->second.get();
    const int64_t interval_ns = int64_t(options.ingest.interval.count()) * 1'000'000;
    const uint64_t tick = uint64_t(t.clock / interval_ns);
    const uint64_t epoch = w->epoch();
    std::string url(t.url);
    for (auto& e : w->encode(tick, t.clock, t.samples, options.ingest, t.status)) {
      uint32_t p = e.partition;
      node->append(p, url, epoch, tick, std::move(e.bytes), [this, url, epoch, p, tick](bool in_log, const std::string& why) {
        auto found = writers.find(url);
        if (found != writers.end() && found->second->epoch() == epoch) found->second->settle(p, tick, in_log);
        if (!in_log) log::debug("partition {}: {} tick {} not appended: {}", p, url, tick, why);
      });
    }
  }

  // Every held partition at its own clock, in one snapshot.
  static void on_build(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<PartitionedWriter*>(arg);
    try {
      self->build_and_publish();
    } catch (const std::exception& e) {
      log::error("publish failed, exiting so that the supervisor starts a fresh writer: {}", e.what());
      self->failed = true;
      event_base_loopbreak(self->base);
    }
  }
  void build_and_publish() {
    const cluster::PartitionedStatus status = node->status();
    auto primary = [&](uint32_t p) {
      return std::any_of(status.held.begin(), status.held.end(),
                         [&](const cluster::HeldPartition& h) { return h.partition == p && h.primary; });
    };
    std::vector<ingest::AggregatorPart> views;
    std::vector<shm::SourceStatus> statuses;
    for (auto& [p, state] : held.states()) {
      views.push_back(ingest::AggregatorPart{&state.aggregator(), state.clock(), p, primary(p)});
      for (shm::SourceStatus& s : state.statuses()) {
        auto same = [&](const shm::SourceStatus& x) { return x.url == s.url; };
        auto found = std::find_if(statuses.begin(), statuses.end(), same);
        if (found == statuses.end()) statuses.push_back(std::move(s));
        else if (s.last_fetch_ns > found->last_fetch_ns) *found = std::move(s);
      }
    }
    if (views.empty()) views.push_back(ingest::AggregatorPart{&nothing, 0, 0, false});  // holds none yet
    ingest::build_parts(builder, views, ingest::BuildPartsOptions{.partition_views = true});
    builder.add(kPartitionMapRecord, encode_partition_map(partition_map(status)));
    // A local count: a partitioned node's snapshot is made of several partitions'
    // generations; this one only has to grow.
    uint64_t g = writer->publish(builder, std::max(generation, writer->generation()) + 1);
    if (g) generation = g;
    writer->set_source_count(uint32_t(statuses.size()));
    for (uint32_t i = 0; i < statuses.size(); ++i) writer->set_source_status(i, statuses[i]);
    counter(kTicks).fetch_add(1, std::memory_order_relaxed);
    heartbeat();
  }

  // Where each partition is served: here, and by which other ready holders.
  PartitionMap partition_map(const cluster::PartitionedStatus& s) const {
    PartitionMap map;
    map.partitions = s.partitions;
    map.window_ms = uint64_t(options.ingest.window.count());
    map.routes.resize(s.partitions);
    for (const cluster::HeldPartition& h : s.held) {
      if (h.partition >= s.partitions || h.state == cluster::HoldState::syncing) continue;
      PartitionRoute& r = map.routes[h.partition];
      r.local = true;
      r.primary = h.primary;
      r.generation = held.applied_seq(h.partition);
    }
    std::vector<std::string_view> ids;  // of each address
    for (const cluster::PartitionedMember& m : s.members) {
      if (m.node_id == s.node_id || m.http_address.empty()) continue;
      const auto index = uint16_t(map.addresses.size());
      map.addresses.push_back(m.http_address);
      ids.push_back(m.node_id);
      for (uint32_t p : m.ready)
        if (p < s.partitions) map.routes[p].remote.push_back(index);
    }
    for (uint32_t p = 0; p < s.partitions; ++p) {  // heaviest first, as holders() orders them
      auto heavier = [&](uint16_t a, uint16_t b) {
        return common::holder_weight(ids[a], p) > common::holder_weight(ids[b], p);
      };
      std::sort(map.routes[p].remote.begin(), map.routes[p].remote.end(), heavier);
    }
    return map;
  }

  static void on_beat(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<PartitionedWriter*>(arg);
    self->heartbeat();
    if (self->node && self->counter(kDrainRequested).load(std::memory_order_relaxed)) self->node->drain();
    if (self->node) publish_partitioned_status(self->store, *self->writer, self->node->status(), self->generation);
  }
  static void on_signal(evutil_socket_t signal, short, void* arg) {
    auto* self = static_cast<PartitionedWriter*>(arg);
    if (signal == SIGHUP) {
      log::warn("reload: a partitioned node takes its sources and settings at start only; restart it to change them");
      counter_done(*self);
      return;
    }
    if (signal == SIGUSR1) {
      if (!log::reopen_file()) log::error("cannot reopen the log file; still writing to the old one");
      return;
    }
    log::info("signal {}: stopping after generation {}", signal, self->generation);
    self->pipeline->stop();
    event_base_loopexit(self->base, nullptr);
  }
  // The supervisor waits for an answer to its reload: it is refused.
  static void counter_done(PartitionedWriter& self) {
    uint64_t request = self.counter(kReloadRequests).load(std::memory_order_acquire);
    self.counter(kReloadFailed).store(request, std::memory_order_release);
  }
};

}  // namespace

// Long as one piece: the process from set-up to teardown, its resources freed in reverse.
int run_partitioned_writer(shm::Store& store, const Options& options) {
  PartitionedWriter w(store, options);
  try {
    w.writer = std::make_unique<shm::Writer>(store);
  } catch (const shm::Error& e) {
    log::error("cannot take the writer role: {}", e.what());
    return kExitFailure;
  }
  w.base = event_base_new();
  w.build_event = event_new(w.base, -1, 0, &PartitionedWriter::on_build, &w);
  w.generation = w.writer->generation();
  try {
    w.pipeline = std::make_unique<ingest::Pipeline>(w.base, options.ingest, nullptr);
  } catch (const std::invalid_argument& e) {
    log::error("bad ingest configuration: {}", e.what());
    return kExitBadConfig;
  }
  w.pipeline->set_sample_tap([&w](const ingest::Pipeline::Tapped& t) { w.on_tapped(t); },
                             [&w](int64_t clock) {
                               if (w.pushes) w.pushes->tick(clock);
                             });
  w.pipeline->set_pulled({});
  cluster::PartitionedSettings cs;
  cs.redis = cluster::parse_address(options.cluster);  // checked by check_options
  cs.name = options.cluster_name;
  cs.node_id = options.node_id;
  cs.http_address = options.advertise;
  cs.partitions = options.partitions;
  cs.replication = options.replication_factor;
  cs.may_pull = options.role != "follower";
  cs.lease = options.lease;
  cs.checkpoint_every = options.checkpoint_every;
  w.node = std::make_unique<cluster::PartitionedNode>(w.base, cs, w);
  if (!options.otlp_listen.empty()) {
    // Bound here, as the unpartitioned writer binds it: a failure (address in use, no
    // permission) cannot be fixed by restarting.
    try {
      w.pushes = std::make_unique<PartitionedPushes>(w.base, options, *w.node, w.held);
    } catch (const std::exception& e) {
      log::error("{}", e.what());
      w.node.reset();
      w.pipeline.reset();
      event_free(w.build_event);
      event_base_free(w.base);
      return kExitBadConfig;
    }
    log::info("OTLP/HTTP receiver listening on {} (port {}, source {})", options.otlp_listen, w.pushes->port(),
              w.pushes->source());
  }
  w.counter(kClusterSynced).store(0, std::memory_order_relaxed);
  log::info("partitioned cluster: node {} of cluster '{}' at {}, {} partitions asked, replication {}", cs.node_id,
            cs.name, cs.redis.text(), cs.partitions, cs.replication);

  w.counter(kIntervalNs).store(uint64_t(options.ingest.interval.count()) * 1000000, std::memory_order_relaxed);
  w.heartbeat();
  auto events = std::make_unique<WriterEvents>(w.base, &PartitionedWriter::on_signal, &PartitionedWriter::on_beat, &w,
                                               kBeatEvery);

  int code = kExitOk;
  try {
    w.pipeline->start();
    w.node->start();
    event_base_dispatch(w.base);
    if (w.failed) code = kExitFailure;
  } catch (const std::exception& e) {
    log::error("writer failed: {}", e.what());
    code = kExitFailure;
  }
  w.node.reset();  // before the pushes: an append's answer may still come as the node goes
  w.pushes.reset();
  w.pipeline.reset();
  event_free(w.build_event);
  events.reset();
  event_base_free(w.base);
  return code;
}

}  // namespace server
