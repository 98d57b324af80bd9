// server/service.h: what the telemetryd processes agree on: exit codes, and the meaning
// of the free counters the shm control segment keeps for them (Store::service_counter
// and the per-reader Reader::counter), so that the supervisor, the writer, the readers
// and the admin socket read and write the same numbers.
#pragma once

#include <cstdint>

namespace server {

// Exit status of a child, read by the supervisor.
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,      // a crash-like failure: restart with backoff
  kExitBadConfig = 2,    // can never work as configured: do not restart, stop the service
};

// Store::service_counter(i): service-wide, relaxed.
enum ServiceCounter : uint32_t {
  kRestartsWriter = 0,   // children restarted by the supervisor, per role
  kRestartsReader = 1,
  kStuckReadersKilled = 2,
  kReloadRequests = 3,   // bumped by the supervisor when it asks the writer to reload
  kReloadDone = 4,       // set by the writer to the request number it has handled
  kReloadFailed = 5,     // set by the writer to the request number it rejected
  kTicks = 6,            // ingest ticks completed by the writer
  kSamplesAccepted = 7,
  kSamplesDropped = 8,
  kWorkers = 9,          // configured reader count
  kStartedAtNs = 10,     // supervisor start, Unix ns
  kLogLevel = 11,        // current log level (set log-level), read by every child
  kWriterRequestedExit = 12,
  kWriterHeartbeatNs = 13,  // CLOCK_MONOTONIC of the writer loop's last turn (writer watchdog)
  kStuckWritersKilled = 14,
  kIntervalNs = 15,         // the writer's ingest interval, set at its start and on reload
  // Cluster (cluster/): set by the writer, except kClusterEnabled (the supervisor, at
  // start). The full status (node list, leader, ...) is the store's status text.
  kClusterEnabled = 16,     // 1 when started with --cluster
  kClusterSynced = 17,      // 1 once the node serves the cluster's data (/healthz)
  kClusterRole = 18,        // cluster::Role + 1; 0 before the writer started
  kClusterTerm = 19,
  kClusterLagMs = 20,       // leader's publish -> this node's publish of the last applied entry
  kClusterApplied = 21,     // log entries applied by this node (writer incarnation)
  kClusterRedisErrors = 22,
  kClusterCheckpointAgeS = 23,  // age of the newest checkpoint + 1; 0: none
  kClusterDegraded = 24,        // 1 while Redis is unreachable: the last committed snapshot is served
  kClusterReloads = 25,         // state reloads from a checkpoint (writer incarnation)
  kClusterCannotFollow = 26,    // 1 while the node cannot follow the log (show cluster says why)
  kClusterPendingDropped = 27,  // leader entries dropped past max_pending_bytes
  // The state dir (state/, server/writer_state.h): set by the writer.
  kStateCheckpointUnixMs = 28,   // when the newest checkpoint was written, Unix ms; 0: none yet
  kStateCheckpointBytes = 29,    // its size
  kStateLogBytes = 30,           // the log files' size
  kStateRecoveryEntries = 31,    // log entries the last recovery replayed after its checkpoint
  kStateRecoveryMs = 32,         // how long it took (restore and replay, before the first publish)
  kStateRecoveredUnixMs = 33,    // when it ended, Unix ms; 0: no writer recovered yet
  kStateLogCuts = 34,            // log tails cut by recoveries (torn, damaged), all writers
  kStateCheckpointsSkipped = 35, // checkpoints that did not read back, all writers
  kStateWriteErrors = 36,        // failed appends and checkpoint writes (a full disk), all writers
  kStateWriteFailing = 37,       // 1 from a failed write until a checkpoint is written again
  // A partitioned cluster's node (cluster/partitioned.h): set by the writer.
  kPartitionsHeld = 38,      // partitions this node holds (syncing, ready or leaving)
  kPartitionsReady = 39,     // of which ready
  kPartitionsPrimary = 40,   // of which this node is the primary
  kPartitionMovesIn = 41,    // partitions taken (writer incarnation)
  kPartitionMovesOut = 42,   // partitions let go once their holders had them ready
  kPartitionMoveMs = 43,     // the moves in that became ready: their time from take to ready
  kPartitionMoveBytes = 44,  // and the checkpoint and log bytes they read
  kDrainRequested = 45,      // 1 once `telemetryctl drain` asked (the supervisor sets it; a new writer drains too)
  kPartitionDraining = 46,   // 1 while the writer drains (set by it)
  kFirstFreeServiceCounter = 47,
};

// Reader::counter(i): per reader, relaxed; only the owning reader writes them.
enum ReaderCounter : uint32_t {
  kReqSeries = 0,        // requests by endpoint
  kReqQuery = 1,
  kReqMetricsList = 2,
  kReqMetric = 3,
  kReqSnapshot = 4,
  kReqProm = 5,
  kReqHealthz = 6,
  kReqOther = 7,
  kStatus2xx = 8,        // responses by status class / code
  kStatus304 = 9,
  kStatus404 = 10,
  kStatus4xxOther = 11,
  kStatus5xx = 12,
  kConnectionsAccepted = 13,
  kConnectionsOpen = 14,
  kReaderStartedAtNs = 15,  // reader start, Unix ns
  kAccepting = 16,          // 1 while the reader takes new connections (accept balancing)
  kAcceptStepAsides = 17,   // times it left the accept set for a peer (accept balancing)
  kReaderEngine = 18,       // the connection engine running: 1 epoll, 2 io_uring (0 before start)
  kFirstFreeReaderCounter = 19,
};

}  // namespace server
