// otlp_util.h: what the OTLP tests share: one request in both encodings, gzip, and a
// blocking loopback HTTP client.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <cctype>
#include <chrono>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

#include "otlp/metrics_service.pb.h"

namespace otlp_test {

constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kT0 = 1'732'700'000 * kSec;

// One request with every kind of point: a gauge; monotonic cumulative, non-monotonic
// and monotonic delta sums; an explicit and an exponential histogram; scope and
// resource attributes; then a metric with a bad name, a NaN point and a gap marker.
inline std::string mixed_request_json(int64_t ts = kT0) {
  return fmt::format(R"({{"resourceMetrics":[{{
  "resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"checkout"}}}}]}},
  "scopeMetrics":[{{"scope":{{"name":"web","attributes":[{{"key":"lib","value":{{"stringValue":"web"}}}}]}},
   "metrics":[
    {{"name":"queue.depth","gauge":{{"dataPoints":[{{"timeUnixNano":"{ts}","asDouble":3}}]}}}},
    {{"name":"requests","sum":{{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[
      {{"attributes":[{{"key":"route","value":{{"stringValue":"/pay"}}}}],"timeUnixNano":"{ts}","asInt":"42"}}]}}}},
    {{"name":"inflight","sum":{{"aggregationTemporality":2,"dataPoints":[
      {{"attributes":[{{"key":"k","value":{{"intValue":"7"}}}}],"timeUnixNano":"{ts}","asDouble":-2}}]}}}},
    {{"name":"bytes","sum":{{"isMonotonic":true,"aggregationTemporality":1,"dataPoints":[
      {{"attributes":[{{"key":"ratio","value":{{"doubleValue":0.5}}}},{{"key":"ok","value":{{"boolValue":true}}}}],
        "startTimeUnixNano":"{start}","timeUnixNano":"{ts}","asInt":100}}]}}}},
    {{"name":"latency","histogram":{{"aggregationTemporality":2,"dataPoints":[
      {{"timeUnixNano":"{ts}","count":"4","sum":1.5,"bucketCounts":["1","2","1"],"explicitBounds":[0.1,0.5]}}]}}}},
    {{"name":"size","exponentialHistogram":{{"aggregationTemporality":2,"dataPoints":[
      {{"timeUnixNano":"{ts}","count":"6","sum":20,"scale":0,"zeroCount":"2",
        "positive":{{"offset":1,"bucketCounts":["1","0","2"]}},"negative":{{"offset":0,"bucketCounts":["1"]}}}}]}}}},
    {{"name":"bad name","gauge":{{"dataPoints":[{{"timeUnixNano":"{ts}","asDouble":1}}]}}}},
    {{"name":"nan","gauge":{{"dataPoints":[{{"timeUnixNano":"{ts}","asDouble":"NaN"}}]}}}},
    {{"name":"gap","gauge":{{"dataPoints":[{{"timeUnixNano":"{ts}","flags":1}}]}}}}
   ]}}]}}]}})",
                     fmt::arg("ts", ts), fmt::arg("start", ts - kSec));
}

inline std::string mixed_request_protobuf(int64_t ts = kT0) {
  namespace pb = opentelemetry::proto;
  pb::collector::metrics::v1::ExportMetricsServiceRequest req;
  auto* rm = req.add_resource_metrics();
  auto attr = [](auto* list, const char* key) {
    auto* kv = list->Add();
    kv->set_key(key);
    return kv->mutable_value();
  };
  attr(rm->mutable_resource()->mutable_attributes(), "service.name")->set_string_value("checkout");
  auto* sm = rm->add_scope_metrics();
  attr(sm->mutable_scope()->mutable_attributes(), "lib")->set_string_value("web");
  auto metric = [&](const char* name) {
    auto* m = sm->add_metrics();
    m->set_name(name);
    return m;
  };
  auto* p = metric("queue.depth")->mutable_gauge()->add_data_points();
  p->set_time_unix_nano(uint64_t(ts));
  p->set_as_double(3);
  auto* sum = metric("requests")->mutable_sum();
  sum->set_aggregation_temporality(pb::metrics::v1::AGGREGATION_TEMPORALITY_CUMULATIVE);
  sum->set_is_monotonic(true);
  p = sum->add_data_points();
  attr(p->mutable_attributes(), "route")->set_string_value("/pay");
  p->set_time_unix_nano(uint64_t(ts));
  p->set_as_int(42);
  sum = metric("inflight")->mutable_sum();
  sum->set_aggregation_temporality(pb::metrics::v1::AGGREGATION_TEMPORALITY_CUMULATIVE);
  p = sum->add_data_points();
  attr(p->mutable_attributes(), "k")->set_int_value(7);
  p->set_time_unix_nano(uint64_t(ts));
  p->set_as_double(-2);
  sum = metric("bytes")->mutable_sum();
  sum->set_aggregation_temporality(pb::metrics::v1::AGGREGATION_TEMPORALITY_DELTA);
  sum->set_is_monotonic(true);
  p = sum->add_data_points();
  attr(p->mutable_attributes(), "ratio")->set_double_value(0.5);
  attr(p->mutable_attributes(), "ok")->set_bool_value(true);
  p->set_start_time_unix_nano(uint64_t(ts - kSec));
  p->set_time_unix_nano(uint64_t(ts));
  p->set_as_int(100);
  auto* h = metric("latency")->mutable_histogram();
  h->set_aggregation_temporality(pb::metrics::v1::AGGREGATION_TEMPORALITY_CUMULATIVE);
  auto* hp = h->add_data_points();
  hp->set_time_unix_nano(uint64_t(ts));
  hp->set_count(4);
  hp->set_sum(1.5);
  for (uint64_t c : {1, 2, 1}) hp->add_bucket_counts(c);
  for (double b : {0.1, 0.5}) hp->add_explicit_bounds(b);
  auto* e = metric("size")->mutable_exponential_histogram();
  e->set_aggregation_temporality(pb::metrics::v1::AGGREGATION_TEMPORALITY_CUMULATIVE);
  auto* ep = e->add_data_points();
  ep->set_time_unix_nano(uint64_t(ts));
  ep->set_count(6);
  ep->set_sum(20);
  ep->set_scale(0);
  ep->set_zero_count(2);
  ep->mutable_positive()->set_offset(1);
  for (uint64_t c : {1, 0, 2}) ep->mutable_positive()->add_bucket_counts(c);
  ep->mutable_negative()->set_offset(0);
  ep->mutable_negative()->add_bucket_counts(1);
  p = metric("bad name")->mutable_gauge()->add_data_points();
  p->set_time_unix_nano(uint64_t(ts));
  p->set_as_double(1);
  p = metric("nan")->mutable_gauge()->add_data_points();
  p->set_time_unix_nano(uint64_t(ts));
  p->set_as_double(std::nan(""));
  p = metric("gap")->mutable_gauge()->add_data_points();
  p->set_time_unix_nano(uint64_t(ts));
  p->set_flags(1);
  return req.SerializeAsString();
}

inline std::string gzip(const std::string& in) {
  z_stream z{};
  if (deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("deflateInit2");
  std::string out(deflateBound(&z, in.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

struct Reply {
  int status = 0;  // 0: no response
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

// Sends raw request bytes to 127.0.0.1:port and reads until the server closes
// (requests say Connection: close), at most 10 s.
inline Reply exchange(uint16_t port, const std::string& request) {
  Reply r;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return r;
  }
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may answer (413) and close before reading it all
    sent += size_t(n);
  }
  std::string in;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  char buf[65536];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    in.append(buf, size_t(n));
  }
  close(fd);
  size_t head_end = in.find("\r\n\r\n");
  if (in.compare(0, 9, "HTTP/1.1 ") != 0 || head_end == std::string::npos) return r;
  r.status = std::stoi(in.substr(9, 3));
  size_t at = in.find("\r\n") + 2;
  while (at < head_end) {
    size_t eol = in.find("\r\n", at);
    std::string line = in.substr(at, eol - at);
    size_t colon = line.find(':');
    if (colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      for (char& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
      size_t v = line.find_first_not_of(' ', colon + 1);
      r.headers[name] = v == std::string::npos ? "" : line.substr(v);
    }
    at = eol + 2;
  }
  r.body = in.substr(head_end + 4);
  return r;
}

// A POST with a Content-Length (or, chunked, in pieces of `chunk` bytes).
inline std::string post(const std::string& path, const std::string& type, const std::string& body,
                        const std::string& extra_headers = "", size_t chunk = 0) {
  std::string req = fmt::format("POST {} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n", path);
  if (!type.empty()) req += fmt::format("Content-Type: {}\r\n", type);
  req += extra_headers;
  if (chunk == 0) return req + fmt::format("Content-Length: {}\r\n\r\n", body.size()) + body;
  req += "Transfer-Encoding: chunked\r\n\r\n";
  for (size_t at = 0; at < body.size(); at += chunk) {
    std::string piece = body.substr(at, chunk);
    req += fmt::format("{:x}\r\n{}\r\n", piece.size(), piece);
  }
  return req + "0\r\n\r\n";
}

}  // namespace otlp_test
