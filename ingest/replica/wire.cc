// wire.cc: the zstd frame of log entries and checkpoints (see wire.h).
#include "ingest/replica/wire.h"

#include <memory>

#include <zstd.h>

namespace ingest::wire {

// With zstd's content checksum: a flipped bit in a value would otherwise decode as
// another value, silently.
void compress(std::string& out, std::string_view payload, int level) {
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> ctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  if (!ctx) throw std::runtime_error("zstd: out of memory");
  ZSTD_CCtx_setParameter(ctx.get(), ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(ctx.get(), ZSTD_c_checksumFlag, 1);
  size_t at = out.size();
  out.resize(at + ZSTD_compressBound(payload.size()));
  size_t n = ZSTD_compress2(ctx.get(), out.data() + at, out.size() - at, payload.data(), payload.size());
  if (ZSTD_isError(n)) throw std::runtime_error(std::string("zstd: ") + ZSTD_getErrorName(n));
  out.resize(at + n);
}

std::string decompress(std::string_view frame, size_t max_bytes) {
  // Streamed into a growing buffer rather than sized from the frame's header, which
  // bad bytes could make claim anything.
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> ctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  if (!ctx) throw std::runtime_error("zstd: out of memory");
  std::string out;
  unsigned long long declared = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (declared != ZSTD_CONTENTSIZE_ERROR && declared != ZSTD_CONTENTSIZE_UNKNOWN &&
      declared <= max_bytes)
    out.reserve(static_cast<size_t>(declared));
  ZSTD_inBuffer in{frame.data(), frame.size(), 0};
  size_t ret = 1;
  while (true) {
    if (out.size() == out.capacity() || out.capacity() - out.size() < ZSTD_DStreamOutSize())
      out.reserve(std::max(out.capacity() * 2, out.size() + ZSTD_DStreamOutSize()));
    size_t used = out.size();
    out.resize(out.capacity());
    ZSTD_outBuffer o{out.data(), out.size(), used};
    ret = ZSTD_decompressStream(ctx.get(), &o, &in);
    out.resize(o.pos);
    if (ZSTD_isError(ret))
      throw std::invalid_argument(std::string("bad zstd frame: ") + ZSTD_getErrorName(ret));
    if (out.size() > max_bytes) throw std::invalid_argument("zstd frame larger than allowed");
    if (ret == 0) break;  // the frame is complete
    if (in.pos == in.size && o.pos < o.size) throw std::invalid_argument("truncated zstd frame");
  }
  if (in.pos != in.size) throw std::invalid_argument("bytes after the zstd frame");
  return out;
}

}  // namespace ingest::wire
