// server/routes.cc: a reader's routing and endpoints. handle() maps a parsed request to
// its endpoint and answers it from the snapshot view the connection engine entered for
// the batch; every body is either a pre-rendered record of the snapshot (a lookup and a
// copy) or rendered here from it with bounded work (docs/operations.md, HTTP API).
#include <algorithm>
#include <charconv>
#include <string>
#include <vector>

#include "ingest/ingest.h"
#include "server/reader_impl.h"

namespace server {
namespace {

enum class Endpoint { series, query, metrics_list, metric, snapshot, prom, healthz, other };

uint32_t request_counter(Endpoint e) {
  switch (e) {
    case Endpoint::series: return kReqSeries;
    case Endpoint::query: return kReqQuery;
    case Endpoint::metrics_list: return kReqMetricsList;
    case Endpoint::metric: return kReqMetric;
    case Endpoint::snapshot: return kReqSnapshot;
    case Endpoint::prom: return kReqProm;
    case Endpoint::healthz: return kReqHealthz;
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
  }
  bump(request_counter(ep));
  const uint64_t gen = view ? view->generation() : 0;

  if (ep == Endpoint::other) return respond_json_error(c, req, 404, gen, "no such endpoint");
  if (req.method == http::Method::other)
    return respond_json_error(c, req, 405, gen, "method not allowed", "Allow: GET, HEAD\r\n");
  if (ep == Endpoint::prom) return serve_prom(c, req, view);
  if (ep == Endpoint::healthz) return serve_healthz(c, req, view);
  if (store_failed) return respond_json_error(c, req, 500, gen, "snapshot unreadable");
  if (!view) return respond_json_error(c, req, 503, gen, "no snapshot yet");

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

// /v1/query: the metric's series whose labels include every given pair.
void HttpServer::Impl::serve_query(Conn& c, const Request& req, const shm::SnapshotView& view) {
  const uint64_t gen = view.generation();
  std::string metric;
  bool have_metric = false;
  std::vector<std::pair<std::string, std::string>> want;
  for (std::string_view q = req.query; !q.empty();) {
    size_t amp = q.find('&');
    std::string_view param = q.substr(0, amp);
    q.remove_prefix(amp == std::string_view::npos ? q.size() : amp + 1);
    if (param.empty()) continue;
    size_t eq = param.find('=');
    std::string name, value;
    if (!http::percent_decode_append(param.substr(0, eq), name, true) ||
        (eq != std::string_view::npos && !http::percent_decode_append(param.substr(eq + 1), value, true)))
      return respond_json_error(c, req, 400, gen, "malformed percent-encoding in the query");
    if (name == "metric" && !have_metric) {
      metric = std::move(value);
      have_metric = true;
    } else {
      want.emplace_back(std::move(name), std::move(value));
    }
  }
  if (!have_metric || metric.empty()) return respond_json_error(c, req, 400, gen, "missing query parameter: metric");

  std::string out = R"({"series":[)";
  bool first = true;
  for (const shm::Record& r : view.list(ingest::metric_record_key(metric))) {
    if (!want.empty()) {
      std::string_view k = r.key;
      if (k.starts_with(ingest::kSeriesPrefix)) k.remove_prefix(ingest::kSeriesPrefix.size());
      auto parsed = ingest::parse_series_key(k);
      if (!parsed) continue;
      bool all = std::all_of(want.begin(), want.end(), [&](const auto& w) {
        return std::find(parsed->labels.begin(), parsed->labels.end(), w) != parsed->labels.end();
      });
      if (!all) continue;
    }
    if (!first) out += ',';
    first = false;
    out.append(r.value);
  }
  out.append("]}");
  respond_with_etag(c, req, gen, out);
}

void HttpServer::Impl::serve_healthz(Conn& c, const Request& req, const shm::SnapshotView* view) {
  const uint64_t gen = view ? view->generation() : 0;
  if (!view) {
    body.assign(R"({"status":"no snapshot","generation":0})");
    return respond(c, req, 503, 0, "application/json", body);
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
  respond(c, req, 200, gen, "text/plain; version=0.0.4; charset=utf-8", out);
}

}  // namespace server
