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

RedisServer::RedisServer() {
  require_redis_server();
  port_ = free_port();
  start();
}

RedisServer::~RedisServer() {
  if (pid_ > 0) kill_now();
}

void RedisServer::start() {
  pid_ = fork();
  if (pid_ == 0) {
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    execl("/usr/bin/redis-server", "redis-server", "--port", std::to_string(port_).c_str(), "--bind", "127.0.0.1",
          "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", "/tmp", static_cast<char*>(nullptr));
    _exit(127);
  }
  bool up = wait_for([&] {
    redisContext* c = redisConnect("127.0.0.1", port_);
    bool ok = c && !c->err;
    if (ok) {
      auto* r = static_cast<redisReply*>(redisCommand(c, "PING"));
      ok = r && r->type == REDIS_REPLY_STATUS;
      if (r) freeReplyObject(r);
    }
    if (c) redisFree(c);
    return ok;
  }, std::chrono::seconds(10));
  if (!up) throw std::runtime_error("redis-server did not start on port " + std::to_string(port_));
}

void RedisServer::kill_now() {
  ::kill(pid_, SIGCONT);
  ::kill(pid_, SIGKILL);
  int status;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

void RedisServer::stop_process(bool stop) { ::kill(pid_, stop ? SIGSTOP : SIGCONT); }

Client::Client(uint16_t port) {
  c_ = redisConnect("127.0.0.1", port);
  if (!c_ || c_->err) throw std::runtime_error("cannot connect to redis on " + std::to_string(port));
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
