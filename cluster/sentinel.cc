// cluster/sentinel.cc: asking Redis Sentinel for the master and watching for failovers
// (see sentinel.h). Each ask is a Query that walks a copy of the sentinel list with one
// short-lived connection at a time; the Watch holds one subscribed connection. Every
// hiredis context is freed from an event of our own, never inside hiredis's callbacks.
#include "cluster/sentinel.h"

#include <charconv>
#include <sstream>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>

#include "common/log.h"

namespace cluster {

namespace log = common::log;

namespace {
constexpr timeval kAskTimeout{0, 500'000};  // per sentinel: a short one, then the next
constexpr timeval kSubscribeTimeout{2, 0};
constexpr timeval kWatchRetry{1, 0};

// Frees a context whose callbacks must not reach their owner any more.
void close_context(redisAsyncContext* ac) {
  ac->data = nullptr;
  ac->onDisconnect = nullptr;
  redisAsyncFree(ac);  // pending reply callbacks run with no reply and return
}

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

struct Sentinel::Query {
  Sentinel* owner;
  Answer done;
  std::vector<HostPort> order;  // the sentinels when the ask began, front first
  size_t tried = 0;             // order[tried] is being asked
  redisAsyncContext* ac = nullptr;
  event* step = nullptr;        // the current sentinel's deadline, or its outcome
  bool have_outcome = false;
  bool found = false;
  HostPort master;
  std::string error;            // the current sentinel's
  std::string errors;           // every sentinel's so far

  ~Query() {
    if (ac) close_context(ac);
    event_free(step);
  }
  void outcome(std::string why) {
    if (have_outcome) return;
    have_outcome = true;
    error = std::move(why);
    event_del(step);  // the deadline: the step runs once per sentinel
    event_active(step, 0, 0);
  }
};

void Sentinel::ask(Answer done) {
  auto q = std::make_unique<Query>();
  q->owner = this;
  q->done = std::move(done);
  q->order = sentinels_;
  q->step = event_new(base_, -1, 0, [](int, short, void* arg) {
    auto* q = static_cast<Query*>(arg);
    Sentinel* self = q->owner;
    if (!q->have_outcome) q->error = "no answer within " + std::to_string(kAskTimeout.tv_usec / 1000) + "ms";
    if (q->ac) {
      redisAsyncContext* ac = q->ac;
      q->ac = nullptr;
      close_context(ac);
    }
    const HostPort asked = q->order[q->tried];
    if (q->found) {
      for (size_t i = 0; i < self->sentinels_.size(); ++i)
        if (self->sentinels_[i].text() == asked.text()) self->answered(i);
      Answer done = std::move(q->done);
      HostPort master = q->master;
      self->queries_.remove_if([q](const std::unique_ptr<Query>& p) { return p.get() == q; });
      done(&master, std::string());
      return;
    }
    if (!q->errors.empty()) q->errors += "; ";
    q->errors += asked.text() + ": " + q->error;
    if (++q->tried < q->order.size()) {
      self->ask_next(*q);
      return;
    }
    Answer done = std::move(q->done);
    std::string why = "no sentinel gave the address of master '" + self->name_ + "' (" + q->errors + ")";
    self->queries_.remove_if([q](const std::unique_ptr<Query>& p) { return p.get() == q; });
    done(nullptr, why);
  }, q.get());
  Query& query = *q;
  queries_.push_back(std::move(q));
  ask_next(query);
}

void Sentinel::ask_next(Query& q) {
  q.have_outcome = false;
  q.found = false;
  std::string error;
  q.ac = open_context(base_, q.order[q.tried], &q, &error);
  if (!q.ac) {
    q.outcome(error);  // reported from the loop, like every outcome
    return;
  }
  redisAsyncSetConnectCallback(q.ac, [](const redisAsyncContext* ac, int status) {
    auto* q = static_cast<Query*>(ac->data);
    if (!q || q->ac != ac || status == REDIS_OK) return;
    q->ac = nullptr;  // hiredis frees it after this callback
    q->outcome(std::string("connect: ") + (ac->errstr ? ac->errstr : "failed"));
  });
  redisAsyncSetDisconnectCallback(q.ac, [](const redisAsyncContext* ac, int) {
    auto* q = static_cast<Query*>(ac->data);
    if (!q || q->ac != ac) return;
    q->ac = nullptr;  // freed by hiredis after this callback
    q->outcome("disconnected");
  });
  const char* argv[] = {"SENTINEL", "get-master-addr-by-name", name_.c_str()};
  size_t lens[] = {8, 23, name_.size()};
  redisAsyncCommandArgv(q.ac, [](redisAsyncContext* ac, void* r, void* privdata) {
    auto* q = static_cast<Query*>(privdata);
    auto* reply = static_cast<redisReply*>(r);
    if (!reply || q->ac != ac) return;
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
  }, &q, 3, argv, lens);
  evtimer_add(q.step, &kAskTimeout);
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
