// server/writer_pushes.cc: a partitioned node's OTLP push stream (writer_pushes.h): the
// receiver, the stream's epoch, its entries per tick and the answers to its requests.
#include "server/writer_pushes.h"

#include <algorithm>
#include <deque>
#include <stdexcept>

#include "cluster/partitioned.h"
#include "common/log.h"
#include "ingest/replica/replica.h"
#include "ingest/source/otlp_receiver.h"
#include "server/writer.h"

namespace server {

namespace log = common::log;

namespace {

// The number after `marker` in a refusal of the append script ("STALE source S is
// appended by epoch F", "OLD source S has tick T"), or 0.
uint64_t number_after(const std::string& why, std::string_view marker) {
  size_t at = why.rfind(marker);
  return at == std::string::npos ? 0 : std::strtoull(why.c_str() + at + marker.size(), nullptr, 10);
}

}  // namespace

struct PartitionedPushes::Impl {
  Impl(event_base* base, const Options& o, cluster::PartitionedNode& n, ingest::HeldPartitions& h)
      : options(o), node(n), held(h), receiver(base, otlp_receiver_options(o, "otlp-push:" + o.node_id)), source(receiver.url()) {
    status.url = source;
    status.format = "otlp";
    receiver.set_refusal("this node has not joined the partitioned cluster yet (no epoch for its pushes): retry");
    receiver.set_delta_seed([this](std::string_view key) -> std::optional<std::pair<double, int64_t>> {
      for (const auto& [p, state] : held.states()) {
        auto a = state.aggregator().series(key);
        if (a && a->count) return std::make_pair(a->last, a->last_ts_ns);
      }
      return std::nullopt;
    });
  }


  const Options& options;
  cluster::PartitionedNode& node;
  ingest::HeldPartitions& held;
  ingest::OtlpReceiver receiver;
  const std::string source;
  std::unique_ptr<ingest::PartitionWriter> writer;  // of the stream's epoch; null while it has none
  uint64_t epoch_floor = 0;  // the highest epoch a STALE answer named
  bool asking = false;       // an epoch is being taken
  uint64_t next_tick = 1;    // no tick below it: the ticks this stream used, or a log said it has
  shm::SourceStatus status;
  // The takes whose entries were appended, oldest first: a take is answered (settled)
  // once all its entries have an answer and every earlier take was answered.
  struct Take {
    uint64_t id;
    size_t waiting;  // entries without an answer
    bool in_log;     // every answered entry is in the log
  };
  std::deque<Take> takes;

  void take_epoch() {
    if (asking || node.partitions() == 0) return;
    asking = true;
    node.take_own_epoch(source, epoch_floor, [this](uint64_t epoch, const std::string& why) {
      asking = false;
      if (!epoch) return log::debug("{}: no epoch yet: {}", source, why);
      writer = std::make_unique<ingest::PartitionWriter>(source, epoch, node.partitions());
      receiver.set_refusal("");
      log::info("partitioned cluster: OTLP pushes taken here go to the partitions as {} (epoch {})", source, epoch);
    });
  }

  void tick(int64_t clock) {
    if (!writer) return take_epoch();  // pushes wait (and are refused) until there is one
    const int64_t interval_ns = int64_t(options.ingest.interval.count()) * 1'000'000;
    const uint64_t tick = std::max(uint64_t(clock / interval_ns), next_tick);
    next_tick = tick + 1;
    ingest::PushSource::Batch batch = receiver.take(clock);
    status.bytes += batch.bytes;
    status.dropped += batch.rejected;
    status.samples += batch.samples.size();
    status.last_fetch_ns = uint64_t(clock);
    if (!batch.error.empty()) {
      ++status.errors;
      status.last_error_ns = uint64_t(clock);
    }
    status.last_error = std::move(batch.error);
    std::vector<ingest::PartitionWriter::Entry> entries;
    if (!batch.samples.empty()) {
      size_t left_out = 0;
      entries = writer->encode(tick, clock, batch.samples, options.ingest, status, &left_out);
      status.dropped += left_out;
    }
    takes.push_back(Take{batch.id, entries.size(), true});
    const uint64_t epoch = writer->epoch();
    for (auto& e : entries) {
      uint32_t p = e.partition;
      node.append(p, source, epoch, tick, std::move(e.bytes),
                  [this, id = batch.id, epoch, p, tick](bool in_log, const std::string& why) {
                    appended(id, epoch, p, tick, in_log, why);
                  });
    }
    answer();
  }

  void renumber() {
    if (!writer) return;
    epoch_floor = std::max(epoch_floor, writer->epoch());
    writer.reset();
    receiver.set_refusal("this node's pushes are taking a new epoch: retry");
    take_epoch();
  }

  void appended(uint64_t id, uint64_t epoch, uint32_t p, uint64_t tick, bool in_log, const std::string& why) {
    if (writer && writer->epoch() == epoch) writer->settle(p, tick, in_log);
    if (!in_log) {
      log::debug("partition {}: {} tick {} not appended: {}", p, source, tick, why);
      if (why.rfind("OLD", 0) == 0) {
        // The log has a later tick of this source (a writer of this node before a restart
        // in the same interval, or a clock set back): go on past it.
        next_tick = std::max(next_tick, number_after(why, "has tick ") + 1);
      } else if (why.rfind("STALE", 0) == 0 && writer && writer->epoch() == epoch) {
        // An epoch above ours was taken for this stream (Redis handed ours out again after
        // losing its counter): take one above the fence; pushes wait until then.
        epoch_floor = std::max(epoch_floor, number_after(why, "epoch "));
        writer.reset();
        receiver.set_refusal("this node's pushes are taking a new epoch: retry");
        take_epoch();
      }
    }
    auto it = std::find_if(takes.begin(), takes.end(), [id](const Take& t) { return t.id == id; });
    if (it == takes.end() || it->waiting == 0) return;
    --it->waiting;
    it->in_log = it->in_log && in_log;
    answer();
  }

  // Answers the takes at the front whose entries are all answered: 200 when every one is
  // in the log, else 503 (the receiver settles every request a take held).
  void answer() {
    while (!takes.empty() && takes.front().waiting == 0) {
      receiver.settle(takes.front().id, takes.front().in_log);
      takes.pop_front();
    }
  }
};

PartitionedPushes::PartitionedPushes(event_base* base, const Options& options, cluster::PartitionedNode& node,
                                     ingest::HeldPartitions& held)
    : impl_(std::make_unique<Impl>(base, options, node, held)) {}
PartitionedPushes::~PartitionedPushes() = default;
void PartitionedPushes::tick(int64_t clock) { impl_->tick(clock); }
void PartitionedPushes::renumber() { impl_->renumber(); }
const std::string& PartitionedPushes::source() const { return impl_->source; }
uint16_t PartitionedPushes::port() const { return impl_->receiver.port(); }

}  // namespace server
