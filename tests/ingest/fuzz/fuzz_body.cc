// fuzz_body: any bytes through the body parser, the aggregator and the snapshot build.
// Checks what must hold whatever the input: no crash, only finite values, every key
// canonical (it parses back), a serializable snapshot, and Prometheus text that
// Prometheus takes whole (prom_text_check.h).
#include <cmath>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "ingest/ingest.h"
#include "tests/ingest/fuzz/prom_text_check.h"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  static ingest::Parser parser;
  std::string_view body(reinterpret_cast<const char*>(data), size);
  ingest::ParseResult r = parser.parse(body, size % 2 ? "application/json" : "");
  if (!r.ok && !parser.samples().empty()) std::abort();
  if (!r.ok && r.error.empty()) std::abort();
  for (const ingest::Sample& s : parser.samples())
    if (!std::isfinite(s.value)) std::abort();

  ingest::Config config;
  config.max_series = 10'000;
  ingest::Aggregator agg(config);
  const int64_t now = 1'732'700'000'000'000'000;
  agg.apply(0, parser.samples(), now);
  prom_text_check::check_snapshot(agg, now, false);
  return 0;
}
