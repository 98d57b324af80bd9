// server/writer_pushes.h: the OTLP/HTTP pushes a partitioned cluster's node takes
// (docs/architecture.md, Pushes into partitions). Every node may take them: its pushes are
// a source of their own, otlp-push:NODE_ID, with an epoch taken like a puller's; at each
// tick of the writer's Pipeline what was pushed since the last is split by partition
// (ingest::PartitionWriter: a histogram's parts with their family) and appended, one
// entry per partition, at the tick's number on the interval grid. A request is answered
// 200 once every entry of its tick is in the log (the append script's OK or DUP), else
// 503 with Retry-After: a retry counts nothing twice, since a series' sample is counted
// only if it is newer than the series' last, and all of a series' samples go to one log.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "server/config.h"

struct event_base;

namespace cluster {
class PartitionedNode;
}
namespace ingest {
class HeldPartitions;
}

namespace server {

class PartitionedPushes {
 public:
  // Binds options.otlp_listen on base; throws std::runtime_error naming the address and
  // the reason when it cannot. Requests are refused (503) until the stream has an epoch.
  // Delta running totals start from the series' last value in the partitions held here,
  // else from the first point (docs/architecture.md says what that costs).
  PartitionedPushes(event_base* base, const Options& options, cluster::PartitionedNode& node,
                    ingest::HeldPartitions& held);
  ~PartitionedPushes();
  PartitionedPushes(const PartitionedPushes&) = delete;
  PartitionedPushes& operator=(const PartitionedPushes&) = delete;

  // A tick of the writer's Pipeline ended at clock (Unix ns): what was pushed since the
  // last tick goes to the partitions' logs.
  void tick(int64_t clock);

  // Redis may have lost this stream's entries (a connection came back): take a new
  // epoch, so that holders number its series afresh; pushes wait (503) until then.
  void renumber();

  const std::string& source() const;  // otlp-push:NODE_ID
  uint16_t port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace server
