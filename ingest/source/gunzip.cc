// gunzip.cc: bounded gzip decompression with zlib (see gunzip.h).
#include "ingest/source/gunzip.h"

#include <zlib.h>

#include <algorithm>

namespace ingest {

GunzipResult gunzip(std::string_view in, size_t max_bytes, std::string& out, std::string& error) {
  out.clear();
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) {  // 16: gzip wrapper only
    error = "zlib: inflateInit2 failed";
    return GunzipResult::corrupt;
  }
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(std::min<size_t>(in.size(), UINT32_MAX));
  GunzipResult result = GunzipResult::ok;
  // Grows the output a step at a time and stops at max_bytes + 1: one byte over says
  // "too large" without inflating the rest.
  for (;;) {
    size_t room = std::min<size_t>(max_bytes + 1 - out.size(), size_t{256} << 10);
    if (room == 0) {
      result = GunzipResult::too_large;
      break;
    }
    size_t at = out.size();
    out.resize(at + room);
    z.next_out = reinterpret_cast<Bytef*>(out.data() + at);
    z.avail_out = static_cast<uInt>(room);
    int rc = inflate(&z, Z_NO_FLUSH);
    out.resize(at + room - z.avail_out);
    if (out.size() > max_bytes) {
      result = GunzipResult::too_large;
      break;
    }
    if (rc == Z_STREAM_END) {
      if (z.avail_in == 0) break;
      if (inflateReset(&z) != Z_OK) {  // another gzip member follows
        error = "gzip: bad member";
        result = GunzipResult::corrupt;
        break;
      }
      continue;
    }
    if (rc == Z_BUF_ERROR && z.avail_in == 0) {
      error = "gzip: truncated body";
      result = GunzipResult::corrupt;
      break;
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      error = std::string("gzip: ") + (z.msg ? z.msg : "corrupt body");
      result = GunzipResult::corrupt;
      break;
    }
  }
  inflateEnd(&z);
  if (result != GunzipResult::ok) out.clear();
  return result;
}

}  // namespace ingest
