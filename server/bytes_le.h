// server/bytes_le.h: little-endian fixed-width numbers and their reading back, for the
// reader's internal encodings (the holder map, partition_map.h; the fan-out's frames,
// fanout_wire.h). Internal to server/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace server::le {

// Appends the low `bytes` bytes of v, least significant first.
inline void put(std::string& out, uint64_t v, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) out += char(v >> (8 * i) & 0xff);
}

// Reads from the front of `in`. A read past its end gives 0 (or "") and clears ok, so a
// decoder checks ok once at the end instead of after every field.
struct Reader {
  std::string_view in;
  bool ok = true;
  uint64_t get(size_t bytes) {
    if (in.size() < bytes) {
      ok = false;
      return 0;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; ++i) v |= uint64_t(uint8_t(in[i])) << (8 * i);
    in.remove_prefix(bytes);
    return v;
  }
  std::string_view bytes(uint64_t n) {
    if (!ok || in.size() < n) {
      ok = false;
      return {};
    }
    std::string_view b = in.substr(0, n);
    in.remove_prefix(n);
    return b;
  }
};

}  // namespace server::le
