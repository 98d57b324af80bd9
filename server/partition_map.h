// server/partition_map.h: the holder map a partitioned node's readers route queries by.
// The writer knows the cluster's members (cluster/partitioned.h) and renders the map into
// every snapshot it publishes, as the record kPartitionMapRecord; a reader decodes it
// once per generation, so readers stay lock-free and never talk to Redis. The map is
// the writer's view at that build: a holder it names may have died since, which the
// reader learns from the failed request and answers around (docs/architecture.md,
// Queries over partitions).
//
// Record layout (little-endian, fixed width; version 1):
//   u32 version, u32 partitions, u64 window in ms (the rollups' window_s), u16 address count, then each address as u16 length +
//   bytes (HOST:PORT of a node's HTTP listener, index order), then per partition:
//   u8 flags (bit 0: held here and served, ready or leaving; bit 1: this node is its
//   primary), u64 generation (this node's applied log position of it; 0 when not held),
//   u8 count of remote ready holders, u16 address index each, heaviest holder first.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace server {

inline constexpr std::string_view kPartitionMapRecord = "partition-map";

struct PartitionRoute {
  bool local = false;    // this node serves it from its own snapshot
  bool primary = false;  // this node writes its checkpoints (and exports it on /metrics)
  uint64_t generation = 0;       // of the local copy
  std::vector<uint16_t> remote;  // other ready holders: indexes into PartitionMap::addresses
};

struct PartitionMap {
  uint32_t partitions = 0;  // 0: the node does not know the cluster's map yet
  uint64_t window_ms = 0;
  std::vector<std::string> addresses;
  std::vector<PartitionRoute> routes;  // one per partition
};

std::string encode_partition_map(const PartitionMap& map);
// nullopt when the bytes are not a map of this version (truncated, an index out of range).
std::optional<PartitionMap> decode_partition_map(std::string_view bytes);

}  // namespace server
