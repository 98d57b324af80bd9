// common/partitions.h: where a series lives in a partitioned cluster, as pure
// functions every node computes alike: the series' partition, the partition's holders
// among the live nodes, and the hash tag that keeps a partition's keys on one Redis
// Cluster slot.
//
// What it guarantees:
//  - partition_of() depends on the canonical series key and P only: never on the nodes,
//    their number or their order. P is fixed when the cluster is created, so a series
//    never changes partition; what moves when nodes come and go is whole partitions.
//  - holders() is rendezvous (highest random weight) hashing: each node gets a weight per
//    partition, the R heaviest hold it, in order of weight (the first is the preferred
//    primary). It depends on the set of node ids, not their order. A node joining takes
//    only partitions it now outweighs someone in (about R/N of them, each from one
//    holder); a node leaving hands each of its partitions to the next heaviest node, and
//    no other partition moves.
//  - The hashes are written out in docs/architecture.md (Partitions of the data), so
//    another implementation (a client routing by itself) computes the same answers.
// What it does not: balance exactly. With P partitions over N nodes each node holds about
// P*R/N of them, within the spread of a random assignment; P well above N (the docs
// suggest 16 per node) keeps the spread small.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace common {

// FNV-1a, 64 bits, over the bytes (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
uint64_t fnv1a64(std::string_view bytes);
// The finaliser of SplitMix64: spreads every input bit over every output bit.
uint64_t splitmix64(uint64_t x);

// splitmix64(fnv1a64(series_key)) mod partitions; partitions >= 1. For the parts of a
// histogram (NAME_bucket{..,le=".."}, NAME_sum, NAME_count) the key is the family's,
// NAME{labels but le}: they are aggregated together, so they live together.
uint32_t partition_of(std::string_view series_key, uint32_t partitions);

// A node's weight for a partition: splitmix64(fnv1a64(node_id) ^ splitmix64(partition + 1)).
uint64_t holder_weight(std::string_view node_id, uint32_t partition);

// The min(replication, nodes.size()) nodes that hold `partition`, heaviest first (ties,
// which need equal 64-bit weights, go to the smaller id). Duplicate ids count once.
std::vector<std::string> holders(uint32_t partition, const std::vector<std::string>& nodes, uint32_t replication);

// The partitions a node holds, ascending.
std::vector<uint32_t> held_by(std::string_view node_id, const std::vector<std::string>& nodes, uint32_t partitions,
                              uint32_t replication);

// The prefix of every key of one partition: "{NAME:P}" (a Redis Cluster hash tag, so the
// partition's keys share a slot and its Lua scripts stay atomic).
std::string partition_tag(std::string_view cluster_name, uint32_t partition);

}  // namespace common
