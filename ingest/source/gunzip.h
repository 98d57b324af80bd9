// gunzip.h: decompresses a gzip body with zlib, bounded: a small body that inflates
// past the limit (a gzip bomb) is refused once the limit is reached, never held whole.
#pragma once

#include <string>
#include <string_view>

namespace ingest {

enum class GunzipResult { ok, too_large, corrupt };

// Replaces out with the decompressed body (concatenated gzip members included), at
// most max_bytes. corrupt: not gzip, truncated, or a bad checksum (error says which).
GunzipResult gunzip(std::string_view in, size_t max_bytes, std::string& out, std::string& error);

}  // namespace ingest
