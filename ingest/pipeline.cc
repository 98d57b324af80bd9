// pipeline.cc: the fetch loop of the writer process on a caller's libevent base.
//
// A tick fetches every source at once: http:// through evhttp (non-blocking, each with
// its own deadline timer, because evhttp's own timeout is an idle timeout that a
// trickling body never trips), file:// and synthetic:// inline. Each body is parsed
// and applied as soon as it arrives; the snapshot is built and handed over when the
// last source has answered or hit its deadline, so one bad source delays the publish
// by at most source_timeout and never blocks the others.
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "ingest/ingest.h"
#include "ingest/synthetic.h"

namespace ingest {

namespace {

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

enum class Kind { http, file, synthetic };

struct Source;

// One HTTP request: the argument of its evhttp callbacks and of its deadline timer.
// evhttp calls back at most once per request (response, failure, or synchronously
// inside evhttp_cancel_request), so `done` is all it takes to ignore late news.
struct Fetch {
  void* owner = nullptr;  // the Pipeline::Impl
  Source* source = nullptr;
  evhttp_request* request = nullptr;
  event* deadline = nullptr;
  bool done = false;
  const char* error_kind = nullptr;  // set by evhttp's error callback
  ~Fetch() {
    if (deadline) event_free(deadline);
  }
};

struct Source {
  uint32_t id = 0;  // the Aggregator's source id, stable while the URL stays configured
  std::string url;
  Kind kind = Kind::file;
  std::string host, target, path;  // http: host and request target; file: path
  std::string host_header;         // host, with the port unless it is 80
  int port = 80;
  std::unique_ptr<SyntheticSource> synthetic;
  evhttp_connection* connection = nullptr;
  std::unique_ptr<Fetch> fetch;
  std::string body;  // reused between fetches, with simdjson's padding
  int64_t started_mono_ns = 0;
  shm::SourceStatus status;

  ~Source() {
    if (connection) evhttp_connection_free(connection);
  }
};

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
    if (query) s->target.append("?").append(query);
    evhttp_uri_free(uri);
  } else {
    throw std::invalid_argument("unsupported source (http://, file://, synthetic://): " + url);
  }
  return s;
}

}  // namespace

struct Pipeline::Impl {
  event_base* base;
  evdns_base* dns = nullptr;
  Config config;
  PublishFn publish;
  Aggregator aggregator;
  Parser parser;
  shm::SnapshotBuilder builder;
  std::vector<std::unique_ptr<Source>> sources;
  uint32_t next_id = 0;
  event* timer = nullptr;
  bool running = false;
  bool in_flight = false;
  size_t pending = 0;
  int64_t tick_ns = 0;  // fetch time of the tick in flight
  uint64_t ticks = 0, skipped = 0;
  std::optional<Config> deferred;  // a reconfigure() that arrived mid-tick

  Impl(event_base* b, Config c, PublishFn p)
      : base(b), config(c.resolved()), publish(std::move(p)), aggregator(config) {
    if (!base) throw std::invalid_argument("Pipeline: event_base is null");
    for (const std::string& url : config.sources) {
      sources.push_back(make_source(url));
      sources.back()->id = next_id++;
    }
    dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                   EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!dns) dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    timer = event_new(base, -1, EV_PERSIST, &Impl::on_timer, this);
    if (!dns || !timer) throw std::runtime_error("Pipeline: libevent allocation failed");
  }
  ~Impl() {
    cancel_fetches();
    sources.clear();  // frees connections before the dns base they use
    if (timer) event_free(timer);
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
    in_flight = true;
    tick_ns = static_cast<int64_t>(shm::realtime_ns());
    pending = sources.size();
    // file:// and synthetic:// complete inside begin(); the tick is finished after the
    // loop in that case, since publishing may reconfigure the very list being walked.
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
    }
  }

  void fetch_file(Source& s) {
    std::ifstream in(s.path, std::ios::binary | std::ios::ate);
    if (!in) return fail(s, 0, fmt::format("cannot open {}: {}", s.path, std::strerror(errno)));
    auto size = static_cast<size_t>(in.tellg());
    if (size > config.max_body_bytes)
      return fail(s, 0, fmt::format("body of {} bytes over the limit of {}", size,
                                    config.max_body_bytes));
    s.body.resize(size + Parser::padding());
    in.seekg(0);
    if (!in.read(s.body.data(), static_cast<std::streamsize>(size)))
      return fail(s, 0, fmt::format("cannot read {}", s.path));
    parse_body(s, size, {}, 0);
  }

  void fetch_http(Source& s) {
    if (s.connection) evhttp_connection_free(s.connection);  // idle since the last tick
    s.connection = evhttp_connection_base_new(base, dns, s.host.c_str(),
                                              static_cast<uint16_t>(s.port));
    if (!s.connection) return fail(s, 0, "cannot create connection");
    // evhttp's idle timeout only backs up the deadline below, which bounds the whole
    // fetch and so reports every timeout the same way.
    timeval tv = to_timeval(config.source_timeout);
    timeval idle = to_timeval(config.source_timeout + std::chrono::seconds(1));
    evhttp_connection_set_timeout_tv(s.connection, &idle);
    evhttp_connection_set_retries(s.connection, 0);
    evhttp_connection_set_max_body_size(s.connection,
                                        static_cast<ev_ssize_t>(config.max_body_bytes));
    s.fetch = std::make_unique<Fetch>();
    Fetch* f = s.fetch.get();
    f->owner = this;
    f->source = &s;
    f->request = evhttp_request_new(&Impl::on_response, f);
    evhttp_request_set_error_cb(f->request, &Impl::on_request_error);
    evkeyvalq* headers = evhttp_request_get_output_headers(f->request);
    evhttp_add_header(headers, "Host", s.host_header.c_str());
    evhttp_add_header(headers, "Accept", "application/json");
    evhttp_add_header(headers, "User-Agent", "telemetryd");
    evhttp_add_header(headers, "Connection", "close");
    f->deadline = evtimer_new(base, &Impl::on_deadline, f);
    evtimer_add(f->deadline, &tv);
    if (evhttp_make_request(s.connection, f->request, EVHTTP_REQ_GET, s.target.c_str()) != 0) {
      f->request = nullptr;  // evhttp has freed it
      f->done = true;
      evtimer_del(f->deadline);
      return fail(s, 0, "cannot send request");
    }
  }

  static void on_request_error(evhttp_request_error error, void* arg) {
    auto* f = static_cast<Fetch*>(arg);
    switch (error) {
      case EVREQ_HTTP_TIMEOUT: f->error_kind = "timeout (connection idle)"; break;
      case EVREQ_HTTP_EOF: f->error_kind = "connection closed before a response"; break;
      case EVREQ_HTTP_INVALID_HEADER: f->error_kind = "invalid response"; break;
      case EVREQ_HTTP_BUFFER_ERROR: f->error_kind = "connection failed (refused or reset)"; break;
      case EVREQ_HTTP_REQUEST_CANCEL: f->error_kind = "cancelled"; break;
      case EVREQ_HTTP_DATA_TOO_LONG: f->error_kind = "body over max_body_bytes"; break;
    }
  }

  static void on_response(evhttp_request* req, void* arg) {
    auto* f = static_cast<Fetch*>(arg);
    if (f->done) return;  // its deadline already finished it
    auto* self = static_cast<Impl*>(f->owner);
    Source& s = *f->source;
    f->done = true;
    f->request = nullptr;
    evtimer_del(f->deadline);
    int code = req ? evhttp_request_get_response_code(req) : 0;
    if (code == 0) return self->fail(s, 0, f->error_kind ? f->error_kind : "connection failed");
    if (code != 200) return self->fail(s, code, fmt::format("HTTP status {}", code));
    evbuffer* in = evhttp_request_get_input_buffer(req);
    size_t size = evbuffer_get_length(in);
    s.body.resize(size + Parser::padding());
    evbuffer_remove(in, s.body.data(), size);
    const char* type = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    self->parse_body(s, size, type ? type : "", code);
  }

  // evhttp's own timeout only notices a silent connection; this one bounds the whole
  // fetch, so a body trickling in byte by byte is cut off too.
  static void on_deadline(evutil_socket_t, short, void* arg) {
    auto* f = static_cast<Fetch*>(arg);
    if (f->done) return;
    auto* self = static_cast<Impl*>(f->owner);
    f->done = true;
    if (evhttp_request* req = std::exchange(f->request, nullptr)) evhttp_cancel_request(req);
    self->fail(*f->source,
               0, fmt::format("timeout after {}ms", self->config.source_timeout.count()));
  }

  void parse_body(Source& s, size_t size, std::string_view content_type, int code) {
    std::string_view body(s.body.data(), size);
    ParseResult r = parser.parse_padded(body, s.body.size(), content_type);
    s.status.bytes += size;
    s.status.format = std::string(format_name(r.format));
    if (!r.ok) return fail(s, code, "parse: " + r.error);
    std::string note = r.rejected ? fmt::format("{} samples rejected, first: {}", r.rejected,
                                                r.error)
                                  : std::string();
    s.status.dropped += r.rejected;
    apply(s, parser.samples(), s.status.format, code, std::move(note));
    complete(s);
  }

  void apply(Source& s, std::span<const Sample> samples, std::string_view format, int code,
             std::string note) {
    ApplyStats st = aggregator.apply(s.id, samples, tick_ns);
    s.status.format = std::string(format);
    s.status.samples += st.accepted;
    s.status.dropped += st.dropped();
    if (st.over_limit && note.empty())
      note = fmt::format("series limit reached: {} samples dropped", st.over_limit);
    record(s, code, std::move(note));
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
    aggregator.build(builder, tick_ns);
    in_flight = false;
    ++ticks;
    if (publish) publish(builder, statuses());
    if (deferred) {
      Config c = std::move(*deferred);
      deferred.reset();
      apply_config(c);
    }
  }

  std::vector<shm::SourceStatus> statuses() const {
    std::vector<shm::SourceStatus> out;
    out.reserve(sources.size());
    for (const auto& s : sources) out.push_back(s->status);
    return out;
  }

  void cancel_fetches() {
    for (auto& s : sources) {
      if (!s->fetch) continue;
      Fetch* f = s->fetch.get();
      if (!f->done && f->request) {
        f->done = true;
        evhttp_request* req = f->request;
        f->request = nullptr;
        evhttp_cancel_request(req);
      }
      s->fetch.reset();
    }
    in_flight = false;
    pending = 0;
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
    if (it != sources.end()) {
      next.push_back(std::move(*it));
    } else {
      next.push_back(std::move(fresh[fresh_at++]));
      next.back()->id = next_id++;
    }
  }
  for (auto& gone : sources)
    if (gone) aggregator.forget_source(gone->id);
  sources = std::move(next);
  bool interval_changed = c.interval != config.interval;
  config = c;
  aggregator.reconfigure(config);
  if (running && interval_changed) schedule();
}

void check_sources(const Config& config) {
  for (const std::string& url : config.resolved().sources) make_source(url);
}

Pipeline::Pipeline(event_base* base, Config config, PublishFn publish)
    : impl_(std::make_unique<Impl>(base, std::move(config), std::move(publish))) {}

Pipeline::~Pipeline() = default;

void Pipeline::start() {
  impl_->running = true;
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

void Pipeline::run_once() {
  uint64_t target = impl_->ticks + 1;
  if (!impl_->in_flight) impl_->start_tick();
  // Every fetch in flight has a deadline timer, so each loop pass makes progress.
  while (impl_->ticks < target) {
    if (event_base_loop(impl_->base, EVLOOP_ONCE) < 0)
      throw std::runtime_error("Pipeline::run_once: event loop failed");
  }
}

const Config& Pipeline::config() const { return impl_->config; }
std::vector<shm::SourceStatus> Pipeline::statuses() const { return impl_->statuses(); }
const Aggregator& Pipeline::aggregator() const { return impl_->aggregator; }
uint64_t Pipeline::ticks() const { return impl_->ticks; }
uint64_t Pipeline::ticks_skipped() const { return impl_->skipped; }

}  // namespace ingest
