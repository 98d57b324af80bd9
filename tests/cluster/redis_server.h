// tests/cluster/redis_server.h: a real redis-server for the cluster tests, started on
// a free loopback port with no persistence and stopped by its pid (never the system
// service), a Sentinel, a Redis Cluster of such servers, and a small blocking client
// to look at what the cluster wrote.
#pragma once

#include <string>
#include <vector>

#include <sys/types.h>

struct redisContext;

namespace cluster_test {

inline constexpr int kSkip = 77;  // ctest SKIP_RETURN_CODE
// Exits with kSkip when redis-server is not installed (scripts/deps.sh installs it).
void require_redis_server();

class RedisServer {
 public:
  // Starts it on a free port (a replica of 127.0.0.1:replica_of when not 0) and waits
  // until it answers.
  explicit RedisServer(uint16_t replica_of = 0);
  ~RedisServer();
  uint16_t port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  void kill_now();  // SIGKILL, waits for the exit
  void start();     // again on the same port, empty
  void stop_process(bool stop);  // SIGSTOP / SIGCONT

 private:
  uint16_t port_ = 0;
  uint16_t replica_of_ = 0;
  pid_t pid_ = -1;
};

// Exits with kSkip when redis-sentinel is not installed.
void require_redis_sentinel();

// A real redis-sentinel on a free port watching the master at 127.0.0.1:master_port
// under `name`: quorum 1, down after 1s, from its own config file (Sentinel rewrites
// it), removed with the process.
class SentinelServer {
 public:
  SentinelServer(uint16_t master_port, const std::string& name);
  ~SentinelServer();
  uint16_t port() const { return port_; }

 private:
  uint16_t port_ = 0;
  pid_t pid_ = -1;
  std::string config_;
};

// Exits with kSkip when redis-cli (which creates a Redis Cluster) is not installed.
void require_redis_cli();

// A real Redis Cluster on loopback: three masters with one replica each (six
// redis-server --cluster-enabled yes, node timeout 1s, no persistence, in a temporary
// directory), created with redis-cli --cluster create; the constructor returns once
// every node reports cluster_state:ok and every replica is in sync. Stopped by pid.
class RedisCluster {
 public:
  RedisCluster();
  ~RedisCluster();
  std::string url() const;              // redis-cluster:// with the three masters as seeds
  std::vector<uint16_t> ports() const;  // every node's, killed ones included
  // The master of `slot` as every live node sees it; 0 when they do not agree (yet).
  uint16_t master_of(uint16_t slot);
  std::vector<uint16_t> masters();      // live masters, as the first live node sees them
  std::string node_id(uint16_t port);
  void kill_now(uint16_t port);         // SIGKILL, waits for the exit
  // Moving a slot the way redis-cli --cluster reshard does: IMPORTING on the target,
  // MIGRATING on the source, MIGRATE of its keys (all, or those given), then the slot
  // given to the target on every live master.
  void begin_migration(uint16_t slot, uint16_t from, uint16_t to);
  void migrate_keys(uint16_t slot, uint16_t from, uint16_t to, const std::vector<std::string>& keys = {});
  void end_migration(uint16_t slot, uint16_t from, uint16_t to);
  void move_slot(uint16_t slot, uint16_t from, uint16_t to);

 private:
  struct Node {
    uint16_t port = 0, bus = 0;
    pid_t pid = -1;
  };
  std::string dir_;
  std::vector<Node> nodes_;
  bool all_ok();
};

// One blocking connection for inspection (made again once when the server closed it).
class Client {
 public:
  explicit Client(uint16_t port);
  ~Client();
  // The reply as text: strings and integers as their text, nil as "(nil)", arrays
  // flattened and joined with '\n'. Throws std::runtime_error on an error reply.
  std::string run(const std::vector<std::string>& args);
  std::vector<std::string> list(const std::vector<std::string>& args);  // array items
 private:
  void connect();
  uint16_t port_;
  redisContext* c_ = nullptr;
};

}  // namespace cluster_test
