// server/cluster_status.h: how the writer tells the other processes about the cluster:
// the numbers readers need (/healthz, /metrics) as service counters, and the whole
// `show cluster` report as the store's status text, "TEXT\0JSON", which the supervisor
// hands out as it is.
#pragma once

#include "cluster/cluster.h"
#include "cluster/partitioned.h"
#include "shm/shm.h"

namespace server {

void publish_cluster_status(shm::Store& store, shm::Writer& writer, const cluster::Status& status,
                            uint64_t published_generation);
// A partitioned node's: `partitioning` (P, R, the partitions held with their state) and
// the members with the partitions each holds ready. kClusterSynced is its readiness.
void publish_partitioned_status(shm::Store& store, shm::Writer& writer, const cluster::PartitionedStatus& status,
                                uint64_t published_generation);

}  // namespace server
