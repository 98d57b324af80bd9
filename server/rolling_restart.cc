// server/rolling_restart.cc: `restart readers`. Each old reader is replaced in turn: a
// new one starts on a free slot, and only once it serves (a heartbeat newer than its
// start) is the old one told to drain and stop, so the service never has fewer readers
// serving than configured and no connection is refused.
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <fmt/format.h>

#include "common/log.h"
#include "server/process.h"
#include "server/service.h"
#include "server/supervisor_impl.h"

namespace server {

namespace log = common::log;

void Supervisor::restart_readers(const Command& command, ReplyFn reply) {
  if (rolling_) {  // one already runs: answer when it ends
    rolling_->waiters.emplace_back(command, std::move(reply));
    return;
  }
  RollingRestart r;
  for (auto& c : readers_)
    if (c->state == State::running) r.old_pids.push_back(c->pid);
  r.waiters.emplace_back(command, std::move(reply));
  log::info("restart readers: replacing {} reader(s), one at a time", r.old_pids.size());
  rolling_ = std::move(r);
}

void Supervisor::advance_rolling_restart(uint64_t now, const shm::StoreInfo& info) {
  if (!rolling_) return;
  RollingRestart& r = *rolling_;
  auto finish = [&](const std::string& error) {
    for (auto& [c, reply] : r.waiters)
      reply(error.empty() ? report_reply(c, Report().add("restarted", r.replaced)) : error_reply(c, error));
    if (error.empty()) log::info("restart readers: done, {} replaced", r.replaced);
    else log::error("restart readers: {}", error);
    rolling_.reset();
  };
  if (r.retiring != 0) {  // waiting for the old one to go
    if (now >= r.step_deadline) {
      kill(r.retiring, SIGKILL);
      r.step_deadline = now + ms_to_ns(kRollingStepTimeout);
    }
    return;
  }
  if (r.replacement != 0) {  // waiting for the new one to serve
    Child* c = find(r.replacement);
    if (!c || c->state != State::running) return finish("the new reader died before it was ready");
    if (!reader_ready(*c, info)) {
      if (now >= r.step_deadline) finish("the new reader was not ready in time");
      return;
    }
    r.replacement = 0;
    pid_t old = r.old_pids.front();
    r.old_pids.pop_front();
    if (Child* o = find(old); o && o->state == State::running) {
      o->retiring = true;
      o->state = State::stopping;
      kill(old, SIGTERM);
      r.retiring = old;
      r.step_deadline = now + ms_to_ns(options_.shutdown_timeout);
    }
    ++r.replaced;
    return;
  }
  while (!r.old_pids.empty() && !find(r.old_pids.front())) r.old_pids.pop_front();  // died meanwhile
  if (r.old_pids.empty()) return finish("");
  std::optional<uint32_t> slot = free_slot();
  if (!slot) return finish("no free reader slot");
  auto fresh = std::make_unique<Child>();
  fresh->slot = *slot;
  spawn(*fresh);
  if (fresh->pid <= 0) return finish("fork failed");
  r.replacement = fresh->pid;
  r.step_deadline = now + ms_to_ns(kRollingStepTimeout);
  readers_.push_back(std::move(fresh));
}

}  // namespace server
