// fuzz_series_key: parse_series_key never crashes, and whatever it accepts is canonical:
// rebuilding the key from its parts gives the same bytes.
#include <cstdlib>
#include <string_view>
#include <vector>

#include "ingest/ingest.h"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  std::string_view key(reinterpret_cast<const char*>(data), size);
  auto parsed = ingest::parse_series_key(key);
  if (!parsed) return 0;
  std::vector<ingest::Label> labels;
  for (const auto& [name, value] : parsed->labels) labels.push_back({name, value});
  if (ingest::make_series_key(parsed->metric, labels) != key) std::abort();
  return 0;
}
