// synthetic.cc: deterministic realistic telemetry for the default source.
#include "ingest/source/synthetic.h"

#include <charconv>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

namespace ingest {

namespace {

struct MetricKind {
  const char* name;
  bool counter;
  double base, scale;  // typical level and step size
};

constexpr MetricKind kKinds[] = {
    {"cpu.usage_percent", false, 35, 4},
    {"mem.used_bytes", false, 6e9, 5e7},
    {"http.requests_total", true, 0, 120},
    {"http.latency_ms", false, 45, 6},
    {"disk.io_ops_total", true, 0, 300},
    {"temperature_celsius", false, 58, 0.7},
    {"net.rx_bytes_total", true, 0, 2e6},
    {"queue.depth", false, 12, 3},
    {"gc.pause_ms", false, 4, 1.5},
    {"errors_total", true, 0, 0.8},
};
constexpr const char* kDcs[] = {"eu-west", "us-east", "ap-south"};
constexpr const char* kServices[] = {"api", "auth", "billing", "search", "web"};
constexpr size_t kMaxSeries = 10'000'000;

size_t query_param(std::string_view query, std::string_view name, size_t fallback) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    size_t eq = pair.find('=');
    if (pair.substr(0, eq) != name) continue;
    std::string_view text = eq == std::string_view::npos ? "" : pair.substr(eq + 1);
    size_t n = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc() || end != text.data() + text.size())
      throw std::invalid_argument(fmt::format("synthetic source: bad {}='{}'", name, text));
    return n;
  }
  return fallback;
}

}  // namespace

SyntheticSource::SyntheticSource(std::string_view url) {
  constexpr std::string_view scheme = "synthetic://";
  if (url.substr(0, scheme.size()) != scheme)
    throw std::invalid_argument("not a synthetic:// URL: " + std::string(url));
  std::string_view rest = url.substr(scheme.size());
  size_t q = rest.find('?');
  std::string_view query = q == std::string_view::npos ? "" : rest.substr(q + 1);
  for (std::string_view pair = query; !pair.empty();) {
    size_t amp = pair.find('&');
    std::string_view name = pair.substr(0, std::min(amp, pair.find('=')));
    if (name != "hosts" && name != "metrics" && name != "seed")
      throw std::invalid_argument("synthetic source: unknown parameter '" +
                                  std::string(name) + "' (hosts, metrics, seed)");
    pair = amp == std::string_view::npos ? std::string_view() : pair.substr(amp + 1);
  }
  hosts_ = query_param(query, "hosts", 10);
  metrics_ = query_param(query, "metrics", 10);
  state_ = query_param(query, "seed", 1);
  if (hosts_ == 0 || metrics_ == 0 || hosts_ * metrics_ > kMaxSeries || hosts_ > kMaxSeries ||
      metrics_ > kMaxSeries)
    throw std::invalid_argument("synthetic source: hosts x metrics must be 1..10000000");

  for (size_t m = 0; m < metrics_; ++m) {
    const MetricKind& kind = kKinds[m % std::size(kKinds)];
    metric_names_.push_back(m < std::size(kKinds)
                                ? std::string(kind.name)
                                : fmt::format("{}.{}", kind.name, m / std::size(kKinds)));
    counter_.push_back(kind.counter);
    base_.push_back(kind.base);
    scale_.push_back(kind.scale);
  }
  label_text_.reserve(hosts_);
  for (size_t h = 0; h < hosts_; ++h) label_text_.push_back(fmt::format("host-{:05}", h));
  labels_.reserve(hosts_ * 3);
  for (size_t h = 0; h < hosts_; ++h) {
    labels_.push_back({"dc", kDcs[h % std::size(kDcs)]});
    labels_.push_back({"host", label_text_[h]});
    labels_.push_back({"service", kServices[(h / 3) % std::size(kServices)]});
  }
  values_.resize(hosts_ * metrics_);
  for (size_t h = 0; h < hosts_; ++h)
    for (size_t m = 0; m < metrics_; ++m)
      values_[h * metrics_ + m] =
          counter_[m] ? std::floor(uniform() * 1e6) : base_[m] * (0.7 + 0.6 * uniform());
  samples_.resize(values_.size());
}

uint64_t SyntheticSource::next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double SyntheticSource::uniform() { return static_cast<double>(next() >> 11) * 0x1p-53; }

std::span<const Sample> SyntheticSource::generate(int64_t ts_ns) {
  for (size_t h = 0; h < hosts_; ++h) {
    std::span<const Label> labels(labels_.data() + 3 * h, 3);
    for (size_t m = 0; m < metrics_; ++m) {
      double& v = values_[h * metrics_ + m];
      double noise = uniform() - 0.5;
      if (counter_[m]) {
        v += std::floor(scale_[m] * (0.5 + uniform()));  // never decreases
      } else {
        // Mean-reverting walk: drifts, but stays around the metric's typical level.
        v += scale_[m] * noise + 0.05 * (base_[m] - v);
        if (v < 0) v = -v;
      }
      Sample& s = samples_[h * metrics_ + m];
      s.metric = metric_names_[m];
      s.labels = labels;
      s.value = v;
      s.ts_ns = ts_ns;
    }
  }
  return samples_;
}

}  // namespace ingest
