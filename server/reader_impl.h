// server/reader_impl.h: the inside of a reader's HttpServer, shared by the three files
// that implement it:
//   reader.cc           the connection engine: accept and its balancing, reads, writes,
//                       timeouts, the drain on SIGTERM, run_reader(); epoll I/O
//   reader_uring.cc     the same I/O on io_uring (the engine chosen at start)
//   routes.cc           routing a parsed request to its endpoint, and the endpoints
//   snapshot_stream.cc  /v1/snapshot, streamed in batches under short guards
//   ui.cc               the web view (/ui) and /v1/status
// Not a public header: server/reader.h is the reader's manual.
#pragma once

#include <event2/event.h>
#include <event2/event_struct.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "server/http.h"
#include "server/partition_map.h"
#include "server/reader.h"
#include "server/service.h"
#include "shm/shm.h"

namespace server {

using http::Parse;
using http::Request;

namespace wire {
struct Frame;
}

inline constexpr size_t kReadSlack = 16384;  // input buffer = max_header_bytes + this
inline constexpr size_t kSnapshotBatchBytes = 256 * 1024;  // /v1/snapshot bytes rendered per guard
inline constexpr int kSnapshotBatchesPerCall = 4;         // then yield to the other connections

// A /v1/snapshot response in progress. `series` views the buffer of `generation`; those
// bytes stay unchanged exactly as long as `generation` is still the current one (the
// writer only writes non-current buffers, and generations only grow), which each batch
// re-checks under a fresh guard before touching them.
struct SnapshotStream {
  uint64_t generation = 0;
  shm::ListView series;
  size_t next = 0;     // next entry of `series`
  size_t written = 0;  // entries written so far
  bool chunked = true;  // HTTP/1.0 gets a close-delimited body instead
  bool head_only = false;
};

// /v1/query's parameters. `metric`, `limit` and `cursor` are reserved; every other
// parameter is a label filter (so a label of one of those names cannot be filtered on).
inline constexpr size_t kQueryDefaultLimit = 1000;  // series per /v1/query page
struct QueryParams {
  std::string metric;
  size_t limit = kQueryDefaultLimit;
  std::string cursor;
  bool has_cursor = false;
  std::vector<std::pair<std::string, std::string>> labels;
};
// Fills q from the query string; returns "" or the reason for a 400 (routes.cc).
std::string parse_query(std::string_view query, QueryParams& q);
// True when the series record `record_key` ("s:" + canonical key) has every label pair.
bool series_has_labels(std::string_view record_key, const std::vector<std::pair<std::string, std::string>>& labels);
// The first entry of a sorted list of "s:" records whose key sorts after "s:" + series_key.
size_t list_position_after(const shm::ListView& list, std::string_view series_key);

// What a partitioned read asks of each partition (fanout.cc).
enum class PartKind { series, metrics, metric, query };

// One file of the web view (ui/), embedded into the binary at build time by
// server/embed_ui.cmake (the generated ui_assets.cc defines ui_assets()).
struct UiAsset {
  std::string_view name;          // path under /ui/; "" for the page itself (/ui)
  std::string_view content_type;
  std::string_view etag;          // quoted: a hash of the content
  bool immutable;                 // the page references it as /ui/NAME?v=HASH: cached for long
  std::string_view body;
};
std::span<const UiAsset> ui_assets();

struct HttpServer::Impl {
  struct Conn;
  struct Ring;    // reader_uring.cc
  struct Peers;   // fanout.cc
  struct Fanout;  // fanout.cc
  // Freed in fanout.cc, where they are complete.
  struct FreeFanout {
    void operator()(Fanout* f) const;
  };
  struct FreePeers {
    void operator()(Peers* p) const;
  };
  Impl(event_base* b, shm::Reader& r, shm::Store& s, const ReaderOptions& o);
  ~Impl();  // both in reader_uring.cc, where Ring is complete

  event_base* base;
  shm::Reader& reader;
  shm::Store& store;
  ReaderOptions opt;
  std::unique_ptr<Ring> ring;  // the io_uring engine's state; null with epoll

  // Accepting: the listening socket is watched exactly when update_accept() says so.
  event accept_ev{};
  bool accept_on = false;
  bool accept_paused = false;  // out of descriptors: retried at a close or the next tick
  bool stepped_aside = false;  // balancing: step_aside_ev brings us back
  size_t max_conns = 0;        // connection_limit()
  event step_aside_ev{};
  event tick_ev{};
  event grace_ev{};
  bool grace_on = false;
  bool shutting_down = false;
  bool more_pipelined = false;  // draining: another request follows the one being answered

  std::vector<Conn*> conns;
  uint64_t accepted = 0;
  uint64_t now_ms = 0;  // refreshed by the tick and by accepts: coarse on purpose
  char date[40] = {};
  size_t date_len = 0;
  time_t date_sec = 0;
  std::atomic<uint64_t>* ctr[shm::kReaderCounters] = {};

  // A partitioned node (fanout.cc): the holder map of the snapshot last looked at, the
  // other nodes' connections, and the requests waiting for them.
  std::optional<PartitionMap> map;
  uint64_t map_generation = 0;
  bool map_known = false;  // map is the one of map_generation
  std::unique_ptr<Peers, FreePeers> peers;
  size_t fanouts_waiting = 0;
  struct MergedAnswer {
    std::string extra;  // its header lines, the generations among them: the cache's check
    std::string body;
  };
  std::unordered_map<std::string, MergedAnswer> merged_cache;  // by kind, name and query
  size_t merged_cache_bytes = 0;

  std::string key;   // scratch: the record key of a lookup
  std::string body;  // scratch: bodies rendered by the server itself

  // --- setup -----------------------------------------------------------------------
  void start();
  void watch_listen(bool on);
  void update_accept();
  void refresh_clock();

  // --- connections -----------------------------------------------------------------
  static void on_accept(evutil_socket_t, short, void* arg);
  static void on_read(evutil_socket_t, short, void* arg);
  static void on_write(evutil_socket_t, short, void* arg);
  static void on_tick(evutil_socket_t, short, void* arg);
  static void on_grace(evutil_socket_t, short, void* arg);
  void accept_some();
  void add_conn(int fd);  // an accepted socket: its Conn, reading
  bool should_step_aside() const;
  void close_conn(Conn& c);
  void read_conn(Conn& c);
  bool flush(Conn& c);  // false: the connection was closed
  void after_io(Conn& c);
  void set_events(Conn& c, bool want_read, bool want_write);
  void sweep();
  void begin_shutdown();
  void release_conn(Conn& c);  // the engine's part of close_conn: events or ring ops, fd

  // --- the io_uring engine (reader_uring.cc) ----------------------------------------
  // Every ring operation names its connection and kind in user_data. A connection
  // closed while operations of it are in flight is cancelled and kept (Ring::closing)
  // until their last completion.
  std::string start_ring();  // "" or why the ring could not be set up (then epoll runs)
  void stop_ring();          // the destructor's: cancels and reaps every operation
  static void on_ring(evutil_socket_t, short, void* arg);
  void ring_complete();  // handles every completion there is
  bool ring_loop();      // HttpServer::run() with io_uring
  void ring_sync_accept();  // arms or cancels the multishot accept as accept_on says
  void ring_release(Conn& c);
  void ring_want_read(Conn& c);
  void ring_send(Conn& c);
  void ring_submit();  // end of every loop callback that may have queued operations
  void ring_reap();    // frees released connections whose operations all ended
  void ring_accepted(int res, bool more);
  void ring_received(Conn& c, int res, uint32_t flags);
  void ring_take_input(Conn& c, const char* data, size_t n);
  void ring_sent(Conn& c, int res);

  // --- requests --------------------------------------------------------------------
  void process_input(Conn& c);
  void handle(Conn& c, const Request& req, const shm::SnapshotView* view, bool store_failed);
  void pump_stream(Conn& c);
  void bump(uint32_t i) {
    auto& a = *ctr[i];
    a.store(a.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // single writer
  }

  // Appends a whole response. etag may be empty; extra is raw header lines.
  void respond(Conn& c, const Request& req, int status, uint64_t generation, std::string_view content_type,
               std::string_view body, std::string_view etag = {}, std::string_view extra = {});
  void respond_json_error(Conn& c, const Request& req, int status, uint64_t generation, std::string_view msg,
                          std::string_view extra = {});
  void respond_with_etag(Conn& c, const Request& req, uint64_t generation, std::string_view body);
  bool keep_alive(const Conn& c, const Request& req) const;

  void serve_query(Conn& c, const Request& req, const shm::SnapshotView& view);
  void serve_prom(Conn& c, const Request& req, const shm::SnapshotView* view);
  void serve_healthz(Conn& c, const Request& req, const shm::SnapshotView* view);
  void start_snapshot(Conn& c, const Request& req, const shm::SnapshotView& view);
  void serve_ui(Conn& c, const Request& req, std::string_view name, uint64_t generation);
  void serve_status(Conn& c, const Request& req, const shm::SnapshotView* view);

  // --- a partitioned cluster (fanout.cc) --------------------------------------------
  // The snapshot's holder map, or null on a node that is not partitioned.
  const PartitionMap* partition_map(const shm::SnapshotView& view);
  void serve_partitioned(Conn& c, const Request& req, PartKind kind, std::string_view rest,
                         const shm::SnapshotView& view, const PartitionMap& map);
  void serve_parts(Conn& c, const Request& req, std::string_view rest, const shm::SnapshotView& view,
                   const PartitionMap& map);
  std::string local_parts(PartKind kind, const std::vector<uint32_t>& partitions, std::string_view name,
                          const QueryParams* q, const shm::SnapshotView& view, const PartitionMap& map);
  void query_page(std::string& out, uint32_t p, const shm::ListView& list, const QueryParams& q, size_t scan_cap);
  void dispatch(Fanout& f);
  static void on_part_answer(struct evhttp_request* request, void* arg);
  static void on_fanout_deadline(evutil_socket_t, short, void* arg);
  void finish_fanout(Conn& c);
  void drop_fanout(Conn& c);  // the connection closes while it waits
  void answer(Conn& c, Fanout& f);
  void respond_parts(Conn& c, const Request& req, uint64_t generation, std::string_view data, std::string_view extra);
  void remember_merged(std::string key, const std::string& extra, const std::string& data);
  bool merge_metric(std::string& out, std::string_view metric, std::vector<const wire::Frame*>& partials);
};

struct HttpServer::Impl::Conn {
  Impl* server = nullptr;
  int fd = -1;
  size_t index = 0;  // in Impl::conns_
  event rev{}, wev{};
  bool rev_on = false, wev_on = false;

  std::string in;  // empty until the first read (idle connections cost no buffer), then fixed; in_len used
  size_t in_len = 0;
  std::string out;  // pending output from out_off
  size_t out_off = 0;

  uint64_t last_active_ms = 0;      // last read or write progress
  uint64_t request_started_ms = 0;  // when the buffered partial request began
  uint64_t linger_deadline_ms = 0;
  bool close_after_flush = false;   // error, Connection: close, HTTP/1.0, shutdown
  bool lingering = false;           // write side shut; draining input until EOF
  // io_uring engine: a multishot receive is armed (recv_on) unless the input is at its
  // cap; a send of out[out_off..] is in flight (out must not change meanwhile);
  // operations in flight, and whether close_conn already let the connection go.
  bool recv_on = false, recv_cancelled = false, send_on = false, released = false;
  uint32_t ops = 0;
  std::unique_ptr<SnapshotStream> stream;
  std::unique_ptr<Fanout, FreeFanout> waiting;  // a partitioned read waiting for other nodes; no request is read meanwhile

  size_t pending() const { return out.size() - out_off; }
};

// While draining, the last request the client has already sent is answered with
// `Connection: close`; the ones pipelined before it keep the connection, so everything
// in flight gets a response rather than being dropped behind the close.
inline bool HttpServer::Impl::keep_alive(const Conn& c, const Request& req) const {
  return req.keep_alive && (!shutting_down || more_pipelined) && !c.close_after_flush;
}

}  // namespace server
