// tests/common/partitions_test.cc: the partition of a series and the holders of a
// partition (common/partitions.h): the published definitions, spread, and how little
// moves when a node joins or leaves.
#include <algorithm>
#include <map>
#include <random>
#include <set>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "common/partitions.h"

using namespace common;

namespace {
std::vector<std::string> node_ids(int n, const std::string& prefix = "node-") {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) ids.push_back(fmt::format("{}{}", prefix, i));
  return ids;
}
}  // namespace

TEST_CASE("the hashes are the published ones (FNV-1a 64 and SplitMix64's test vectors)") {
  CHECK(fnv1a64("") == 0xcbf29ce484222325ULL);
  CHECK(fnv1a64("a") == 0xaf63dc4c8601ec8cULL);
  CHECK(fnv1a64("foobar") == 0x85944171f73967e8ULL);
  CHECK(splitmix64(0) == 0xe220a8397b1dcdafULL);  // SplitMix64's first output from seed 0
  CHECK(partition_of("cpu{host=\"a\"}", 16) == splitmix64(fnv1a64("cpu{host=\"a\"}")) % 16);
  CHECK(partition_tag("telemetryd", 7) == "{telemetryd:7}");
  CHECK_THROWS_AS(partition_of("x", 0), std::invalid_argument);
}

TEST_CASE("series spread evenly over the partitions") {
  for (uint32_t partitions : {1u, 16u, 100u}) {
    std::vector<int> count(partitions);
    const int keys = 200000;
    for (int i = 0; i < keys; ++i) ++count[partition_of(fmt::format("m{}{{host=\"h{}\"}}", i % 97, i), partitions)];
    double mean = double(keys) / partitions;
    for (int c : count) CHECK(std::abs(c - mean) < 0.05 * mean + 60);
  }
}

TEST_CASE("holders: R distinct nodes, the same whatever the order of the member list") {
  std::vector<std::string> nodes = node_ids(5);
  std::mt19937 rng(7);
  for (uint32_t p = 0; p < 64; ++p) {
    std::vector<std::string> h = holders(p, nodes, 2);
    REQUIRE(h.size() == 2);
    CHECK(h[0] != h[1]);
    CHECK(holder_weight(h[0], p) >= holder_weight(h[1], p));
    std::vector<std::string> shuffled = nodes;
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    shuffled.push_back(nodes[p % 5]);  // a duplicate counts once
    CHECK(holders(p, shuffled, 2) == h);
  }
  CHECK(holders(3, node_ids(1), 2).size() == 1);  // fewer nodes than R: every node holds
  CHECK(holders(3, {}, 2).empty());
}

TEST_CASE("each node holds about P*R/N partitions") {
  const uint32_t partitions = 256, replication = 2;
  std::vector<std::string> nodes = node_ids(4);
  size_t total = 0;
  for (const std::string& id : nodes) {
    size_t held = held_by(id, nodes, partitions, replication).size();
    total += held;
    CHECK(held > 128 * 0.8);
    CHECK(held < 128 * 1.2);
  }
  CHECK(total == partitions * replication);
}

TEST_CASE("a node joining takes partitions only from one holder each; a node leaving moves only its own") {
  const uint32_t partitions = 512, replication = 2;
  std::vector<std::string> before = node_ids(4);
  std::vector<std::string> after = before;
  after.push_back("node-new");
  int moved = 0;
  for (uint32_t p = 0; p < partitions; ++p) {
    std::vector<std::string> a = holders(p, before, replication), b = holders(p, after, replication);
    std::set<std::string> sa(a.begin(), a.end()), sb(b.begin(), b.end());
    if (sa == sb) continue;
    ++moved;
    // The only change: the new node in, one old holder out.
    CHECK(sb.count("node-new") == 1);
    std::vector<std::string> gone;
    std::set_difference(sa.begin(), sa.end(), sb.begin(), sb.end(), std::back_inserter(gone));
    CHECK(gone.size() == 1);
  }
  // About R/N of the partitions get the new node (2/5 of 512 = 205).
  CHECK(moved > 205 * 0.75);
  CHECK(moved < 205 * 1.25);

  // node-2 leaves: the partitions it did not hold keep their holders, in order.
  std::vector<std::string> left = {"node-0", "node-1", "node-3"};
  for (uint32_t p = 0; p < partitions; ++p) {
    std::vector<std::string> a = holders(p, before, replication), b = holders(p, left, replication);
    if (std::find(a.begin(), a.end(), "node-2") == a.end()) {
      CHECK(a == b);
    } else {
      // The other holder stays; the next heaviest node comes in.
      for (const std::string& id : a)
        if (id != "node-2") CHECK(std::find(b.begin(), b.end(), id) != b.end());
    }
  }
}
