// pipeline_impl.h: the pipeline's sources, fetches and Pipeline::Impl. Private to
// pipeline.cc (the tick), pipeline_sources.cc (fetching each kind of source) and
// pipeline_host.cc (the cluster's side): not part of ingest's API.
#pragma once

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include <fmt/format.h>

#include "ingest/ingest.h"
#include "ingest/replica/replica.h"
#include "ingest/replica/wire.h"
#include "ingest/source/fetch_budget.h"
#include "ingest/source/file_read.h"
#include "ingest/source/synthetic.h"
#include "ingest/window/delta_totals.h"

namespace ingest {

// What the pipeline's files share: a named namespace, since three files use it.
namespace detail {

// A source's body buffer keeps its capacity up to this between fetches, the parser
// its buffers up to kKeepParserBytes (about a 1.4 MiB body's worth).
constexpr size_t kKeepBodyBytes = size_t{1} << 20;
constexpr size_t kKeepParserBytes = size_t{8} << 20;

// The Accept header: JSON first, the text formats too; a source marked as Prometheus
// asks for text only.
constexpr const char* kAcceptAny =
    "application/json, text/plain;version=0.0.4;q=0.5, "
    "application/openmetrics-text;version=1.0.0;q=0.4";
constexpr const char* kAcceptPrometheus =
    "text/plain;version=0.0.4, application/openmetrics-text;version=1.0.0;q=0.5";
// What a marked source's body is taken as, unless it says it is OpenMetrics.
constexpr std::string_view kPrometheusContentType = "text/plain; version=0.0.4";

inline timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

enum class Kind { http, file, synthetic, push };

struct Source;

// One fetch of one source: the argument of its evhttp callbacks and of its deadline
// timer. evhttp calls back at most once per request (response, failure, or
// synchronously inside evhttp_cancel_request), so `done` is all it takes to ignore
// late news.
struct Fetch {
  void* owner = nullptr;  // the Pipeline::Impl
  Source* source = nullptr;
  evhttp_request* request = nullptr;  // http: until evhttp has called back
  std::shared_ptr<FileRead> file;     // file
  event* deadline = nullptr;          // also made active at once to abort the fetch
  bool done = false;
  bool headers_done = false;
  int code = 0;          // the response's status, once its head is read
  size_t received = 0;   // bytes the connection received, taken from the budget
  std::string error;     // evhttp's error, or why the fetch is being aborted
  ~Fetch() {
    if (deadline) event_free(deadline);
  }
};

struct Source {
  uint32_t id = 0;  // the Aggregator's source id, stable while the URL stays configured
  uint32_t index = 0;  // in the configuration, as of the tick's start
  std::string url;
  Kind kind = Kind::file;
  std::string host, target, path;  // http: host and request target; file: path
  std::string host_header;         // host, with the port unless it is 80
  int port = 80;
  bool prometheus = false;  // marked ?format=prometheus: parsed as Prometheus text
  std::unique_ptr<SyntheticSource> synthetic;
  PushSource* push = nullptr;
  evhttp_connection* connection = nullptr;
  std::unique_ptr<Fetch> fetch;
  std::shared_ptr<FileRead> file_read;  // the last read started, until it has ended
  uint64_t file_read_started_ns = 0;     // monotonic
  std::string body;  // http: the body as it arrives, then simdjson's padding
  std::unique_ptr<DeltaTotals> deltas;  // once a body held OTLP delta points
  int64_t started_mono_ns = 0;
  shm::SourceStatus status;

  ~Source() {
    if (file_read) file_read->cancel();
    if (connection) evhttp_connection_free(connection);
  }
};

// Takes the kPrometheusMarker parameter out of a URL's query (which may become empty);
// true when it was there.
inline bool take_prometheus_marker(std::string& query) {
  bool found = false;
  std::string kept;
  size_t at = 0;
  while (at <= query.size()) {
    size_t amp = std::min(query.find('&', at), query.size());
    std::string_view param(query.data() + at, amp - at);
    if (param == kPrometheusMarker) {
      found = true;
    } else if (!param.empty()) {
      if (!kept.empty()) kept += '&';
      kept.append(param);
    }
    at = amp + 1;
  }
  query = std::move(kept);
  return found;
}

// Parses and checks a source URL; throws std::invalid_argument with the reason.
inline std::unique_ptr<Source> make_source(const std::string& url) {
  auto s = std::make_unique<Source>();
  s->url = url;
  s->status.url = url;
  if (url.rfind("synthetic://", 0) == 0) {
    s->kind = Kind::synthetic;
    s->synthetic = std::make_unique<SyntheticSource>(url);
  } else if (url.rfind("file://", 0) == 0) {
    s->kind = Kind::file;
    s->path = url.substr(7);
    size_t mark = s->path.size() - std::min(s->path.size(), kPrometheusMarker.size() + 1);
    if (s->path.compare(mark, std::string::npos, "?" + std::string(kPrometheusMarker)) == 0) {
      s->prometheus = true;
      s->path.resize(mark);
    }
    if (s->path.empty() || s->path[0] != '/')
      throw std::invalid_argument("file source needs an absolute path: " + url);
  } else if (url.rfind("http://", 0) == 0) {
    s->kind = Kind::http;
    evhttp_uri* uri = evhttp_uri_parse(url.c_str());
    if (!uri || !evhttp_uri_get_host(uri) || !*evhttp_uri_get_host(uri)) {
      if (uri) evhttp_uri_free(uri);
      throw std::invalid_argument("invalid http source URL: " + url);
    }
    s->host = evhttp_uri_get_host(uri);
    s->port = evhttp_uri_get_port(uri) < 0 ? 80 : evhttp_uri_get_port(uri);
    const char* path = evhttp_uri_get_path(uri);
    const char* query = evhttp_uri_get_query(uri);
    s->target = path && *path ? path : "/";
    s->host_header = s->port == 80 ? s->host : fmt::format("{}:{}", s->host, s->port);
    std::string rest = query ? query : "";
    s->prometheus = take_prometheus_marker(rest);
    if (!rest.empty()) s->target.append("?").append(rest);
    evhttp_uri_free(uri);
  } else {
    throw std::invalid_argument("unsupported source (http://, file://, synthetic://): " + url);
  }
  return s;
}

inline std::string over_budget(const FetchBudget& budget) {
  return fmt::format("over fetch_memory_limit: fetches in flight hold {} of {} bytes",
                     budget.used(), budget.limit());
}

}  // namespace detail

using namespace detail;  // the pipeline's files only: this header is theirs

struct Pipeline::Impl {
  event_base* base;
  evdns_base* dns = nullptr;
  Config config;
  PublishFn publish;
  Aggregator aggregator;
  Replica replica;
  uint64_t applied_seq = 0;
  EntrySink sink;
  Pipeline::SampleTap tap;  // a puller: samples go to it, nothing is applied here
  std::function<void(int64_t)> tap_tick_done;
  std::vector<std::string> pulled;  // with a tap: the sources a tick fetches
  bool fetching = true;
  bool tick_leader = false;  // the tick in flight stages an entry
  bool unpublished = false;  // applied_seq is a leader's tick waiting for publish_committed
  int64_t unpublished_clock = 0;
  std::vector<shm::SourceStatus> unpublished_statuses;  // as sealed into that tick's entry
  bool unshown = false;      // applied_seq is an entry applied without its build
  int64_t last_clock = 0;    // the latest clock of a tick or entry applied: the tick clock's floor
  // The clock of the entry applied last: what its build expires and ages at. Not
  // last_clock: after a reload to an older checkpoint the entries replayed are older than
  // the latest this node had seen, and each seq must be built as every node builds it.
  int64_t applied_clock = 0;
  // Push takes of the tick in flight, and of a leader's ticks waiting for the log (by
  // seq): settled once their fate is known (PushSource::settle).
  struct Take {
    PushSource* source;
    uint64_t id;
    uint64_t seq;  // 0 while the tick is in flight
  };
  std::vector<Take> takes;
  int64_t clock_behind = 0;  // how far the last tick's clock ran ahead of this node's
  // What a follower publishes: the statuses of the last entry applied.
  std::vector<shm::SourceStatus> entry_statuses;
  bool following = false;
  Parser parser;
  shm::SnapshotBuilder builder;
  std::vector<std::unique_ptr<Source>> sources;
  // Sources a reload removed: freed at the next tick rather than at once, because the
  // reload may run inside a callback of their own connection.
  std::vector<std::unique_ptr<Source>> retired;
  std::shared_ptr<FetchBudget> budget;
  std::shared_ptr<WakeFd> file_done;  // signalled by file-read threads
  event* file_done_event = nullptr;
  event* timer = nullptr;
  bool running = false;
  bool in_flight = false;
  size_t pending = 0;
  int64_t tick_ns = 0;  // fetch time of the tick in flight
  uint64_t ticks = 0, skipped = 0;
  std::optional<Config> deferred;  // a reconfigure() that arrived mid-tick

  Impl(event_base* b, Config c, PublishFn p)
      : base(b),
        config(c.resolved()),
        publish(std::move(p)),
        aggregator(config),
        budget(std::make_shared<FetchBudget>(config.fetch_memory_limit)),
        file_done(std::make_shared<WakeFd>()) {
    if (!base) throw std::invalid_argument("Pipeline: event_base is null");
    // Source ids are given at the first standalone tick or entry: a follower's own
    // sources never enter the replicated source table.
    for (const std::string& url : config.sources) sources.push_back(make_source(url));
    dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                   EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!dns) dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    timer = event_new(base, -1, EV_PERSIST, &Impl::on_timer, this);
    file_done_event =
        event_new(base, file_done->fd(), EV_READ | EV_PERSIST, &Impl::on_file_done, this);
    if (!dns || !timer || !file_done_event)
      throw std::runtime_error("Pipeline: libevent allocation failed");
  }
  ~Impl() {
    cancel_fetches();
    settle(~uint64_t{0}, false);
    sources.clear();  // frees connections before the dns base they use
    retired.clear();
    if (timer) event_free(timer);
    if (file_done_event) event_free(file_done_event);
    if (dns) evdns_base_free(dns, 0);
  }

  // The tick: pipeline.cc.
  static void on_timer(evutil_socket_t, short, void* arg);
  void start_tick();
  bool starting = false;

  void begin(Source& s);
  Fetch* new_fetch(Source& s);
  void end_fetch(Fetch& f);

  // Fetching each kind of source: pipeline_sources.cc.
  void fetch_http(Source& s);
  static void on_received(evbuffer*, const evbuffer_cb_info* info, void* arg);
  static int on_headers(evhttp_request* req, void* arg);
  static void on_body_piece(evhttp_request* req, void* arg);
  static void on_request_error(evhttp_request_error error, void* arg);
  static void on_response(evhttp_request* req, void* arg);
  static void on_deadline(evutil_socket_t, short, void* arg);
  void take_pushed(Source& s);
  void fetch_file(Source& s);
  void start_file_read(Source& s, Fetch& f);
  static void on_file_done(evutil_socket_t, short, void* arg);

  // Every kind: pipeline.cc.
  void parse_and_apply(Source& s, std::string_view body, size_t capacity,
                       std::string_view content_type, int code);

  // OTLP delta points as the running totals they add up to (delta_totals.h).
  std::vector<Sample> totals;
  std::span<const Sample> running_totals(Source& s, std::span<const Sample> samples);

  void apply(Source& s, std::span<const Sample> samples, std::string_view format, int code,
             std::string note);
  std::string count_applied(Source& s, const ApplyStats& st, std::string note);
  void fail(Source& s, int code, std::string error);
  void record(Source& s, int code, std::string error);
  void complete(Source&);
  void finish_tick();

  // The leader's tick: pipeline_host.cc.
  bool seal_tick(uint64_t seq, std::string* entry);

  // Source ids, statuses, push takes, reconfiguration: pipeline.cc.
  void assign_source_ids();
  bool replicated() const { return sink || !fetching; }

  std::vector<shm::SourceStatus> statuses() const;
  void settle(uint64_t seq, bool committed);
  void tick_became(uint64_t seq);
  void cancel_fetches();
  size_t buffer_bytes() const;
  void apply_config(const Config& c);
  void schedule();
};

}  // namespace ingest
