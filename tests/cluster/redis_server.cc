// tests/cluster/redis_server.cc: see redis_server.h.
#include "tests/cluster/redis_server.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "tests/server/e2e_util.h"

namespace cluster_test {

using e2e::free_port;
using e2e::wait_for;

void require_redis_server() {
  if (access("/usr/bin/redis-server", X_OK) != 0) {
    std::fprintf(stderr, "SKIP: redis-server is not installed (scripts/deps.sh installs it)\n");
    std::exit(kSkip);
  }
}

RedisServer::RedisServer(uint16_t replica_of) : replica_of_(replica_of) {
  require_redis_server();
  port_ = free_port();
  start();
}

RedisServer::~RedisServer() {
  if (pid_ > 0) kill_now();
}

namespace {
pid_t spawn(const std::vector<std::string>& args) {
  pid_t pid = fork();
  if (pid == 0) {
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

bool answers_ping(uint16_t port) {
  return wait_for([&] {
    redisContext* c = redisConnect("127.0.0.1", port);
    bool ok = c && !c->err;
    if (ok) {
      auto* r = static_cast<redisReply*>(redisCommand(c, "PING"));
      ok = r && r->type == REDIS_REPLY_STATUS;
      if (r) freeReplyObject(r);
    }
    if (c) redisFree(c);
    return ok;
  }, std::chrono::seconds(10));
}
}  // namespace

void RedisServer::start() {
  std::vector<std::string> args{"/usr/bin/redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", "/tmp",
                                "--repl-diskless-sync-delay", "0"};
  if (replica_of_) args.insert(args.end(), {"--replicaof", "127.0.0.1", std::to_string(replica_of_)});
  pid_ = spawn(args);
  if (!answers_ping(port_)) throw std::runtime_error("redis-server did not start on port " + std::to_string(port_));
  // A replica counts once it holds the master's data (a failover before that loses it all).
  if (replica_of_ && !wait_for([&] {
        return Client(port_).run({"INFO", "replication"}).find("master_link_status:up") != std::string::npos;
      }, std::chrono::seconds(10)))
    throw std::runtime_error("the replica on port " + std::to_string(port_) + " did not sync");
}

void require_redis_sentinel() {
  if (access("/usr/bin/redis-sentinel", X_OK) != 0) {
    std::fprintf(stderr, "SKIP: redis-sentinel is not installed (scripts/deps.sh installs it)\n");
    std::exit(kSkip);
  }
}

SentinelServer::SentinelServer(uint16_t master_port, const std::string& name) {
  require_redis_sentinel();
  port_ = free_port();
  config_ = "/tmp/telemetryd-test-sentinel-" + std::to_string(port_) + ".conf";
  std::FILE* f = std::fopen(config_.c_str(), "w");
  if (!f) throw std::runtime_error("cannot write " + config_);
  std::fprintf(f,
               "port %u\nbind 127.0.0.1\ndaemonize no\ndir /tmp\n"
               "sentinel monitor %s 127.0.0.1 %u 1\n"
               "sentinel down-after-milliseconds %s 1000\n"
               "sentinel failover-timeout %s 5000\n",
               unsigned(port_), name.c_str(), unsigned(master_port), name.c_str(), name.c_str());
  std::fclose(f);
  pid_ = spawn({"/usr/bin/redis-sentinel", config_});
  if (!answers_ping(port_)) throw std::runtime_error("redis-sentinel did not start on port " + std::to_string(port_));
}

SentinelServer::~SentinelServer() {
  ::kill(pid_, SIGKILL);
  int status;
  waitpid(pid_, &status, 0);
  std::remove(config_.c_str());
}

void RedisServer::kill_now() {
  ::kill(pid_, SIGCONT);
  ::kill(pid_, SIGKILL);
  int status;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

void RedisServer::stop_process(bool stop) { ::kill(pid_, stop ? SIGSTOP : SIGCONT); }

Client::Client(uint16_t port) : port_(port) { connect(); }

void Client::connect() {
  if (c_) redisFree(c_);
  c_ = redisConnect("127.0.0.1", port_);
  if (!c_ || c_->err) throw std::runtime_error("cannot connect to redis on " + std::to_string(port_));
}

Client::~Client() { redisFree(c_); }

namespace {
void flatten(const redisReply* r, std::vector<std::string>& out) {
  switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS: out.emplace_back(r->str, r->len); break;
    case REDIS_REPLY_INTEGER: out.push_back(std::to_string(r->integer)); break;
    case REDIS_REPLY_NIL: out.push_back("(nil)"); break;
    case REDIS_REPLY_ARRAY:
      for (size_t i = 0; i < r->elements; ++i) flatten(r->element[i], out);
      break;
  }
}
}  // namespace

std::vector<std::string> Client::list(const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* r = static_cast<redisReply*>(redisCommandArgv(c_, int(argv.size()), argv.data(), lens.data()));
  if (!r) {
    // Sentinel closes every client of a server it reconfigures: connect again, once.
    connect();
    r = static_cast<redisReply*>(redisCommandArgv(c_, int(argv.size()), argv.data(), lens.data()));
  }
  if (!r) throw std::runtime_error("redis: " + std::string(c_->errstr));
  if (r->type == REDIS_REPLY_ERROR) {
    std::string e(r->str, r->len);
    freeReplyObject(r);
    throw std::runtime_error(e);
  }
  std::vector<std::string> out;
  flatten(r, out);
  freeReplyObject(r);
  return out;
}

std::string Client::run(const std::vector<std::string>& args) {
  std::string text;
  for (const auto& s : list(args)) text += (text.empty() ? "" : "\n") + s;
  return text;
}

}  // namespace cluster_test

// --- Redis Cluster ----------------------------------------------------------------------

namespace cluster_test {

void require_redis_cli() {
  if (access("/usr/bin/redis-cli", X_OK) != 0) {
    std::fprintf(stderr, "SKIP: redis-cli is not installed (scripts/deps.sh installs redis-tools)\n");
    std::exit(kSkip);
  }
}

namespace {
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  return lines;
}

std::vector<std::string> words_of(const std::string& line) {
  std::vector<std::string> words;
  std::istringstream in(line);
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

// CLUSTER NODES line: ID HOST:PORT@BUS FLAGS MASTER PING PONG EPOCH LINK SLOT...
uint16_t port_in(const std::string& address) {
  size_t colon = address.find(':'), at = address.find('@');
  return uint16_t(std::stoi(address.substr(colon + 1, at - colon - 1)));
}

bool live_master(const std::vector<std::string>& w) {
  return w.size() >= 8 && w[2].find("master") != std::string::npos && w[2].find("fail") == std::string::npos;
}
}  // namespace

RedisCluster::RedisCluster() {
  require_redis_server();
  require_redis_cli();
  char dir[] = "/tmp/telemetryd-test-rcluster-XXXXXX";
  if (!mkdtemp(dir)) throw std::runtime_error("mkdtemp failed");
  dir_ = dir;
  std::vector<uint16_t> taken;
  auto fresh_port = [&] {
    for (;;) {
      uint16_t p = free_port();
      if (std::find(taken.begin(), taken.end(), p) == taken.end()) {
        taken.push_back(p);
        return p;
      }
    }
  };
  for (int i = 0; i < 6; ++i) {
    Node n;
    n.port = fresh_port();
    n.bus = fresh_port();  // cluster-port: the default PORT+10000 may be out of range
    std::string p = std::to_string(n.port);
    n.pid = spawn({"/usr/bin/redis-server", "--port", p, "--cluster-port", std::to_string(n.bus), "--bind",
                   "127.0.0.1", "--cluster-enabled", "yes", "--cluster-config-file", dir_ + "/nodes-" + p + ".conf",
                   "--cluster-node-timeout", "2000", "--cluster-replica-validity-factor", "0",
                   "--cluster-allow-replica-migration", "no", "--save", "", "--appendonly", "no", "--daemonize",
                   "no", "--dir", dir_, "--repl-diskless-sync-delay", "0"});
    nodes_.push_back(n);
  }
  for (const Node& n : nodes_)
    if (!answers_ping(n.port)) throw std::runtime_error("redis-server did not start on port " + std::to_string(n.port));
  std::vector<std::string> create{"/usr/bin/redis-cli", "--cluster", "create"};
  for (const Node& n : nodes_) create.push_back("127.0.0.1:" + std::to_string(n.port));
  for (const char* a : {"--cluster-replicas", "1", "--cluster-yes"}) create.push_back(a);
  pid_t cli = spawn(create);
  int status = 0;
  waitpid(cli, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw std::runtime_error("redis-cli --cluster create failed");
  if (!wait_for([&] { return all_ok(); }, std::chrono::seconds(20)))
    throw std::runtime_error("the Redis Cluster did not reach cluster_state:ok with its replicas in sync");
}

RedisCluster::~RedisCluster() {
  for (const Node& n : nodes_)
    if (n.pid > 0) ::kill(n.pid, SIGKILL);
  for (const Node& n : nodes_) {
    int status;
    if (n.pid > 0) waitpid(n.pid, &status, 0);
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

// Every live node is in a healthy cluster that knows all six, and every replica holds
// its master's data (a failover before that loses it).
bool RedisCluster::all_ok() {
  try {
    for (const Node& n : nodes_) {
      if (n.pid <= 0) continue;
      Client c(n.port);
      std::string info = c.run({"CLUSTER", "INFO"});
      if (info.find("cluster_state:ok") == std::string::npos || info.find("cluster_known_nodes:6") == std::string::npos)
        return false;
      std::string repl = c.run({"INFO", "replication"});
      if (repl.find("role:slave") != std::string::npos && repl.find("master_link_status:up") == std::string::npos)
        return false;
    }
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

std::string RedisCluster::url() const {
  std::string url = "redis-cluster://";
  for (size_t i = 0; i < 3; ++i) url += (i ? ",127.0.0.1:" : "127.0.0.1:") + std::to_string(nodes_[i].port);
  return url;
}

std::vector<uint16_t> RedisCluster::ports() const {
  std::vector<uint16_t> ports;
  for (const Node& n : nodes_) ports.push_back(n.port);
  return ports;
}

uint16_t RedisCluster::master_of(uint16_t slot) {
  uint16_t agreed = 0;
  for (const Node& n : nodes_) {
    if (n.pid <= 0) continue;
    uint16_t seen = 0;
    try {
      for (const std::string& line : lines_of(Client(n.port).run({"CLUSTER", "NODES"}))) {
        auto w = words_of(line);
        if (!live_master(w)) continue;
        for (size_t i = 8; i < w.size(); ++i) {
          if (w[i][0] == '[') continue;  // a migration in progress, not an owner
          size_t dash = w[i].find('-');
          int first = std::stoi(w[i].substr(0, dash));
          int last = dash == std::string::npos ? first : std::stoi(w[i].substr(dash + 1));
          if (slot >= first && slot <= last) seen = port_in(w[1]);
        }
      }
    } catch (const std::exception&) {
      return 0;
    }
    if (!seen || (agreed && seen != agreed)) return 0;
    agreed = seen;
  }
  return agreed;
}

// A node one view lists as a master may have been failed over since (a loaded host can
// miss the node timeout): each is asked its own role too.
std::vector<uint16_t> RedisCluster::masters() {
  for (const Node& n : nodes_) {
    if (n.pid <= 0) continue;
    std::vector<uint16_t> out;
    for (const std::string& line : lines_of(Client(n.port).run({"CLUSTER", "NODES"}))) {
      auto w = words_of(line);
      if (!live_master(w)) continue;
      uint16_t port = port_in(w[1]);
      try {
        if (Client(port).run({"INFO", "replication"}).find("role:master") != std::string::npos) out.push_back(port);
      } catch (const std::exception&) {
      }
    }
    return out;
  }
  return {};
}

std::string RedisCluster::node_id(uint16_t port) { return Client(port).run({"CLUSTER", "MYID"}); }

void RedisCluster::kill_now(uint16_t port) {
  for (Node& n : nodes_) {
    if (n.port != port || n.pid <= 0) continue;
    ::kill(n.pid, SIGKILL);
    int status;
    waitpid(n.pid, &status, 0);
    n.pid = -1;
  }
}

void RedisCluster::begin_migration(uint16_t slot, uint16_t from, uint16_t to) {
  std::string s = std::to_string(slot);
  Client(to).run({"CLUSTER", "SETSLOT", s, "IMPORTING", node_id(from)});
  Client(from).run({"CLUSTER", "SETSLOT", s, "MIGRATING", node_id(to)});
}

void RedisCluster::migrate_keys(uint16_t slot, uint16_t from, uint16_t to, const std::vector<std::string>& keys) {
  Client source(from);
  auto migrate = [&](const std::vector<std::string>& batch) {
    std::vector<std::string> args{"MIGRATE", "127.0.0.1", std::to_string(to), "", "0", "5000", "KEYS"};
    args.insert(args.end(), batch.begin(), batch.end());
    source.run(args);
  };
  if (!keys.empty()) {
    migrate(keys);
    return;
  }
  for (;;) {
    auto batch = source.list({"CLUSTER", "GETKEYSINSLOT", std::to_string(slot), "100"});
    if (batch.empty()) return;
    migrate(batch);
  }
}

void RedisCluster::end_migration(uint16_t slot, uint16_t from, uint16_t to) {
  std::vector<std::string> set{"CLUSTER", "SETSLOT", std::to_string(slot), "NODE", node_id(to)};
  Client(to).run(set);
  Client(from).run(set);
  for (uint16_t m : masters())
    if (m != to && m != from) Client(m).run(set);
}

void RedisCluster::move_slot(uint16_t slot, uint16_t from, uint16_t to) {
  begin_migration(slot, from, to);
  migrate_keys(slot, from, to);
  end_migration(slot, from, to);
}

}  // namespace cluster_test
