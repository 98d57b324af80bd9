// pipeline.cc: the fetch loop of the writer process on a caller's libevent base: the
// tick. Fetching each kind of source is pipeline_sources.cc's, the cluster's side
// pipeline_host.cc's; what they share, pipeline_impl.h.
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
#include "ingest/pipeline_impl.h"

namespace ingest {

void Pipeline::Impl::on_timer(evutil_socket_t, short, void* arg) {
  static_cast<Impl*>(arg)->start_tick();
}

void Pipeline::Impl::start_tick() {
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
  tick_leader = static_cast<bool>(sink) && !tap;
  std::vector<std::string> urls;
  for (size_t i = 0; i < sources.size(); ++i) {
    sources[i]->index = static_cast<uint32_t>(i);
    urls.push_back(sources[i]->url);
  }
  if (tick_leader) replica.stage_begin(config, urls);
  else assign_source_ids();
  auto taken = [this](const Source& s) {
    return !tap || std::find(pulled.begin(), pulled.end(), s.url) != pulled.end();
  };
  pending = 0;
  for (const auto& s : sources) pending += taken(*s);
  // Sources that fail at once or are synthetic complete inside begin(); the tick is
  // finished after the loop in that case, since publishing may reconfigure the very
  // list being walked.
  starting = true;
  for (size_t i = 0; i < sources.size(); ++i)
    if (taken(*sources[i])) begin(*sources[i]);
  starting = false;
  if (pending == 0) finish_tick();
}

void Pipeline::Impl::begin(Source& s) {
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

Fetch* Pipeline::Impl::new_fetch(Source& s) {
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
void Pipeline::Impl::end_fetch(Fetch& f) {
  f.done = true;
  evtimer_del(f.deadline);
  if (evhttp_request* req = std::exchange(f.request, nullptr)) evhttp_cancel_request(req);
  if (f.file) f.file->cancel();
  budget->give_back(std::exchange(f.received, 0));
  std::string& body = f.source->body;
  if (body.capacity() > kKeepBodyBytes) std::string().swap(body);
  body.clear();
}

// --- every kind --------------------------------------------------------------------

void Pipeline::Impl::parse_and_apply(Source& s, std::string_view body, size_t capacity,
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

std::span<const Sample> Pipeline::Impl::running_totals(Source& s, std::span<const Sample> samples) {
  if (!s.deltas) s.deltas = std::make_unique<DeltaTotals>(config.max_series_per_source);
  s.deltas->expire(tick_ns - std::chrono::nanoseconds(config.expire_after).count());
  totals.clear();
  for (const Sample& x : samples)
    if (!s.deltas->add(x, tick_ns, totals)) ++s.status.dropped;
  return totals;
}

// A leader's tick only stages the samples: they are applied with the whole entry
// when the tick completes.
void Pipeline::Impl::apply(Source& s, std::span<const Sample> samples,
                           std::string_view format, int code, std::string note) {
  s.status.format = std::string(format);
  if (tap) {
    s.status.samples += samples.size();
    tap(Tapped{s.url, samples, s.status, tick_ns});
    return record(s, code, std::move(note));
  }
  if (tick_leader) {
    s.status.dropped += replica.stage(s.index, samples, tick_ns);
    return record(s, code, std::move(note));
  }
  ApplyStats st = aggregator.apply(s.id, samples, tick_ns);
  record(s, code, count_applied(s, st, std::move(note)));
}

// Adds what apply() accepted and dropped to the source's status; the note to report
// (note, unless it is empty and the drops deserve one).
std::string Pipeline::Impl::count_applied(Source& s, const ApplyStats& st, std::string note) {
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

void Pipeline::Impl::fail(Source& s, int code, std::string error) {
  record(s, code, std::move(error));
  complete(s);
}

void Pipeline::Impl::record(Source& s, int code, std::string error) {
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

void Pipeline::Impl::complete(Source&) {
  if (pending == 0 || --pending > 0 || starting) return;
  finish_tick();
}

void Pipeline::Impl::finish_tick() {
  parser.shrink(kKeepParserBytes);
  in_flight = false;
  following = false;
  ++ticks;
  if (tap) {
    last_clock = tick_ns;
    if (tap_tick_done) tap_tick_done(tick_ns);
    return;
  }
  const uint64_t seq = applied_seq + 1;
  std::string entry;
  if (tick_leader && !seal_tick(seq, &entry)) {
    settle(0, false);
    return;
  }
  tick_became(seq);
  applied_seq = seq;
  last_clock = tick_ns;
  applied_clock = tick_ns;
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

// Standalone: the source table follows the configuration at once, and the
// aggregator the configured settings.
void Pipeline::Impl::assign_source_ids() {
  std::vector<std::string> urls;
  for (const auto& s : sources) urls.push_back(s->url);
  replica.reconcile_sources(urls, aggregator);
  for (auto& s : sources) s->id = replica.source_id(s->url);
}

std::vector<shm::SourceStatus> Pipeline::Impl::statuses() const {
  if (following) return entry_statuses;
  std::vector<shm::SourceStatus> out;
  out.reserve(sources.size());
  for (const auto& s : sources) out.push_back(s->status);
  return out;
}

// Settles the takes of ticks up to seq (0: the tick in flight only, ~0: every one).
void Pipeline::Impl::settle(uint64_t seq, bool committed) {
  size_t kept = 0;
  for (Take& t : takes) {
    bool due = seq == ~uint64_t{0} || (seq == 0 ? t.seq == 0 : t.seq != 0 && t.seq <= seq);
    if (due) t.source->settle(t.id, committed);
    else takes[kept++] = t;
  }
  takes.resize(kept);
}

// The tick in flight is now seq: its takes wait for that seq's commit.
void Pipeline::Impl::tick_became(uint64_t seq) {
  for (Take& t : takes)
    if (t.seq == 0) t.seq = seq;
}

// Ends every fetch in flight without a word; a file read that has not ended stays
// the source's, so the next tick does not start a second one beside it.
void Pipeline::Impl::cancel_fetches() {
  settle(0, false);
  for (auto& s : sources) {
    if (s->fetch && !s->fetch->done) end_fetch(*s->fetch);
    s->fetch.reset();
  }
  in_flight = false;
  pending = 0;
}

size_t Pipeline::Impl::buffer_bytes() const {
  size_t total = parser.buffer_bytes();
  for (const auto& s : sources) total += s->body.capacity();
  return total;
}

void Pipeline::Impl::schedule() {
  timeval tv = to_timeval(config.interval);
  event_add(timer, &tv);
}

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
size_t Pipeline::fetch_memory_peak() const { return impl_->budget->peak(); }
size_t Pipeline::buffer_bytes() const { return impl_->buffer_bytes(); }

}  // namespace ingest
