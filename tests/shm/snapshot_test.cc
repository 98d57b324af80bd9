// Tests of the snapshot format: builder, view, and corrupt or truncated buffers.
#include <catch2/catch.hpp>
#include <cstring>
#include <fmt/format.h>
#include <random>

#include "shm/layout.h"

using namespace shm;

namespace {
SnapshotBuilder sample(size_t n) {
  SnapshotBuilder b;
  for (size_t i = 0; i < n; ++i) b.add(fmt::format("key-{}", i), fmt::format("{{\"value\":{}}}", i));
  return b;
}

// The keys key-FROM, key-(FROM+STEP), ... below n: what a list of the sample refers to.
std::vector<std::string> every_nth_key(size_t n, size_t from, size_t step) {
  std::vector<std::string> keys;
  for (size_t i = from; i < n; i += step) keys.push_back(fmt::format("key-{}", i));
  return keys;
}
}  // namespace

TEST_CASE("records round-trip through the format", "[snapshot]") {
  SnapshotBuilder b = sample(1000);
  b.add_list("odd", every_nth_key(1000, 1, 2));
  auto bytes = b.serialize(7, 1234);
  REQUIRE(bytes.size() == b.serialized_size());
  SnapshotView v(bytes);
  CHECK(v.generation() == 7);
  CHECK(v.built_at_ns() == 1234);
  CHECK(v.record_count() == 1000);
  CHECK(v.list_count() == 1);
  std::string why;
  CHECK(v.verify(&why));
  for (int i = 0; i < 1000; ++i) {
    auto val = v.find(fmt::format("key-{}", i));
    REQUIRE(val);
    CHECK(*val == fmt::format("{{\"value\":{}}}", i));
    auto r = v.record(size_t(i));
    REQUIRE(r);
    CHECK(r->key == fmt::format("key-{}", i));
  }
  CHECK_FALSE(v.find("key-1000"));
  CHECK_FALSE(v.find(""));
  auto list = v.list("odd");
  REQUIRE(list.size() == 500);
  CHECK(list[0].key == "key-1");
  CHECK(list[499].value == "{\"value\":999}");
  CHECK(v.list("even").empty());
  CHECK(v.list_names() == std::vector<std::string_view>{"odd"});
}

TEST_CASE("a key added twice keeps its last value", "[snapshot]") {
  SnapshotBuilder b;
  b.add("a", "first");
  b.add("b", "x");
  b.add("a", "second, longer");
  auto bytes = b.serialize(1, 0);
  REQUIRE(bytes.size() == b.serialized_size());
  SnapshotView v(bytes);
  CHECK(v.record_count() == 2);
  CHECK(*v.find("a") == "second, longer");
  CHECK(v.verify());
}

TEST_CASE("add() with the hash prefetch() returned builds the same snapshot", "[snapshot]") {
  SnapshotBuilder plain, hinted;
  for (int round = 0; round < 2; ++round) {  // the second round replaces every value
    for (int i = 0; i < 300; ++i) {
      std::string key = fmt::format("s:m{{h=\"{}\"}}", i), value = fmt::format("{}-{}", round, i);
      uint32_t a = plain.add(key, value);
      uint32_t b = hinted.add(key, value, hinted.prefetch(key));
      CHECK(a == b);
    }
  }
  CHECK(plain.serialize(3, 9) == hinted.serialize(3, 9));
  auto bytes = hinted.serialize(3, 9);
  SnapshotView v(bytes);
  CHECK(v.record_count() == 300);
  CHECK(*v.find("s:m{h=\"17\"}") == "1-17");
}

TEST_CASE("an empty snapshot is valid", "[snapshot]") {
  SnapshotBuilder b;
  auto bytes = b.serialize(1, 0);
  SnapshotView v(bytes);
  CHECK(v.record_count() == 0);
  CHECK_FALSE(v.find("x"));
  CHECK(v.verify());
}

TEST_CASE("a list naming a missing record is refused", "[snapshot]") {
  SnapshotBuilder b;
  b.add("a", "1");
  std::vector<std::string> keys{"a", "missing"};
  CHECK_THROWS_AS(b.add_list("l", keys), Error);
}

TEST_CASE("the format is position independent: a copy reads the same", "[snapshot]") {
  auto bytes = sample(100).serialize(3, 5);
  std::vector<std::byte> copy(bytes.size() + 8);
  std::memcpy(copy.data() + 8, bytes.data(), bytes.size());  // another address, 8-aligned
  SnapshotView v{std::span<const std::byte>(copy).subspan(8)};
  CHECK(v.verify());
  CHECK(*v.find("key-42") == "{\"value\":42}");
}

TEST_CASE("truncated buffers are errors and not crashes", "[snapshot]") {
  auto bytes = sample(50).serialize(1, 0);
  for (size_t n : {size_t(0), size_t(10), size_t(63), size_t(64), bytes.size() / 2, bytes.size() - 1}) {
    std::string why;
    CHECK_FALSE(SnapshotView::open(std::span(bytes).first(n), &why));
    CHECK_FALSE(why.empty());
    CHECK_THROWS_AS(SnapshotView{std::span<const std::byte>(bytes).first(n)}, Error);
  }
}

TEST_CASE("corrupt headers are refused with a reason", "[snapshot]") {
  auto good = sample(50).serialize(1, 0);
  auto corrupt = [&](size_t at, uint32_t value) {
    auto b = good;
    std::memcpy(b.data() + at, &value, 4);
    std::string why;
    bool ok = SnapshotView::open(b, &why).has_value();
    return ok ? std::string() : why;
  };
  CHECK(corrupt(offsetof(SnapshotHeader, magic), 0) == "not a snapshot (wrong magic)");
  CHECK_THAT(corrupt(offsetof(SnapshotHeader, format_version), 99), Catch::Contains("format version 99"));
  CHECK_THAT(corrupt(offsetof(SnapshotHeader, record_buckets), 1000), Catch::Contains("power of two"));
  CHECK_THAT(corrupt(offsetof(SnapshotHeader, record_count), 1u << 20), Catch::Contains("overfull"));
  CHECK_THAT(corrupt(offsetof(SnapshotHeader, record_buckets), 1u << 30), Catch::Contains("past the end"));
}

TEST_CASE("random corruption of the body never reads out of bounds", "[snapshot]") {
  SnapshotBuilder b = sample(200);
  b.add_list("some", every_nth_key(200, 0, 3));
  auto good = b.serialize(9, 0);
  std::mt19937_64 rng(42);
  int detected = 0;
  for (int round = 0; round < 2000; ++round) {
    auto bad = good;
    for (int k = 0; k < 4; ++k) {
      size_t at = sizeof(SnapshotHeader) + rng() % (bad.size() - sizeof(SnapshotHeader));
      bad[at] = std::byte(rng());
    }
    auto v = SnapshotView::open(bad, nullptr);
    REQUIRE(v);  // the header is intact
    // Every accessor must stay in bounds (ASan checks) whatever the body holds.
    for (int i = 0; i < 200; i += 7) (void)v->find(fmt::format("key-{}", i));
    for (size_t i = 0; i < v->record_count(); ++i) (void)v->record(i);
    (void)v->list("some");
    (void)v->list_names();
    if (!v->verify()) ++detected;
  }
  CHECK(detected == 2000);  // the checksum catches every change
}

TEST_CASE("hash_bytes is stable across calls and sensitive to every byte", "[snapshot]") {
  std::string s(100, 'x');
  uint64_t h = hash_bytes(s.data(), s.size());
  CHECK(h == hash_bytes(s.data(), s.size()));
  for (size_t i = 0; i < s.size(); ++i) {
    std::string t = s;
    t[i] = 'y';
    CHECK(hash_bytes(t.data(), t.size()) != h);
  }
  CHECK(hash_bytes(s.data(), s.size(), 1) != h);
}
