// server/routes.cc: a reader's routing and endpoints. handle() maps a parsed request to
// its endpoint and answers it from the snapshot view the connection engine entered for
// the batch; every body is either a pre-rendered record of the snapshot (a lookup and a
// copy) or rendered here from it with bounded work (docs/operations.md, HTTP API).
#include <algorithm>
#include <charconv>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "ingest/ingest.h"
#include "server/reader_impl.h"

namespace server {
namespace {

constexpr size_t kQueryMaxLimit = 10000;
constexpr size_t kQueryMaxParams = 64;

enum class Endpoint { series, query, metrics_list, metric, snapshot, prom, healthz, ui, status, parts, other };

uint32_t request_counter(Endpoint e) {
  switch (e) {
    case Endpoint::series: return kReqSeries;
    case Endpoint::query: return kReqQuery;
    case Endpoint::metrics_list: return kReqMetricsList;
    case Endpoint::metric: return kReqMetric;
    case Endpoint::snapshot: return kReqSnapshot;
    case Endpoint::prom: return kReqProm;
    case Endpoint::healthz: return kReqHealthz;
    case Endpoint::ui:
    case Endpoint::status:
    case Endpoint::parts:
    case Endpoint::other: return kReqOther;
  }
  return kReqOther;
}

uint32_t status_counter(int status) {
  if (status == 304) return kStatus304;
  if (status == 404) return kStatus404;
  if (status >= 500) return kStatus5xx;
  if (status >= 400) return kStatus4xxOther;
  return kStatus2xx;
}

}  // namespace

std::string parse_query(std::string_view query, QueryParams& q) {
  bool have_metric = false, have_limit = false;
  size_t params = 0;
  for (std::string_view rest = query; !rest.empty();) {
    size_t amp = rest.find('&');
    std::string_view param = rest.substr(0, amp);
    rest.remove_prefix(amp == std::string_view::npos ? rest.size() : amp + 1);
    if (param.empty()) continue;
    if (++params > kQueryMaxParams) return fmt::format("too many query parameters (at most {})", kQueryMaxParams);
    size_t eq = param.find('=');
    std::string name, value;
    if (!http::percent_decode_append(param.substr(0, eq), name, true) ||
        (eq != std::string_view::npos && !http::percent_decode_append(param.substr(eq + 1), value, true)))
      return "malformed percent-encoding in the query";
    if (name == "metric" || name == "limit" || name == "cursor") {
      bool& seen = name == "metric" ? have_metric : name == "limit" ? have_limit : q.has_cursor;
      if (seen) return fmt::format("query parameter '{}' given twice", name);
      seen = true;
    }
    if (name == "metric") {
      q.metric = std::move(value);
    } else if (name == "limit") {
      uint64_t n = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || end != value.data() + value.size() || n < 1 || n > kQueryMaxLimit)
        return fmt::format("limit must be a whole number from 1 to {}", kQueryMaxLimit);
      q.limit = n;
    } else if (name == "cursor") {
      q.cursor = std::move(value);
    } else {
      q.labels.emplace_back(std::move(name), std::move(value));
    }
  }
  if (!have_metric || q.metric.empty()) return "missing query parameter: metric";
  return "";
}

// True when the series record `record_key` ("s:" + canonical key) has every label pair.
bool series_has_labels(std::string_view record_key, const std::vector<std::pair<std::string, std::string>>& labels) {
  if (record_key.starts_with(ingest::kSeriesPrefix)) record_key.remove_prefix(ingest::kSeriesPrefix.size());
  auto parsed = ingest::parse_series_key(record_key);
  if (!parsed) return false;
  return std::all_of(labels.begin(), labels.end(), [&](const auto& want) {
    return std::find(parsed->labels.begin(), parsed->labels.end(), want) != parsed->labels.end();
  });
}

size_t list_position_after(const shm::ListView& list, std::string_view series_key) {
  std::string key(ingest::kSeriesPrefix);
  key.append(series_key);
  size_t lo = 0, hi = list.size();
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    auto r = list.at(mid);
    if (r && r->key <= std::string_view(key)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

void HttpServer::Impl::handle(Conn& c, const Request& req, const shm::SnapshotView* view, bool store_failed) {
  std::string_view path = req.path;
  Endpoint ep = Endpoint::other;
  std::string_view rest;
  if (path.starts_with("/v1/series/")) {
    ep = Endpoint::series;
    rest = path.substr(11);
  } else if (path == "/v1/query") {
    ep = Endpoint::query;
  } else if (path == "/v1/metrics") {
    ep = Endpoint::metrics_list;
  } else if (path.starts_with("/v1/metrics/")) {
    ep = Endpoint::metric;
    rest = path.substr(12);
  } else if (path == "/v1/snapshot") {
    ep = Endpoint::snapshot;
  } else if (path == "/metrics") {
    ep = Endpoint::prom;
  } else if (path == "/healthz") {
    ep = Endpoint::healthz;
  } else if (path.starts_with("/ui")) {
    ep = Endpoint::ui;
    rest = path.substr(3);
  } else if (path == "/v1/status") {
    ep = Endpoint::status;
  } else if (path.starts_with("/internal/v1/parts/")) {
    ep = Endpoint::parts;
    rest = path.substr(19);
  }
  bump(request_counter(ep));
  const uint64_t gen = view ? view->generation() : 0;

  if (ep == Endpoint::other) return respond_json_error(c, req, 404, gen, "no such endpoint");
  if (req.method == http::Method::other)
    return respond_json_error(c, req, 405, gen, "method not allowed", "Allow: GET, HEAD\r\n");
  if (ep == Endpoint::prom) return serve_prom(c, req, view);
  if (ep == Endpoint::healthz) return serve_healthz(c, req, view);
  if (ep == Endpoint::ui) return serve_ui(c, req, rest, gen);
  if (ep == Endpoint::status) return serve_status(c, req, view);
  if (store_failed) return respond_json_error(c, req, 500, gen, "snapshot unreadable");
  if (!view) return respond_json_error(c, req, 503, gen, "no snapshot yet");
  if (const PartitionMap* map = partition_map(*view)) {
    switch (ep) {
      case Endpoint::parts: return serve_parts(c, req, rest, *view, *map);
      case Endpoint::series: return serve_partitioned(c, req, PartKind::series, rest, *view, *map);
      case Endpoint::metric: return serve_partitioned(c, req, PartKind::metric, rest, *view, *map);
      case Endpoint::metrics_list: return serve_partitioned(c, req, PartKind::metrics, rest, *view, *map);
      case Endpoint::query: return serve_partitioned(c, req, PartKind::query, rest, *view, *map);
      default: break;
    }
  }

  switch (ep) {
    case Endpoint::series: {
      key.assign(ingest::kSeriesPrefix);
      if (!http::percent_decode_append(rest, key, false))
        return respond_json_error(c, req, 400, gen, "malformed percent-encoding in the series key");
      auto found = view->find(key);
      if (!found) return respond_json_error(c, req, 404, gen, "no such series");
      return respond_with_etag(c, req, gen, *found);
    }
    case Endpoint::metric: {
      key.assign(ingest::kMetricPrefix);
      if (!http::percent_decode_append(rest, key, false))
        return respond_json_error(c, req, 400, gen, "malformed percent-encoding in the metric name");
      auto found = view->find(key);
      if (!found) return respond_json_error(c, req, 404, gen, "no such metric");
      return respond_with_etag(c, req, gen, *found);
    }
    case Endpoint::metrics_list: {
      auto found = view->find(ingest::kMetricsRecord);
      return respond_with_etag(c, req, gen, found ? *found : std::string_view(R"({"metrics":[]})"));
    }
    case Endpoint::query: return serve_query(c, req, *view);
    case Endpoint::snapshot: return start_snapshot(c, req, *view);
    case Endpoint::parts: return respond_json_error(c, req, 404, gen, "not a partitioned node");
    default: return respond_json_error(c, req, 404, gen, "no such endpoint");
  }
}

void HttpServer::Impl::respond(Conn& c, const Request& req, int status, uint64_t generation,
                               std::string_view content_type, std::string_view body, std::string_view etag,
                               std::string_view extra) {
  bump(status_counter(status));
  const bool keep = keep_alive(c, req);
  std::string& o = c.out;
  o.append("HTTP/1.1 ");
  http::append_uint(o, static_cast<uint64_t>(status));
  o += ' ';
  o.append(http::reason_phrase(status));
  o.append("\r\nServer: telemetryd\r\nDate: ");
  o.append(date, date_len);
  if (status != 304) {
    o.append("\r\nContent-Type: ").append(content_type);
    o.append("\r\nContent-Length: ");
    http::append_uint(o, body.size());
  }
  o.append("\r\nX-Snapshot-Generation: ");
  http::append_uint(o, generation);
  o.append("\r\n");
  if (!etag.empty()) o.append("ETag: ").append(etag).append("\r\n");
  o.append(extra);
  if (!keep) o.append("Connection: close\r\n");
  else if (req.minor_version == 0) o.append("Connection: keep-alive\r\n");
  o.append("\r\n");
  if (status != 304 && req.method != http::Method::head) o.append(body);
  if (!keep) c.close_after_flush = true;
}

void HttpServer::Impl::respond_json_error(Conn& c, const Request& req, int status, uint64_t generation,
                                          std::string_view msg, std::string_view extra) {
  body.assign(R"({"error":)");
  ingest::append_json_string(body, msg);
  body.append("}");
  respond(c, req, status, generation, "application/json", body, {}, extra);
}

void HttpServer::Impl::respond_with_etag(Conn& c, const Request& req, uint64_t generation, std::string_view data) {
  static constexpr char kHex[] = "0123456789abcdef";
  char etag[18];
  uint64_t h = shm::hash_bytes(data.data(), data.size());
  etag[0] = etag[17] = '"';
  for (int i = 16; i >= 1; --i, h >>= 4) etag[i] = kHex[h & 15];
  const std::string_view tag(etag, sizeof etag);
  if (!req.if_none_match.empty() && http::etag_matches(req.if_none_match, tag))
    return respond(c, req, 304, generation, {}, {}, tag);
  respond(c, req, 200, generation, "application/json", data, tag);
}

// /v1/query: one page of the metric's series whose labels include every given pair.
//
// Bounded per request, whatever the snapshot holds: a page has at most `limit` series
// (default kQueryDefaultLimit, at most kQueryMaxLimit) and the scan behind it looks at
// most query_max_scanned series (ReaderOptions), so a filter that matches little in a metric of millions
// of series returns a short (even empty) page with a cursor instead of walking them all
// under the snapshot guard. The metric's list is sorted by key, so the cursor is the
// last key looked at and the next page starts by binary search after it: pages stay
// consistent across generations (a series added meanwhile before the cursor is not
// seen, one after it is), and a cursor never expires.
void HttpServer::Impl::serve_query(Conn& c, const Request& req, const shm::SnapshotView& view) {
  const uint64_t gen = view.generation();
  QueryParams q;
  if (std::string error = parse_query(req.query, q); !error.empty()) return respond_json_error(c, req, 400, gen, error);

  const std::string list_name = ingest::metric_record_key(q.metric);
  const shm::ListView list = view.find_list(list_name);
  size_t i = 0;
  if (q.has_cursor) i = list_position_after(list, q.cursor);
  body.assign(R"({"series":[)");
  size_t returned = 0, scanned = 0;
  std::string_view last_key;
  for (; i < list.size() && returned < q.limit && scanned < opt.query_max_scanned; ++i, ++scanned) {
    auto r = list.at(i);
    if (!r) continue;
    last_key = r->key;
    if (!q.labels.empty() && !series_has_labels(r->key, q.labels)) continue;
    if (returned++) body += ',';
    body.append(r->value);
  }
  body.append("]");
  if (i < list.size() && last_key.starts_with(ingest::kSeriesPrefix)) {
    body.append(R"(,"next_cursor":)");
    ingest::append_json_string(body, last_key.substr(ingest::kSeriesPrefix.size()));
  }
  body.append("}");
  respond_with_etag(c, req, gen, body);
}

void HttpServer::Impl::serve_healthz(Conn& c, const Request& req, const shm::SnapshotView* view) {
  const uint64_t gen = view ? view->generation() : 0;
  if (!view) {
    body.assign(R"({"status":"no snapshot","generation":0})");
    return respond(c, req, 503, 0, "application/json", body);
  }
  // Cut off from Redis: it serves the last committed snapshot, which no longer moves.
  if (store.service_counter(kClusterEnabled).load(std::memory_order_relaxed) &&
      store.service_counter(kClusterDegraded).load(std::memory_order_relaxed)) {
    body.assign(R"({"status":"degraded","generation":)");
    http::append_uint(body, gen);
    body.append("}");
    return respond(c, req, 503, gen, "application/json", body);
  }
  // A cluster node takes no traffic before it serves the cluster's data: until then its
  // snapshot may be an old one of its own (the writer sets kClusterSynced).
  if (store.service_counter(kClusterEnabled).load(std::memory_order_relaxed) &&
      !store.service_counter(kClusterSynced).load(std::memory_order_relaxed)) {
    body.assign(R"({"status":"syncing","generation":)");
    http::append_uint(body, gen);
    body.append("}");
    return respond(c, req, 503, gen, "application/json", body);
  }
  const uint64_t now = shm::realtime_ns(), built = view->built_at_ns();
  const uint64_t age_ns = now > built ? now - built : 0;
  const bool fresh = age_ns <= static_cast<uint64_t>(opt.healthz_max_age.count()) * 1'000'000;
  char age[32];
  auto [p, ec] = std::to_chars(age, age + sizeof age, static_cast<double>(age_ns) / 1e9, std::chars_format::fixed, 3);
  body.assign(fresh ? R"({"status":"ok","generation":)" : R"({"status":"stale","generation":)");
  http::append_uint(body, gen);
  body.append(R"(,"age_s":)").append(age, p).append("}");
  respond(c, req, fresh ? 200 : 503, gen, "application/json", body);
}

namespace {
template <typename Help, typename Line>
void append_cluster_metrics(std::string& out, Help help, Line line, const shm::Store& store) {
  auto counter = [&](uint32_t i) { return store.service_counter(i).load(std::memory_order_relaxed); };
  help("telemetryd_cluster_role", "gauge", "1 for this node's cluster role (leader, follower or candidate).");
  static constexpr const char* kRoles[] = {"follower", "candidate", "leader"};
  for (uint64_t r = 0; r < 3; ++r)
    line("telemetryd_cluster_role", std::string("role=\"") + kRoles[r] + "\"", counter(kClusterRole) == r + 1 ? 1 : 0);
  help("telemetryd_cluster_term", "gauge", "The cluster's lease term as this node knows it.");
  line("telemetryd_cluster_term", {}, counter(kClusterTerm));
  help("telemetryd_cluster_synced", "gauge", "1 once this node serves the cluster's data.");
  line("telemetryd_cluster_synced", {}, counter(kClusterSynced));
  help("telemetryd_cluster_replication_lag_ms", "gauge",
       "The leader's publish to this node's publish of the last applied log entry.");
  line("telemetryd_cluster_replication_lag_ms", {}, counter(kClusterLagMs));
  help("telemetryd_cluster_entries_applied_total", "counter", "Log entries applied from Redis by this node.");
  line("telemetryd_cluster_entries_applied_total", {}, counter(kClusterApplied));
  help("telemetryd_cluster_redis_errors_total", "counter", "Failed Redis commands and lost connections.");
  line("telemetryd_cluster_redis_errors_total", {}, counter(kClusterRedisErrors));
  help("telemetryd_cluster_degraded", "gauge", "1 while Redis is unreachable and the last committed snapshot is served.");
  line("telemetryd_cluster_degraded", {}, counter(kClusterDegraded));
  help("telemetryd_cluster_cannot_follow", "gauge", "1 while this node cannot follow the log (show cluster says why).");
  line("telemetryd_cluster_cannot_follow", {}, counter(kClusterCannotFollow));
  help("telemetryd_cluster_reloads_total", "counter", "State reloads from a checkpoint by this node's writer.");
  line("telemetryd_cluster_reloads_total", {}, counter(kClusterReloads));
  help("telemetryd_cluster_pending_dropped_total", "counter",
       "Leader entries dropped while Redis did not take them (a checkpoint covered them).");
  line("telemetryd_cluster_pending_dropped_total", {}, counter(kClusterPendingDropped));
  help("telemetryd_partitions_held", "gauge", "Partitions this node holds, by state (a partitioned cluster).");
  line("telemetryd_partitions_held", "state=\"ready\"", counter(kPartitionsReady));
  const uint64_t held = counter(kPartitionsHeld), ready = counter(kPartitionsReady);
  line("telemetryd_partitions_held", "state=\"not_ready\"", held > ready ? held - ready : 0);
  help("telemetryd_partitions_primary", "gauge", "Partitions this node is the primary of (writes their checkpoints).");
  line("telemetryd_partitions_primary", {}, counter(kPartitionsPrimary));
  help("telemetryd_partition_moves_total", "counter", "Partitions this node's writer took (in) and let go (out).");
  line("telemetryd_partition_moves_total", "direction=\"in\"", counter(kPartitionMovesIn));
  line("telemetryd_partition_moves_total", "direction=\"out\"", counter(kPartitionMovesOut));
  help("telemetryd_cluster_checkpoint_age_seconds", "gauge", "Age of the newest checkpoint in Redis (-1: none).");
  uint64_t age = counter(kClusterCheckpointAgeS);
  out.append("telemetryd_cluster_checkpoint_age_seconds ").append(age ? std::to_string(age - 1) : "-1").append("\n");
}
}  // namespace

namespace {
template <typename Help, typename Line>
void append_state_metrics(std::string& out, Help help, Line line, const shm::Store& store, const std::string& dir) {
  auto counter = [&](uint32_t i) { return store.service_counter(i).load(std::memory_order_relaxed); };
  help("telemetryd_state_info", "gauge", "1, labelled with the directory that holds the writer's log and checkpoints.");
  std::string labels = "dir=\"";
  http::append_prom_label_value(labels, dir);
  labels += '"';
  line("telemetryd_state_info", labels, 1);
  help("telemetryd_state_checkpoint_age_seconds", "gauge",
       "Age of the newest checkpoint written by this writer (-1: none yet).");
  const uint64_t written_ms = counter(kStateCheckpointUnixMs), now_ms = shm::realtime_ns() / 1'000'000;
  out.append("telemetryd_state_checkpoint_age_seconds ")
      .append(written_ms ? std::to_string(now_ms > written_ms ? (now_ms - written_ms) / 1000 : 0) : "-1")
      .append("\n");
  help("telemetryd_state_checkpoint_bytes", "gauge", "Size of the newest checkpoint.");
  line("telemetryd_state_checkpoint_bytes", {}, counter(kStateCheckpointBytes));
  help("telemetryd_state_log_bytes", "gauge", "Size of the log files kept behind and after it.");
  line("telemetryd_state_log_bytes", {}, counter(kStateLogBytes));
  help("telemetryd_state_recovery_entries", "gauge", "Log entries the writer's last recovery replayed.");
  line("telemetryd_state_recovery_entries", {}, counter(kStateRecoveryEntries));
  help("telemetryd_state_recovery_seconds", "gauge", "How long the writer's last recovery took.");
  const uint64_t recovery_ms = counter(kStateRecoveryMs);
  out.append(fmt::format("telemetryd_state_recovery_seconds {}.{:03}\n", recovery_ms / 1000, recovery_ms % 1000));
  help("telemetryd_state_log_cuts_total", "counter", "Log tails cut at recovery (torn or damaged).");
  line("telemetryd_state_log_cuts_total", {}, counter(kStateLogCuts));
  help("telemetryd_state_checkpoints_skipped_total", "counter", "Checkpoints that did not read back at recovery.");
  line("telemetryd_state_checkpoints_skipped_total", {}, counter(kStateCheckpointsSkipped));
  help("telemetryd_state_write_errors_total", "counter", "Failed log appends and checkpoint writes (a full disk).");
  line("telemetryd_state_write_errors_total", {}, counter(kStateWriteErrors));
  help("telemetryd_state_write_failing", "gauge", "1 while the state dir lacks what the writer holds.");
  line("telemetryd_state_write_failing", {}, counter(kStateWriteFailing));
}
}  // namespace

// /metrics: the writer's rendering of the snapshot, then the service's own metrics.
void HttpServer::Impl::serve_prom(Conn& c, const Request& req, const shm::SnapshotView* view) {
  const uint64_t gen = view ? view->generation() : 0;
  std::string out;
  if (view)
    if (auto prom = view->find(ingest::kPromRecord)) out.append(*prom);
  auto sum = [&](uint32_t counter) {
    uint64_t total = 0;
    for (uint32_t s = 0; s < store.reader_slots(); ++s) total += store.reader_counter(s, counter);
    return total;
  };
  auto line = [&](std::string_view name, std::string_view labels, uint64_t v) {
    out.append(name);
    if (!labels.empty()) out.append("{").append(labels).append("}");
    out += ' ';
    http::append_uint(out, v);
    out += '\n';
  };
  auto help = [&](std::string_view name, std::string_view type, std::string_view text) {
    out.append("# HELP ").append(name).append(" ").append(text).append("\n# TYPE ");
    out.append(name).append(" ").append(type).append("\n");
  };

  help("telemetryd_http_requests_total", "counter", "HTTP requests answered by all readers, by endpoint.");
  static constexpr std::pair<const char*, uint32_t> kEndpoints[] = {
      {"series", kReqSeries},   {"query", kReqQuery}, {"metrics", kReqMetricsList}, {"metric", kReqMetric},
      {"snapshot", kReqSnapshot}, {"prometheus", kReqProm}, {"healthz", kReqHealthz}, {"other", kReqOther}};
  for (auto [name, i] : kEndpoints) line("telemetryd_http_requests_total", std::string("endpoint=\"") + name + "\"", sum(i));
  help("telemetryd_http_responses_total", "counter", "HTTP responses of all readers, by status (class).");
  static constexpr std::pair<const char*, uint32_t> kStatuses[] = {
      {"2xx", kStatus2xx}, {"304", kStatus304}, {"404", kStatus404}, {"4xx", kStatus4xxOther}, {"5xx", kStatus5xx}};
  for (auto [name, i] : kStatuses) line("telemetryd_http_responses_total", std::string("status=\"") + name + "\"", sum(i));
  help("telemetryd_http_connections_accepted_total", "counter", "Connections accepted by all readers.");
  line("telemetryd_http_connections_accepted_total", {}, sum(kConnectionsAccepted));
  help("telemetryd_http_connections_open", "gauge", "Connections open in all readers.");
  line("telemetryd_http_connections_open", {}, sum(kConnectionsOpen));

  help("telemetryd_snapshot_generation", "gauge", "Generation of the snapshot being served.");
  line("telemetryd_snapshot_generation", {}, gen);
  help("telemetryd_snapshot_age_seconds", "gauge", "Age of the snapshot being served.");
  out.append("telemetryd_snapshot_age_seconds ");
  if (view) {
    const uint64_t now = shm::realtime_ns(), built = view->built_at_ns();
    char age[32];
    auto [p, ec] = std::to_chars(age, age + sizeof age, now > built ? (now - built) / 1e9 : 0.0,
                                 std::chars_format::fixed, 3);
    out.append(age, p);
  } else {
    out.append("NaN");
  }
  out += '\n';

  const std::vector<shm::SourceStatus> sources = store.sources();
  auto per_source = [&](std::string_view name, std::string_view text, uint64_t shm::SourceStatus::*field) {
    help(name, "counter", text);
    for (const auto& s : sources) {
      std::string labels = "source=\"";
      http::append_prom_label_value(labels, s.url);
      labels += '"';
      line(name, labels, s.*field);
    }
  };
  per_source("telemetryd_source_samples_total", "Samples accepted per source.", &shm::SourceStatus::samples);
  per_source("telemetryd_source_dropped_total", "Samples dropped per source.", &shm::SourceStatus::dropped);
  per_source("telemetryd_source_errors_total", "Failed fetches or parses per source.", &shm::SourceStatus::errors);

  help("telemetryd_restarts_total", "counter", "Children restarted by the supervisor, by role.");
  line("telemetryd_restarts_total", "role=\"writer\"", store.service_counter(kRestartsWriter).load(std::memory_order_relaxed));
  line("telemetryd_restarts_total", "role=\"reader\"", store.service_counter(kRestartsReader).load(std::memory_order_relaxed));
  help("telemetryd_watchdog_kills_total", "counter", "Children killed by the supervisor for making no progress, by role.");
  line("telemetryd_watchdog_kills_total", "role=\"writer\"", store.service_counter(kStuckWritersKilled).load(std::memory_order_relaxed));
  line("telemetryd_watchdog_kills_total", "role=\"reader\"", store.service_counter(kStuckReadersKilled).load(std::memory_order_relaxed));
  if (store.service_counter(kClusterEnabled).load(std::memory_order_relaxed)) append_cluster_metrics(out, help, line, store);
  if (!opt.state_dir.empty()) append_state_metrics(out, help, line, store, opt.state_dir);
  respond(c, req, 200, gen, "text/plain; version=0.0.4; charset=utf-8", out);
}

}  // namespace server
