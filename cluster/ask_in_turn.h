// cluster/ask_in_turn.h: one question asked of a list of Redis servers in turn, inside
// the cluster component (sentinel.cc asks for the master, slots.cc for the slot map):
// one short-lived connection at a time, each with a short deadline, from the front of
// the list; the first server that answers ends the walk, and when none does, `errors`
// says what each one did. Every hiredis context is freed from an event of our own,
// never inside hiredis's callbacks.
#pragma once

#include <string>
#include <vector>

#include "cluster/cluster.h"

struct event;
struct redisAsyncContext;

namespace cluster {

// Frees a context whose callbacks must not reach their owner any more: pending reply
// callbacks run with no reply and must return.
void close_context(redisAsyncContext* ac);

struct AskInTurn {
  AskInTurn(event_base* base, std::vector<HostPort> order);
  virtual ~AskInTurn();  // a walk in flight ends without finished()
  AskInTurn(const AskInTurn&) = delete;
  AskInTurn& operator=(const AskInTurn&) = delete;

  // Asks the first server; finished() runs from the loop, never from inside this call.
  void start();
  // The server being asked, and whether a reply came on its connection (a reply on an
  // earlier one is stale).
  const HostPort& asked() const { return order[tried]; }
  bool current(const redisAsyncContext* ac) const { return ac == ac_; }
  // From a callback of the server being asked: its answer was good (found, why empty)
  // or why it gave none. The walk goes on from the loop.
  void outcome(std::string why);

  std::vector<HostPort> order;  // the servers when the ask began, front first
  size_t tried = 0;             // order[tried] is being asked
  bool found = false;           // order[tried] answered
  std::string errors;           // every server's failure so far: "HOST:PORT: why; ..."

 protected:
  // Clears what an earlier server's answer left.
  virtual void reset() {}
  // Sends the question on ac with `this` as the reply callback's privdata; the callback
  // returns at once when the reply is null or !current(ac), else calls outcome().
  virtual void send(redisAsyncContext* ac) = 0;
  // The walk is over: found, or no server answered. May destroy this.
  virtual void finished() = 0;

 private:
  void ask_current();
  static void step(int, short, void* arg);

  event_base* base_;
  redisAsyncContext* ac_ = nullptr;
  event* step_ = nullptr;       // the current server's deadline, or its outcome
  bool have_outcome_ = false;
  std::string error_;           // the current server's
};

}  // namespace cluster
