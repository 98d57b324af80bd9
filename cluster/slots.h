// cluster/slots.h: where a key lives on a Redis Cluster: its hash slot, and the master
// that serves the slot, found on the node's libevent loop (hiredis has no Redis Cluster
// support in its async API).
//
// What it guarantees:
//  - key_slot() is the slot the Redis Cluster specification gives a key: CRC16 (the
//    XMODEM variant) mod 16384 of the key, or of its hash tag, the part between the
//    first '{' and the first '}' after it when that part is not empty. Every key of a
//    telemetryd cluster has the tag {NAME} (cluster/scripts.h Keys), so they all share
//    one slot and the scripts that touch several of them run on one master.
//  - ask() asks the nodes it knows `CLUSTER SLOTS`, in turn and each with a short
//    deadline (the seeds, then every node a previous answer listed; the node that
//    answered last first), keeps the map from the first answer, and answers with the
//    master of the slot. Asks made while one is in flight share its answer.
//  - moved() records a MOVED redirect: that slot is now served by that master (the
//    cluster said so), until the next answer to ask().
// What it does not: the map can be stale the moment it arrives (a failover or a slot
// migration is under way). The caller confirms a master with ROLE, follows MOVED and
// ASK redirects on its connection and asks again on every disconnect (Connection does,
// see redis.h).
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/cluster.h"

namespace cluster {

inline constexpr uint16_t kSlotCount = 16384;

uint16_t crc16_xmodem(std::string_view bytes);  // polynomial 0x1021, initial value 0
uint16_t key_slot(std::string_view key);

// A redirect in an error reply: "MOVED SLOT HOST:PORT" or "ASK SLOT HOST:PORT". False
// when `error` is neither (or malformed).
struct Redirect {
  bool ask = false;  // ASK: for this one command; MOVED: for good
  uint16_t slot = 0;
  HostPort to;
};
bool parse_redirect(std::string_view error, Redirect* out);

class Slots {
 public:
  // master: the slot's master, or null and `error` saying why no node gave one.
  using Answer = std::function<void(const HostPort* master, const std::string& error)>;

  Slots(event_base* base, std::vector<HostPort> seeds);
  // Asks in flight end without calling back.
  ~Slots();
  Slots(const Slots&) = delete;
  Slots& operator=(const Slots&) = delete;

  // Refreshes the map and answers with the slot's master. `done` runs exactly once,
  // from the loop, never from inside this call.
  void ask(uint16_t slot, Answer done);
  void moved(uint16_t slot, const HostPort& master);
  // The slot's master in the map as it is, or null (never asked, or no master).
  const HostPort* known_master(uint16_t slot) const;

 private:
  struct Range {
    uint16_t first, last;
    HostPort master;
  };
  struct Query;
  void finish(Query& q);

  event_base* base_;
  std::vector<HostPort> seeds_;
  std::vector<HostPort> nodes_;  // asked in this order: the last to answer first
  std::vector<Range> ranges_;
  std::unique_ptr<Query> query_;  // the refresh in flight
};

}  // namespace cluster
