// fuzz_otlp_proto: any bytes as an OTLP/protobuf metrics request, through the decoder,
// the delta running totals, the aggregator (twice, so that counters and histograms
// have a window) and the snapshot build. Checks what must hold whatever the input: no
// crash, a refused body yields no samples and says why, only finite values, kinds that
// fit their samples, canonical keys (they parse back), and a serializable snapshot.
#include <cmath>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "ingest/format/otlp_proto.h"
#include "ingest/ingest.h"
#include "ingest/window/delta_totals.h"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  static ingest::OtlpProtoParser parser;
  std::string_view body(reinterpret_cast<const char*>(data), size);
  ingest::ParseResult r = parser.parse(body);
  if (r.format != ingest::Format::otlp) std::abort();
  if (!r.ok && (!parser.samples().empty() || r.error.empty())) std::abort();
  if (r.rejected && r.error.empty()) std::abort();
  const int64_t now = 1'732'700'000'000'000'000;
  ingest::DeltaTotals totals(10'000);
  std::vector<ingest::Sample> samples;
  for (const ingest::Sample& s : parser.samples()) {
    if (!std::isfinite(s.value)) std::abort();
    if (s.kind == ingest::SampleKind::histogram) std::abort();
    if (s.kind == ingest::SampleKind::bucket && (s.suffix != "_bucket" || s.value < 0)) std::abort();
    if (s.labels.size() + s.resource_labels.size() > 2 * ingest::kMaxLabels) std::abort();
    totals.add(s, now, samples);
  }
  for (const ingest::Sample& s : samples)
    if (s.delta) std::abort();

  ingest::Config config;
  config.max_series = 10'000;
  ingest::Aggregator agg(config);
  agg.apply(0, samples, now);
  agg.apply(0, samples, now + 1'000'000'000);
  shm::SnapshotBuilder builder;
  agg.build(builder, now + 1'000'000'000);
  std::vector<std::byte> bytes = builder.serialize(1, 0);
  shm::SnapshotView view(bytes);
  for (const shm::Record& rec : view.list(ingest::kSeriesList)) {
    std::string_view key = rec.key.substr(ingest::kSeriesPrefix.size());
    if (!ingest::parse_series_key(key)) std::abort();
    if (!agg.series(key)) std::abort();
  }
  return 0;
}
