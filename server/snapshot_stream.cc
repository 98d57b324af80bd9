// server/snapshot_stream.cc: /v1/snapshot, the whole snapshot as one JSON document,
// streamed in batches of about kSnapshotBatchBytes as the socket drains, each batch under
// its own short read guard, so that a slow client never pins a buffer.
#include <charconv>
#include <optional>

#include "ingest/ingest.h"
#include "server/reader_impl.h"

namespace server {

// /v1/snapshot: headers and the document's opening now, the series in batches as the
// socket drains (pump_stream), each batch under its own short guard.
void HttpServer::Impl::start_snapshot(Conn& c, const Request& req, const shm::SnapshotView& view) {
  auto s = std::make_unique<SnapshotStream>();
  s->generation = view.generation();
  s->chunked = req.minor_version >= 1;
  s->head_only = req.method == http::Method::head;
  if (!s->head_only) s->series = view.find_list(ingest::kSeriesList);

  bump(kStatus2xx);
  const bool keep = keep_alive(c, req) && s->chunked;
  std::string& o = c.out;
  o.append("HTTP/1.1 200 OK\r\nServer: telemetryd\r\nDate: ").append(date, date_len);
  o.append("\r\nContent-Type: application/json\r\nX-Snapshot-Generation: ");
  http::append_uint(o, s->generation);
  o.append(s->chunked ? "\r\nTransfer-Encoding: chunked\r\n" : "\r\n");
  // A partitioned node's snapshot is its own partitions: the cluster's data is read
  // through the routed endpoints, and this says it is not all of it.
  if (const PartitionMap* map = partition_map(view)) {
    std::string held;
    size_t count = 0;
    for (uint32_t p = 0; p < map->routes.size(); ++p)
      if (map->routes[p].local) held.append(count++ ? "," : "").append(std::to_string(p));
    o.append(count == map->partitions && count ? "Telemetryd-Partial: false\r\n" : "Telemetryd-Partial: true\r\n");
    o.append("Telemetryd-Partitions: ").append(held).append("\r\n");
  }
  if (!keep) o.append("Connection: close\r\n");
  o.append("\r\n");
  if (!keep) c.close_after_flush = true;
  if (s->head_only) return;

  std::string open = R"({"generation":)";
  http::append_uint(open, s->generation);
  // Only what the log decides: every node of a cluster serves the same bytes at the same
  // generation (when this node built it is in /v1/status and /healthz).
  open.append(R"(,"series":[)");
  if (s->chunked) {
    char hex[16];
    auto [p, ec] = std::to_chars(hex, hex + sizeof hex, open.size(), 16);
    o.append(hex, p).append("\r\n").append(open).append("\r\n");
  } else {
    o.append(open);
  }
  c.stream = std::move(s);
}

// Renders the next batch of the snapshot stream into the (empty) output buffer. If the
// snapshot is no longer current the bytes we were streaming may be rewritten, so the
// response is cut short: the connection closes without the final chunk, which a client
// sees as a truncated transfer and retries (documented in docs/performance.md).
void HttpServer::Impl::pump_stream(Conn& c) {
  SnapshotStream& s = *c.stream;
  std::optional<shm::Reader::Guard> guard;
  try {
    if (auto g = reader.enter()) guard.emplace(std::move(*g));
  } catch (const shm::Error&) {
  }
  if (!guard || guard->generation() != s.generation) {
    c.stream.reset();
    c.close_after_flush = true;
    c.in_len = 0;
    return;
  }
  // The batch goes into the scratch body first: its size is the chunk's size.
  std::string& batch = body;
  batch.clear();
  while (s.next < s.series.size() && batch.size() < kSnapshotBatchBytes) {
    auto r = s.series.at(s.next++);
    if (!r) continue;  // a corrupt entry: SnapshotView refuses to read it
    if (s.written++) batch += ',';
    batch.append(r->value);
  }
  const bool last = s.next == s.series.size();
  if (last) batch.append("]}");  // so a chunk is never empty (that would end the body)
  std::string& o = c.out;
  if (s.chunked) {
    char hex[16];
    auto [p, ec] = std::to_chars(hex, hex + sizeof hex, batch.size(), 16);
    o.append(hex, p).append("\r\n").append(batch).append(last ? "\r\n0\r\n\r\n" : "\r\n");
  } else {
    o.append(batch);
  }
  if (last) c.stream.reset();
}
}  // namespace server
