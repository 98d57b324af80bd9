// pipeline.cc: the fetch loop of the writer process on a caller's libevent base.
//
// A tick fetches every source at once: http:// through evhttp (non-blocking, each with
// its own deadline timer, because evhttp's own timeout is an idle timeout that a
// trickling body never trips), file:// on a thread per read (file_read.h), handed back
// through an eventfd, synthetic:// inline. Each body is parsed and applied as soon as
// it arrives; the snapshot is built and handed over when the last source has answered
// or hit its deadline, so one bad source delays the publish by at most source_timeout
// and never blocks the others.
//
// What one fetch may hold is bounded: the response head (kMaxResponseHeaderBytes), the
// body (max_body_bytes, kept once: evhttp hands each piece over as it arrives and the
// piece leaves evhttp's buffer), and all fetches together (fetch_memory_limit: every
// byte a connection receives is counted as it is read, so a body that arrives in one
// huge chunk is counted while evhttp still buffers it). Buffers that grew for a large
// body are freed once it is parsed.
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

namespace {

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

timeval to_timeval(std::chrono::milliseconds ms) {
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
bool take_prometheus_marker(std::string& query) {
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
std::unique_ptr<Source> make_source(const std::string& url) {
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

std::string over_budget(const FetchBudget& budget) {
  return fmt::format("over fetch_memory_limit: fetches in flight hold {} of {} bytes",
                     budget.used(), budget.limit());
}

}  // namespace

struct Pipeline::Impl {
  event_base* base;
  evdns_base* dns = nullptr;
  Config config;
  PublishFn publish;
  Aggregator aggregator;
  Replica replica;
  uint64_t applied_seq = 0;
  EntrySink sink;
  bool fetching = true;
  bool tick_leader = false;  // the tick in flight stages an entry
  bool unpublished = false;  // applied_seq is a leader's tick waiting for publish_committed
  int64_t unpublished_clock = 0;
  std::vector<shm::SourceStatus> unpublished_statuses;  // as sealed into that tick's entry
  bool unshown = false;      // applied_seq is an entry applied without its build
  int64_t last_clock = 0;    // clock of the last tick or entry applied: the tick clock's floor
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

  static void on_timer(evutil_socket_t, short, void* arg) {
    static_cast<Impl*>(arg)->start_tick();
  }

  void start_tick() {
    if (in_flight) {
      ++skipped;
      return;
    }
    retired.clear();
    in_flight = true;
    const int64_t now = static_cast<int64_t>(shm::realtime_ns());
    const int64_t floor = last_clock ? last_clock + int64_t(config.interval.count()) * 1'000'000 : 0;
    tick_ns = std::max(now, floor);
    clock_behind = tick_ns - now;
    tick_leader = static_cast<bool>(sink);
    std::vector<std::string> urls;
    for (size_t i = 0; i < sources.size(); ++i) {
      sources[i]->index = static_cast<uint32_t>(i);
      urls.push_back(sources[i]->url);
    }
    if (tick_leader) replica.stage_begin(config, urls);
    else assign_source_ids();
    pending = sources.size();
    // Sources that fail at once or are synthetic complete inside begin(); the tick is
    // finished after the loop in that case, since publishing may reconfigure the very
    // list being walked.
    starting = true;
    for (size_t i = 0; i < sources.size(); ++i) begin(*sources[i]);
    starting = false;
    if (pending == 0) finish_tick();
  }
  bool starting = false;

  void begin(Source& s) {
    s.started_mono_ns = static_cast<int64_t>(shm::monotonic_ns());
    switch (s.kind) {
      case Kind::synthetic: {
        auto samples = s.synthetic->generate(tick_ns);
        apply(s, samples, "synthetic", 0, {});
        return complete(s);
      }
      case Kind::file: return fetch_file(s);
      case Kind::http: return fetch_http(s);
      case Kind::push: return take_pushed(s);
    }
  }

  Fetch* new_fetch(Source& s) {
    s.fetch = std::make_unique<Fetch>();
    Fetch* f = s.fetch.get();
    f->owner = this;
    f->source = &s;
    f->deadline = evtimer_new(base, &Impl::on_deadline, f);
    timeval tv = to_timeval(config.source_timeout);
    evtimer_add(f->deadline, &tv);
    return f;
  }

  // Ends a fetch however it ended: stops its timer, request or read, gives its bytes
  // back to the budget and lets go of a large body buffer.
  void end_fetch(Fetch& f) {
    f.done = true;
    evtimer_del(f.deadline);
    if (evhttp_request* req = std::exchange(f.request, nullptr)) evhttp_cancel_request(req);
    if (f.file) f.file->cancel();
    budget->give_back(std::exchange(f.received, 0));
    std::string& body = f.source->body;
    if (body.capacity() > kKeepBodyBytes) std::string().swap(body);
    body.clear();
  }

  // --- http:// ---------------------------------------------------------------------

  void fetch_http(Source& s) {
    if (s.connection) evhttp_connection_free(s.connection);  // idle since the last tick
    s.connection = evhttp_connection_base_new(base, dns, s.host.c_str(),
                                              static_cast<uint16_t>(s.port));
    if (!s.connection) return fail(s, 0, "cannot create connection");
    // evhttp's idle timeout only backs up the deadline, which bounds the whole fetch
    // and so reports every timeout the same way.
    timeval idle = to_timeval(config.source_timeout + std::chrono::seconds(1));
    evhttp_connection_set_timeout_tv(s.connection, &idle);
    evhttp_connection_set_retries(s.connection, 0);
    evhttp_connection_set_max_headers_size(s.connection,
                                           static_cast<ev_ssize_t>(kMaxResponseHeaderBytes));
    evhttp_connection_set_max_body_size(s.connection,
                                        static_cast<ev_ssize_t>(config.max_body_bytes));
    // Counts every byte as the socket delivers it, before evhttp looks at it. The
    // callback goes with the connection's bufferevent, which s outlives.
    evbuffer_add_cb(bufferevent_get_input(evhttp_connection_get_bufferevent(s.connection)),
                    &Impl::on_received, &s);
    Fetch* f = new_fetch(s);
    f->request = evhttp_request_new(&Impl::on_response, f);
    evhttp_request_set_error_cb(f->request, &Impl::on_request_error);
    evhttp_request_set_header_cb(f->request, &Impl::on_headers);
    evhttp_request_set_chunked_cb(f->request, &Impl::on_body_piece);
    evkeyvalq* headers = evhttp_request_get_output_headers(f->request);
    evhttp_add_header(headers, "Host", s.host_header.c_str());
    evhttp_add_header(headers, "Accept", s.prometheus ? kAcceptPrometheus : kAcceptAny);
    evhttp_add_header(headers, "User-Agent", "telemetryd");
    evhttp_add_header(headers, "Connection", "close");
    if (evhttp_make_request(s.connection, f->request, EVHTTP_REQ_GET, s.target.c_str()) != 0) {
      f->request = nullptr;  // evhttp has freed it
      end_fetch(*f);
      return fail(s, 0, "cannot send request");
    }
  }

  // Bytes arrived on a fetch's connection: they count against fetch_memory_limit from
  // now until the fetch ends. A read that would pass the limit aborts its fetch (from
  // the deadline's callback, made active now: evhttp is not to be re-entered from
  // inside its own read), and is not counted: the limit holds for what is accounted,
  // and the bytes of that one read (at most 16 KiB) go when the fetch does.
  static void on_received(evbuffer*, const evbuffer_cb_info* info, void* arg) {
    Fetch* f = static_cast<Source*>(arg)->fetch.get();
    if (info->n_added == 0 || !f || f->done || !f->request || !f->error.empty()) return;
    auto* self = static_cast<Impl*>(f->owner);
    if (self->budget->take(info->n_added)) {
      f->received += info->n_added;
      return;
    }
    f->error = over_budget(*self->budget);
    event_active(f->deadline, EV_TIMEOUT, 1);
  }

  static int on_headers(evhttp_request* req, void* arg) {
    auto* f = static_cast<Fetch*>(arg);
    auto* self = static_cast<Impl*>(f->owner);
    f->headers_done = true;
    f->code = evhttp_request_get_response_code(req);
    // A body of announced length is reserved once (evhttp refuses one over the limit).
    const char* length =
        evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Length");
    size_t n = 0;
    if (f->code == 200 && length &&
        std::from_chars(length, length + std::strlen(length), n).ec == std::errc() &&
        n <= self->config.max_body_bytes)
      f->source->body.reserve(n + Parser::padding());
    return 0;
  }

  // A piece of the body: moved out of evhttp's buffer into the source's, so the body
  // is held once. evhttp drains whatever is left in its buffer after this returns.
  static void on_body_piece(evhttp_request* req, void* arg) {
    auto* f = static_cast<Fetch*>(arg);
    if (f->done || f->code != 200 || !f->error.empty()) return;
    auto* self = static_cast<Impl*>(f->owner);
    evbuffer* in = evhttp_request_get_input_buffer(req);
    std::string& body = f->source->body;
    size_t n = evbuffer_get_length(in);
    size_t need = body.size() + n + Parser::padding();
    if (need > body.capacity())  // doubling, but never past the largest body's size
      body.reserve(std::max(need, std::min(2 * body.capacity(),
                                           self->config.max_body_bytes + Parser::padding())));
    size_t at = body.size();
    body.resize(at + n);
    evbuffer_remove(in, body.data() + at, n);
  }

  static void on_request_error(evhttp_request_error error, void* arg) {
    auto* f = static_cast<Fetch*>(arg);
    if (!f->error.empty()) return;  // the fetch is being aborted for a reason of ours
    switch (error) {
      case EVREQ_HTTP_TIMEOUT: f->error = "timeout (connection idle)"; break;
      case EVREQ_HTTP_EOF: f->error = "connection closed before a response"; break;
      case EVREQ_HTTP_INVALID_HEADER:
        // evhttp reports a head over its size limit as an invalid one.
        f->error = !f->headers_done && f->received > kMaxResponseHeaderBytes
                       ? fmt::format("response headers over {} bytes", kMaxResponseHeaderBytes)
                       : "invalid response";
        break;
      case EVREQ_HTTP_BUFFER_ERROR: f->error = "connection failed (refused or reset)"; break;
      case EVREQ_HTTP_REQUEST_CANCEL: f->error = "cancelled"; break;
      case EVREQ_HTTP_DATA_TOO_LONG: f->error = "body over max_body_bytes"; break;
    }
  }

  static void on_response(evhttp_request* req, void* arg) {
    auto* f = static_cast<Fetch*>(arg);
    if (f->done) return;  // its deadline already finished it
    auto* self = static_cast<Impl*>(f->owner);
    Source& s = *f->source;
    f->request = nullptr;  // evhttp frees it after this callback
    int code = req ? evhttp_request_get_response_code(req) : 0;
    std::string error = std::move(f->error);
    if (error.empty() && code == 0) error = "connection failed";
    if (error.empty() && code != 200) error = fmt::format("HTTP status {}", code);
    if (error.empty()) {
      const char* type =
          evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
      size_t size = s.body.size();
      s.body.append(Parser::padding(), '\0');
      self->parse_and_apply(s, std::string_view(s.body.data(), size), s.body.size(),
                            type ? type : "", code);
      self->end_fetch(*f);
      return self->complete(s);
    }
    self->end_fetch(*f);
    self->fail(s, code, std::move(error));
  }

  // evhttp's own timeout only notices a silent connection; this one bounds the whole
  // fetch, so a body trickling in byte by byte is cut off too. Made active at once, it
  // aborts a fetch for the reason in f->error.
  static void on_deadline(evutil_socket_t, short, void* arg) {
    auto* f = static_cast<Fetch*>(arg);
    if (f->done) return;
    auto* self = static_cast<Impl*>(f->owner);
    Source& s = *f->source;
    std::string error = std::move(f->error);
    if (error.empty() && s.kind == Kind::file && !f->file)
      error = fmt::format("the read of {} started {}ms ago has not ended", s.path,
                          (shm::monotonic_ns() - s.file_read_started_ns) / 1'000'000);
    if (error.empty())
      error = fmt::format("timeout after {}ms", self->config.source_timeout.count());
    self->end_fetch(*f);
    self->fail(s, 0, std::move(error));
  }

  // --- pushed -----------------------------------------------------------------------

  void take_pushed(Source& s) {
    PushSource::Batch batch = s.push->take(tick_ns);
    takes.push_back(Take{s.push, batch.id, 0});
    s.status.bytes += batch.bytes;
    s.status.dropped += batch.rejected;
    apply(s, batch.samples, format_name(Format::otlp), 0, std::move(batch.error));
    complete(s);
  }

  // --- file:// ---------------------------------------------------------------------

  // One read per source: while the last one has not ended (cancelled at its deadline,
  // it ends at once unless stuck in the kernel), the fetch waits for it, and starts its
  // own read when it has; the deadline reports a read that never ends.
  void fetch_file(Source& s) {
    Fetch* f = new_fetch(s);
    if (s.file_read && !s.file_read->done()) return;
    start_file_read(s, *f);
  }

  void start_file_read(Source& s, Fetch& f) {
    int64_t deadline_ns =
        s.started_mono_ns + std::chrono::nanoseconds(config.source_timeout).count();
    f.file = std::make_shared<FileRead>(s.path, config.max_body_bytes, deadline_ns,
                                        config.source_timeout, budget, file_done);
    s.file_read.reset();
    if (!FileRead::start(f.file)) {
      std::string error = f.file->error();
      end_fetch(f);
      return fail(s, 0, std::move(error));
    }
    s.file_read = f.file;
    s.file_read_started_ns = shm::monotonic_ns();
    event_add(file_done_event, nullptr);
  }

  // A file-read thread has ended: hand its result to its fetch, unless the deadline
  // has already reported that fetch.
  static void on_file_done(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Impl*>(arg);
    self->file_done->clear();
    bool running = false;
    // By index: completing the tick may reconfigure, replacing the list (the sources
    // themselves stay alive in `retired`).
    for (size_t i = 0; i < self->sources.size(); ++i) {
      Source& s = *self->sources[i];
      if (!s.file_read) continue;
      if (!s.file_read->done()) {
        running = true;
        continue;
      }
      std::shared_ptr<FileRead> read = std::move(s.file_read);
      Fetch* f = s.fetch.get();
      if (!f || f->done) continue;
      if (f->file != read) {  // the fetch waited for this earlier read to end
        if (!f->file) self->start_file_read(s, *f);
        running |= s.file_read != nullptr;
        continue;
      }
      self->end_fetch(*f);
      if (!read->error().empty()) {
        self->fail(s, 0, read->error());
        continue;
      }
      self->parse_and_apply(s, std::string_view(read->body().data(), read->size()),
                            read->body().size(), {}, 0);
      self->complete(s);
    }
    if (!running) event_del(self->file_done_event);
  }

  // --- every kind --------------------------------------------------------------------

  void parse_and_apply(Source& s, std::string_view body, size_t capacity,
                       std::string_view content_type, int code) {
    if (s.prometheus && content_type.find("openmetrics") == std::string_view::npos)
      content_type = kPrometheusContentType;
    ParseResult r = parser.parse_padded(body, capacity, content_type);
    s.status.bytes += body.size();
    s.status.format = std::string(format_name(r.format));
    if (!r.ok) return record(s, code, "parse: " + r.error);
    std::string note =
        r.rejected ? fmt::format("{} {} rejected, first: {}", r.rejected,
                                 r.format == Format::prometheus ? "lines" : "samples", r.error)
                   : std::string();
    s.status.dropped += r.rejected + r.skipped;
    std::span<const Sample> samples = parser.samples();
    if (std::any_of(samples.begin(), samples.end(), [](const Sample& x) { return x.delta; }))
      samples = running_totals(s, samples);
    apply(s, samples, s.status.format, code, std::move(note));
  }

  // OTLP delta points as the running totals they add up to (delta_totals.h).
  std::vector<Sample> totals;
  std::span<const Sample> running_totals(Source& s, std::span<const Sample> samples) {
    if (!s.deltas) s.deltas = std::make_unique<DeltaTotals>(config.max_series_per_source);
    s.deltas->expire(tick_ns - std::chrono::nanoseconds(config.expire_after).count());
    totals.clear();
    for (const Sample& x : samples)
      if (!s.deltas->add(x, tick_ns, totals)) ++s.status.dropped;
    return totals;
  }

  // A leader's tick only stages the samples: they are applied with the whole entry
  // when the tick completes.
  void apply(Source& s, std::span<const Sample> samples, std::string_view format, int code,
             std::string note) {
    s.status.format = std::string(format);
    if (tick_leader) {
      s.status.dropped += replica.stage(s.index, samples, tick_ns);
      return record(s, code, std::move(note));
    }
    ApplyStats st = aggregator.apply(s.id, samples, tick_ns);
    record(s, code, count_applied(s, st, std::move(note)));
  }

  // Adds what apply() accepted and dropped to the source's status; the note to report
  // (note, unless it is empty and the drops deserve one).
  std::string count_applied(Source& s, const ApplyStats& st, std::string note) {
    s.status.samples += st.accepted;
    s.status.dropped += st.dropped();
    if (st.over_limit && note.empty())
      note = fmt::format("series limit reached: {} samples dropped", st.over_limit);
    // The text format allows a series once per body; JSON bodies may repeat one (the
    // later samples are duplicates, dropped without a word, as they always were).
    if (st.repeated && note.empty() && s.status.format == format_name(Format::prometheus))
      note = fmt::format("{} samples repeat a series earlier in the body, first: {}",
                         st.repeated, st.first_repeated);
    return note;
  }

  void fail(Source& s, int code, std::string error) {
    record(s, code, std::move(error));
    complete(s);
  }

  void record(Source& s, int code, std::string error) {
    s.status.last_status = code;
    s.status.last_fetch_ns = static_cast<uint64_t>(tick_ns);
    s.status.last_latency_us =
        (shm::monotonic_ns() - static_cast<uint64_t>(s.started_mono_ns)) / 1000;
    if (!error.empty()) {
      ++s.status.errors;
      s.status.last_error_ns = shm::realtime_ns();
    }
    s.status.last_error = std::move(error);
  }

  void complete(Source&) {
    if (pending == 0 || --pending > 0 || starting) return;
    finish_tick();
  }

  void finish_tick() {
    parser.shrink(kKeepParserBytes);
    in_flight = false;
    following = false;
    ++ticks;
    const uint64_t seq = applied_seq + 1;
    std::string entry;
    if (tick_leader && !seal_tick(seq, &entry)) {
      settle(0, false);
      return;
    }
    tick_became(seq);
    applied_seq = seq;
    last_clock = tick_ns;
    unshown = false;
    if (tick_leader && sink) {
      // Shown once the log has it (publish_committed); the entry goes out first, so
      // followers start applying it while this node waits for Redis.
      unpublished = true;
      unpublished_clock = tick_ns;
      unpublished_statuses = statuses();
      sink(seq, std::move(entry));
    } else {
      unpublished = false;
      settle(seq, true);
      aggregator.build(builder, tick_ns);
      if (publish) publish(builder, statuses(), seq);
    }
    if (deferred) {
      Config c = std::move(*deferred);
      deferred.reset();
      apply_config(c);
    }
  }

  // A leader's tick: applies the staged samples as a follower applies an entry, then
  // completes the sources' statuses and seals the entry. False (and the tick dropped,
  // the state unchanged) only if the staged payload fails its own checks, a bug.
  bool seal_tick(uint64_t seq, std::string* entry) {
    std::string payload = replica.take_staged();
    std::vector<ApplyStats> stats;
    try {
      replica.apply(payload, seq, tick_ns, aggregator, &stats, nullptr);
      aggregator.expire(tick_ns);  // as a follower does at each entry (apply_entry)
    } catch (const std::exception& e) {
      for (auto& s : sources) record(*s, 0, std::string("entry refused: ") + e.what());
      return false;
    }
    for (size_t i = 0; i < sources.size() && i < stats.size(); ++i) {
      Source& s = *sources[i];
      std::string note = count_applied(s, stats[i], {});
      if (!note.empty() && s.status.last_error.empty()) {
        ++s.status.errors;
        s.status.last_error_ns = shm::realtime_ns();
        s.status.last_error = std::move(note);
      }
    }
    Replica::put_statuses(payload, statuses());
    *entry = Replica::seal_entry(seq, tick_ns, payload);
    return true;
  }

  // Standalone: the source table follows the configuration at once, and the
  // aggregator the configured settings.
  void assign_source_ids() {
    std::vector<std::string> urls;
    for (const auto& s : sources) urls.push_back(s->url);
    replica.reconcile_sources(urls, aggregator);
    for (auto& s : sources) s->id = replica.source_id(s->url);
  }
  bool replicated() const { return sink || !fetching; }

  std::vector<shm::SourceStatus> statuses() const {
    if (following) return entry_statuses;
    std::vector<shm::SourceStatus> out;
    out.reserve(sources.size());
    for (const auto& s : sources) out.push_back(s->status);
    return out;
  }

  // Settles the takes of ticks up to seq (0: the tick in flight only, ~0: every one).
  void settle(uint64_t seq, bool committed) {
    size_t kept = 0;
    for (Take& t : takes) {
      bool due = seq == ~uint64_t{0} || (seq == 0 ? t.seq == 0 : t.seq != 0 && t.seq <= seq);
      if (due) t.source->settle(t.id, committed);
      else takes[kept++] = t;
    }
    takes.resize(kept);
  }
  // The tick in flight is now seq: its takes wait for that seq's commit.
  void tick_became(uint64_t seq) {
    for (Take& t : takes)
      if (t.seq == 0) t.seq = seq;
  }

  // Ends every fetch in flight without a word; a file read that has not ended stays
  // the source's, so the next tick does not start a second one beside it.
  void cancel_fetches() {
    settle(0, false);
    for (auto& s : sources) {
      if (s->fetch && !s->fetch->done) end_fetch(*s->fetch);
      s->fetch.reset();
    }
    in_flight = false;
    pending = 0;
  }

  size_t buffer_bytes() const {
    size_t total = parser.buffer_bytes();
    for (const auto& s : sources) total += s->body.capacity();
    return total;
  }

  void apply_config(const Config& c);
  void schedule() {
    timeval tv = to_timeval(config.interval);
    event_add(timer, &tv);
  }
};

void Pipeline::Impl::apply_config(const Config& c) {
  // Build the new source list first: a bad URL throws before anything changes.
  std::vector<std::unique_ptr<Source>> next;
  std::vector<std::unique_ptr<Source>> fresh;
  for (const std::string& url : c.sources) {
    bool kept = false;
    for (auto& old : sources) kept |= old && old->url == url;
    if (!kept) fresh.push_back(make_source(url));
  }
  size_t fresh_at = 0;
  for (const std::string& url : c.sources) {
    auto it = std::find_if(sources.begin(), sources.end(),
                           [&](const auto& old) { return old && old->url == url; });
    if (it != sources.end()) next.push_back(std::move(*it));
    else next.push_back(std::move(fresh[fresh_at++]));
  }
  for (auto& push : sources)
    if (push && push->kind == Kind::push) next.push_back(std::move(push));
  for (auto& gone : sources)
    if (gone) retired.push_back(std::move(gone));
  sources = std::move(next);
  budget->set_limit(c.fetch_memory_limit);
  bool interval_changed = c.interval != config.interval;
  config = c;
  // Replicated, the aggregation follows the entries (which carry the new settings and
  // source list from the leader's next tick on).
  if (!replicated()) {
    assign_source_ids();
    aggregator.reconfigure(config);
  }
  if (running && fetching && interval_changed) schedule();
}

void check_sources(const Config& config) {
  for (const std::string& url : config.resolved().sources) make_source(url);
}

Pipeline::Pipeline(event_base* base, Config config, PublishFn publish)
    : impl_(std::make_unique<Impl>(base, std::move(config), std::move(publish))) {}

Pipeline::~Pipeline() = default;

void Pipeline::start() {
  impl_->running = true;
  if (!impl_->fetching) return;
  impl_->schedule();
  impl_->start_tick();
}

void Pipeline::stop() {
  impl_->running = false;
  event_del(impl_->timer);
  impl_->cancel_fetches();
  if (impl_->deferred) {  // a reload that waited for the cancelled tick
    Config c = std::move(*impl_->deferred);
    impl_->deferred.reset();
    impl_->apply_config(c);
  }
}

void Pipeline::reconfigure(Config config) {
  Config c = config.resolved();
  check_sources(c);
  if (impl_->in_flight) {
    impl_->deferred = std::move(c);
    return;
  }
  impl_->apply_config(c);
}

void Pipeline::add_push_source(PushSource* source) {
  auto s = std::make_unique<Source>();
  s->kind = Kind::push;
  s->push = source;
  s->url = source->url();
  s->status.url = s->url;
  impl_->sources.push_back(std::move(s));
}

void Pipeline::run_once() {
  uint64_t target = impl_->ticks + 1;
  if (!impl_->in_flight) impl_->start_tick();
  // Every fetch in flight has a deadline timer, so each loop pass makes progress.
  while (impl_->ticks < target) {
    if (event_base_loop(impl_->base, EVLOOP_ONCE) < 0)
      throw std::runtime_error("Pipeline::run_once: event loop failed");
  }
}

uint64_t Pipeline::applied_seq() const { return impl_->applied_seq; }
void Pipeline::set_applied_seq(uint64_t seq) { impl_->applied_seq = seq; }
void Pipeline::set_entry_sink(EntrySink sink) {
  Impl& m = *impl_;
  m.sink = std::move(sink);
  if (!m.sink && m.in_flight && m.tick_leader) m.cancel_fetches();
}
bool Pipeline::fetching() const { return impl_->fetching; }

void Pipeline::publish_committed(uint64_t seq) {
  Impl& m = *impl_;
  m.settle(seq, true);
  if (!m.unpublished || seq != m.applied_seq) return;
  m.unpublished = false;
  m.aggregator.build(m.builder, m.unpublished_clock);
  if (m.publish) m.publish(m.builder, m.unpublished_statuses, seq);
}

void Pipeline::show_applied() {
  Impl& m = *impl_;
  if (!m.unshown) return;
  m.unshown = false;
  m.aggregator.build(m.builder, m.last_clock);
  if (m.publish) m.publish(m.builder, m.entry_statuses, m.applied_seq);
}

int64_t Pipeline::clock_behind_ns() const { return impl_->clock_behind; }

void Pipeline::set_fetching(bool on) {
  Impl& m = *impl_;
  if (m.fetching == on) return;
  m.fetching = on;
  if (!on) {
    event_del(m.timer);
    m.cancel_fetches();
    // A leader that stops leading never learns whether the log took what waits.
    m.settle(~uint64_t{0}, false);
  } else if (m.running) {
    m.schedule();
    m.start_tick();
  }
}

Pipeline::EntryResult Pipeline::apply_entry(std::string_view entry, std::string* error, bool show) {
  Impl& m = *impl_;
  auto bad = [error](std::string why) {
    if (error) *error = std::move(why);
    return EntryResult::bad;
  };
  if (m.in_flight) return bad("a tick of this node is in flight");
  uint64_t seq;
  int64_t clock;
  try {
    Replica::read_entry_header(entry, &seq, &clock);
  } catch (const std::invalid_argument& e) {
    return bad(e.what());
  }
  if (seq <= m.applied_seq) return EntryResult::duplicate;
  if (seq > m.applied_seq + 1) return EntryResult::gap;
  std::vector<shm::SourceStatus> statuses;
  try {
    std::string payload =
        wire::decompress(entry.substr(Replica::kEntryHeaderBytes), Replica::kMaxEntryPayload);
    m.replica.apply(payload, seq, clock, m.aggregator, nullptr, &statuses);
    // Expiry at every entry, not only in the builds: a node that catches up without
    // building (or a leader whose commits are coalesced) must hold the same state as
    // one that built every entry, or a series expired here would live on there.
    m.aggregator.expire(clock);
  } catch (const std::invalid_argument& e) {
    return bad(fmt::format("entry {}: {}", seq, e.what()));
  }
  m.entry_statuses = std::move(statuses);
  m.following = true;
  m.unpublished = false;
  m.applied_seq = seq;
  m.last_clock = std::max(m.last_clock, clock);
  ++m.ticks;
  m.unshown = true;
  if (show) show_applied();
  return EntryResult::applied;
}

uint64_t Pipeline::entry_seq(std::string_view entry) {
  uint64_t seq = 0;
  int64_t clock;
  try {
    Replica::read_entry_header(entry, &seq, &clock);
  } catch (const std::invalid_argument&) {
    return 0;
  }
  return seq;
}

std::string Pipeline::checkpoint() const {
  return impl_->replica.checkpoint(impl_->aggregator, impl_->applied_seq);
}

void Pipeline::restore(std::string_view checkpoint) {
  Impl& m = *impl_;
  Replica replica;
  std::unique_ptr<Aggregator> aggregator;
  uint64_t seq;
  Replica::restore(checkpoint, m.config, &replica, &aggregator, &seq);
  // A tick in flight staged against the state being replaced, and ticks this node
  // applied that the log never took.
  if (m.in_flight) m.cancel_fetches();
  m.settle(~uint64_t{0}, false);
  m.replica = std::move(replica);
  m.aggregator = std::move(*aggregator);
  m.applied_seq = seq;
  m.unpublished = false;
  m.unshown = false;
}

const Config& Pipeline::config() const { return impl_->config; }
std::vector<shm::SourceStatus> Pipeline::statuses() const { return impl_->statuses(); }
const Aggregator& Pipeline::aggregator() const { return impl_->aggregator; }
uint64_t Pipeline::ticks() const { return impl_->ticks; }
uint64_t Pipeline::ticks_skipped() const { return impl_->skipped; }
size_t Pipeline::fetch_memory_peak() const { return impl_->budget->peak(); }
size_t Pipeline::buffer_bytes() const { return impl_->buffer_bytes(); }

}  // namespace ingest
