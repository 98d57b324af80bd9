// cluster/ask_in_turn.cc: one question asked of a list of Redis servers in turn (see
// ask_in_turn.h).
#include "cluster/ask_in_turn.h"

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>

namespace cluster {

namespace {
constexpr timeval kAskTimeout{0, 500'000};  // per server: a short one, then the next
}  // namespace

void close_context(redisAsyncContext* ac) {
  ac->data = nullptr;
  ac->onDisconnect = nullptr;
  redisAsyncFree(ac);  // pending reply callbacks run with no reply and return
}

AskInTurn::AskInTurn(event_base* base, std::vector<HostPort> servers) : order(std::move(servers)), base_(base) {}

AskInTurn::~AskInTurn() {
  if (ac_) close_context(ac_);
  event_free(step_);
}

void AskInTurn::start() {
  step_ = event_new(base_, -1, 0, &AskInTurn::step, this);
  ask_current();
}

void AskInTurn::outcome(std::string why) {
  if (have_outcome_) return;
  have_outcome_ = true;
  error_ = std::move(why);
  event_del(step_);  // the deadline: the step runs once per server
  event_active(step_, 0, 0);
}

void AskInTurn::step(int, short, void* arg) {
  auto* q = static_cast<AskInTurn*>(arg);
  if (!q->have_outcome_) q->error_ = "no answer within " + std::to_string(kAskTimeout.tv_usec / 1000) + "ms";
  if (q->ac_) {
    redisAsyncContext* ac = q->ac_;
    q->ac_ = nullptr;
    close_context(ac);
  }
  if (q->found) {
    q->finished();
    return;
  }
  if (!q->errors.empty()) q->errors += "; ";
  q->errors += q->asked().text() + ": " + q->error_;
  if (++q->tried < q->order.size()) {
    q->ask_current();
    return;
  }
  q->finished();
}

void AskInTurn::ask_current() {
  have_outcome_ = false;
  found = false;
  reset();
  const HostPort& where = asked();
  redisAsyncContext* ac = redisAsyncConnect(where.host.c_str(), where.port);
  if (!ac || ac->err) {
    std::string why = std::string("connect: ") + (ac ? ac->errstr : "out of memory");
    if (ac) redisAsyncFree(ac);
    outcome(why);  // reported from the loop, like every outcome
    return;
  }
  ac->data = this;
  redisLibeventAttach(ac, base_);
  ac_ = ac;
  redisAsyncSetConnectCallback(ac, [](const redisAsyncContext* ac, int status) {
    auto* q = static_cast<AskInTurn*>(ac->data);
    if (!q || q->ac_ != ac || status == REDIS_OK) return;
    q->ac_ = nullptr;  // hiredis frees it after this callback
    q->outcome(std::string("connect: ") + (ac->errstr ? ac->errstr : "failed"));
  });
  redisAsyncSetDisconnectCallback(ac, [](const redisAsyncContext* ac, int) {
    auto* q = static_cast<AskInTurn*>(ac->data);
    if (!q || q->ac_ != ac) return;
    q->ac_ = nullptr;  // freed by hiredis after this callback
    q->outcome("disconnected");
  });
  send(ac);
  evtimer_add(step_, &kAskTimeout);
}

}  // namespace cluster
