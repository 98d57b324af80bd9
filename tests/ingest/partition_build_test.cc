// partition_build_test.cc: one snapshot over several aggregators (ingest/window/window.h,
// build_parts): a split of one aggregator's series gives that aggregator's bytes,
// whatever the number of parts, their order and the build's threads; each part's
// series are rendered at its own clock; empty parts and no parts.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>

#include "common/partitions.h"
#include "ingest/internal.h"
#include "tests/ingest/partition_util.h"
#include "tests/ingest/test_util.h"

using namespace ingest;
using namespace ingest_test;

namespace {

int64_t clock_of(uint64_t tick) { return kT0 + int64_t(tick) * kSec; }

Config build_config(size_t threads) {
  Config c = small_config();
  c.writer_threads = threads;
  return c;
}

// A histogram per host (lat, 4 buckets, _sum and _count), its counts growing with the
// tick; every fifth host has bounds of its own, so that the rollup's bounds differ.
struct HistogramTick {
  std::deque<std::string> text;
  std::vector<std::vector<Label>> labels;
  std::vector<Sample> samples;
};
HistogramTick histogram_tick(uint64_t tick, int hosts) {
  HistogramTick t;
  t.labels.reserve(size_t(hosts) * 6);
  for (int h = 0; h < hosts; ++h) {
    const std::string& host = t.text.emplace_back(fmt::format("h{}", h));
    const char* const bounds[] = {"0.1", h % 5 == 4 ? "0.3" : "0.5", "1", "+Inf"};
    double cumulative = 0;
    for (int b = 0; b < 4; ++b) {
      cumulative += double((tick * (b + 1) + uint64_t(h)) % 7 + tick);
      t.labels.push_back({Label{"host", host}, Label{"le", bounds[b]}});
      Sample s;
      s.metric = "lat";
      s.suffix = "_bucket";
      s.labels = t.labels.back();
      s.kind = SampleKind::bucket;
      s.value = cumulative;
      t.samples.push_back(s);
    }
    t.labels.push_back({Label{"host", host}});
    for (const char* suffix : {"_sum", "_count"}) {
      Sample s;
      s.metric = "lat";
      s.suffix = suffix;
      s.labels = t.labels.back();
      s.kind = SampleKind::counter;
      s.value = suffix[1] == 's' ? cumulative * 0.37 : cumulative;
      t.samples.push_back(s);
    }
  }
  return t;
}

// The part of a sample: its series key's partition; a histogram's samples go by their
// family's key (its name and labels but le), so that a histogram stays whole in one
// part, as its aggregate needs its buckets and _sum beside it.
uint32_t part_of(const Sample& s, uint32_t parts) {
  std::vector<Label> scratch, family;
  std::span<const Label> labels = sorted_sample_labels(s, scratch);
  std::string key;
  if (s.suffix.empty()) {
    append_series_key(key, s.metric, s.suffix, labels);
  } else {
    for (const Label& l : labels)
      if (l.name != "le") family.push_back(l);
    append_series_key(key, s.metric, {}, family);
  }
  return common::partition_of(key, parts);
}

// Feeds the same samples to one aggregator and, split by part_of(), to `parts`: three
// sources of 300 series (churn), a fourth that stops at tick 12 (its series expire), and
// histograms; returns the clock of the last tick.
int64_t feed(Aggregator& whole, std::vector<Aggregator>& parts, uint64_t ticks) {
  const auto n = static_cast<uint32_t>(parts.size());
  std::vector<std::vector<Sample>> split(n);
  auto apply = [&](uint32_t source, std::span<const Sample> samples, int64_t clock) {
    whole.apply(source, samples, clock);
    for (auto& v : split) v.clear();
    for (const Sample& s : samples) split[part_of(s, n)].push_back(s);
    for (uint32_t p = 0; p < n; ++p) parts[p].apply(source, split[p], clock);
  };
  for (uint64_t tick = 1; tick <= ticks; ++tick) {
    const int64_t clock = clock_of(tick);
    for (int source = 0; source < 4; ++source) {
      if (source == 3 && tick > 12) continue;
      SourceTick t = source_tick(source, tick, 300, clock);
      apply(uint32_t(source), t.samples, clock);
    }
    HistogramTick h = histogram_tick(tick, 20);
    apply(9, h.samples, clock);
    if (tick % 5 == 0) {
      whole.expire(clock);
      for (uint32_t p = 0; p < n; ++p) parts[p].expire(clock);
    }
  }
  return clock_of(ticks);
}

std::vector<Aggregator> aggregators(uint32_t n, size_t threads) {
  std::vector<Aggregator> out;
  for (uint32_t p = 0; p < n; ++p) out.emplace_back(build_config(threads));
  return out;
}

std::vector<std::byte> bytes_of(const shm::SnapshotBuilder& b) { return b.serialize(1, 0); }

// Bytes equal, or the first record that differs named.
void check_same(const shm::SnapshotBuilder& got, const shm::SnapshotBuilder& want) {
  std::vector<std::byte> g = bytes_of(got), w = bytes_of(want);
  if (g == w) return;
  shm::SnapshotView gv(g), wv(w);
  CHECK(gv.record_count() == wv.record_count());
  for (size_t i = 0; i < std::min(gv.record_count(), wv.record_count()); ++i) {
    std::optional<shm::Record> a = gv.record(i), b = wv.record(i);
    REQUIRE(a);
    REQUIRE(b);
    if (a->key != b->key || a->value != b->value) {
      INFO("record " << i << ": " << a->key << " = " << a->value << "\nwanted " << b->key
                     << " = " << b->value);
      CHECK(false);
      return;
    }
  }
  CHECK(g == w);  // the lists, then
}

std::vector<AggregatorPart> parts_at(std::vector<Aggregator>& aggs, int64_t now) {
  std::vector<AggregatorPart> out;
  for (Aggregator& a : aggs) out.push_back(AggregatorPart{&a, now});
  return out;
}

}  // namespace

TEST_CASE("partition snapshot (build_parts): a split of one aggregator's series over P parts gives its bytes (P = 1 3 8)") {
  for (uint32_t n : {1u, 3u, 8u}) {
    INFO("parts " << n);
    Aggregator whole(build_config(1));
    std::vector<Aggregator> parts = aggregators(n, 2);
    const int64_t now = feed(whole, parts, 30);
    shm::SnapshotBuilder want, got;
    whole.build(want, now);
    std::vector<AggregatorPart> given = parts_at(parts, now);
    build_parts(got, given);
    check_same(got, want);
    size_t held = 0;
    for (const Aggregator& a : parts) held += a.series_count();
    CHECK(held == whole.series_count());
    CHECK(whole.series_count() > 900);  // source 3's series expired, the others kept
    CHECK(whole.series_count() < 1200);
    // The histogram rollup is there, without an estimate (its series' bounds differ).
    const std::vector<std::byte> bytes = bytes_of(got);
    shm::SnapshotView view(bytes);
    std::optional<std::string_view> lat = view.find("m:lat");
    REQUIRE(lat);
    CHECK(lat->find("\"p50\":null") != std::string_view::npos);
    CHECK(lat->find("\"series_count\":20,") != std::string_view::npos);
    // A later build at the next tick still matches (the parts keep their state).
    whole.build(want, now + kSec);
    std::vector<AggregatorPart> later = parts_at(parts, now + kSec);
    build_parts(got, later);
    check_same(got, want);
  }
}

TEST_CASE("partition snapshot (build_parts): the bytes depend neither on the order of the parts nor on the build's threads") {
  Aggregator whole(build_config(1));
  std::vector<Aggregator> parts = aggregators(5, 3);
  const int64_t now = feed(whole, parts, 20);
  shm::SnapshotBuilder want, got;
  whole.build(want, now);
  std::vector<AggregatorPart> given = parts_at(parts, now);
  std::mt19937 rng(7);
  for (int round = 0; round < 4; ++round) {
    std::shuffle(given.begin(), given.end(), rng);
    build_parts(got, given);
    check_same(got, want);
  }
  // The first part leads the build with its threads: one thread now.
  Aggregator single(build_config(1));
  given.insert(given.begin(), AggregatorPart{&single, now});
  build_parts(got, given);
  check_same(got, want);
}

TEST_CASE("partition snapshot (build_parts): each part's series are rendered at its own clock - rollups over all of them") {
  // Two copies of the same two parts: one pair built together at two clocks, the other
  // each alone at its clock.
  Aggregator whole_a(build_config(1)), whole_b(build_config(1));
  std::vector<Aggregator> together = aggregators(2, 1), alone = aggregators(2, 1);
  const int64_t last = feed(whole_a, together, 14);
  feed(whole_b, alone, 14);
  const int64_t early = last, late = last + 5 * kSec;  // part 1's series stale at its clock
  std::vector<AggregatorPart> given{{&together[0], early}, {&together[1], late}};
  shm::SnapshotBuilder got, first, second;
  build_parts(got, given);
  alone[0].build(first, early);
  alone[1].build(second, late);
  const std::vector<std::byte> g_bytes = bytes_of(got), a_bytes = bytes_of(first),
                               b_bytes = bytes_of(second);
  shm::SnapshotView g(g_bytes), a(a_bytes), b(b_bytes);
  auto check_series = [&](const shm::SnapshotView& part, bool stale) {
    std::vector<shm::Record> series = part.list("series");
    REQUIRE(series.size() > 100);
    size_t stale_bodies = 0;
    for (const shm::Record& r : series) {
      std::optional<std::string_view> body = g.find(r.key);
      REQUIRE(body);
      CHECK(*body == r.value);
      stale_bodies += r.value.find("\"stale\":true") != std::string_view::npos;
    }
    if (stale) CHECK(stale_bodies == series.size());
    else CHECK(stale_bodies < series.size() / 4);
  };
  check_series(a, false);
  check_series(b, true);
  CHECK(g.list("series").size() == a.list("series").size() + b.list("series").size());
  // A metric's list holds the series of both parts, its count too.
  for (const char* metric : {"m:m0", "m:m1", "m:lat"}) {
    INFO(metric);
    const size_t both = a.list(metric).size() + b.list(metric).size();
    CHECK(g.list(metric).size() == both);
    std::optional<std::string_view> rollup = g.find(metric);
    REQUIRE(rollup);
    CHECK(rollup->find(fmt::format("\"series_count\":{},", both)) != std::string_view::npos);
  }
}

TEST_CASE("partition snapshot (build_parts): empty parts add nothing - no parts give an empty snapshot") {
  Aggregator whole(build_config(1));
  std::vector<Aggregator> parts = aggregators(2, 1);
  const int64_t now = feed(whole, parts, 8);
  Aggregator empty_a(build_config(1)), empty_b(build_config(2));
  shm::SnapshotBuilder want, got;
  whole.build(want, now);
  std::vector<AggregatorPart> given{{&empty_a, now}, {&parts[0], now}, {&empty_b, now - kSec},
                                    {&parts[1], now}};
  build_parts(got, given);
  check_same(got, want);

  Aggregator nothing(build_config(1));
  nothing.build(want, now);
  std::vector<AggregatorPart> none;
  build_parts(got, none);
  check_same(got, want);
  std::vector<AggregatorPart> only_empty{{&empty_a, now}, {&empty_b, now}};
  build_parts(got, only_empty);
  check_same(got, want);
  const std::vector<std::byte> bytes = bytes_of(got);
  shm::SnapshotView view(bytes);
  CHECK(view.list("series").empty());
  CHECK(view.find("metrics") == std::optional<std::string_view>("{\"metrics\":[]}"));
}

TEST_CASE("partition snapshot (build_parts): a key in two parts or unlike windows are refused - the builder kept") {
  Aggregator whole(build_config(1));
  std::vector<Aggregator> parts = aggregators(2, 1);
  const int64_t now = feed(whole, parts, 6);
  shm::SnapshotBuilder got;
  std::vector<AggregatorPart> fine = parts_at(parts, now);
  build_parts(got, fine);
  const std::vector<std::byte> before = bytes_of(got);
  std::vector<AggregatorPart> twice{{&parts[0], now}, {&parts[1], now}, {&whole, now}};
  CHECK_THROWS_WITH(build_parts(got, twice), Catch::Contains("is in two parts"));
  CHECK(bytes_of(got) == before);
  Config wide = small_config();
  wide.window = std::chrono::milliseconds(20000);
  Aggregator other(wide);
  std::vector<AggregatorPart> unlike{{&parts[0], now}, {&other, now}};
  CHECK_THROWS_AS(build_parts(got, unlike), std::invalid_argument);
  std::vector<AggregatorPart> null_part{{&parts[0], now}, {nullptr, now}};
  CHECK_THROWS_AS(build_parts(got, null_part), std::invalid_argument);
  CHECK(bytes_of(got) == before);
}

// What routing each sample by its own key would give a histogram: its buckets in several
// parts, each making the histogram's series from the buckets it has. Refused, not
// rendered as several partial histograms under one key.
TEST_CASE("partition snapshot (build_parts): a histogram whose buckets were split over parts is refused") {
  std::vector<Aggregator> parts = aggregators(4, 1);
  std::vector<std::vector<Sample>> split(4);
  HistogramTick h = histogram_tick(1, 20);
  std::string key;
  std::vector<Label> scratch;
  for (const Sample& s : h.samples) {
    key.clear();
    append_series_key(key, s.metric, s.suffix, sorted_sample_labels(s, scratch));
    split[common::partition_of(key, 4)].push_back(s);
  }
  for (uint32_t p = 0; p < 4; ++p) parts[p].apply(0, split[p], clock_of(1));
  shm::SnapshotBuilder got;
  std::vector<AggregatorPart> given = parts_at(parts, clock_of(1));
  CHECK_THROWS_WITH(build_parts(got, given), Catch::Contains("lat{host=") && Catch::Contains("is in two parts"));
}
