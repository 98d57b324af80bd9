// cluster/sentinel.cc: asking Redis Sentinel for the master and watching for failovers
// (see sentinel.h). Each ask is a Query that walks a copy of the sentinel list with one
// short-lived connection at a time (ask_in_turn.h); the Watch holds one subscribed
// connection. Every hiredis context is freed from an event of our own, never inside
// hiredis's callbacks.
#include "cluster/sentinel.h"

#include <charconv>
#include <sstream>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>

#include "cluster/ask_in_turn.h"
#include "common/log.h"

namespace cluster {

namespace log = common::log;

namespace {
constexpr timeval kSubscribeTimeout{2, 0};
constexpr timeval kWatchRetry{1, 0};

redisAsyncContext* open_context(event_base* base, const HostPort& where, void* owner, std::string* error) {
  redisAsyncContext* ac = redisAsyncConnect(where.host.c_str(), where.port);
  if (!ac || ac->err) {
    *error = std::string("connect: ") + (ac ? ac->errstr : "out of memory");
    if (ac) redisAsyncFree(ac);
    return nullptr;
  }
  ac->data = owner;
  redisLibeventAttach(ac, base);
  return ac;
}

std::string text_of(const redisReply* r) { return std::string(r->str, r->len); }

bool parse_port(std::string_view text, int& port) {
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
  return ec == std::errc() && p == text.data() + text.size() && port > 0 && port < 65536;
}
}  // namespace

// --- ask --------------------------------------------------------------------------

struct Sentinel::Query : AskInTurn {
  Query(Sentinel* sentinel, Answer answer)
      : AskInTurn(sentinel->base_, sentinel->sentinels_), owner(sentinel), done(std::move(answer)) {}

  Sentinel* owner;
  Answer done;
  HostPort master;  // found: the answer

  void send(redisAsyncContext* ac) override;
  void finished() override;
};

void Sentinel::ask(Answer done) {
  queries_.push_back(std::make_unique<Query>(this, std::move(done)));
  queries_.back()->start();
}

void Sentinel::Query::send(redisAsyncContext* ac) {
  const std::string& name = owner->name_;
  const char* argv[] = {"SENTINEL", "get-master-addr-by-name", name.c_str()};
  size_t lens[] = {8, 23, name.size()};
  redisAsyncCommandArgv(ac, [](redisAsyncContext* ac, void* r, void* privdata) {
    auto* q = static_cast<Query*>(privdata);
    auto* reply = static_cast<redisReply*>(r);
    if (!reply || !q->current(ac)) return;
    int port = 0;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 && reply->element[0]->type == REDIS_REPLY_STRING &&
        reply->element[1]->type == REDIS_REPLY_STRING && parse_port(text_of(reply->element[1]), port)) {
      q->found = true;
      q->master = HostPort{text_of(reply->element[0]), port};
      q->outcome(std::string());
    } else if (reply->type == REDIS_REPLY_NIL) {
      q->outcome("does not know master '" + q->owner->name_ + "'");
    } else if (reply->type == REDIS_REPLY_ERROR) {
      q->outcome(text_of(reply));
    } else {
      q->outcome("an answer that is not an address");
    }
  }, this, 3, argv, lens);
}

void Sentinel::Query::finished() {
  Sentinel* self = owner;
  if (found)
    for (size_t i = 0; i < self->sentinels_.size(); ++i)
      if (self->sentinels_[i].text() == asked().text()) self->answered(i);
  Answer answer = std::move(done);
  const bool ok = found;
  const HostPort address = master;
  const std::string why = "no sentinel gave the address of master '" + self->name_ + "' (" + errors + ")";
  self->queries_.remove_if([this](const std::unique_ptr<Query>& p) { return p.get() == this; });  // this is gone
  if (ok)
    answer(&address, std::string());
  else
    answer(nullptr, why);
}

void Sentinel::answered(size_t index) {
  if (index == 0) return;
  HostPort s = sentinels_[index];
  sentinels_.erase(sentinels_.begin() + ptrdiff_t(index));
  sentinels_.insert(sentinels_.begin(), std::move(s));
}

// --- watch ------------------------------------------------------------------------

struct Sentinel::Watch {
  Sentinel* owner;
  std::function<void(const HostPort&)> on_switch;
  size_t next = 0;               // the sentinel to subscribe to next
  redisAsyncContext* ac = nullptr;
  event* timer = nullptr;        // subscribing: its deadline; lost: the retry
  bool subscribed = false;
  std::string where;

  ~Watch() {
    if (ac) close_context(ac);
    event_free(timer);
  }
  void open();
  void lost(const std::string& why);
};

void Sentinel::Watch::open() {
  const HostPort& s = owner->sentinels_[next++ % owner->sentinels_.size()];
  where = s.text();
  subscribed = false;
  std::string error;
  ac = open_context(owner->base_, s, this, &error);
  if (!ac) {
    lost(error);
    return;
  }
  redisEnableKeepAlive(&ac->c);  // a subscription is idle: let TCP notice a peer that vanished
  redisAsyncSetConnectCallback(ac, [](const redisAsyncContext* ac, int status) {
    auto* w = static_cast<Watch*>(ac->data);
    if (!w || w->ac != ac || status == REDIS_OK) return;
    w->ac = nullptr;
    w->lost(std::string("connect: ") + (ac->errstr ? ac->errstr : "failed"));
  });
  redisAsyncSetDisconnectCallback(ac, [](const redisAsyncContext* ac, int) {
    auto* w = static_cast<Watch*>(ac->data);
    if (!w || w->ac != ac) return;
    w->ac = nullptr;
    w->lost("disconnected");
  });
  redisAsyncCommand(ac, [](redisAsyncContext* ac, void* r, void* privdata) {
    auto* w = static_cast<Watch*>(privdata);
    auto* reply = static_cast<redisReply*>(r);
    if (!reply || w->ac != ac || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) return;
    std::string kind = reply->element[0]->type == REDIS_REPLY_STRING ? text_of(reply->element[0]) : "";
    if (kind == "subscribe") {
      w->subscribed = true;
      evtimer_del(w->timer);
      log::debug("sentinel {}: watching +switch-master", w->where);
    } else if (kind == "message" && reply->element[2]->type == REDIS_REPLY_STRING) {
      // "<master name> <old ip> <old port> <new ip> <new port>"
      std::istringstream in(text_of(reply->element[2]));
      std::string name, old_ip, old_port, ip, port_text;
      int port = 0;
      if (in >> name >> old_ip >> old_port >> ip >> port_text && name == w->owner->name_ && parse_port(port_text, port)) {
        log::info("sentinel {}: master '{}' moved from {}:{} to {}:{}", w->where, name, old_ip, old_port, ip, port);
        w->on_switch(HostPort{ip, port});
      }
    }
  }, this, "SUBSCRIBE +switch-master");
  evtimer_add(timer, &kSubscribeTimeout);
}

void Sentinel::Watch::lost(const std::string& why) {
  log::debug("sentinel {}: watch lost ({}), trying the next sentinel", where, why);
  subscribed = false;
  evtimer_add(timer, &kWatchRetry);
}

void Sentinel::watch(std::function<void(const HostPort&)> on_switch) {
  watch_ = std::make_unique<Watch>();
  watch_->owner = this;
  watch_->on_switch = std::move(on_switch);
  watch_->timer = evtimer_new(base_, [](int, short, void* arg) {
    auto* w = static_cast<Watch*>(arg);
    if (w->ac) {  // not subscribed in time
      redisAsyncContext* ac = w->ac;
      w->ac = nullptr;
      close_context(ac);
    }
    w->open();
  }, watch_.get());
  watch_->open();
}

// --- ---------------------------------------------------------------------------------

Sentinel::Sentinel(event_base* base, std::vector<HostPort> sentinels, std::string master_name)
    : base_(base), sentinels_(std::move(sentinels)), name_(std::move(master_name)) {}

Sentinel::~Sentinel() = default;

}  // namespace cluster
