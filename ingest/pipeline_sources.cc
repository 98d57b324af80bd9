// pipeline_sources.cc: the pipeline's fetch of each kind of source: http:// through
// evhttp, file:// on a read thread, pushed (OTLP) batches taken at the tick.

#include "ingest/pipeline_impl.h"

namespace ingest {

// --- http:// ---------------------------------------------------------------------

void Pipeline::Impl::fetch_http(Source& s) {
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
void Pipeline::Impl::on_received(evbuffer*, const evbuffer_cb_info* info, void* arg) {
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

int Pipeline::Impl::on_headers(evhttp_request* req, void* arg) {
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
void Pipeline::Impl::on_body_piece(evhttp_request* req, void* arg) {
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

void Pipeline::Impl::on_request_error(evhttp_request_error error, void* arg) {
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

void Pipeline::Impl::on_response(evhttp_request* req, void* arg) {
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
void Pipeline::Impl::on_deadline(evutil_socket_t, short, void* arg) {
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

void Pipeline::Impl::take_pushed(Source& s) {
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
void Pipeline::Impl::fetch_file(Source& s) {
  Fetch* f = new_fetch(s);
  if (s.file_read && !s.file_read->done()) return;
  start_file_read(s, *f);
}

void Pipeline::Impl::start_file_read(Source& s, Fetch& f) {
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
void Pipeline::Impl::on_file_done(evutil_socket_t, short, void* arg) {
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

void Pipeline::add_push_source(PushSource* source) {
  auto s = std::make_unique<Source>();
  s->kind = Kind::push;
  s->push = source;
  s->url = source->url();
  s->status.url = s->url;
  impl_->sources.push_back(std::move(s));
}

}  // namespace ingest
