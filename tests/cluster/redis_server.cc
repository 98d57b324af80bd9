// tests/cluster/redis_server.cc: see redis_server.h.
#include "tests/cluster/redis_server.h"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
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
