// wire.h: the byte encoding of log entries and checkpoints (replica.cc): varints,
// fixed-width little-endian integers and doubles, length-prefixed strings, and the zstd
// frame around a payload. A Reader never reads past its bytes: anything malformed
// throws std::invalid_argument with what was being read.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

namespace ingest::wire {

inline void put_varint(std::string& out, uint64_t v) {
  char buf[10];
  size_t n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out.append(buf, n);
}

inline uint64_t zigzag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
inline int64_t unzigzag(uint64_t v) {
  return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
}

inline void put_svarint(std::string& out, int64_t v) { put_varint(out, zigzag(v)); }

inline void put_u64(std::string& out, uint64_t v) {
  char buf[8];
  for (int i = 0; i < 8; ++i) buf[i] = static_cast<char>(v >> (8 * i));
  out.append(buf, 8);
}

inline void put_double(std::string& out, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  put_u64(out, bits);
}

inline void put_string(std::string& out, std::string_view s) {
  put_varint(out, s.size());
  out.append(s);
}

class Reader {
 public:
  explicit Reader(std::string_view bytes) : at_(bytes.data()), end_(bytes.data() + bytes.size()) {}

  bool done() const { return at_ == end_; }
  const char* peek() const { return at_; }
  void skip(size_t n) {
    if (n > left()) fail("bytes");
    at_ += n;
  }
  size_t left() const { return static_cast<size_t>(end_ - at_); }

  uint64_t varint(const char* what) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (at_ == end_) fail(what);
      auto byte = static_cast<uint8_t>(*at_++);
      if (shift == 63 && byte > 1) fail(what);
      v |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return v;
    }
    fail(what);
  }
  // A varint that must be at most max.
  uint64_t count(const char* what, uint64_t max) {
    uint64_t v = varint(what);
    if (v > max) fail(what);
    return v;
  }
  int64_t svarint(const char* what) { return unzigzag(varint(what)); }
  uint8_t byte(const char* what) {
    if (at_ == end_) fail(what);
    return static_cast<uint8_t>(*at_++);
  }
  uint64_t u64(const char* what) {
    if (left() < 8) fail(what);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(at_[i])) << (8 * i);
    at_ += 8;
    return v;
  }
  double f64(const char* what) {
    uint64_t bits = u64(what);
    double v;
    std::memcpy(&v, &bits, 8);
    return v;
  }
  std::string_view string(const char* what, size_t max = SIZE_MAX) {
    uint64_t n = varint(what);
    if (n > left() || n > max) fail(what);
    std::string_view s(at_, n);
    at_ += n;
    return s;
  }

  [[noreturn]] static void fail(const char* what) {
    throw std::invalid_argument(std::string("truncated or malformed ") + what);
  }

 private:
  const char* at_;
  const char* end_;
};

// The payload as one zstd frame appended to out.
void compress(std::string& out, std::string_view payload, int level);
// The frame's payload; throws std::invalid_argument when frame is not one whole zstd
// frame or its payload would pass max_bytes.
std::string decompress(std::string_view frame, size_t max_bytes);

}  // namespace ingest::wire
