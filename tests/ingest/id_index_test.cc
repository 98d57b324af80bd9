// id_index_test.cc: the Replica dictionary's index (ingest/replica/id_index.h) against a
// std::unordered_map, through adds, finds and erases that force long probe runs.
#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "ingest/replica/id_index.h"

using namespace ingest;

TEST_CASE("id index - finds, adds and erases as a map does, across growth and wrapped probe runs") {
  std::vector<std::string> keys;
  for (int i = 0; i < 3000; ++i) keys.push_back("series_" + std::to_string(i) + "{k=\"v\"}");
  auto key_of = [&keys](uint32_t id) -> std::string_view { return keys[id]; };
  IdIndex index;
  std::unordered_map<std::string, uint32_t> want;
  std::mt19937 rng(7);
  // 3000 keys in a table that grows from 1024 slots, then erases and adds interleaved:
  // backward-shift deletion moves entries across the table's end too.
  for (int step = 0; step < 40000; ++step) {
    const auto id = static_cast<uint32_t>(rng() % keys.size());
    const bool add = step < 3000 ? true : rng() % 2 == 0;
    if (add) {
      const bool added = index.insert(keys[id], id, key_of);
      CHECK(added == want.emplace(keys[id], id).second);
    } else {
      index.erase(keys[id], key_of);
      want.erase(keys[id]);
    }
    if (step % 997 == 0) {
      REQUIRE(index.size() == want.size());
      for (uint32_t k = 0; k < keys.size(); ++k) {
        auto it = want.find(keys[k]);
        REQUIRE(index.find(keys[k], key_of) == (it == want.end() ? IdIndex::kAbsent : it->second));
      }
    }
  }
  CHECK(index.find("absent", key_of) == IdIndex::kAbsent);
  IdIndex reserved;
  reserved.reserve(keys.size());
  for (uint32_t k = 0; k < keys.size(); ++k) CHECK(reserved.insert(keys[k], k, key_of));
  CHECK_FALSE(reserved.insert(keys[5], 5, key_of));
  CHECK(reserved.size() == keys.size());
  for (uint32_t k = 0; k < keys.size(); ++k) CHECK(reserved.find(keys[k], key_of) == k);
}
