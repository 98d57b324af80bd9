// fuzz_prometheus: any bytes as a Prometheus text (or OpenMetrics) body, through the
// parser, the aggregator (twice, so that counters, resets and histograms have a window)
// and the snapshot build. Checks what must hold whatever the input: no crash, a refused
// body yields no samples and says why, only finite values, kinds that fit their
// samples, canonical keys (they parse back), a serializable snapshot, and Prometheus
// text that Prometheus takes whole (prom_text_check.h).
#include <cmath>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "ingest/ingest.h"
#include "tests/ingest/fuzz/prom_text_check.h"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  static ingest::Parser parser;
  std::string_view body(reinterpret_cast<const char*>(data), size);
  const char* type = size % 2 ? "application/openmetrics-text; version=1.0.0"
                              : "text/plain; version=0.0.4";
  ingest::ParseResult r = parser.parse(body, type);
  if (r.format != ingest::Format::prometheus) std::abort();
  if (!r.ok && (!parser.samples().empty() || r.error.empty())) std::abort();
  if (r.rejected && r.error.rfind("line ", 0) != 0) std::abort();
  for (const ingest::Sample& s : parser.samples()) {
    if (!std::isfinite(s.value)) std::abort();
    if (s.kind == ingest::SampleKind::histogram) std::abort();
    if (s.kind != ingest::SampleKind::gauge && s.value < 0) std::abort();
    if (s.kind == ingest::SampleKind::bucket && s.suffix != "_bucket") std::abort();
  }

  ingest::Config config;
  config.max_series = 10'000;
  ingest::Aggregator agg(config);
  const int64_t now = 1'732'700'000'000'000'000;
  agg.apply(0, parser.samples(), now);
  agg.apply(0, parser.samples(), now + 1'000'000'000);
  prom_text_check::check_snapshot(agg, now + 1'000'000'000, true);
  return 0;
}
