// cluster/redis.cc: the Redis connection (see redis.h).
#include "cluster/redis.h"

#include <ctime>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>

#include "cluster/sentinel.h"
#include "cluster/slots.h"
#include "common/log.h"

namespace cluster {

namespace {
constexpr std::chrono::milliseconds kFirstBackoff{50};
constexpr std::chrono::milliseconds kMaxBackoff{1000};
constexpr std::chrono::milliseconds kConnectTimeout{2000};
constexpr timeval kCheckEvery{0, 50'000};
}  // namespace

int64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

int64_t unix_ms() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

struct Connection::Pending {
  Connection* connection;
  Callback done;
  std::vector<std::string> args;  // on a Redis Cluster: to send again after an ASK
  std::chrono::milliseconds timeout{0};
};

Connection::Connection(event_base* base, Address address, std::string label, std::function<void(bool up)> on_change,
                       Sentinel* sentinel, Slots* slots, const std::string& slot_key)
    : base_(base), address_(std::move(address)), sentinel_(sentinel),
      server_(sentinel || slots ? HostPort{"", 0} : address_.server), slots_(slots), slot_(key_slot(slot_key)),
      label_(std::move(label)), on_change_(std::move(on_change)) {
  if (address_.via_sentinel() && !sentinel_) throw std::logic_error("a Sentinel address needs a Sentinel");
  if (address_.via_cluster() && !slots_) throw std::logic_error("a Redis Cluster address needs a slot map");
  retry_ = evtimer_new(base_, &Connection::on_retry, this);
  check_ = event_new(base_, -1, EV_PERSIST, &Connection::on_check, this);
  drop_ = event_new(base_, -1, 0, &Connection::on_drop, this);
}

Connection::~Connection() {
  closing_ = true;
  asks_.clear();
  if (ac_) redisAsyncFree(ac_);  // pending callbacks run with no reply and are dropped
  event_free(retry_);
  event_free(check_);
  event_free(drop_);
}

void Connection::start() {
  last_check_ns_ = monotonic_ns();
  event_add(check_, &kCheckEvery);
  connect();
}

std::string Connection::where() const {
  if (slots_) {
    std::string of = "master of slot " + std::to_string(slot_);
    return server_.host.empty() ? of + " (not found yet)" : server_.text() + " (" + of + ")";
  }
  if (!sentinel_) return address_.text();
  if (server_.host.empty()) return "master " + sentinel_->master_name() + " (not found yet)";
  return server_.text() + " (master " + sentinel_->master_name() + ")";
}

void Connection::connect() {
  state_ = RedisState::connecting;
  if (slots_) {
    if (moved_) {  // the cluster named the master itself
      moved_ = false;
      server_ = moved_to_;
      open();
      return;
    }
    // Asked on every (re)connection: a lost connection may be a failover that promoted
    // a replica, or a slot that moved.
    slots_->ask(slot_, [this](const HostPort* master, const std::string& error) {
      if (!master) {
        lost("redis cluster: " + error);
        return;
      }
      server_ = *master;
      open();
    });
    return;
  }
  if (!sentinel_) {
    open();
    return;
  }
  // The Sentinel client rules: ask where the master is on every (re)connection, never
  // trust the last answer.
  asking_ = true;
  sentinel_->ask([this](const HostPort* master, const std::string& error) {
    asking_ = false;
    if (!master) {
      lost("sentinel: " + error);
      return;
    }
    server_ = *master;
    open();
  });
}

void Connection::open() {
  connect_deadline_ = monotonic_ns() + kConnectTimeout.count() * 1'000'000;
  redisAsyncContext* ac = redisAsyncConnect(server_.host.c_str(), server_.port);
  if (!ac || ac->err) {
    std::string why = ac ? ac->errstr : "out of memory";
    if (ac) redisAsyncFree(ac);
    lost("connect: " + why);
    return;
  }
  ac->data = this;
  redisLibeventAttach(ac, base_);
  redisAsyncSetConnectCallback(ac, &Connection::on_connect);
  redisAsyncSetDisconnectCallback(ac, &Connection::on_disconnect);
  ac_ = ac;
}

void Connection::on_connect(const redisAsyncContext* ac, int status) {
  auto* self = static_cast<Connection*>(ac->data);
  if (self->closing_ || self->ac_ != ac) return;
  if (status != REDIS_OK) {
    // hiredis frees the context after this callback.
    self->ac_ = nullptr;
    self->lost(std::string("connect: ") + (ac->errstr ? ac->errstr : "failed"));
    return;
  }
  self->confirm_master();
}

// The connection counts as up once the server answered, and answered that it is the
// master. A TCP connect alone is not Redis answering: across a partition the peer's
// kernel (or a middlebox) accepts it and nothing more comes. And a sentinel's answer may
// be stale, and a server given by address may have been made a replica: the writes
// would fail there, and its log may be behind the master's.
void Connection::confirm_master() {
  send({"ROLE"}, [this](const redisReply* r, const std::string& error) {
    if (!r) {
      if (error != "disconnected") drop("ROLE: " + error);
      return;
    }
    std::string role = r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_STRING
                           ? std::string(r->element[0]->str, r->element[0]->len)
                           : std::string("?");
    if (role != "master") {
      drop(server_.text() + " is a " + role + ", not the master");
      return;
    }
    ready();
  }, kConnectTimeout);
}

void Connection::ready() {
  state_ = RedisState::connected;
  if (address_.db != 0)
    command({"SELECT", std::to_string(address_.db)}, [this](const redisReply* r, const std::string& e) {
      if (!r) drop("SELECT " + std::to_string(address_.db) + ": " + e);
    });
  backoff_ = std::chrono::milliseconds(0);
  if (reported_down_) common::log::info("redis {} ({}): connected again", where(), label_);
  else common::log::info("redis {} ({}): connected", where(), label_);
  reported_down_ = false;
  if (on_change_) on_change_(true);
}

void Connection::on_disconnect(const redisAsyncContext* ac, int status) {
  auto* self = static_cast<Connection*>(ac->data);
  if (self->closing_ || self->ac_ != ac) return;
  self->ac_ = nullptr;  // freed by hiredis after this callback
  self->lost(status == REDIS_OK ? std::string("disconnected")
                                : std::string("connection lost: ") + (ac->errstr ? ac->errstr : "error"));
}

void Connection::lost(const std::string& why) {
  bool was_up = state_ == RedisState::connected;
  state_ = RedisState::down;
  deadlines_.clear();
  ++errors_;
  if (!reported_down_) {
    common::log::warn("redis {} ({}): {}; reconnecting with backoff (logged again once connected)", where(), label_,
                      why);
    reported_down_ = true;
  }
  schedule_retry();
  if (was_up && on_change_) on_change_(false);
}

void Connection::schedule_retry() {
  backoff_ = backoff_.count() == 0 ? kFirstBackoff : std::min(backoff_ * 2, kMaxBackoff);
  timeval tv{time_t(backoff_.count() / 1000), suseconds_t(backoff_.count() % 1000 * 1000)};
  evtimer_add(retry_, &tv);
}

void Connection::on_retry(int, short, void* arg) { static_cast<Connection*>(arg)->connect(); }

// Replies come back in order on one connection, so the oldest command in flight holds
// the earliest deadline that matters; a server that stops answering (stopped,
// partitioned) is dropped instead of leaving callbacks waiting for ever. Time in which
// this loop did not turn (a snapshot build or a checkpoint of a million series takes
// seconds) is not the server's: the deadlines move by it, else every command queued
// before a long build would time out unsent.
void Connection::on_check(int, short, void* arg) {
  auto* self = static_cast<Connection*>(arg);
  int64_t now = monotonic_ns();
  constexpr int64_t kCheckEveryNs = kCheckEvery.tv_sec * 1'000'000'000LL + kCheckEvery.tv_usec * 1'000LL;
  int64_t stalled = now - self->last_check_ns_ - 2 * kCheckEveryNs;
  self->last_check_ns_ = now;
  if (stalled > 0) {
    for (int64_t& d : self->deadlines_) d += stalled;
    self->connect_deadline_ += stalled;
  }
  if (self->state_ == RedisState::connecting && self->ac_ && now > self->connect_deadline_) {
    self->drop("connect: no answer within " + std::to_string(kConnectTimeout.count()) + "ms");
  } else if (!self->deadlines_.empty() && now > self->deadlines_.front()) {
    self->drop("no reply in time");
  }
}

// Deferred to the loop: hiredis must not free a context from inside its own callback.
void Connection::drop(const std::string& why) {
  if (!ac_ || !drop_reason_.empty()) return;
  drop_reason_ = why;
  event_active(drop_, 0, 0);
}

void Connection::on_drop(int, short, void* arg) {
  auto* self = static_cast<Connection*>(arg);
  std::string why = std::move(self->drop_reason_);
  self->drop_reason_.clear();
  redisAsyncContext* ac = self->ac_;
  if (!ac) return;
  self->ac_ = nullptr;
  ac->onDisconnect = nullptr;  // the outage is reported by lost(), once
  redisAsyncFree(ac);          // runs every pending callback with no reply
  self->lost(why);
}

bool Connection::command(const std::vector<std::string>& args, Callback done, std::chrono::milliseconds timeout) {
  if (state_ != RedisState::connected) return false;
  return send(args, std::move(done), timeout);
}

bool Connection::send(const std::vector<std::string>& args, Callback done, std::chrono::milliseconds timeout) {
  if (!ac_ || !drop_reason_.empty()) return false;
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* pending = new Pending{this, std::move(done), {}, timeout};
  if (slots_) pending->args = args;
  if (redisAsyncCommandArgv(ac_, &Connection::on_reply, pending, int(argv.size()), argv.data(), lens.data()) !=
      REDIS_OK) {
    delete pending;
    return false;
  }
  deadlines_.push_back(monotonic_ns() + timeout.count() * 1'000'000);
  return true;
}

void Connection::on_reply(redisAsyncContext*, void* r, void* privdata) {
  auto* pending = static_cast<Pending*>(privdata);
  Connection* self = pending->connection;
  if (self->closing_) {
    delete pending;
    return;
  }
  if (!self->deadlines_.empty()) self->deadlines_.pop_front();
  auto* reply = static_cast<redisReply*>(r);
  if (reply && reply->type == REDIS_REPLY_ERROR && self->slots_ &&
      self->redirected(*pending, std::string(reply->str, reply->len))) {
    delete pending;
    return;
  }
  Callback done = std::move(pending->done);
  delete pending;
  if (!reply) {
    done(nullptr, "disconnected");
  } else if (reply->type == REDIS_REPLY_ERROR) {
    ++self->errors_;
    std::string error(reply->str, reply->len);
    // The master was made a replica (a failover): look it up again.
    if (error.rfind("READONLY", 0) == 0) self->drop("the server is a replica now: " + error);
    done(nullptr, error);
  } else {
    done(reply, std::string());
  }
}

// --- Redis Cluster redirects ----------------------------------------------------------

// A command sent again after an ASK redirect, on its own connection to the slot's
// migration target: ASKING holds for the next command on that connection only.
struct Connection::Ask {
  Connection* owner = nullptr;
  Callback done;  // empty once answered
  HostPort to;
  redisAsyncContext* ac = nullptr;
  event* timer = nullptr;  // the reply's deadline, then the clean-up

  ~Ask() {
    done = nullptr;  // freeing the context runs the reply callback: it must not answer
    if (ac) {
      ac->data = nullptr;
      ac->onDisconnect = nullptr;
      redisAsyncFree(ac);
    }
    event_free(timer);
  }
  void answer(const redisReply* r, const std::string& error) {
    if (!done) return;
    Callback d = std::move(done);
    done = nullptr;
    event_del(timer);
    event_active(timer, 0, 0);  // the clean-up, from the loop: never inside hiredis
    d(r, error);
  }
};

// MOVED and ASK are answered here (true); any other error is the caller's.
bool Connection::redirected(Pending& pending, const std::string& error) {
  Redirect r;
  if (!parse_redirect(error, &r)) return false;
  ++errors_;
  if (r.ask) {
    follow_ask(r.to, pending);
    return true;
  }
  // The map was stale: the slot's master is the one named. Every command queued behind
  // this one meets the same redirect, so the connection goes now and is made again there.
  slots_->moved(r.slot, r.to);
  moved_ = true;
  moved_to_ = r.to;
  drop("slot " + std::to_string(r.slot) + " moved to " + r.to.text());
  Callback done = std::move(pending.done);
  done(nullptr, error);
  return true;
}

void Connection::follow_ask(const HostPort& to, Pending& pending) {
  auto owned = std::make_unique<Ask>();
  Ask& a = *owned;
  a.owner = this;
  a.done = std::move(pending.done);
  a.to = to;
  a.timer = evtimer_new(base_, [](int, short, void* arg) {
    auto* a = static_cast<Ask*>(arg);
    if (a->done) {
      Callback d = std::move(a->done);
      a->done = nullptr;
      d(nullptr, "ASK " + a->to.text() + ": no reply in time");
    }
    a->owner->asks_.remove_if([a](const std::unique_ptr<Ask>& p) { return p.get() == a; });
  }, &a);
  asks_.push_back(std::move(owned));
  timeval tv{time_t(pending.timeout.count() / 1000), suseconds_t(pending.timeout.count() % 1000 * 1000)};
  evtimer_add(a.timer, &tv);
  redisAsyncContext* ac = redisAsyncConnect(to.host.c_str(), to.port);
  if (!ac || ac->err) {
    std::string why = ac ? ac->errstr : "out of memory";
    if (ac) redisAsyncFree(ac);
    a.answer(nullptr, "ASK " + to.text() + ": connect: " + why);
    return;
  }
  ac->data = &a;
  redisLibeventAttach(ac, base_);
  a.ac = ac;
  redisAsyncSetConnectCallback(ac, [](const redisAsyncContext* ac, int status) {
    auto* a = static_cast<Ask*>(ac->data);
    if (!a || status == REDIS_OK || a->ac != ac) return;
    a->ac = nullptr;  // hiredis frees it after this callback
    a->answer(nullptr, "ASK " + a->to.text() + ": connect: " + (ac->errstr ? ac->errstr : "failed"));
  });
  redisAsyncSetDisconnectCallback(ac, [](const redisAsyncContext* ac, int) {
    auto* a = static_cast<Ask*>(ac->data);
    if (!a || a->ac != ac) return;
    a->ac = nullptr;  // freed by hiredis after this callback
    a->answer(nullptr, "ASK " + a->to.text() + ": disconnected");
  });
  redisAsyncCommand(ac, nullptr, nullptr, "ASKING");
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& arg : pending.args) {
    argv.push_back(arg.data());
    lens.push_back(arg.size());
  }
  redisAsyncCommandArgv(ac, [](redisAsyncContext*, void* r, void* privdata) {
    auto* a = static_cast<Ask*>(privdata);
    auto* reply = static_cast<redisReply*>(r);
    if (!reply) {
      a->answer(nullptr, "ASK " + a->to.text() + ": disconnected");
    } else if (reply->type == REDIS_REPLY_ERROR) {
      ++a->owner->errors_;
      a->answer(nullptr, std::string(reply->str, reply->len));
    } else {
      a->answer(reply, std::string());
    }
  }, &a, int(argv.size()), argv.data(), lens.data());
}

}  // namespace cluster
