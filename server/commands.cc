// server/commands.cc: the admin commands (server/admin.h frames them on the socket).
// Reports read the shm control segment and the supervisor's own state; nothing here
// blocks: reload and restart readers reply later, from the tick.
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <fmt/format.h>

#include "common/log.h"
#include "server/process.h"
#include "server/service.h"
#include "server/supervisor_impl.h"

#include "ingest/ingest.h"

namespace server {

namespace log = common::log;
namespace {

constexpr std::string_view kHelp =
    "help: this list\n"
    "ping: check that the service answers\n"
    "show version: the version\n"
    "show info: pid, uptime, workers, snapshot generation, age and size\n"
    "show workers: every child process with its state and counters\n"
    "show sources: every upstream source with its last fetch\n"
    "show snapshot: the current snapshot and the store's buffers\n"
    "show series KEY: one series body from the current snapshot\n"
    "show cluster: this node's role, term, leader, applied entry, lag, Redis and the live nodes\n"
    "reload: re-read the configuration and apply it (waits for the outcome)\n"
    "restart readers: replace the readers one at a time, without refusing connections\n"
    "drain: a partitioned node hands its partitions over to the other nodes and stops pulling;\n"
    "  it is done when show cluster says drained: true (then stop it)\n"
    "set log-level LEVEL: debug, info, warn or error, in every process\n"
    "shutdown: stop the service gracefully\n"
    "(end any command with 'json' for a JSON reply; join commands with ';')";

}  // namespace

void Supervisor::on_command(const Command& c, ReplyFn reply) {
  const auto& w = c.words;
  auto is = [&](std::initializer_list<std::string_view> words) {
    return w.size() == words.size() && std::equal(words.begin(), words.end(), w.begin());
  };
  try {
    if (is({"help"})) return reply(c.json ? Report().add("help", std::string(kHelp)).json() : std::string(kHelp));
    if (is({"ping"})) return reply(report_reply(c, Report().add("ping", "pong")));
    if (is({"show", "version"})) return reply(report_reply(c, Report().add("version", std::string(kVersion))));
    if (is({"show", "info"})) return reply(report_reply(c, show_info()));
    if (is({"show", "workers"})) return reply(report_reply(c, show_workers()));
    if (is({"show", "sources"})) return reply(report_reply(c, show_sources()));
    if (is({"show", "snapshot"})) return reply(report_reply(c, show_snapshot()));
    if (is({"show", "cluster"})) return reply(show_cluster(c));
    if (w.size() == 3 && w[0] == "show" && w[1] == "series") return reply(show_series(c, w[2]));
    if (is({"reload"})) {
      if (stopping_) return reply(error_reply(c, "the service is stopping"));
      return reload(c, std::move(reply));
    }
    if (is({"restart", "readers"})) {
      if (stopping_) return reply(error_reply(c, "the service is stopping"));
      return restart_readers(c, std::move(reply));
    }
    if (w.size() == 3 && w[0] == "set" && w[1] == "log-level") {
      auto level = log::parse_level(w[2]);
      if (!level) return reply(error_reply(c, fmt::format("unknown log level '{}': debug, info, warn or error", w[2])));
      store_->service_counter(kLogLevel).store(uint64_t(*level), std::memory_order_relaxed);
      log::info("log level set to {}", log::level_name(*level));
      return reply(report_reply(c, Report().add("log_level", std::string(log::level_name(*level)))));
    }
    if (is({"drain"})) {
      if (options_.partitions <= 1) return reply(error_reply(c, "drain: only a node of a partitioned cluster drains"));
      store_->service_counter(kDrainRequested).store(1, std::memory_order_relaxed);
      log::info("drain requested on the admin socket");
      return reply(report_reply(c, Report().add("drain", "started").add("done_when", "show cluster: drained true")));
    }
    if (is({"shutdown"})) {
      reply(report_reply(c, Report().add("shutdown", "in progress")));
      return begin_shutdown(kExitOk, "shutdown requested on the admin socket");
    }
    if (w.empty()) return reply(error_reply(c, "empty command; try help"));
    reply(error_reply(c, fmt::format("unknown command '{}'; try help", c.line())));
  } catch (const std::exception& e) {
    reply(error_reply(c, e.what()));
  }
}

Report Supervisor::show_info() const {
  shm::StoreInfo info = store_->info();
  uint64_t buffers = 0;
  for (uint64_t b : info.buffer_capacity) buffers += b;
  size_t running = std::count_if(readers_.begin(), readers_.end(), [](const auto& r) { return r->state == State::running; });
  Report r;
  r.add("version", std::string(kVersion))
      .add("pid", int64_t(getpid()))
      .add("uptime_s", uint64_t(age_seconds(started_ns_)))
      .add("started", iso_time(started_ns_))
      .add("state", stopping_ ? "stopping" : ready_ ? "ready" : "starting")
      .add("listen", options_.listen)
      .add("admin_socket", options_.admin_socket)
      .add("config_file", options_.config_file.empty() ? "-" : options_.config_file)
      .add("workers", options_.workers)
      .add("readers", options_.readers())
      .add("readers_running", uint64_t(running))
      .add("reader_engine", options_.reader_engine)
      .add("reader_engines_running", running_engines())
      .add("writer_pid", int64_t(writer_.pid))
      .add("generation", info.generation)
      .add("snapshot_built", iso_time(info.built_at_ns))
      .add("snapshot_age_s", age_seconds(info.built_at_ns))
      .add("snapshot_bytes", info.snapshot_bytes)
      .add("snapshot_records", info.snapshot_records)
      .add("shm_name", "/" + info.name)
      .add("shm_buffers", info.buffer_count)
      .add("shm_buffer_bytes", buffers)
      .add("publishes", info.publishes)
      .add("publish_skipped", info.publish_skipped)
      .add("ticks", store_->service_counter(kTicks).load(std::memory_order_relaxed))
      .add("samples_accepted", store_->service_counter(kSamplesAccepted).load(std::memory_order_relaxed))
      .add("samples_dropped", store_->service_counter(kSamplesDropped).load(std::memory_order_relaxed))
      .add("restarts_writer", store_->service_counter(kRestartsWriter).load(std::memory_order_relaxed))
      .add("restarts_reader", store_->service_counter(kRestartsReader).load(std::memory_order_relaxed))
      .add("stuck_readers_killed", store_->service_counter(kStuckReadersKilled).load(std::memory_order_relaxed))
      .add("stuck_writers_killed", store_->service_counter(kStuckWritersKilled).load(std::memory_order_relaxed))
      .add("log_level", std::string(log::level_name(log::level())))
      .add("last_reload", iso_time(last_reload_ns_))
      .add("last_reload_error", last_reload_error_.empty() ? "-" : last_reload_error_);
  add_state_info(r);
  return r;
}

// The state dir (server/writer_state.h): where, and what the writer last reported.
void Supervisor::add_state_info(Report& r) const {
  const std::string dir = options_.effective_state_dir();
  auto counter = [&](uint32_t c) { return store_->service_counter(c).load(std::memory_order_relaxed); };
  const uint64_t checkpoint_ns = counter(kStateCheckpointUnixMs) * 1'000'000;
  r.add("state_dir", dir.empty() ? "-" : dir)
      .add("state_fsync", options_.state_dir.empty() ? "never" : options_.state_fsync)
      .add("state_checkpoint", iso_time(checkpoint_ns))
      .add("state_checkpoint_age_s", checkpoint_ns ? age_seconds(checkpoint_ns) : -1.0)
      .add("state_checkpoint_bytes", counter(kStateCheckpointBytes))
      .add("state_log_bytes", counter(kStateLogBytes))
      .add("state_recovered", iso_time(counter(kStateRecoveredUnixMs) * 1'000'000))
      .add("state_recovery_entries", counter(kStateRecoveryEntries))
      .add("state_recovery_ms", counter(kStateRecoveryMs))
      .add("state_log_cuts", counter(kStateLogCuts))
      .add("state_checkpoints_skipped", counter(kStateCheckpointsSkipped))
      .add("state_write_errors", counter(kStateWriteErrors))
      .add("state_write_failing", counter(kStateWriteFailing));
}

// The connection engines the running readers report (kReaderEngine): "io_uring",
// "epoll", both comma-separated while a rolling restart mixes them, or "-" when none runs.
std::string Supervisor::running_engines() const {
  bool epoll = false, uring = false;
  for (const auto& r : readers_) {
    if (r->state != State::running || r->pid == 0) continue;
    const uint64_t e = store_->reader_counter(r->slot, kReaderEngine);
    epoll |= e == 1;
    uring |= e == 2;
  }
  if (epoll && uring) return "io_uring,epoll";
  return uring ? "io_uring" : epoll ? "epoll" : "-";
}

Report Supervisor::child_report(const Child& c, const shm::StoreInfo& info) const {
  Report r;
  r.add("role", c.role == Role::writer ? "writer" : "reader")
      .add("slot", c.role == Role::writer ? int64_t(-1) : int64_t(c.slot))
      .add("pid", int64_t(c.pid))
      .add("state", std::string(state_name(c.state)))
      .add("started", iso_time(c.started_ns))
      .add("restarts", c.restarts);
  if (c.role == Role::reader && c.slot < info.readers.size()) {
    const shm::ReaderInfo& s = info.readers[c.slot];
    bool mine = s.pid == c.pid && c.pid != 0;
    uint64_t now = shm::monotonic_ns();
    r.add("requests", mine ? s.requests : 0)
        .add("connections_open", mine ? store_->reader_counter(c.slot, kConnectionsOpen) : 0)
        .add("accept_step_asides", mine ? store_->reader_counter(c.slot, kAcceptStepAsides) : 0)
        .add("engine", !mine ? "-" : store_->reader_counter(c.slot, kReaderEngine) == 2 ? "io_uring"
                                    : store_->reader_counter(c.slot, kReaderEngine) == 1 ? "epoll" : "-")
        .add("reading_generation", mine ? s.reading_generation : 0)
        .add("heartbeat_age_ms", mine && now > s.heartbeat_ns ? (now - s.heartbeat_ns) / 1000000 : 0);
  } else {
    r.add("requests", uint64_t(0))
        .add("connections_open", uint64_t(0))
        .add("accept_step_asides", uint64_t(0))
        .add("engine", "-")
        .add("reading_generation", info.generation)
        .add("heartbeat_age_ms", uint64_t(0));
  }
  return r;
}

Report Supervisor::show_workers() const {
  shm::StoreInfo info = store_->info();
  std::vector<Report> items{child_report(writer_, info)};
  std::vector<const Child*> sorted;
  for (auto& r : readers_) sorted.push_back(r.get());
  std::sort(sorted.begin(), sorted.end(), [](const Child* a, const Child* b) { return a->slot < b->slot; });
  for (const Child* c : sorted) items.push_back(child_report(*c, info));
  return Report().add("generation", info.generation).add_list("worker", std::move(items));
}

Report Supervisor::show_sources() const {
  std::vector<Report> items;
  for (const shm::SourceStatus& s : store_->sources()) {
    items.push_back(Report()
                        .add("url", s.url)
                        .add("format", s.format.empty() ? "-" : s.format)
                        .add("last_status", int64_t(s.last_status))
                        .add("last_fetch", iso_time(s.last_fetch_ns))
                        .add("last_latency_us", s.last_latency_us)
                        .add("bytes", s.bytes)
                        .add("samples", s.samples)
                        .add("dropped", s.dropped)
                        .add("errors", s.errors)
                        .add("last_error", s.last_error.empty() ? "-" : s.last_error)
                        .add("last_error_time", iso_time(s.last_error_ns)));
  }
  return Report().add("sources", uint64_t(items.size())).add_list("source", std::move(items));
}

Report Supervisor::show_snapshot() const {
  shm::StoreInfo info = store_->info();
  Report r;
  r.add("generation", info.generation)
      .add("built", iso_time(info.built_at_ns))
      .add("age_s", age_seconds(info.built_at_ns))
      .add("bytes", info.snapshot_bytes)
      .add("records", info.snapshot_records);
  uint64_t series = 0, lists = 0;
  if (auto guard = peek_->enter()) {
    series = guard->view().list(ingest::kSeriesList).size();
    lists = guard->view().list_count();
  }
  r.add("series", series)
      .add("lists", lists)
      .add("current_buffer", info.current_buffer)
      .add("buffer_count", info.buffer_count);
  for (uint32_t i = 0; i < info.buffer_capacity.size(); ++i) r.add(fmt::format("buffer_{}_bytes", i), info.buffer_capacity[i]);
  r.add("publishes", info.publishes)
      .add("publish_skipped", info.publish_skipped)
      .add("buffer_grows", info.buffer_grows)
      .add("stale_slots_cleared", info.stale_slots_cleared)
      .add("last_publish", iso_time(info.last_publish_ns))
      .add("last_build_us", info.last_build_ns / 1000);
  return r;
}

// The writer renders the report (it holds the cluster state) into the store's status
// text as "TEXT\0JSON" (server/cluster_status.h).
std::string Supervisor::show_cluster(const Command& c) const {
  if (options_.cluster.empty()) return error_reply(c, "not a cluster node (started without --cluster)");
  std::string status = store_->status_text();
  size_t split = status.find('\0');
  if (split == std::string::npos) return error_reply(c, "the writer has not reported the cluster's state yet");
  return c.json ? status.substr(split + 1) : status.substr(0, split);
}

std::string Supervisor::show_series(const Command& c, const std::string& key) {
  auto guard = peek_->enter();
  if (!guard) return error_reply(c, "no snapshot published yet");
  auto body = guard->view().find(ingest::series_record_key(key));
  if (!body) return error_reply(c, fmt::format("no series '{}' in generation {}", key, guard->generation()));
  if (c.json)
    return fmt::format("{{\"key\":{},\"generation\":{},\"series\":{}}}", json_string(key), guard->generation(), *body);
  return Report().add("key", key).add("generation", guard->generation()).add("series", std::string(*body)).text();
}

}  // namespace server
