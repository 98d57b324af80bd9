// server/partition_map.cc: the holder map's bytes (layout in partition_map.h).
#include "server/partition_map.h"

#include "server/bytes_le.h"

namespace server {
namespace {

constexpr uint32_t kVersion = 1;

template <typename T>
void put(std::string& out, T v) {
  le::put(out, uint64_t(v), sizeof(T));
}

struct Cursor : le::Reader {
  template <typename T>
  T get() {
    return T(le::Reader::get(sizeof(T)));
  }
};

}  // namespace

std::string encode_partition_map(const PartitionMap& map) {
  std::string out;
  put<uint32_t>(out, kVersion);
  put<uint32_t>(out, map.partitions);
  put<uint64_t>(out, map.window_ms);
  put<uint16_t>(out, uint16_t(map.addresses.size()));
  for (const std::string& a : map.addresses) {
    put<uint16_t>(out, uint16_t(a.size()));
    out.append(a);
  }
  for (const PartitionRoute& r : map.routes) {
    put<uint8_t>(out, uint8_t((r.local ? 1 : 0) | (r.primary ? 2 : 0)));
    put<uint64_t>(out, r.generation);
    put<uint8_t>(out, uint8_t(r.remote.size()));
    for (uint16_t i : r.remote) put<uint16_t>(out, i);
  }
  return out;
}

std::optional<PartitionMap> decode_partition_map(std::string_view bytes) {
  Cursor c{{bytes}};
  PartitionMap map;
  if (c.get<uint32_t>() != kVersion) return std::nullopt;
  map.partitions = c.get<uint32_t>();
  map.window_ms = c.get<uint64_t>();
  const uint16_t addresses = c.get<uint16_t>();
  for (uint16_t i = 0; i < addresses && c.ok; ++i) map.addresses.emplace_back(c.bytes(c.get<uint16_t>()));
  // Each partition takes at least 10 bytes: a count beyond what is there is damage.
  if (!c.ok || map.partitions > c.in.size() / 10) return std::nullopt;
  map.routes.resize(map.partitions);
  for (PartitionRoute& r : map.routes) {
    const uint8_t flags = c.get<uint8_t>();
    r.local = flags & 1;
    r.primary = flags & 2;
    r.generation = c.get<uint64_t>();
    const uint8_t remote = c.get<uint8_t>();
    for (uint8_t i = 0; i < remote && c.ok; ++i) {
      const uint16_t a = c.get<uint16_t>();
      if (a >= map.addresses.size()) return std::nullopt;
      r.remote.push_back(a);
    }
  }
  if (!c.ok || !c.in.empty()) return std::nullopt;
  return map;
}

}  // namespace server
