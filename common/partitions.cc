// common/partitions.cc: the partition of a series and the holders of a partition
// (partitions.h). Plain arithmetic on purpose: every node, and any client that routes by
// itself, must get the same answers from the definitions in docs/architecture.md.
#include "common/partitions.h"

#include <algorithm>
#include <stdexcept>

namespace common {

uint64_t fnv1a64(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint32_t partition_of(std::string_view series_key, uint32_t partitions) {
  if (partitions == 0) throw std::invalid_argument("partition_of: no partitions");
  return uint32_t(splitmix64(fnv1a64(series_key)) % partitions);
}

uint64_t holder_weight(std::string_view node_id, uint32_t partition) {
  return splitmix64(fnv1a64(node_id) ^ splitmix64(uint64_t(partition) + 1));
}

std::vector<std::string> holders(uint32_t partition, const std::vector<std::string>& nodes, uint32_t replication) {
  std::vector<std::pair<uint64_t, const std::string*>> weighted;
  weighted.reserve(nodes.size());
  for (const std::string& id : nodes) weighted.emplace_back(holder_weight(id, partition), &id);
  std::sort(weighted.begin(), weighted.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : *a.second < *b.second;
  });
  std::vector<std::string> out;
  for (const auto& [weight, id] : weighted) {
    if (out.size() == replication) break;
    if (std::find(out.begin(), out.end(), *id) == out.end()) out.push_back(*id);
  }
  return out;
}

std::vector<uint32_t> held_by(std::string_view node_id, const std::vector<std::string>& nodes, uint32_t partitions,
                              uint32_t replication) {
  std::vector<uint32_t> held;
  for (uint32_t p = 0; p < partitions; ++p) {
    std::vector<std::string> h = holders(p, nodes, replication);
    if (std::find(h.begin(), h.end(), node_id) != h.end()) held.push_back(p);
  }
  return held;
}

std::string partition_tag(std::string_view cluster_name, uint32_t partition) {
  std::string tag = "{";
  tag.append(cluster_name).append(":").append(std::to_string(partition)).append("}");
  return tag;
}

}  // namespace common
