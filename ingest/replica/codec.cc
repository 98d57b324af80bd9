// codec.cc: the shared pieces of replicated bytes (codec.h).
#include "ingest/replica/codec.h"

#include <cstring>

#include "ingest/internal.h"
#include "ingest/replica/replica.h"

namespace ingest::codec {

void put_settings(std::string& out, const Config& c) {
  wire::put_varint(out, static_cast<uint64_t>(c.interval.count()));
  wire::put_varint(out, static_cast<uint64_t>(c.window.count()));
  wire::put_varint(out, static_cast<uint64_t>(c.stale_after.count()));
  wire::put_varint(out, static_cast<uint64_t>(c.expire_after.count()));
  wire::put_varint(out, c.max_series);
  wire::put_varint(out, c.max_series_per_source);
  wire::put_varint(out, c.prom_series_limit);
}

Config read_settings(wire::Reader& in, const Config& base) {
  constexpr uint64_t kMaxMs = uint64_t{1} << 40;
  Config c = base;
  c.interval = std::chrono::milliseconds(in.count("settings interval", kMaxMs));
  c.window = std::chrono::milliseconds(in.count("settings window", kMaxMs));
  c.stale_after = std::chrono::milliseconds(in.count("settings stale_after", kMaxMs));
  c.expire_after = std::chrono::milliseconds(in.count("settings expire_after", kMaxMs));
  c.max_series = in.count("settings max_series", UINT32_MAX - 1);
  c.max_series_per_source = in.count("settings max_series_per_source", UINT32_MAX - 1);
  c.prom_series_limit = in.count("settings prom_series_limit", UINT32_MAX);
  return c.resolved();
}

bool same_settings(const Config& a, const Config& b) {
  return a.interval == b.interval && a.window == b.window && a.stale_after == b.stale_after &&
         a.expire_after == b.expire_after && a.max_series == b.max_series &&
         a.max_series_per_source == b.max_series_per_source &&
         a.prom_series_limit == b.prom_series_limit;
}

const char* series_fault(std::string_view metric, std::string_view suffix,
                         std::span<const Label> labels) {
  if (!valid_name(metric, kMaxMetricNameBytes) ||
      (!suffix.empty() && !valid_name(suffix, kMaxMetricNameBytes)))
    return "invalid series name";
  for (size_t i = 1; i < labels.size(); ++i)
    if (!(labels[i - 1].name < labels[i].name)) return "series labels not sorted by name";
  return check_labels(labels);
}

void read_definition(wire::Reader& in, Definition& d) {
  d.metric = in.string("series metric", kMaxMetricNameBytes);
  d.suffix = in.string("series suffix", kMaxMetricNameBytes);
  uint64_t n = in.count("series label count", kMaxLabels);
  d.labels.clear();
  for (uint64_t i = 0; i < n; ++i) {
    Label l;
    l.name = in.string("label name", kMaxLabelNameBytes);
    l.value = in.string("label value", kMaxLabelValueBytes);
    d.labels.push_back(l);
  }
  if (const char* why = series_fault(d.metric, d.suffix, d.labels))
    throw std::invalid_argument(std::string("entry: ") + why);
}

void put_definition(std::string& out, std::string_view metric, std::string_view suffix,
                    std::span<const Label> labels) {
  wire::put_string(out, metric);
  wire::put_string(out, suffix);
  wire::put_varint(out, labels.size());
  for (const Label& l : labels) {
    wire::put_string(out, l.name);
    wire::put_string(out, l.value);
  }
}

void read_status(wire::Reader& in, shm::SourceStatus& s) {
  s.format = in.string("status format", 64);
  s.last_status = static_cast<int32_t>(in.svarint("status code"));
  s.last_fetch_ns = in.varint("status last_fetch");
  s.last_latency_us = in.varint("status latency");
  s.bytes = in.varint("status bytes");
  s.samples = in.varint("status samples");
  s.dropped = in.varint("status dropped");
  s.errors = in.varint("status errors");
  s.last_error = in.string("status error", 64 * 1024);
  s.last_error_ns = in.varint("status last_error");
}

void put_status(std::string& out, const shm::SourceStatus& s) {
  wire::put_string(out, s.format);
  wire::put_svarint(out, s.last_status);
  wire::put_varint(out, s.last_fetch_ns);
  wire::put_varint(out, s.last_latency_us);
  wire::put_varint(out, s.bytes);
  wire::put_varint(out, s.samples);
  wire::put_varint(out, s.dropped);
  wire::put_varint(out, s.errors);
  wire::put_string(out, std::string_view(s.last_error).substr(0, 64 * 1024));
  wire::put_varint(out, s.last_error_ns);
}

void put_header(std::string& out, const char (&magic)[4], uint64_t seq) {
  out.append(magic, 4);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(kLogFormatVersion >> (8 * i)));
  wire::put_u64(out, seq);
}
void seal_header(std::string& out) { wire::put_u64(out, shm::hash_bytes(out.data(), out.size())); }

uint64_t read_header(wire::Reader& in, const char (&magic)[4], const char* what,
                     size_t header_bytes) {
  const char* start = in.peek();
  if (in.left() < header_bytes || std::memcmp(start, magic, 4) != 0)
    throw std::invalid_argument(std::string("not a telemetryd ") + what);
  in.skip(4);
  uint32_t version = 0;
  for (int i = 0; i < 4; ++i) version |= uint32_t{in.byte(what)} << (8 * i);
  if (version != kLogFormatVersion)
    throw std::invalid_argument(std::string(what) + " of format version " +
                                std::to_string(version) + "; this build reads version " +
                                std::to_string(kLogFormatVersion));
  wire::Reader hash(std::string_view(start + header_bytes - 8, 8));
  if (hash.u64(what) != shm::hash_bytes(start, header_bytes - 8))
    throw std::invalid_argument(std::string(what) + ": header damaged (hash mismatch)");
  return in.u64(what);
}

}  // namespace ingest::codec
