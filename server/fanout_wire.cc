// server/fanout_wire.cc: the frames of fanout_wire.h.
#include "server/fanout_wire.h"

namespace server::wire {
namespace {

void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out += char(v >> (8 * i) & 0xff);
}
void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out += char(v >> (8 * i) & 0xff);
}
void put_str(std::string& out, std::string_view s) {
  put_u32(out, uint32_t(s.size()));
  out.append(s);
}
void head(std::string& out, char tag, uint32_t partition) {
  out += tag;
  put_u32(out, partition);
}

struct Cursor {
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
  std::string_view str() {
    const uint64_t n = get(4);
    if (!ok || in.size() < n) {
      ok = false;
      return {};
    }
    std::string_view s = in.substr(0, n);
    in.remove_prefix(n);
    return s;
  }
};

}  // namespace

void put_ready(std::string& out, uint32_t partition, bool ready, uint64_t generation) {
  head(out, 'P', partition);
  out += char(ready ? 1 : 0);
  put_u64(out, generation);
}
void put_record(std::string& out, uint32_t partition, std::string_view key, std::string_view body) {
  head(out, 'R', partition);
  put_str(out, key);
  put_str(out, body);
}
void put_end(std::string& out, uint32_t partition, bool truncated, std::string_view last_key) {
  head(out, 'E', partition);
  out += char(truncated ? 1 : 0);
  put_str(out, last_key);
}
void put_metric(std::string& out, uint32_t partition, std::string_view metric, uint64_t series) {
  head(out, 'M', partition);
  put_str(out, metric);
  put_u64(out, series);
}
void put_partial(std::string& out, uint32_t partition, std::string_view partial) {
  head(out, 'A', partition);
  put_str(out, partial);
}

std::optional<std::vector<Frame>> read_frames(std::string_view body) {
  Cursor c{body};
  std::vector<Frame> frames;
  while (c.ok && !c.in.empty()) {
    Frame f;
    f.tag = char(c.get(1));
    f.partition = uint32_t(c.get(4));
    switch (f.tag) {
      case 'P':
        f.flag = c.get(1) != 0;
        f.number = c.get(8);
        break;
      case 'R':
        f.a = c.str();
        f.b = c.str();
        break;
      case 'E':
        f.number = c.get(1);
        f.a = c.str();
        break;
      case 'M':
        f.a = c.str();
        f.number = c.get(8);
        break;
      case 'A': f.a = c.str(); break;
      default: return std::nullopt;
    }
    if (c.ok) frames.push_back(f);
  }
  if (!c.ok) return std::nullopt;
  return frames;
}

}  // namespace server::wire
