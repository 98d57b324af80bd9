// cluster/sentinel.h: the master of a Redis Sentinel deployment, found the way the
// Sentinel client rules say, on the node's libevent loop (hiredis has no Sentinel
// support of its own).
//
// What it guarantees:
//  - ask() tries the sentinels in turn, each with a short deadline, and answers with
//    the first address one of them gives for the master's name (`SENTINEL
//    get-master-addr-by-name`). The sentinel that answered moves to the front, so the
//    next ask goes to it first. A sentinel that does not know the name, refuses, or
//    does not answer in time is skipped, and the answer says what each one did.
//  - watch() keeps one subscription to `+switch-master` on some sentinel (the next one
//    when it is lost) and reports our master's new address the moment Sentinel
//    announces a failover.
// What it does not: the address a sentinel gives may already be stale (a failover is
// under way) or a replica. The caller confirms with ROLE on the connection it opens
// (Connection does) and asks again on every disconnect; the subscription only makes the
// move faster, it is not needed for correctness.
#pragma once

#include <functional>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "cluster/cluster.h"

struct event;
struct redisAsyncContext;

namespace cluster {

class Sentinel {
 public:
  // master: the address, or null and `error` saying why no sentinel gave one.
  using Answer = std::function<void(const HostPort* master, const std::string& error)>;

  Sentinel(event_base* base, std::vector<HostPort> sentinels, std::string master_name);
  // Asks and watches in flight end without calling back.
  ~Sentinel();
  Sentinel(const Sentinel&) = delete;
  Sentinel& operator=(const Sentinel&) = delete;

  // `done` runs exactly once, from the loop, never from inside this call.
  void ask(Answer done);
  void watch(std::function<void(const HostPort& master)> on_switch);
  const std::string& master_name() const { return name_; }

 private:
  struct Query;
  struct Watch;
  void answered(size_t index);  // moves sentinels_[index] to the front

  event_base* base_;
  std::vector<HostPort> sentinels_;
  std::string name_;
  std::list<std::unique_ptr<Query>> queries_;
  std::unique_ptr<Watch> watch_;
};

}  // namespace cluster
