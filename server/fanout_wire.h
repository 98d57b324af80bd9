// server/fanout_wire.h: the binary form in which a partitioned node's reader hands the
// parts of an answer to another node's reader (docs/architecture.md, Queries over
// partitions). Internal to the reader: fanout.cc writes and reads it, and the tests read
// it. A body is a sequence of frames, each `u8 tag, u32 partition` and then the tag's
// fields (little-endian; a string is u32 length + bytes):
//   'P' u8 ready, u64 generation   first frame of each partition asked for: whether the
//                                  node serves it, and from which log position
//   'R' str key, str body          a series' record (a single series, a query's page)
//   'E' u8 truncated, str key      end of a query's page: truncated when the scan stopped
//                                  before the partition's list did, key the last looked at
//   'M' str metric, u64 series     a metric of the partition and its series count
//   'A' str partial                a metric's rollup partial (ingest/window/window.h)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace server::wire {

struct Frame {
  char tag = 0;
  uint32_t partition = 0;
  uint64_t number = 0;  // P: generation, M: series count, E: truncated
  bool flag = false;    // P: ready
  std::string_view a;   // R, E: key; M: metric; A: partial
  std::string_view b;   // R: body
};

void put_ready(std::string& out, uint32_t partition, bool ready, uint64_t generation);
void put_record(std::string& out, uint32_t partition, std::string_view key, std::string_view body);
void put_end(std::string& out, uint32_t partition, bool truncated, std::string_view last_key);
void put_metric(std::string& out, uint32_t partition, std::string_view metric, uint64_t series);
void put_partial(std::string& out, uint32_t partition, std::string_view partial);

// The frames of a body, viewing into it; nullopt when it is not a sequence of frames.
std::optional<std::vector<Frame>> read_frames(std::string_view body);

}  // namespace server::wire
