// fuzz_rollup_partial: decoding a rollup partial (ingest/window/window.h, the "r:"
// records) never crashes and refuses only with std::invalid_argument; what it accepts
// is canonical (encoding it gives the input back), its header's series count is its
// own, and it merges into an empty partial and renders as itself.
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "ingest/ingest.h"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  ingest::RollupPartial partial;
  try {
    partial = ingest::decode_rollup_partial(bytes);
  } catch (const std::invalid_argument&) {
    return 0;
  }
  std::string again;
  ingest::encode_rollup_partial(again, partial);
  if (again != bytes) std::abort();
  if (ingest::rollup_partial_series_count(bytes) != partial.series_count()) std::abort();
  ingest::RollupPartial merged;
  ingest::merge_rollup_partial(merged, partial);
  std::string body, merged_body;
  ingest::render_merged_metric(body, "m", partial);
  ingest::render_merged_metric(merged_body, "m", merged);
  if (body != merged_body || body.empty()) std::abort();
  return 0;
}
