// server/ui.cc: the web view and the status document of a reader.
//
// /ui serves the static page of ui/ (index.html, app.js, style.css), embedded into the
// binary at build time (server/embed_ui.cmake), with strong ETags and a
// Content-Security-Policy that lets the page load nothing but its own files and talk to
// nothing but this server. The page reads the JSON API like any client.
//
// /v1/status is the service's state as the readers see it: the snapshot they serve,
// the shm control segment (writer, reader slots, service counters) and the per-source
// ingest status the writer keeps there. Read-only, bounded work (at most kMaxReaders
// slots and kMaxSources sources), no ETag: the ages in it change with every call.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <ctime>
#include <string>

#include "ingest/ingest.h"
#include "server/reader_impl.h"

namespace server {
namespace {

// Nothing but this origin: no inline script or style, no remote loads, no framing.
constexpr std::string_view kSecurityHeaders =
    "Content-Security-Policy: default-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "Referrer-Policy: no-referrer\r\n";
// The page is revalidated on every load (a 304 when unchanged); the files it references
// carry their content hash in the URL, so they may be kept for a year.
constexpr std::string_view kPageCache = "Cache-Control: no-cache\r\n";
constexpr std::string_view kAssetCache = "Cache-Control: public, max-age=31536000, immutable\r\n";

// A heartbeat older than this shows the process as "late" (the supervisor's watchdogs,
// stuck-timeout and writer-stuck-timeout, act later and on their own). A reader beats
// every heartbeat_every; the writer every 100 ms and after each build, which may take
// about a second for a million series.
constexpr uint64_t kWriterLateMs = 10'000;
uint64_t reader_late_ms(std::chrono::milliseconds heartbeat_every) {
  return std::max<uint64_t>(10 * static_cast<uint64_t>(heartbeat_every.count()), 1000);
}

// Length of the valid UTF-8 sequence at s[i], 0 when there is none.
size_t utf8_sequence(std::string_view s, size_t i) {
  auto at = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = at(i);
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  else return 0;
  if (i + n > s.size() || at(i + 1) < lo || at(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if (at(i + k) < 0x80 || at(i + k) > 0xBF) return 0;
  return n;
}

// A JSON string of text whose bytes come from the control segment: a source's error is
// cut at its slot's size and may end inside a character, so invalid UTF-8 becomes
// U+FFFD instead of making the whole document unparseable.
void append_text(std::string& out, std::string_view text) {
  std::string clean;
  clean.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t n = utf8_sequence(text, i);
    if (n == 0) {
      clean.append("\xEF\xBF\xBD");
      ++i;
    } else {
      clean.append(text, i, n);
      i += n;
    }
  }
  ingest::append_json_string(out, clean);
}

void append_key(std::string& out, std::string_view name) {
  out += '"';
  out.append(name).append("\":");
}

void append_seconds(std::string& out, uint64_t ns) {
  char buf[32];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, static_cast<double>(ns) / 1e9, std::chars_format::fixed, 3);
  out.append(buf, p);
}

// Unix ns as an ISO 8601 UTC time with milliseconds, or null for 0 (never).
void append_time(std::string& out, uint64_t unix_ns) {
  if (unix_ns == 0) {
    out.append("null");
    return;
  }
  const time_t sec = static_cast<time_t>(unix_ns / 1'000'000'000);
  tm t{};
  gmtime_r(&sec, &t);
  char buf[40];
  size_t n = strftime(buf, sizeof buf, "\"%Y-%m-%dT%H:%M:%S", &t);
  const auto ms = static_cast<unsigned>(unix_ns / 1'000'000 % 1000);
  buf[n++] = '.';
  buf[n++] = static_cast<char>('0' + ms / 100);
  buf[n++] = static_cast<char>('0' + ms / 10 % 10);
  buf[n++] = static_cast<char>('0' + ms % 10);
  buf[n++] = 'Z';
  buf[n++] = '"';
  out.append(buf, n);
}

uint64_t age_ms(uint64_t now, uint64_t then) { return now > then ? (now - then) / 1'000'000 : 0; }

}  // namespace

// /ui, /ui/ and /ui/index.html are the page; /ui/NAME one of its files. `name` is what
// follows "/ui" in the path ("/uix" arrives here too, as "x", and is not found).
void HttpServer::Impl::serve_ui(Conn& c, const Request& req, std::string_view name, uint64_t generation) {
  if (name == "/" || name == "/index.html") name = "";
  else if (name.starts_with('/')) name.remove_prefix(1);
  else if (!name.empty()) return respond_json_error(c, req, 404, generation, "no such endpoint");
  static const std::string page_headers = std::string(kPageCache).append(kSecurityHeaders);
  static const std::string asset_headers = std::string(kAssetCache).append(kSecurityHeaders);
  for (const UiAsset& a : ui_assets()) {
    if (a.name != name) continue;
    const std::string& headers = a.immutable ? asset_headers : page_headers;
    if (!req.if_none_match.empty() && http::etag_matches(req.if_none_match, a.etag))
      return respond(c, req, 304, generation, {}, {}, a.etag, headers);
    return respond(c, req, 200, generation, a.content_type, a.body, a.etag, headers);
  }
  respond_json_error(c, req, 404, generation, "no such file in the web view");
}

// The fields are described in docs/operations.md (HTTP API, /v1/status).
// Long as one piece: it writes the /v1/status object field by field, in its documented order.
void HttpServer::Impl::serve_status(Conn& c, const Request& req, const shm::SnapshotView* view) {
  const shm::StoreInfo info = store.info();
  const uint64_t now = shm::realtime_ns(), mono = shm::monotonic_ns();
  const uint64_t gen = view ? view->generation() : 0, built = view ? view->built_at_ns() : 0;
  const uint64_t age_ns = now > built ? now - built : 0;
  const uint64_t max_age_ns = static_cast<uint64_t>(opt.healthz_max_age.count()) * 1'000'000;
  auto counter = [&](uint32_t i) { return store.service_counter(i).load(std::memory_order_relaxed); };
  std::string& o = body;

  o.assign(R"({"status":)");
  o.append(!view ? R"("no snapshot")" : age_ns > max_age_ns ? R"("stale")" : R"("ok")");
  o.append(R"(,"generation":)");
  http::append_uint(o, gen);
  o.append(R"(,"built_at":)");
  append_time(o, built);
  o.append(R"(,"age_s":)");
  if (view) append_seconds(o, age_ns);
  else o.append("null");
  o.append(R"(,"healthz_max_age_s":)");
  append_seconds(o, max_age_ns);
  o.append(R"(,"interval_s":)");
  if (uint64_t interval = counter(kIntervalNs)) append_seconds(o, interval);
  else o.append("null");  // no writer has started yet
  o.append(R"(,"snapshot_bytes":)");
  http::append_uint(o, view ? view->size() : 0);
  o.append(R"(,"snapshot_records":)");
  http::append_uint(o, view ? view->record_count() : 0);
  o.append(R"(,"started_at":)");
  append_time(o, counter(kStartedAtNs));
  o.append(R"(,"publishes":)");
  http::append_uint(o, info.publishes);
  o.append(R"(,"publish_skipped":)");
  http::append_uint(o, info.publish_skipped);

  o.append(R"(,"writer":{"pid":)");
  const uint64_t beat = counter(kWriterHeartbeatNs);
  if (info.writer_pid > 0) http::append_uint(o, static_cast<uint64_t>(info.writer_pid));
  else o.append("null");
  o.append(R"(,"state":)");
  o.append(info.writer_pid <= 0 ? R"("none")" : beat != 0 && age_ms(mono, beat) > kWriterLateMs ? R"("late")" : R"("running")");
  o.append(R"(,"heartbeat_age_ms":)");
  if (beat != 0) http::append_uint(o, age_ms(mono, beat));
  else o.append("null");

  // Reader slots 0..workers-1 and the spare one a rolling restart uses; the supervisor's
  // own slot (workers + 1) is not a reader. kWorkers is 0 outside telemetryd (tests).
  o.append(R"(},"readers":[)");
  const uint64_t workers = counter(kWorkers);
  bool first = true;
  for (const shm::ReaderInfo& r : info.readers) {
    if (r.pid <= 0 || (workers != 0 && r.slot > workers)) continue;
    o.append(first ? "{" : ",{");
    first = false;
    append_key(o, "slot");
    http::append_uint(o, r.slot);
    o.append(R"(,"pid":)");
    http::append_uint(o, static_cast<uint64_t>(r.pid));
    o.append(R"(,"state":)");
    o.append(age_ms(mono, r.heartbeat_ns) > reader_late_ms(opt.heartbeat_every) ? R"("late")" : R"("running")");
    o.append(R"(,"requests":)");
    http::append_uint(o, r.requests);
    o.append(R"(,"connections_open":)");
    http::append_uint(o, store.reader_counter(r.slot, kConnectionsOpen));
    o.append(R"(,"heartbeat_age_ms":)");
    http::append_uint(o, age_ms(mono, r.heartbeat_ns));
    o.append("}");
  }

  o.append(R"(],"restarts":{"writer":)");
  http::append_uint(o, counter(kRestartsWriter));
  o.append(R"(,"reader":)");
  http::append_uint(o, counter(kRestartsReader));
  o.append(R"(},"watchdog_kills":{"writer":)");
  http::append_uint(o, counter(kStuckWritersKilled));
  o.append(R"(,"reader":)");
  http::append_uint(o, counter(kStuckReadersKilled));

  o.append(R"(},"sources":[)");
  first = true;
  for (const shm::SourceStatus& s : store.sources()) {
    o.append(first ? "{" : ",{");
    first = false;
    append_key(o, "url");
    append_text(o, s.url);
    o.append(R"(,"format":)");
    append_text(o, s.format);
    o.append(R"(,"state":)");
    o.append(!s.last_error.empty() ? R"("failing")" : s.last_fetch_ns == 0 ? R"("pending")" : R"("ok")");
    o.append(R"(,"last_status":)");
    o.append(std::to_string(s.last_status));
    o.append(R"(,"last_fetch":)");
    append_time(o, s.last_fetch_ns);
    o.append(R"(,"last_latency_us":)");
    http::append_uint(o, s.last_latency_us);
    o.append(R"(,"last_error":)");
    if (s.last_error.empty()) o.append("null");
    else append_text(o, s.last_error);
    o.append(R"(,"last_error_at":)");
    append_time(o, s.last_error_ns);
    o.append(R"(,"errors":)");
    http::append_uint(o, s.errors);
    o.append(R"(,"samples":)");
    http::append_uint(o, s.samples);
    o.append(R"(,"dropped":)");
    http::append_uint(o, s.dropped);
    o.append(R"(,"bytes":)");
    http::append_uint(o, s.bytes);
    o.append("}");
  }
  // A cluster node: the writer's `show cluster json` report (server/cluster_status.cc),
  // read from the store's status text; null on a single node or before the writer
  // reported.
  o.append(R"(],"cluster":)");
  const std::string status = counter(kClusterEnabled) ? store.status_text() : std::string();
  const size_t split = status.find('\0');
  if (split == std::string::npos || split + 1 >= status.size()) o.append("null");
  else o.append(status, split + 1);
  o.append("}");
  respond(c, req, 200, gen, "application/json", o, {}, "Cache-Control: no-store\r\n");
}

}  // namespace server
