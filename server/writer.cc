// server/writer.cc: the writer process (see writer.h).
#include "server/writer.h"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <sched.h>
#include <unistd.h>

#include <event2/event.h>

#include "cluster/cluster.h"
#include "ingest/ingest.h"
#include "ingest/source/otlp_receiver.h"
#include "server/cluster_status.h"
#include "common/log.h"
#include "server/service.h"
#include "server/writer_state.h"

namespace {
constexpr int kWriterNice = 19;
constexpr timeval kHeartbeatEvery{0, 100'000};
}  // namespace

namespace server {

ingest::OtlpOptions otlp_receiver_options(const Options& options, std::string name) {
  auto [host, port] = parse_listen(options.otlp_listen);
  ingest::OtlpOptions o;
  o.host = host;
  o.port = port;
  o.max_body_bytes = options.otlp_max_body;
  o.max_pending = options.otlp_max_pending;
  o.retry_after = options.ingest.interval;
  o.max_delta_series = options.ingest.max_series_per_source;
  o.delta_expire = options.ingest.expire_after;
  if (!name.empty()) o.name = std::move(name);
  return o;
}

namespace log = common::log;

namespace {

// In a cluster the writer is also the node's cluster::Host: its Pipeline is the
// replicated state, fed by its own ticks (leader) or by the log (follower).
struct WriterProcess : cluster::Host {
  WriterProcess(shm::Store& s, const CommandLine& c, const Options& o) : store(s), command_line(c), options(o) {}

  shm::Store& store;
  const CommandLine& command_line;
  const Options& options;
  event_base* base = nullptr;
  std::unique_ptr<shm::Writer> writer;
  std::unique_ptr<ingest::Pipeline> pipeline;
  std::unique_ptr<ingest::OtlpReceiver> otlp;  // the push source, when otlp-listen is set
  std::unique_ptr<cluster::Node> node;  // null: standalone
  std::unique_ptr<WriterState> state;   // standalone: the state dir its entries go to
  event* leading_change = nullptr;      // applies set_leading() outside the pipeline's callbacks
  event* commit = nullptr;              // applies publish_to() outside them
  uint64_t commit_seq = 0;
  bool want_leading = false;
  uint64_t last_generation = 0;
  std::string settings_note;  // how the leader's settings differ from ours, logged once

  std::atomic<uint64_t>& counter(ServiceCounter c) { return store.service_counter(c); }

  bool failed = false;

  // Called by the pipeline on the loop: exceptions must not cross libevent's C frames.
  void publish(const shm::SnapshotBuilder& builder, const std::vector<shm::SourceStatus>& statuses,
               uint64_t seq) {
    try {
      publish_or_throw(builder, statuses, seq);
    } catch (const std::exception& e) {
      log::error("publish failed, exiting so that the supervisor starts a fresh writer: {}", e.what());
      failed = true;
      event_base_loopbreak(base);
    }
  }

  void publish_or_throw(const shm::SnapshotBuilder& builder, const std::vector<shm::SourceStatus>& statuses,
                        uint64_t seq) {
    // A cluster node that reloads a checkpoint replays entries it had published
    // already (or, fenced off as leader, published differently): readers keep the
    // newer generation until the replay passes it, so generations never go back.
    if (node && seq <= writer->generation()) {
      heartbeat();
      return;
    }
    uint64_t generation = writer->publish(builder, seq);
    if (generation == 0) {
      log::warn("publish skipped: every spare buffer is held by a reader (see show snapshot: publish_skipped)");
    } else {
      last_generation = generation;
      log::debug("published generation {} ({} records, {} bytes)", generation, builder.record_count(),
                 builder.serialized_size());
    }
    writer->set_source_count(uint32_t(statuses.size()));
    uint64_t accepted = 0, dropped = 0;
    for (uint32_t i = 0; i < statuses.size(); ++i) {
      writer->set_source_status(i, statuses[i]);
      accepted += statuses[i].samples;
      dropped += statuses[i].dropped;
    }
    counter(kSamplesAccepted).store(accepted, std::memory_order_relaxed);
    counter(kSamplesDropped).store(dropped, std::memory_order_relaxed);
    counter(kTicks).fetch_add(1, std::memory_order_relaxed);
    heartbeat();
  }

  std::unique_ptr<ingest::Pipeline> make_pipeline(const ingest::Config& config) {
    auto p = std::make_unique<ingest::Pipeline>(
        base, config, [this](const shm::SnapshotBuilder& b, const std::vector<shm::SourceStatus>& s, uint64_t seq) {
          publish(b, s, seq);
        });
    if (otlp) p->add_push_source(otlp.get());
    if (options.cluster.empty()) {
      // Generations go on from the store's, as the previous writer left them.
      p->set_applied_seq(writer->generation());
      // A log of one: the entries a leader would append to Redis go to the state dir,
      // and a tick is published once its entry is written there.
      if (state)
        p->set_entry_sink([this](uint64_t seq, std::string entry) {
          state->append(seq, entry);
          publish_to(seq);
        });
    } else {
      // The state comes from the cluster (checkpoint + log); ticks only as leader.
      p->set_fetching(false);
      p->set_entry_sink([this](uint64_t seq, std::string entry) { node->append(seq, std::move(entry)); });
    }
    return p;
  }

  // cluster::Host
  uint64_t applied_seq() const override { return pipeline->applied_seq(); }
  Applied apply(uint64_t seq, std::string_view entry, std::string* error) override {
    if (ingest::Pipeline::entry_seq(entry) != seq) {
      if (error) *error = "the entry's own seq is " + std::to_string(ingest::Pipeline::entry_seq(entry));
      return Applied::bad;
    }
    switch (pipeline->apply_entry(entry, error, false)) {
      case ingest::Pipeline::EntryResult::applied: note_settings(); return Applied::applied;
      case ingest::Pipeline::EntryResult::duplicate: return Applied::duplicate;
      case ingest::Pipeline::EntryResult::gap: return Applied::gap;
      case ingest::Pipeline::EntryResult::bad: break;
    }
    return Applied::bad;
  }
  // A generation already published (the node reloaded and replays) is not built again.
  void show_applied() override {
    if (pipeline->applied_seq() <= writer->generation()) return heartbeat();
    pipeline->show_applied();
  }
  std::string checkpoint() const override { return pipeline->checkpoint(); }
  void restore(std::string_view bytes) override { pipeline->restore(bytes); }
  void reset() override {
    pipeline = make_pipeline(options.ingest);
    pipeline->start();
  }
  // Called by the node from inside the pipeline's own callbacks too (its entry sink), so
  // the change is made from a callback of its own.
  void set_leading(bool on) override {
    want_leading = on;
    event_active(leading_change, 0, 0);
  }
  void publish_to(uint64_t seq) override {
    commit_seq = seq;
    event_active(commit, 0, 0);
  }
  static void on_commit(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<WriterProcess*>(arg);
    self->pipeline->publish_committed(self->commit_seq);
    if (self->state) self->state->tend(*self->pipeline);
  }
  static void on_leading_change(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<WriterProcess*>(arg);
    if (self->pipeline->fetching() != self->want_leading) self->pipeline->set_fetching(self->want_leading);
    self->refuse_pushes_unless_leading();
  }
  // Only the leader's ticks take pushed points: elsewhere they would wait for ever.
  void refuse_pushes_unless_leading() {
    if (otlp && node)
      otlp->set_refusal(want_leading ? "" : "this node does not lead the cluster: push to the leader "
                                            "(telemetryctl show cluster names it)");
  }

  // Aggregation follows the leader's settings, carried in each entry; say so when they
  // are not the ones this node was started with.
  void note_settings() {
    const ingest::Config& leader = pipeline->config();
    const ingest::Config mine = options.ingest.resolved();
    std::string note;
    auto differ = [&](const char* name, auto a, auto b) {
      if (a != b) note += fmt::format("{}{} {} (here {})", note.empty() ? "" : "; ", name, a, b);
    };
    differ("interval", leader.interval.count(), mine.interval.count());
    differ("window", leader.window.count(), mine.window.count());
    differ("stale-after", leader.stale_after.count(), mine.stale_after.count());
    differ("expire-after", leader.expire_after.count(), mine.expire_after.count());
    differ("max-series", leader.max_series, mine.max_series);
    differ("max-series-per-source", leader.max_series_per_source, mine.max_series_per_source);
    differ("prom-series-limit", leader.prom_series_limit, mine.prom_series_limit);
    if (note == settings_note) return;
    settings_note = note;
    if (!note.empty()) log::warn("cluster: following the leader's settings, which differ from this node's: {}", note);
  }

  void report_cluster() {
    if (!node) return;
    cluster::Status s = node->status();
    if (!settings_note.empty()) s.notes.push_back("leader's settings differ: " + settings_note);
    if (int64_t behind = pipeline->clock_behind_ns(); behind > 0)
      s.notes.push_back(fmt::format("this node's clock is {} ms behind the log's: ticks go on from the log's time",
                                    behind / 1'000'000));
    publish_cluster_status(store, *writer, s, writer->generation());
  }

  // SIGHUP from the supervisor, which has already checked the file. We check again
  // (the file may have changed since) and answer with the request number we saw.
  void reload() {
    uint64_t request = counter(kReloadRequests).load(std::memory_order_acquire);
    try {
      Options fresh = load_options(command_line);
      pipeline->reconfigure(fresh.ingest);
      counter(kIntervalNs).store(uint64_t(fresh.ingest.interval.count()) * 1000000, std::memory_order_relaxed);
      counter(kReloadDone).store(request, std::memory_order_release);
      log::info("reload {} applied: {} source(s), interval {}ms, window {}ms", request, fresh.ingest.sources.size(),
                fresh.ingest.interval.count(), fresh.ingest.window.count());
    } catch (const std::exception& e) {
      counter(kReloadFailed).store(request, std::memory_order_release);
      log::error("reload {} rejected, keeping the running configuration: {}", request, e.what());
    }
  }

  // The supervisor's writer watchdog reads this: a loop that stops turning (a bug that
  // spins or blocks) gets the writer killed and replaced while readers keep serving.
  // A build runs inside one loop callback, so writer-stuck-timeout must exceed the
  // longest build; publish() beats too, so a build that ends counts as progress.
  void heartbeat() {
    counter(kWriterHeartbeatNs).store(shm::monotonic_ns(), std::memory_order_relaxed);
  }

  static void on_heartbeat(evutil_socket_t, short, void* arg) {
    shm::failpoint("writer.heartbeat");
    static_cast<WriterProcess*>(arg)->heartbeat();
    static_cast<WriterProcess*>(arg)->report_cluster();
    if (auto* self = static_cast<WriterProcess*>(arg); self->state) self->state->tend(*self->pipeline);
  }

  static void on_signal(evutil_socket_t signal, short, void* arg) {
    auto* self = static_cast<WriterProcess*>(arg);
    switch (signal) {
      case SIGHUP: self->reload(); break;
      case SIGUSR1:
        if (!log::reopen_file()) log::error("cannot reopen the log file; still writing to the old one");
        break;
      default:
        log::info("signal {}: stopping after generation {}", signal, self->last_generation);
        self->pipeline->stop();
        event_base_loopexit(self->base, nullptr);
    }
  }
};

}  // namespace

WriterEvents::WriterEvents(event_base* base, event_callback_fn on_signal, event_callback_fn on_beat, void* arg,
                           timeval beat_every) {
  constexpr int kSignals[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
  for (int s : kSignals) {
    events_.push_back(evsignal_new(base, s, on_signal, arg));
    event_add(events_.back(), nullptr);
  }
  events_.push_back(event_new(base, -1, EV_PERSIST, on_beat, arg));
  event_add(events_.back(), &beat_every);
  sigset_t set;
  sigemptyset(&set);
  for (int s : kSignals) sigaddset(&set, s);
  sigprocmask(SIG_UNBLOCK, &set, nullptr);
}

WriterEvents::~WriterEvents() {
  for (event* e : events_) event_free(e);
}

// Long as one piece: the writer process from set-up to teardown, its resources freed in reverse.
int run_writer(shm::Store& store, const CommandLine& command_line, const Options& options) {
  // Ingest is batch work and the readers are latency work: when they share a core, a
  // build of a large snapshot (~80 ms of CPU at 100,000 series) must not stall their
  // requests. Measured with bench/loadgen at half the peak rate, readers and writer on
  // one core: p99 1.5-2.5 ms with the writer at nice 10, 0.55 ms at nice 19, 0.26 ms
  // with SCHED_BATCH + nice 19 (0.22 ms with the writer stopped). SCHED_BATCH gives up
  // wake-up preemption and nice 19 leaves the writer ~1.5% of a core the readers
  // saturate; any core time they leave idle is the writer's, so it keeps its interval
  // unless the host is overloaded, and then answering reads comes first.
  sched_param batch{};
  if (sched_setscheduler(0, SCHED_BATCH, &batch) != 0)
    log::warn("writer: SCHED_BATCH: {}", std::strerror(errno));
  errno = 0;
  if (nice(kWriterNice) == -1 && errno != 0)
    log::warn("writer: nice({}): {}", kWriterNice, std::strerror(errno));
  if (options.partitions > 1) return run_partitioned_writer(store, options);
  WriterProcess w(store, command_line, options);
  try {
    w.writer = std::make_unique<shm::Writer>(store);
  } catch (const shm::Error& e) {
    log::error("cannot take the writer role: {}", e.what());
    return kExitFailure;
  }
  w.base = event_base_new();
  if (!w.base) {
    log::error("event_base_new failed");
    return kExitFailure;
  }
  w.leading_change = event_new(w.base, -1, 0, &WriterProcess::on_leading_change, &w);
  w.commit = event_new(w.base, -1, 0, &WriterProcess::on_commit, &w);
  if (!options.otlp_listen.empty()) {
    // Bound here rather than in the supervisor: the receiver is the writer's, and
    // SO_REUSEADDR lets a restarted writer bind the same address at once. A failure
    // (address in use, no permission) cannot be fixed by restarting.
    // A cluster's is one push source, whichever node leads.
    ingest::OtlpOptions o = otlp_receiver_options(options, options.cluster.empty() ? "" : "otlp://cluster");
    try {
      w.otlp = std::make_unique<ingest::OtlpReceiver>(w.base, o);
    } catch (const std::exception& e) {
      log::error("{}", e.what());
      return kExitBadConfig;
    }
    // Delta running totals continue from the replicated state: after a failover, a
    // restart or a leadership that came back, never from 0 or from a stale total.
    w.otlp->set_delta_seed([&w](std::string_view key) -> std::optional<std::pair<double, int64_t>> {
      auto a = w.pipeline->aggregator().series(key);
      if (!a || a->count == 0) return std::nullopt;
      return std::make_pair(a->last, a->last_ts_ns);
    });
    log::info("OTLP/HTTP receiver listening on {}:{} (source {})", o.host, w.otlp->port(), w.otlp->url());
  }
  if (!options.cluster.empty() && !options.state_dir.empty())
    log::info("state-dir {} is not used by a cluster node: its state is the cluster's log", options.state_dir);
  if (!options.effective_state_dir().empty()) {
    try {
      w.state = std::make_unique<WriterState>(store, options);
    } catch (const std::runtime_error& e) {
      log::error("{}", e.what());  // a directory it cannot use: restarting will not help
      return kExitBadConfig;
    }
  }
  try {
    w.pipeline = w.make_pipeline(options.ingest);
  } catch (const std::invalid_argument& e) {
    log::error("bad ingest configuration: {}", e.what());
    return kExitBadConfig;
  }
  // Before the first tick: the readers serve the last snapshot meanwhile.
  if (w.state) w.state->recover(*w.pipeline, w.writer->generation(), [&w] { w.heartbeat(); });
  if (!options.cluster.empty()) {
    cluster::Settings cs;
    cs.redis = cluster::parse_address(options.cluster);  // checked by check_options
    cs.name = options.cluster_name;
    cs.node_id = options.node_id;
    cs.lease = options.lease;
    cs.may_lead = options.role != "follower";
    cs.checkpoint_every = options.checkpoint_every;
    cs.wait_replicas = options.cluster_wait_replicas;
    w.node = std::make_unique<cluster::Node>(w.base, cs, w);
    w.refuse_pushes_unless_leading();
    w.counter(kClusterSynced).store(0, std::memory_order_relaxed);
    log::info("cluster: node {} of cluster '{}' at {}, lease {}ms, role {}", cs.node_id, cs.name, cs.redis.text(),
              cs.lease.count(), options.role);
  }
  w.counter(kIntervalNs).store(uint64_t(options.ingest.interval.count()) * 1000000, std::memory_order_relaxed);
  w.heartbeat();
  auto events = std::make_unique<WriterEvents>(w.base, &WriterProcess::on_signal, &WriterProcess::on_heartbeat, &w,
                                               kHeartbeatEvery);

  log::info("writer started: {} source(s), interval {}ms, window {}ms, continuing from generation {}",
            options.ingest.sources.size(), options.ingest.interval.count(), options.ingest.window.count(),
            w.writer->generation());
  int code = kExitOk;
  try {
    w.pipeline->start();
    if (w.node) {
      w.node->start();
      w.report_cluster();  // `show cluster` answers from the start
    }
    event_base_dispatch(w.base);
    if (w.failed) code = kExitFailure;
  } catch (const std::exception& e) {
    log::error("writer failed: {}", e.what());
    code = kExitFailure;
  }
  w.node.reset();
  if (w.state) w.state->close();
  w.pipeline.reset();
  w.state.reset();
  w.otlp.reset();
  event_free(w.leading_change);
  event_free(w.commit);
  events.reset();
  event_base_free(w.base);
  return code;
}

}  // namespace server
