// server/fanout_wire.cc: the frames of fanout_wire.h.
#include "server/fanout_wire.h"

#include "server/bytes_le.h"

namespace server::wire {
namespace {

void put_str(std::string& out, std::string_view s) {
  le::put(out, s.size(), 4);
  out.append(s);
}
void head(std::string& out, char tag, uint32_t partition) {
  out += tag;
  le::put(out, partition, 4);
}

struct Cursor : le::Reader {
  std::string_view str() { return bytes(get(4)); }
};

}  // namespace

void put_ready(std::string& out, uint32_t partition, bool ready, uint64_t generation) {
  head(out, 'P', partition);
  out += char(ready ? 1 : 0);
  le::put(out, generation, 8);
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
  le::put(out, series, 8);
}
void put_partial(std::string& out, uint32_t partition, std::string_view partial) {
  head(out, 'A', partition);
  put_str(out, partial);
}

std::optional<std::vector<Frame>> read_frames(std::string_view body) {
  Cursor c{{body}};
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
