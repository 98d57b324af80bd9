// server/fanout.cc: a reader's answers over a partitioned cluster (docs/architecture.md,
// Queries over partitions). A node holds only some partitions; any node answers any
// query:
//   - a single series goes to its partition: from this node's snapshot when it serves
//     the partition, else from one other ready holder;
//   - a list, a page of /v1/query, a metric's rollup ask one ready holder per partition
//     (the partitions of one node in one request), and the parts are merged here in
//     ascending partition order, so the bytes depend on the parts' generations only,
//     never on which node coordinated.
// Parts travel in the binary frames of fanout_wire.h over the nodes' HTTP listeners
// (GET /internal/v1/parts/...), with libevent's HTTP client on the reader's own loop: a
// remote holder's slowness holds only the connection that waits for it, never the
// reader. An answer that lacks a partition (no ready holder, none answered by the
// deadline) says so: "partial":true, the partitions in "missing_partitions", and the
// header Telemetryd-Partial.
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/http.h>

#include <algorithm>
#include <charconv>
#include <deque>
#include <map>

#include <fmt/format.h>

#include "common/partitions.h"
#include "ingest/ingest.h"
#include "server/fanout_wire.h"
#include "server/reader_impl.h"

namespace server {
namespace {

constexpr size_t kConnectionsPerPeer = 4;      // requests to one node in flight at once
constexpr uint64_t kSuspectForMs = 3000;       // a holder that failed is asked last for this long
constexpr std::string_view kPartsPath = "/internal/v1/parts/";
constexpr size_t kMergedCacheBytes = size_t{32} << 20;  // merged answers kept per reader
constexpr size_t kMergedCacheEntries = 1024;

// "1,5,9" -> partitions below `limit`, ascending, each once; nullopt when malformed.
std::optional<std::vector<uint32_t>> parse_partition_list(std::string_view text, uint32_t limit) {
  std::vector<uint32_t> out;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    text.remove_prefix(comma == std::string_view::npos ? text.size() : comma + 1);
    uint32_t p = 0;
    auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), p);
    if (ec != std::errc() || end != item.data() + item.size() || p >= limit) return std::nullopt;
    out.push_back(p);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  if (out.empty()) return std::nullopt;
  return out;
}

std::string partition_list(const std::vector<uint32_t>& partitions) {
  std::string text;
  for (uint32_t p : partitions) {
    if (!text.empty()) text += ',';
    text += std::to_string(p);
  }
  return text;
}

std::string partition_list_key(std::string_view prefix, uint32_t p, std::string_view name) {
  return fmt::format("{}{}:{}", prefix, p, name);
}

}  // namespace

const PartitionMap* HttpServer::Impl::partition_map(const shm::SnapshotView& view) {
  if (!map_known || map_generation != view.generation()) {
    auto record = view.find(kPartitionMapRecord);
    map = std::nullopt;
    if (record) map = decode_partition_map(*record).value_or(PartitionMap{});  // damaged: known to nobody, 503
    map_generation = view.generation();
    map_known = true;
  }
  return map ? &*map : nullptr;
}

// ---------------------------------------------------------------------------------
// The holder's side: the parts of this node's partitions, as frames
// ---------------------------------------------------------------------------------

// The frames of one part kind for `partitions` of this node's snapshot. Used for the
// internal endpoint and for the coordinator's own partitions alike, so both go through
// the same merge.
std::string HttpServer::Impl::local_parts(PartKind kind, const std::vector<uint32_t>& partitions,
                                          std::string_view name, const QueryParams* q, const shm::SnapshotView& view,
                                          const PartitionMap& map) {
  std::string out;
  const size_t scan_cap = std::max<size_t>(1, opt.query_max_scanned / partitions.size());
  for (uint32_t p : partitions) {
    const bool ready = p < map.routes.size() && map.routes[p].local;
    wire::put_ready(out, p, ready, ready ? map.routes[p].generation : 0);
    if (!ready) continue;
    switch (kind) {
      case PartKind::series:
        if (auto found = view.find(name)) wire::put_record(out, p, name, *found);
        break;
      case PartKind::metrics: {
        const shm::ListView list = view.find_list(fmt::format("p:{}", p));
        for (size_t i = 0; i < list.size(); ++i) {
          auto r = list.at(i);
          if (!r) continue;
          std::string_view metric = r->key.substr(r->key.find(':', 2) + 1);
          try {
            wire::put_metric(out, p, metric, ingest::rollup_partial_series_count(r->value));
          } catch (const std::invalid_argument&) {
            // A damaged record is the writer's bug; the metric is left out of this part.
          }
        }
        break;
      }
      case PartKind::metric:
        if (auto partial = view.find(partition_list_key("r:", p, name))) wire::put_partial(out, p, *partial);
        break;
      case PartKind::query: query_page(out, p, view.find_list(partition_list_key("p:", p, q->metric)), *q, scan_cap); break;
    }
  }
  return out;
}

// One partition's page of /v1/query: its series after the cursor that have the labels,
// at most q.limit of them, looking at no more than scan_cap.
void HttpServer::Impl::query_page(std::string& out, uint32_t p, const shm::ListView& list, const QueryParams& q,
                                  size_t scan_cap) {
  size_t i = 0;
  if (q.has_cursor) i = list_position_after(list, q.cursor);
  size_t returned = 0, scanned = 0;
  std::string_view last_key;
  for (; i < list.size() && returned < q.limit && scanned < scan_cap; ++i, ++scanned) {
    auto r = list.at(i);
    if (!r) continue;
    last_key = r->key;
    if (!q.labels.empty() && !series_has_labels(r->key, q.labels)) continue;
    wire::put_record(out, p, r->key.substr(ingest::kSeriesPrefix.size()), r->value);
    ++returned;
  }
  const bool truncated = i < list.size();
  if (last_key.starts_with(ingest::kSeriesPrefix)) last_key.remove_prefix(ingest::kSeriesPrefix.size());
  wire::put_end(out, p, truncated, last_key);
}

// GET /internal/v1/parts/OP/PARTITIONS[/NAME][?QUERY]: OP series (NAME the series key),
// metrics, metric (NAME the metric) or query (QUERY as /v1/query's).
void HttpServer::Impl::serve_parts(Conn& c, const Request& req, std::string_view rest, const shm::SnapshotView& view,
                                   const PartitionMap& map) {
  const uint64_t gen = view.generation();
  size_t slash = rest.find('/');
  std::string_view op = rest.substr(0, slash);
  rest.remove_prefix(slash == std::string_view::npos ? rest.size() : slash + 1);
  slash = rest.find('/');
  auto partitions = parse_partition_list(rest.substr(0, slash), map.partitions);
  std::string name;
  if (slash != std::string_view::npos && !http::percent_decode_append(rest.substr(slash + 1), name, false))
    return respond_json_error(c, req, 400, gen, "malformed percent-encoding");
  if (!partitions) return respond_json_error(c, req, 400, gen, "bad partition list");
  PartKind kind;
  QueryParams q;
  if (op == "series") {
    kind = PartKind::series;
    name.insert(0, ingest::kSeriesPrefix);
  } else if (op == "metrics") {
    kind = PartKind::metrics;
  } else if (op == "metric") {
    kind = PartKind::metric;
  } else if (op == "query") {
    kind = PartKind::query;
    if (std::string error = parse_query(req.query, q); !error.empty()) return respond_json_error(c, req, 400, gen, error);
  } else {
    return respond_json_error(c, req, 404, gen, "no such part");
  }
  body = local_parts(kind, *partitions, name, &q, view, map);
  respond(c, req, 200, gen, "application/x-telemetryd-parts", body);
}

// ---------------------------------------------------------------------------------
// The coordinator's side
// ---------------------------------------------------------------------------------

// The other nodes' HTTP listeners, as libevent HTTP client connections (a few per node,
// kept open), and which of them failed lately.
struct HttpServer::Impl::Peers {
  struct Link {
    evhttp_connection* conn;
    uint32_t in_flight = 0;  // Fanout::Ask points here: a deque keeps it in place
  };
  struct Peer {
    std::deque<Link> links;
    uint64_t suspect_until_ms = 0;
  };
  event_base* base;
  evdns_base* dns;
  std::map<std::string, Peer, std::less<>> peers;

  explicit Peers(event_base* b) : base(b), dns(evdns_base_new(b, EVDNS_BASE_INITIALIZE_NAMESERVERS)) {}
  ~Peers() {
    for (auto& [address, peer] : peers)
      for (Link& link : peer.links) evhttp_connection_free(link.conn);
    if (dns) evdns_base_free(dns, 0);
  }
  // The link to `address` (HOST:PORT) with the fewest requests in flight, a new one
  // while all are busy and there are fewer than kConnectionsPerPeer; null when the
  // address cannot be used.
  Link* link(const std::string& address, std::chrono::milliseconds deadline) {
    Peer& peer = peers[address];
    Link* best = nullptr;
    for (Link& l : peer.links)
      if (!best || l.in_flight < best->in_flight) best = &l;
    if (best && (best->in_flight == 0 || peer.links.size() == kConnectionsPerPeer)) return best;
    const size_t colon = address.rfind(':');
    if (colon == std::string::npos) return nullptr;
    std::string host = address.substr(0, colon);
    if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    const int port = std::atoi(address.c_str() + colon + 1);
    evhttp_connection* conn = evhttp_connection_base_new(base, dns, host.c_str(), uint16_t(port));
    if (!conn) return nullptr;
    const timeval tv{deadline.count() / 1000, deadline.count() % 1000 * 1000};
    evhttp_connection_set_timeout_tv(conn, &tv);
    evhttp_connection_set_retries(conn, 0);
    return &peer.links.emplace_back(Link{conn});
  }
  bool suspect(const std::string& address, uint64_t now_ms) const {
    auto it = peers.find(address);
    return it != peers.end() && it->second.suspect_until_ms > now_ms;
  }
};

// A request waiting for other nodes' parts. It belongs to its connection (Conn::waiting),
// which reads no further request until it is answered.
struct HttpServer::Impl::Fanout {
  struct Ask {  // one request to one node for some partitions
    Fanout* fanout = nullptr;
    std::string address;
    std::vector<uint32_t> partitions;
    evhttp_request* request = nullptr;  // null once answered or cancelled
    uint32_t* in_flight = nullptr;
  };
  Impl* server = nullptr;
  Conn* conn = nullptr;
  PartKind kind = PartKind::series;
  std::string name;  // the series' record key or the metric
  QueryParams query;
  std::string query_string;  // forwarded as it came
  // What respond() needs of the request, which no longer lives in the input buffer.
  bool head = false, keep_alive = true;
  int minor_version = 1;
  std::string if_none_match;
  uint64_t generation = 0;  // of this node's snapshot, for X-Snapshot-Generation
  PartitionMap map;
  std::vector<std::string> parts;  // frames: this node's, then each answer's
  std::map<uint32_t, std::vector<uint16_t>> pending;  // partitions still wanted: the holders asked
  std::vector<std::unique_ptr<Ask>> asks;
  std::vector<uint32_t> missing;
  event* deadline = nullptr;

  ~Fanout() {
    for (auto& a : asks)
      if (a->request) {
        evhttp_cancel_request(a->request);
        --*a->in_flight;
      }
    if (deadline) event_free(deadline);
  }
  Request request() const {  // as respond() needs it
    Request req;
    req.method = head ? http::Method::head : http::Method::get;
    req.keep_alive = keep_alive;
    req.minor_version = minor_version;
    req.if_none_match = if_none_match;
    return req;
  }
  bool asked(uint32_t p) const {  // a request in flight wants it
    return std::any_of(asks.begin(), asks.end(), [&](const auto& a) {
      return a->request && std::find(a->partitions.begin(), a->partitions.end(), p) != a->partitions.end();
    });
  }
  bool outstanding() const {
    return std::any_of(asks.begin(), asks.end(), [](const auto& a) { return a->request != nullptr; });
  }
};

void HttpServer::Impl::FreeFanout::operator()(Fanout* f) const { delete f; }
void HttpServer::Impl::FreePeers::operator()(Peers* p) const { delete p; }


// Routes a read of the whole cluster's data: `rest` is the path after the endpoint's
// prefix (the series key or the metric name, still percent-encoded).
void HttpServer::Impl::serve_partitioned(Conn& c, const Request& req, PartKind kind, std::string_view rest,
                                         const shm::SnapshotView& view, const PartitionMap& map) {
  const uint64_t gen = view.generation();
  if (map.partitions == 0)
    return respond_json_error(c, req, 503, gen, "this node does not know the partition map yet", "Retry-After: 1\r\n");
  std::unique_ptr<Fanout, FreeFanout> f(new Fanout);
  f->server = this;
  f->conn = &c;
  f->kind = kind;
  f->head = req.method == http::Method::head;
  f->keep_alive = req.keep_alive;
  f->minor_version = req.minor_version;
  f->if_none_match = req.if_none_match;
  f->generation = gen;
  f->query_string = req.query;
  std::vector<uint32_t> wanted;
  if (kind == PartKind::series || kind == PartKind::metric) {
    if (!http::percent_decode_append(rest, f->name, false))
      return respond_json_error(c, req, 400, gen, "malformed percent-encoding in the path");
  }
  if (kind == PartKind::series) {
    wanted.push_back(common::partition_of(f->name, map.partitions));
    f->name.insert(0, ingest::kSeriesPrefix);
  } else {
    if (kind == PartKind::query)
      if (std::string error = parse_query(req.query, f->query); !error.empty())
        return respond_json_error(c, req, 400, gen, error);
    for (uint32_t p = 0; p < map.partitions; ++p) wanted.push_back(p);
  }
  std::vector<uint32_t> here;
  for (uint32_t p : wanted) {
    if (map.routes[p].local) here.push_back(p);
    else f->pending[p];
  }
  if (!here.empty()) f->parts.push_back(local_parts(kind, here, f->name, &f->query, view, map));
  if (!f->pending.empty()) {
    f->map = map;
    dispatch(*f);
    if (f->outstanding()) {
      f->deadline = evtimer_new(base, &Impl::on_fanout_deadline, f.get());
      const timeval tv{opt.fanout_deadline.count() / 1000, opt.fanout_deadline.count() % 1000 * 1000};
      evtimer_add(f->deadline, &tv);
      ++fanouts_waiting;
      c.waiting = std::move(f);
      return;
    }
  }
  answer(c, *f);
}

// Asks, for each partition still wanted, the next ready holder not asked yet (one
// request per node); a partition with none left is missing.
void HttpServer::Impl::dispatch(Fanout& f) {
  std::map<uint16_t, std::vector<uint32_t>> by_holder;
  for (auto it = f.pending.begin(); it != f.pending.end();) {
    const uint32_t p = it->first;
    std::vector<uint16_t>& tried = it->second;
    if (f.asked(p)) {
      ++it;
      continue;
    }
    std::optional<uint16_t> pick;
    for (int pass = 0; pass < 2 && !pick; ++pass)  // healthy holders first, then suspect ones
      for (uint16_t a : f.map.routes[p].remote)
        if (std::find(tried.begin(), tried.end(), a) == tried.end() &&
            (pass == 1 || !peers || !peers->suspect(f.map.addresses[a], now_ms))) {
          pick = a;
          break;
        }
    if (!pick) {
      f.missing.push_back(p);
      it = f.pending.erase(it);
      continue;
    }
    tried.push_back(*pick);
    by_holder[*pick].push_back(p);
    ++it;
  }
  if (!peers) peers.reset(new Peers(base));
  for (auto& [holder, partitions] : by_holder) {
    auto ask = std::make_unique<Fanout::Ask>();
    ask->fanout = &f;
    ask->address = f.map.addresses[holder];
    ask->partitions = partitions;
    Peers::Link* link = peers->link(ask->address, opt.fanout_deadline);
    std::string target = std::string(kPartsPath);
    switch (f.kind) {
      case PartKind::series:
        target += "series/" + partition_list(partitions) + "/" +
                  http::percent_encode(std::string_view(f.name).substr(ingest::kSeriesPrefix.size()));
        break;
      case PartKind::metrics: target += "metrics/" + partition_list(partitions); break;
      case PartKind::metric: target += "metric/" + partition_list(partitions) + "/" + http::percent_encode(f.name); break;
      case PartKind::query: target += "query/" + partition_list(partitions) + "?" + f.query_string; break;
    }
    evhttp_request* request = link ? evhttp_request_new(&Impl::on_part_answer, ask.get()) : nullptr;
    if (request) {
      evhttp_add_header(evhttp_request_get_output_headers(request), "Host", ask->address.c_str());
      if (evhttp_make_request(link->conn, request, EVHTTP_REQ_GET, target.c_str()) != 0) request = nullptr;  // freed by libevent
    }
    if (!request) continue;  // stays pending; the next dispatch tries another holder
    ask->request = request;
    ask->in_flight = &link->in_flight;
    ++link->in_flight;
    f.asks.push_back(std::move(ask));
  }
  // A holder that could not even be asked: try the next ones now (each pass marks one
  // more holder tried, so this ends).
  if (std::any_of(f.pending.begin(), f.pending.end(), [&](const auto& entry) { return !f.asked(entry.first); }))
    dispatch(f);
}

void HttpServer::Impl::on_part_answer(evhttp_request* request, void* arg) {
  auto* ask = static_cast<Fanout::Ask*>(arg);
  Fanout& f = *ask->fanout;
  Impl& s = *f.server;
  ask->request = nullptr;  // libevent frees it after this callback
  --*ask->in_flight;
  std::string body;
  bool ok = request && evhttp_request_get_response_code(request) == 200;
  if (ok) {
    evbuffer* in = evhttp_request_get_input_buffer(request);
    body.resize(evbuffer_get_length(in));
    evbuffer_copyout(in, body.data(), body.size());
  }
  std::vector<uint32_t> served;
  if (auto frames = ok ? wire::read_frames(body) : std::nullopt) {
    for (const wire::Frame& fr : *frames)
      if (fr.tag == 'P' && fr.flag) served.push_back(fr.partition);
  } else {
    ok = false;
  }
  if (!ok) s.peers->peers[ask->address].suspect_until_ms = s.now_ms + kSuspectForMs;
  for (uint32_t p : ask->partitions)
    if (std::find(served.begin(), served.end(), p) != served.end()) f.pending.erase(p);
  if (!served.empty()) f.parts.push_back(std::move(body));
  if (!f.pending.empty()) s.dispatch(f);
  if (!f.outstanding()) s.finish_fanout(*f.conn);  // destroys f and ask: nothing after it
}

void HttpServer::Impl::on_fanout_deadline(evutil_socket_t, short, void* arg) {
  auto* f = static_cast<Fanout*>(arg);
  for (const auto& [p, tried] : f->pending) f->missing.push_back(p);
  f->pending.clear();
  f->server->finish_fanout(*f->conn);
}

void HttpServer::Impl::drop_fanout(Conn& c) {
  c.waiting.reset();
  --fanouts_waiting;
}

void HttpServer::Impl::finish_fanout(Conn& c) {
  std::unique_ptr<Fanout, FreeFanout> f = std::move(c.waiting);
  --fanouts_waiting;
  answer(c, *f);
  f.reset();  // cancels what is still in flight
  if (flush(c)) after_io(c);
}

// ---------------------------------------------------------------------------------
// The merge
// ---------------------------------------------------------------------------------

namespace {

struct Merged {
  std::map<uint32_t, uint64_t> generations;  // the partitions answered
  std::vector<const wire::Frame*> records, ends, metrics, partials;
};

void append_partial_fields(std::string& body, const std::vector<uint32_t>& missing) {
  body.append(missing.empty() ? R"(,"partial":false,"missing_partitions":[)" : R"(,"partial":true,"missing_partitions":[)");
  body.append(partition_list(missing)).append("]");
}

// /v1/query over the partitions' pages: every partition's records after the cursor in
// key order, up to the limit, and no further than the first key a truncated page
// stopped at (past it, that partition's records are not known yet). The next cursor is
// the last key answered, so pages are the same whoever coordinates them.
void merge_query_page(std::string& body, Merged& m, const QueryParams& q) {
  std::sort(m.records.begin(), m.records.end(), [](auto* a, auto* b) { return a->a < b->a; });
  std::optional<std::string_view> bound;
  for (const wire::Frame* e : m.ends)
    if (e->number && (!bound || e->a < *bound)) bound = e->a;
  body.assign(R"({"series":[)");
  size_t returned = 0;
  std::string_view last;
  bool more = false;  // records left over that the page had no room for
  for (const wire::Frame* r : m.records) {
    if (bound && r->a > *bound) break;
    if (returned == q.limit) {
      more = true;
      break;
    }
    if (returned++) body += ',';
    body.append(r->b);
    last = r->a;
  }
  body.append("]");
  // Full page: go on after its last key. Else a truncated partition's bound: every record
  // up to it is in this page.
  std::optional<std::string_view> cursor;
  if (returned == q.limit && (more || bound)) cursor = last;
  else if (bound) cursor = bound;
  if (cursor) {
    body.append(R"(,"next_cursor":)");
    ingest::append_json_string(body, *cursor);
  }
}

}  // namespace

// Writes the merged answer of f to c. Parts are merged in ascending partition order
// whatever order they arrived in.
void HttpServer::Impl::answer(Conn& c, Fanout& f) {
  const Request req = f.request();
  std::vector<std::vector<wire::Frame>> decoded;
  Merged m;
  for (const std::string& part : f.parts) {
    auto frames = wire::read_frames(part);
    if (frames) decoded.push_back(std::move(*frames));
  }
  std::vector<uint32_t> served;
  for (const auto& frames : decoded)
    for (const wire::Frame& fr : frames) {
      if (fr.tag == 'P') {
        if (fr.flag) m.generations.emplace(fr.partition, fr.number);
        continue;
      }
      if (!m.generations.contains(fr.partition)) continue;
      auto& into = fr.tag == 'R' ? m.records : fr.tag == 'E' ? m.ends : fr.tag == 'M' ? m.metrics : m.partials;
      into.push_back(&fr);
    }
  std::sort(f.missing.begin(), f.missing.end());
  std::string extra = f.missing.empty() ? "Telemetryd-Partial: false\r\n" : "Telemetryd-Partial: true\r\n";
  extra += "Telemetryd-Generations: ";
  for (auto [p, g] : m.generations) extra += fmt::format("{}:{},", p, g);
  if (!m.generations.empty()) extra.pop_back();
  extra += "\r\n";
  const uint64_t gen = f.generation;
  // A merged answer is a function of its partitions' generations: while none moved, the
  // bytes merged last time are the answer (merging a rollup's partials is most of its cost).
  std::string cache_key;
  if (f.kind != PartKind::series && f.missing.empty()) {
    cache_key = fmt::format("{}{}?{}", char('0' + int(f.kind)), f.name, f.query_string);
    auto it = merged_cache.find(cache_key);
    if (it != merged_cache.end() && it->second.extra == extra) return respond_parts(c, req, gen, it->second.body, extra);
  }
  switch (f.kind) {
    case PartKind::series:
      if (!m.records.empty()) return respond_parts(c, req, gen, m.records.front()->b, extra);
      if (f.missing.empty()) return respond_json_error(c, req, 404, gen, "no such series", extra);
      body.assign(R"({"error":"the series' partition has no ready holder that answered")");
      append_partial_fields(body, f.missing);
      body.append("}");
      return respond(c, req, 503, gen, "application/json", body, {}, extra + "Retry-After: 1\r\n");
    case PartKind::metrics: {
      std::map<std::string_view, uint64_t> counts;
      for (const wire::Frame* fr : m.metrics) counts[fr->a] += fr->number;
      body.assign(R"({"metrics":[)");
      bool first = true;
      for (auto [metric, n] : counts) {
        body.append(first ? R"({"metric":)" : R"(,{"metric":)");
        first = false;
        ingest::append_json_string(body, metric);
        body.append(R"(,"series_count":)");
        http::append_uint(body, n);
        body.append("}");
      }
      body.append("]");
      break;
    }
    case PartKind::metric:
      try {
        if (merge_metric(body, f.name, m.partials)) {
          body.pop_back();  // the closing brace: the partial fields go inside
          break;
        }
      } catch (const std::invalid_argument& e) {
        return respond_json_error(c, req, 502, gen, fmt::format("a partition's rollup is damaged: {}", e.what()), extra);
      }
      {
        if (f.missing.empty()) return respond_json_error(c, req, 404, gen, "no such metric", extra);
        body.assign(R"({"error":"no answering partition has this metric")");
        append_partial_fields(body, f.missing);
        body.append("}");
        return respond(c, req, 503, gen, "application/json", body, {}, extra + "Retry-After: 1\r\n");
      }
    case PartKind::query: merge_query_page(body, m, f.query); break;
  }
  append_partial_fields(body, f.missing);
  body.append("}");
  if (!cache_key.empty()) remember_merged(std::move(cache_key), extra, body);
  respond_parts(c, req, gen, body, extra);
}

// Bounded: an answer larger than a quarter of the budget is not kept, and the whole cache
// is dropped when it would pass the budget (generations move every interval anyway).
void HttpServer::Impl::remember_merged(std::string key, const std::string& extra, const std::string& data) {
  if (data.size() > kMergedCacheBytes / 4) return;
  if (merged_cache_bytes + data.size() > kMergedCacheBytes || merged_cache.size() >= kMergedCacheEntries) {
    merged_cache.clear();
    merged_cache_bytes = 0;
  }
  MergedAnswer& e = merged_cache[std::move(key)];
  merged_cache_bytes -= e.body.size();
  e.extra = extra;
  e.body = data;
  merged_cache_bytes += data.size();
}

// A merged answer with an ETag over its generations and bytes: two nodes answering from
// the same generations give the same bytes and so the same tag.
void HttpServer::Impl::respond_parts(Conn& c, const Request& req, uint64_t generation, std::string_view data,
                                     std::string_view extra) {
  static constexpr char kHex[] = "0123456789abcdef";
  char etag[18];
  uint64_t h = shm::hash_bytes(data.data(), data.size(), shm::hash_bytes(extra.data(), extra.size()));
  etag[0] = etag[17] = '"';
  for (int i = 16; i >= 1; --i, h >>= 4) etag[i] = kHex[h & 15];
  const std::string_view tag(etag, sizeof etag);
  if (!req.if_none_match.empty() && http::etag_matches(req.if_none_match, tag))
    return respond(c, req, 304, generation, {}, {}, tag, extra);
  respond(c, req, 200, generation, "application/json", data, tag, extra);
}

// A metric's rollup from its partitions' partials, merged in ascending partition order.
// False when no partition has the metric.
bool HttpServer::Impl::merge_metric(std::string& out, std::string_view metric,
                                    std::vector<const wire::Frame*>& partials) {
  if (partials.empty()) return false;
  std::sort(partials.begin(), partials.end(), [](auto* a, auto* b) { return a->partition < b->partition; });
  ingest::RollupPartial merged;
  for (const wire::Frame* fr : partials) ingest::merge_rollup_partial(merged, ingest::decode_rollup_partial(fr->a));
  out.clear();
  ingest::render_merged_metric(out, metric, merged);
  return true;
}

}  // namespace server
