// cluster/redis.h: one connection to the cluster's Redis master on a libevent loop
// (hiredis async API): commands with a completion callback and a reply deadline,
// reconnection with exponential backoff, and a log line per change of state (not per
// attempt). Behind Sentinel, every connection attempt first asks the sentinels where
// the master is; every server is confirmed with ROLE before the connection counts as up,
// and a server that turns into a replica (READONLY) is dropped and looked up again.
// On a Redis Cluster the server is the master of the slot of one key (the cluster's
// hash tag), asked of the cluster (cluster/slots.h) on every connection attempt:
//  - MOVED (the slot has another master now): the command fails with that text, the
//    map takes the new master, and the connection is dropped (every command in flight
//    fails) and made again to it;
//  - ASK (the slot is being migrated and this key is on the target already): that one
//    command is sent again, after ASKING, on a short-lived connection to the target, and
//    its callback gets the target's answer;
//  - TRYAGAIN, CLUSTERDOWN: the command fails with that text (the caller tries again).
// The node retries whatever failed on its next period.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "cluster/cluster.h"

struct event;
struct redisAsyncContext;
struct redisReply;

namespace cluster {

class Sentinel;
class Slots;

class Connection {
 public:
  // reply: the answer (never an error reply); null when the command failed, and then
  // `error` says why (Redis's error text, "disconnected", "no reply within ...").
  using Callback = std::function<void(const redisReply* reply, const std::string& error)>;

  // sentinel: asks where the master is (address.via_sentinel()); slots and slot_key:
  // the master of slot_key's slot (address.via_cluster()). Both outlive the connection.
  Connection(event_base* base, Address address, std::string label, std::function<void(bool up)> on_change,
             Sentinel* sentinel = nullptr, Slots* slots = nullptr, const std::string& slot_key = {});
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void start();
  // Down from a loss until Redis answers again: reconnection attempts do not end an outage.
  RedisState state() const { return reported_down_ && state_ != RedisState::connected ? RedisState::down : state_; }
  bool up() const { return state_ == RedisState::connected; }
  // False (and `done` never called) when not connected. Otherwise `done` runs exactly
  // once, from the loop, never from inside this call.
  bool command(const std::vector<std::string>& args, Callback done,
               std::chrono::milliseconds timeout = std::chrono::milliseconds(3000));
  // Drops the connection (pending commands fail) and reconnects after the backoff.
  void drop(const std::string& why);
  uint64_t errors() const { return errors_; }
  // The server connected to (or last tried), e.g. "127.0.0.1:6380 (master mymaster)",
  // "127.0.0.1:7001 (master of slot 1234)".
  std::string where() const;
  const HostPort& server() const { return server_; }

 private:
  struct Pending;
  struct Ask;
  static void on_connect(const redisAsyncContext* ac, int status);
  static void on_disconnect(const redisAsyncContext* ac, int status);
  static void on_reply(redisAsyncContext* ac, void* reply, void* privdata);
  static void on_retry(int, short, void* arg);
  static void on_check(int, short, void* arg);
  static void on_drop(int, short, void* arg);
  void connect();
  void open();
  void confirm_master();
  void ready();
  bool send(const std::vector<std::string>& args, Callback done, std::chrono::milliseconds timeout);
  void lost(const std::string& why);
  void schedule_retry();
  bool redirected(Pending& pending, const std::string& error);
  void follow_ask(const HostPort& to, Pending& pending);

  event_base* base_;
  Address address_;
  Sentinel* sentinel_;
  HostPort server_;  // the master: address_.server, or the sentinels' answer
  bool asking_ = false;  // a sentinel ask is in flight
  Slots* slots_;
  uint16_t slot_ = 0;
  bool moved_ = false;   // the next connection goes to moved_to_, the master a MOVED named
  HostPort moved_to_;
  std::list<std::unique_ptr<Ask>> asks_;  // commands sent again after an ASK redirect
  std::string label_;
  std::function<void(bool up)> on_change_;
  redisAsyncContext* ac_ = nullptr;
  RedisState state_ = RedisState::down;
  event* retry_ = nullptr;
  event* check_ = nullptr;
  event* drop_ = nullptr;
  std::string drop_reason_;
  std::chrono::milliseconds backoff_{0};
  std::deque<int64_t> deadlines_;  // monotonic ns of each command in flight, oldest first
  int64_t connect_deadline_ = 0;
  int64_t last_check_ns_ = 0;     // monotonic ns of the last on_check: how long the loop stalled
  bool reported_down_ = false;      // the current outage has been logged
  bool closing_ = false;
  uint64_t errors_ = 0;
};

int64_t monotonic_ns();
int64_t unix_ms();

}  // namespace cluster
