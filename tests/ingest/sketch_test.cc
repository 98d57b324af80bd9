// sketch_test.cc: QuantileSketch keeps its 1% relative accuracy, merges exactly, and
// handles negative values and zero.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>

#include "ingest/window/sketch.h"

using ingest::QuantileSketch;

namespace {

double exact_quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))];
}

void check_accuracy(const QuantileSketch& s, const std::vector<double>& values) {
  for (double q : {0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0}) {
    double exact = exact_quantile(values, q);
    double got = s.quantile(q);
    INFO("q=" << q << " exact=" << exact << " got=" << got);
    CHECK(std::abs(got - exact) <= 0.01 * std::abs(exact) + 1e-300);
  }
}

}  // namespace

TEST_CASE("sketch quantiles are within 1% on several distributions") {
  std::mt19937_64 rng(42);
  std::vector<std::vector<double>> sets(5);
  std::lognormal_distribution<double> lognormal(3, 2);
  std::normal_distribution<double> normal(0, 100);  // crosses zero
  std::uniform_real_distribution<double> uniform(1e-6, 1e6);
  for (int i = 0; i < 20000; ++i) {
    sets[0].push_back(lognormal(rng));
    sets[1].push_back(normal(rng));
    sets[2].push_back(uniform(rng));
    sets[3].push_back(i % 3 == 0 ? 0.0 : -lognormal(rng));  // negatives and zeros
    sets[4].push_back(std::floor(normal(rng)));              // many exact duplicates
  }
  for (const auto& values : sets) {
    QuantileSketch s;
    for (double v : values) s.add(v);
    CHECK(s.count() == values.size());
    check_accuracy(s, values);
  }
}

TEST_CASE("merged sketches answer like one sketch of all the values") {
  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal(5, 50);
  QuantileSketch a, b, all;
  std::vector<double> values;
  for (int i = 0; i < 10000; ++i) {
    double v = normal(rng);
    values.push_back(v);
    (i % 2 ? a : b).add(v);
    all.add(v);
  }
  a.merge(b);
  CHECK(a.count() == all.count());
  for (double q : {0.1, 0.5, 0.9, 0.99}) CHECK(a.quantile(q) == all.quantile(q));
  check_accuracy(a, values);
}

TEST_CASE("ordered keys sort like values and map back within 1%") {
  const double values[] = {-1e300, -5, -1, -1e-300, 0, 1e-300, 1e-5, 1, 2, 1e300};
  for (size_t i = 1; i < std::size(values); ++i)
    CHECK(QuantileSketch::key_of(values[i - 1]) < QuantileSketch::key_of(values[i]));
  for (double v : values) {
    double back = QuantileSketch::value_of(QuantileSketch::key_of(v));
    CHECK(std::abs(back - v) <= 0.01 * std::abs(v));
  }
  CHECK(QuantileSketch::key_of(0.0) == 0);
}

TEST_CASE("a store spanning too many buckets collapses its lowest ones") {
  QuantileSketch s;
  s.add(1e-300);
  s.add(1e300);  // ~69,000 buckets apart: more than kMaxBins
  s.add(1e300);
  CHECK(s.count() == 3);
  CHECK(std::abs(s.quantile(1.0) - 1e300) <= 1e298);
  CHECK(s.quantile(0.0) > 0);  // collapsed upwards, still positive
  QuantileSketch empty;
  CHECK(empty.quantile(0.5) == 0);
}

TEST_CASE("quantiles of sorted bins answer like the sketch of the same values") {
  std::mt19937_64 rng(11);
  std::normal_distribution<double> dist(0, 50);
  const double qs[] = {0.0, 0.01, 0.5, 0.9, 0.99, 1.0};
  for (size_t n : {1, 2, 3, 10, 1000}) {
    QuantileSketch sketch;
    std::vector<ingest::SketchBin> bins;
    for (size_t i = 0; i < n; ++i) {
      double v = i % 7 == 0 ? 0.0 : dist(rng);
      sketch.add(v);
      bins.push_back({QuantileSketch::key_of(v), 1});
    }
    std::sort(bins.begin(), bins.end(), [](auto a, auto b) { return a.key < b.key; });
    size_t out = 0;  // merge equal keys, as the aggregator does
    for (const auto& b : bins) {
      if (out && bins[out - 1].key == b.key) bins[out - 1].count += b.count;
      else bins[out++] = b;
    }
    bins.resize(out);
    double got[std::size(qs)];
    ingest::quantiles_of_sorted_bins(bins, n, qs, got);
    for (size_t k = 0; k < std::size(qs); ++k) {
      INFO("n=" << n << " q=" << qs[k]);
      CHECK(got[k] == sketch.quantile(qs[k]));
    }
  }
  double none[1] = {-1};
  ingest::quantiles_of_sorted_bins({}, 0, std::span<const double>(qs, 1), none);
  CHECK(none[0] == 0);
}
