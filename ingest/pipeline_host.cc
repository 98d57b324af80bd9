// pipeline_host.cc: the pipeline's side of the cluster: the leader's tick sealed
// into an entry, entries applied, checkpoints taken and restored, leading switched.

#include "ingest/pipeline_impl.h"

namespace ingest {

// A leader's tick: applies the staged samples as a follower applies an entry, then
// completes the sources' statuses and seals the entry. False (and the tick dropped,
// the state unchanged) only if the staged payload fails its own checks, a bug.
bool Pipeline::Impl::seal_tick(uint64_t seq, std::string* entry) {
  std::string payload = replica.take_staged();
  std::vector<ApplyStats> stats;
  try {
    replica.apply(payload, seq, tick_ns, aggregator, &stats, nullptr);
    aggregator.expire(tick_ns);  // as a follower does at each entry (apply_entry)
  } catch (const std::exception& e) {
    for (auto& s : sources) record(*s, 0, std::string("entry refused: ") + e.what());
    return false;
  }
  for (size_t i = 0; i < sources.size() && i < stats.size(); ++i) {
    Source& s = *sources[i];
    std::string note = count_applied(s, stats[i], {});
    if (!note.empty() && s.status.last_error.empty()) {
      ++s.status.errors;
      s.status.last_error_ns = shm::realtime_ns();
      s.status.last_error = std::move(note);
    }
  }
  Replica::put_statuses(payload, statuses());
  *entry = Replica::seal_entry(seq, tick_ns, payload);
  return true;
}

uint64_t Pipeline::applied_seq() const { return impl_->applied_seq; }
void Pipeline::set_applied_seq(uint64_t seq) { impl_->applied_seq = seq; }
void Pipeline::set_sample_tap(SampleTap tap, std::function<void(int64_t)> tick_done) {
  impl_->tap = std::move(tap);
  impl_->tap_tick_done = std::move(tick_done);
}
void Pipeline::set_pulled(std::vector<std::string> urls) { impl_->pulled = std::move(urls); }
std::vector<std::string> Pipeline::source_urls() const {
  std::vector<std::string> urls;
  for (const auto& s : impl_->sources) urls.push_back(s->url);
  return urls;
}

void Pipeline::set_entry_sink(EntrySink sink) {
  Impl& m = *impl_;
  m.sink = std::move(sink);
  if (!m.sink && m.in_flight && m.tick_leader) m.cancel_fetches();
}
bool Pipeline::fetching() const { return impl_->fetching; }

void Pipeline::publish_committed(uint64_t seq) {
  Impl& m = *impl_;
  m.settle(seq, true);
  if (!m.unpublished || seq != m.applied_seq) return;
  m.unpublished = false;
  m.aggregator.build(m.builder, m.unpublished_clock);
  if (m.publish) m.publish(m.builder, m.unpublished_statuses, seq);
}

void Pipeline::show_applied() {
  Impl& m = *impl_;
  if (!m.unshown) return;
  m.unshown = false;
  m.aggregator.build(m.builder, m.applied_clock);
  if (m.publish) m.publish(m.builder, m.entry_statuses, m.applied_seq);
}

int64_t Pipeline::clock_behind_ns() const { return impl_->clock_behind; }

void Pipeline::set_fetching(bool on) {
  Impl& m = *impl_;
  if (m.fetching == on) return;
  m.fetching = on;
  if (!on) {
    event_del(m.timer);
    m.cancel_fetches();
    // A leader that stops leading never learns whether the log took what waits.
    m.settle(~uint64_t{0}, false);
  } else if (m.running) {
    m.schedule();
    m.start_tick();
  }
}

Pipeline::EntryResult Pipeline::apply_entry(std::string_view entry, std::string* error, bool show) {
  Impl& m = *impl_;
  auto bad = [error](std::string why) {
    if (error) *error = std::move(why);
    return EntryResult::bad;
  };
  if (m.in_flight) return bad("a tick of this node is in flight");
  uint64_t seq;
  int64_t clock;
  try {
    Replica::read_entry_header(entry, &seq, &clock);
  } catch (const std::invalid_argument& e) {
    return bad(e.what());
  }
  if (seq <= m.applied_seq) return EntryResult::duplicate;
  if (seq > m.applied_seq + 1) return EntryResult::gap;
  std::vector<shm::SourceStatus> statuses;
  try {
    std::string payload =
        wire::decompress(entry.substr(Replica::kEntryHeaderBytes), Replica::kMaxEntryPayload);
    m.replica.apply(payload, seq, clock, m.aggregator, nullptr, &statuses);
    // Expiry at every entry, not only in the builds: a node that catches up without
    // building (or a leader whose commits are coalesced) must hold the same state as
    // one that built every entry, or a series expired here would live on there.
    m.aggregator.expire(clock);
  } catch (const std::invalid_argument& e) {
    return bad(fmt::format("entry {}: {}", seq, e.what()));
  }
  m.entry_statuses = std::move(statuses);
  m.following = true;
  m.unpublished = false;
  m.applied_seq = seq;
  m.last_clock = std::max(m.last_clock, clock);
  m.applied_clock = clock;
  ++m.ticks;
  m.unshown = true;
  if (show) show_applied();
  return EntryResult::applied;
}

uint64_t Pipeline::entry_seq(std::string_view entry) {
  uint64_t seq = 0;
  int64_t clock;
  try {
    Replica::read_entry_header(entry, &seq, &clock);
  } catch (const std::invalid_argument&) {
    return 0;
  }
  return seq;
}

std::string Pipeline::checkpoint() const {
  return impl_->replica.checkpoint(impl_->aggregator, impl_->applied_seq);
}

void Pipeline::restore(std::string_view checkpoint) {
  Impl& m = *impl_;
  Replica replica;
  std::unique_ptr<Aggregator> aggregator;
  uint64_t seq;
  Replica::restore(checkpoint, m.config, &replica, &aggregator, &seq);
  // A tick in flight staged against the state being replaced, and ticks this node
  // applied that the log never took.
  if (m.in_flight) m.cancel_fetches();
  m.settle(~uint64_t{0}, false);
  m.replica = std::move(replica);
  m.aggregator = std::move(*aggregator);
  m.applied_seq = seq;
  m.unpublished = false;
  m.unshown = false;
}

}  // namespace ingest
