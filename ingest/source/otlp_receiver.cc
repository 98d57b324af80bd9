// otlp_receiver.cc: the OTLP/HTTP metrics receiver (see otlp_receiver.h).
//
// evhttp reads each request whole (Content-Length or chunked) up to max_body_bytes and
// answers 413 itself past that; the body is then decompressed (bounded again), decoded
// into samples and copied into the pending batch, or refused as a whole. Nothing is
// applied here: the Pipeline takes the batch at its next tick, so pushed samples go
// through the same apply -> build -> publish path as fetched ones. The batch is bounded
// (max_pending samples); a request that does not fit is answered 503 with Retry-After,
// and the client retries after the next tick has emptied it. An admitted request is
// answered only once the tick that took it is committed (PushSource::settle): 200 then,
// 503 with Retry-After if it never will be, so a 200 means the points are kept.
#include "ingest/source/otlp_receiver.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <deque>
#include <stdexcept>

#include <fmt/format.h>

#include "common/listener.h"
#include "ingest/format/otlp_proto.h"
#include "ingest/internal.h"
#include "ingest/source/gunzip.h"
#include "ingest/window/delta_totals.h"
#include "otlp/metrics_service.pb.h"
#include "otlp/status.pb.h"

namespace ingest {

namespace {

constexpr std::string_view kPath = "/v1/metrics";
constexpr size_t kMaxHeaderBytes = 16 * 1024;
constexpr int kRequestTimeoutSeconds = 30;
// The JSON parser's buffers grow to the largest body; beyond this they are freed.
constexpr size_t kKeepParserBytes = size_t{8} << 20;
// gRPC status codes in error bodies (google.rpc.Status.code).
constexpr int kInvalidArgument = 3, kResourceExhausted = 8, kUnavailable = 14,
              kUnimplemented = 12, kNotFound = 5;

enum class Encoding { json, protobuf };

// Samples waiting for the next tick, with copies of their text and labels (the
// decoders' buffers are reused by the next request).
class PendingSamples {
 public:
  void add(const Sample& s) {
    Stored st;
    st.sample = s;
    st.metric = text_.store(s.metric);
    st.suffix = s.suffix;  // a literal of otlp_points.cc
    st.label_begin = static_cast<uint32_t>(labels_.size());
    for (const Label& l : s.labels) labels_.push_back(copy(l));
    st.label_count = static_cast<uint32_t>(s.labels.size());
    st.resource_begin = static_cast<uint32_t>(labels_.size());
    for (const Label& l : s.resource_labels) labels_.push_back(copy(l));
    st.resource_count = static_cast<uint32_t>(s.resource_labels.size());
    stored_.push_back(st);
  }
  size_t size() const { return stored_.size(); }
  // The samples, valid until the next clear().
  std::span<const Sample> samples() {
    samples_.clear();
    for (const Stored& st : stored_) {
      Sample s = st.sample;
      s.metric = st.metric;
      s.suffix = st.suffix;
      s.labels = std::span<const Label>(labels_).subspan(st.label_begin, st.label_count);
      s.resource_labels =
          std::span<const Label>(labels_).subspan(st.resource_begin, st.resource_count);
      samples_.push_back(s);
    }
    return samples_;
  }
  void clear() {
    stored_.clear();
    labels_.clear();
    samples_.clear();
    text_.reset();
    // A burst's buffers are not worth keeping for good.
    if (labels_.capacity() > kKeepLabels) {
      std::vector<Stored>().swap(stored_);
      std::vector<Label>().swap(labels_);
      std::vector<Sample>().swap(samples_);
      text_.release();
    }
  }

 private:
  static constexpr size_t kKeepLabels = 1 << 16;
  struct Stored {
    Sample sample;
    std::string_view metric, suffix;
    uint32_t label_begin, label_count, resource_begin, resource_count;
  };
  Label copy(const Label& l) { return Label{text_.store(l.name), text_.store(l.value)}; }
  Arena text_;
  std::vector<Stored> stored_;
  std::vector<Label> labels_;
  std::vector<Sample> samples_;
};

// Case-insensitive comparison of an ASCII header token.
bool token_is(std::string_view text, std::string_view token) {
  if (text.size() != token.size()) return false;
  for (size_t i = 0; i < text.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(text[i])) != token[i]) return false;
  return true;
}

// The media type of a Content-Type header, without parameters and blanks.
std::string_view media_type(const char* header) {
  std::string_view t = header ? header : "";
  t = t.substr(0, t.find(';'));
  while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
  while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
  return t;
}


uint16_t bound_port(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
}

}  // namespace

struct OtlpReceiver::Impl {
  event_base* base;
  OtlpOptions options;
  std::string url;
  evhttp* http = nullptr;
  int fd = -1;
  uint16_t port = 0;
  Parser json;
  OtlpProtoParser protobuf;
  DeltaTotals deltas;
  PendingSamples pending, taken;
  std::vector<Sample> converted;
  std::string body, inflated, error_text;
  uint64_t bytes = 0, rejected = 0, refused = 0;
  std::string last_error;
  std::string refusal;  // set_refusal()
  // Admitted requests not answered yet, oldest first, each with the take that holds
  // (or will hold) its points. A connection that closes drops its requests (libevent
  // frees them after its close callback).
  struct Unanswered {
    evhttp_request* req;
    evhttp_connection* conn;
    Encoding encoding;
    uint64_t take;
    uint64_t rejected;
    std::string note;
  };
  std::deque<Unanswered> unanswered;
  uint64_t takes = 0;  // take() calls so far: the next take is takes + 1

  Impl(event_base* b, const OtlpOptions& o)
      : base(b), options(o), deltas(o.max_delta_series) {
    std::string why;
    fd = common::listen_tcp(options.host, options.port, 128, &why);
    if (fd < 0)
      throw std::runtime_error(
          fmt::format("otlp-listen {}:{}: cannot listen: {}", options.host, options.port, why));
    port = bound_port(fd);
    bool v6 = options.host.find(':') != std::string::npos;
    url = v6 ? fmt::format("otlp://[{}]:{}", options.host, port)
             : fmt::format("otlp://{}:{}", options.host, port);
    if (!options.name.empty()) url = options.name;
    http = evhttp_new(base);
    if (!http || !evhttp_accept_socket_with_handle(http, fd)) {
      if (http) evhttp_free(http);
      close(fd);
      throw std::runtime_error("otlp-listen: evhttp setup failed");
    }
    evhttp_set_max_body_size(http, static_cast<ev_ssize_t>(options.max_body_bytes));
    evhttp_set_max_headers_size(http, static_cast<ev_ssize_t>(kMaxHeaderBytes));
    evhttp_set_timeout(http, kRequestTimeoutSeconds);
    evhttp_set_gencb(http, &Impl::on_request, this);
  }
  ~Impl() {
    for (const Unanswered& u : unanswered) evhttp_connection_set_closecb(u.conn, nullptr, nullptr);
    unanswered.clear();
    if (http) evhttp_free(http);  // closes the listening socket with its listener
  }

  static void on_request(evhttp_request* req, void* arg) {
    shm::failpoint("otlp.request");
    static_cast<Impl*>(arg)->handle(req);
  }

  void handle(evhttp_request* req) {
    const char* path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (!path || std::string_view(path) != kPath)
      return reply_error(req, Encoding::json, 404, kNotFound, "not found: the receiver serves POST /v1/metrics");
    evkeyvalq* in = evhttp_request_get_input_headers(req);
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
      evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
      return reply_error(req, Encoding::json, 405, kUnimplemented, "method not allowed: use POST");
    }
    std::string_view type = media_type(evhttp_find_header(in, "Content-Type"));
    Encoding encoding;
    if (token_is(type, "application/json")) encoding = Encoding::json;
    else if (token_is(type, "application/x-protobuf")) encoding = Encoding::protobuf;
    else
      return refuse(req, Encoding::json, 415, kInvalidArgument,
                    fmt::format("unsupported Content-Type \"{}\": send application/json or "
                                "application/x-protobuf", type));
    if (!refusal.empty()) {
      add_retry_after(req);
      return refuse(req, encoding, 503, kUnavailable, refusal);
    }
    const char* coding = evhttp_find_header(in, "Content-Encoding");
    bool gzip = coding && token_is(coding, "gzip");
    if (coding && !gzip && !token_is(coding, "identity"))
      return refuse(req, encoding, 415, kInvalidArgument,
                    fmt::format("unsupported Content-Encoding \"{}\": gzip or none", coding));

    evbuffer* input = evhttp_request_get_input_buffer(req);
    body.resize(evbuffer_get_length(input));
    evbuffer_copyout(input, body.data(), body.size());
    std::string_view payload = body;
    if (gzip) {
      std::string why;
      GunzipResult r = gunzip(body, options.max_body_bytes, inflated, why);
      if (r == GunzipResult::too_large)
        return refuse(req, encoding, 413, kResourceExhausted,
                      fmt::format("body over otlp-max-body ({} bytes) once decompressed",
                                  options.max_body_bytes));
      if (r == GunzipResult::corrupt) return refuse(req, encoding, 400, kInvalidArgument, why);
      payload = inflated;
    }
    bytes += payload.size();

    ParseResult result;
    std::span<const Sample> samples;
    if (encoding == Encoding::json) {
      result = json.parse(payload, "application/json");
      if (result.ok && result.format != Format::otlp) {
        result.ok = false;
        result.error = "not an OTLP metrics body (no \"resourceMetrics\")";
      }
      samples = json.samples();
    } else {
      result = protobuf.parse(payload);
      samples = protobuf.samples();
    }
    if (result.ok) admit(req, encoding, result, samples);
    else refuse(req, encoding, 400, kInvalidArgument, result.error);
    json.shrink(kKeepParserBytes);  // the samples are copied or refused by now
  }

  void add_retry_after(evhttp_request* req) {
    long seconds = std::max<long>(1, (options.retry_after.count() + 999) / 1000);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
                      std::to_string(seconds).c_str());
  }

  // Copies the samples into the pending batch, all or none.
  void admit(evhttp_request* req, Encoding encoding, const ParseResult& result,
             std::span<const Sample> samples) {
    // A delta point may bring a 0 at its start with it: counted twice, the bound holds.
    size_t need = samples.size();
    for (const Sample& s : samples) need += s.delta;
    if (need > options.max_pending)
      return refuse(req, encoding, 413, kResourceExhausted,
                    fmt::format("{} samples in one request, over otlp-max-pending ({})", need,
                                options.max_pending));
    if (pending.size() + need > options.max_pending) {
      add_retry_after(req);
      return refuse(req, encoding, 503, kUnavailable,
                    fmt::format("{} samples wait for the next interval (otlp-max-pending {}): "
                                "retry later", pending.size(), options.max_pending));
    }
    int64_t now = static_cast<int64_t>(shm::realtime_ns());
    uint64_t refused_here = result.rejected;
    std::string note = result.error;
    uint32_t delta_refused = 0;
    for (const Sample& s : samples) {
      converted.clear();
      if (!deltas.add(s, now, converted)) {
        ++delta_refused;
        continue;
      }
      for (const Sample& c : converted) pending.add(c);
    }
    if (delta_refused) {
      refused_here += delta_refused;
      if (note.empty())
        note = fmt::format("{} delta samples refused: {} running totals kept, the limit",
                           delta_refused, deltas.size());
    }
    rejected += refused_here;
    if (!note.empty()) last_error = note;
    evhttp_connection* conn = evhttp_request_get_connection(req);
    evhttp_connection_set_closecb(conn, &Impl::on_close, this);
    unanswered.push_back(Unanswered{req, conn, encoding, takes + 1, refused_here, std::move(note)});
  }

  static void on_close(evhttp_connection* conn, void* arg) {
    auto& waiting = static_cast<Impl*>(arg)->unanswered;
    std::erase_if(waiting, [conn](const Unanswered& u) { return u.conn == conn; });
  }

  void settle(uint64_t id, bool committed) {
    while (!unanswered.empty() && unanswered.front().take <= id) {
      Unanswered u = std::move(unanswered.front());
      unanswered.pop_front();
      evhttp_connection_set_closecb(u.conn, nullptr, nullptr);
      if (committed) {
        reply_ok(u.req, u.encoding, u.rejected, u.note);
      } else {
        add_retry_after(u.req);
        reply_error(u.req, u.encoding, 503, kUnavailable,
                    "the interval that took these points was not committed (the node stopped leading, "
                    "its state was reloaded, or a partition's log did not take its entry): retry");
      }
    }
  }

  void refuse(evhttp_request* req, Encoding encoding, int status, int code, std::string message) {
    ++refused;
    last_error = fmt::format("HTTP {}: {}", status, message);
    reply_error(req, encoding, status, code, message);
  }

  void reply_ok(evhttp_request* req, Encoding encoding, uint64_t rejected_points,
                const std::string& message) {
    std::string out;
    if (encoding == Encoding::json) {
      out = "{}";
      if (rejected_points) {
        out = fmt::format("{{\"partialSuccess\":{{\"rejectedDataPoints\":\"{}\",\"errorMessage\":",
                          rejected_points);
        append_json_string(out, message);
        out += "}}";
      }
    } else {
      opentelemetry::proto::collector::metrics::v1::ExportMetricsServiceResponse response;
      if (rejected_points) {
        auto* partial = response.mutable_partial_success();
        partial->set_rejected_data_points(static_cast<int64_t>(rejected_points));
        partial->set_error_message(message);
      }
      response.SerializeToString(&out);
    }
    send(req, encoding, 200, out);
  }

  void reply_error(evhttp_request* req, Encoding encoding, int status, int code,
                   const std::string& message) {
    std::string out;
    if (encoding == Encoding::json) {
      out = fmt::format("{{\"code\":{},\"message\":", code);
      append_json_string(out, message);
      out += "}";
    } else {
      google::rpc::Status st;
      st.set_code(code);
      st.set_message(message);
      st.SerializeToString(&out);
    }
    send(req, encoding, status, out);
  }

  static void send(evhttp_request* req, Encoding encoding, int status, const std::string& out) {
    evkeyvalq* headers = evhttp_request_get_output_headers(req);
    evhttp_add_header(headers, "Content-Type",
                      encoding == Encoding::json ? "application/json" : "application/x-protobuf");
    evbuffer* buf = evbuffer_new();
    evbuffer_add(buf, out.data(), out.size());
    evhttp_send_reply(req, status, nullptr, buf);
    evbuffer_free(buf);
  }

  Batch take(int64_t now_ns) {
    ++takes;
    std::swap(pending, taken);
    pending.clear();
    deltas.expire(now_ns - std::chrono::nanoseconds(options.delta_expire).count());
    Batch b;
    b.samples = taken.samples();
    b.bytes = std::exchange(bytes, 0);
    b.rejected = std::exchange(rejected, 0);
    uint64_t requests_refused = std::exchange(refused, 0);
    std::string error = std::exchange(last_error, {});
    if (requests_refused)
      b.error = fmt::format("{} request(s) refused since the last tick, the last: {}",
                            requests_refused, error);
    else if (b.rejected)
      b.error = fmt::format("{} data point(s) refused, the last: {}", b.rejected, error);
    b.id = takes;
    return b;
  }
};

OtlpReceiver::OtlpReceiver(event_base* base, const OtlpOptions& options)
    : impl_(std::make_unique<Impl>(base, options)) {}
OtlpReceiver::~OtlpReceiver() = default;
const std::string& OtlpReceiver::url() const { return impl_->url; }
PushSource::Batch OtlpReceiver::take(int64_t now_ns) { return impl_->take(now_ns); }
uint16_t OtlpReceiver::port() const { return impl_->port; }
size_t OtlpReceiver::pending() const { return impl_->pending.size(); }
size_t OtlpReceiver::unanswered() const { return impl_->unanswered.size(); }
void OtlpReceiver::settle(uint64_t id, bool committed) { impl_->settle(id, committed); }
void OtlpReceiver::set_refusal(std::string reason) {
  if (reason.empty() && !impl_->refusal.empty()) impl_->deltas.clear();
  impl_->refusal = std::move(reason);
}
void OtlpReceiver::set_delta_seed(
    std::function<std::optional<std::pair<double, int64_t>>(std::string_view key)> seed) {
  impl_->deltas.set_seed(std::move(seed));
}

}  // namespace ingest
