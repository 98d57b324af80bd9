// partition.cc: a partition's log entries, written by several writers, and the state
// they make (replica.h, PartitionWriter and PartitionState).
//
// An entry, behind a 32-byte header (magic "tdpe", version, tick, clock, hash), is one
// zstd frame of:
//   settings     the writer's aggregation settings (codec.h)
//   source       its URL, the writer's epoch for it, and its status
//   definitions  count, then per definition: the number, the series (codec.h)
//   samples      count, then per sample: a flags byte (kind, "at the clock"), the
//                number as a difference from the previous one plus one, the time unless
//                it is the clock (a difference from it), the value (8 bytes)
// A checkpoint (magic "tdpc", the applied seq) holds the settings, the clock, the
// sources (URL, aggregator id, epoch, tick, status, their numbers' series) and the
// Aggregator's state.
#include <algorithm>
#include <cmath>
#include <map>
#include <unordered_map>

#include "common/partitions.h"
#include "ingest/internal.h"
#include "ingest/replica/codec.h"
#include "ingest/replica/replica.h"

namespace ingest {

namespace {

constexpr char kPartitionEntryMagic[4] = {'t', 'd', 'p', 'e'};
constexpr char kPartitionCheckpointMagic[4] = {'t', 'd', 'p', 'c'};
constexpr size_t kEntryHeader = 32;
constexpr size_t kCheckpointHeader = 24;
constexpr uint8_t kFlagKind = 0x03;
constexpr uint8_t kFlagAtClock = 0x04;
constexpr uint8_t kFlagsKnown = kFlagKind | kFlagAtClock;

// A series a source's number stands for, owning its text.
struct NumberedSeries {
  std::unique_ptr<char[]> text;
  std::string_view metric, suffix;
  std::vector<Label> labels;
};

NumberedSeries keep_series(const codec::Definition& d) {
  size_t bytes = d.metric.size() + d.suffix.size();
  for (const Label& l : d.labels) bytes += l.name.size() + l.value.size();
  NumberedSeries s;
  s.text = std::make_unique<char[]>(bytes + 1);
  char* at = s.text.get();
  auto keep = [&at](std::string_view v) {
    std::memcpy(at, v.data(), v.size());
    std::string_view kept(at, v.size());
    at += v.size();
    return kept;
  };
  s.metric = keep(d.metric);
  s.suffix = keep(d.suffix);
  for (const Label& l : d.labels) {
    std::string_view name = keep(l.name);
    s.labels.push_back(Label{name, keep(l.value)});
  }
  return s;
}

}  // namespace

// --- the writer ------------------------------------------------------------------------

struct PartitionWriter::Impl {
  std::string source;
  uint64_t epoch;
  uint32_t partitions;

  struct Number {
    std::string key;         // "" when free
    bool in_log = false;     // an entry that defined it is in the log
    uint64_t last_tick = 0;  // the last tick it had a sample in
  };
  struct Part {
    std::unordered_map<std::string, uint32_t> numbers;
    std::vector<Number> by_number;
    std::vector<uint32_t> free;  // reused last freed first
    // Per tick not yet settled: the numbers its entry defined (with the key, since a
    // number may be freed and given to another series before the answer comes).
    std::map<uint64_t, std::vector<std::pair<uint32_t, std::string>>> defined;
  };
  std::vector<Part> parts;
  uint64_t last_sweep_tick = 0;

  // Scratch for one encode.
  struct Routed {
    uint32_t sample, number;
    bool define;
  };
  std::vector<std::vector<Routed>> routed;
  std::vector<Label> label_scratch;
  std::string key;
  std::string routing;

  // A histogram's parts (NAME_bucket with le, NAME_sum, NAME_count) are aggregated
  // together, so they go where the family's key goes: NAME with the labels but le.
  std::string_view family_key(const Sample& s, std::span<const Label> labels) {
    family_labels.clear();
    for (const Label& l : labels)
      if (l.name != "le") family_labels.push_back(l);
    routing.clear();
    append_series_key(routing, s.metric, "", family_labels);
    return routing;
  }
  std::vector<Label> family_labels;

  uint32_t number_of(Part& part, uint64_t tick, bool* define);
  void sweep(uint64_t tick, const Config& settings);
  std::string entry(uint64_t tick, int64_t clock, const Config& settings, const shm::SourceStatus& status,
                    std::span<const Sample> samples, std::span<const Routed> routed,
                    std::span<const std::span<const Label>> labels);
};

PartitionWriter::PartitionWriter(std::string source, uint64_t epoch, uint32_t partitions)
    : impl_(std::make_unique<Impl>()) {
  if (partitions == 0) throw std::invalid_argument("a partition writer needs at least one partition");
  impl_->source = std::move(source);
  impl_->epoch = epoch;
  impl_->partitions = partitions;
  impl_->parts.resize(partitions);
  impl_->routed.resize(partitions);
}
PartitionWriter::~PartitionWriter() = default;
PartitionWriter::PartitionWriter(PartitionWriter&&) noexcept = default;
PartitionWriter& PartitionWriter::operator=(PartitionWriter&&) noexcept = default;
const std::string& PartitionWriter::source() const { return impl_->source; }
uint64_t PartitionWriter::epoch() const { return impl_->epoch; }
size_t PartitionWriter::numbered(uint32_t partition) const { return impl_->parts.at(partition).numbers.size(); }

uint32_t PartitionWriter::Impl::number_of(Part& part, uint64_t tick, bool* define) {
  auto it = part.numbers.find(key);
  uint32_t n;
  if (it != part.numbers.end()) {
    n = it->second;
  } else {
    if (!part.free.empty()) {
      n = part.free.back();
      part.free.pop_back();
    } else {
      n = static_cast<uint32_t>(part.by_number.size());
      part.by_number.emplace_back();
    }
    part.by_number[n] = Number{key, false, 0};
    part.numbers.emplace(key, n);
  }
  Number& number = part.by_number[n];
  // Defined once per entry, in every entry until one is in the log.
  *define = !number.in_log && number.last_tick != tick;
  number.last_tick = tick;
  return n;
}

// Numbers unused for the window and expire_after go back to the free list: the series
// has left the partition's state by then, and a number given again is defined again.
void PartitionWriter::Impl::sweep(uint64_t tick, const Config& settings) {
  if (tick < last_sweep_tick + 16) return;
  last_sweep_tick = tick;
  const uint64_t interval_ms = std::max<uint64_t>(1, settings.interval.count());
  const uint64_t keep = uint64_t(settings.window.count() + settings.expire_after.count()) / interval_ms + 2;
  for (Part& part : parts) {
    for (uint32_t n = 0; n < part.by_number.size(); ++n) {
      Number& number = part.by_number[n];
      if (number.key.empty() || number.last_tick + keep >= tick) continue;
      part.numbers.erase(number.key);
      number = Number{};
      part.free.push_back(n);
    }
  }
}

std::vector<PartitionWriter::Entry> PartitionWriter::encode(uint64_t tick, int64_t clock,
                                                            std::span<const Sample> samples,
                                                            const Config& settings,
                                                            const shm::SourceStatus& status,
                                                            size_t* left_out) {
  Impl& m = *impl_;
  if (tick == 0) throw std::invalid_argument("partition entries start at tick 1");
  m.sweep(tick, settings);
  for (auto& r : m.routed) r.clear();
  std::vector<std::span<const Label>> labels(samples.size());
  std::vector<std::vector<Label>> label_copies;  // labels that had to be sorted or merged
  size_t refused = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    const Sample& s = samples[i];
    if (!std::isfinite(s.value) || s.ts_ns < 0 || s.kind > SampleKind::bucket) {
      ++refused;
      continue;
    }
    std::span<const Label> sorted = sorted_sample_labels(s, m.label_scratch);
    if (sorted.data() == m.label_scratch.data()) {
      label_copies.emplace_back(m.label_scratch);
      sorted = label_copies.back();
    }
    if (codec::series_fault(s.metric, s.suffix, sorted)) {
      ++refused;
      continue;
    }
    labels[i] = sorted;
    m.key.clear();
    append_series_key(m.key, s.metric, s.suffix, sorted);
    uint32_t p = common::partition_of(s.suffix.empty() ? std::string_view(m.key) : m.family_key(s, sorted), m.partitions);
    bool define = false;
    uint32_t n = m.number_of(m.parts[p], tick, &define);
    m.routed[p].push_back(Impl::Routed{static_cast<uint32_t>(i), n, define});
  }
  if (left_out) *left_out = refused;
  std::vector<Entry> out;
  for (uint32_t p = 0; p < m.partitions; ++p) {
    if (m.routed[p].empty()) continue;
    Impl::Part& part = m.parts[p];
    auto& defined = part.defined[tick];
    defined.clear();
    for (const Impl::Routed& r : m.routed[p])
      if (r.define) defined.emplace_back(r.number, part.by_number[r.number].key);
    out.push_back(Entry{p, m.entry(tick, clock, settings, status, samples, m.routed[p], labels)});
  }
  return out;
}

std::string PartitionWriter::Impl::entry(uint64_t tick, int64_t clock, const Config& settings,
                                         const shm::SourceStatus& status, std::span<const Sample> samples,
                                         std::span<const Routed> routed,
                                         std::span<const std::span<const Label>> labels) {
  std::string payload;
  codec::put_settings(payload, settings);
  wire::put_string(payload, source);
  wire::put_varint(payload, epoch);
  codec::put_status(payload, status);
  size_t definitions = 0;
  for (const Routed& r : routed) definitions += r.define;
  wire::put_varint(payload, definitions);
  for (const Routed& r : routed) {
    if (!r.define) continue;
    const Sample& s = samples[r.sample];
    wire::put_varint(payload, r.number);
    codec::put_definition(payload, s.metric, s.suffix, labels[r.sample]);
  }
  wire::put_varint(payload, routed.size());
  int64_t next = 0;
  for (const Routed& r : routed) {
    const Sample& s = samples[r.sample];
    const int64_t ts = std::min(s.ts_ns, kMaxTimeNs);
    const bool at_clock = ts == 0 || ts == clock;
    payload.push_back(static_cast<char>(static_cast<uint8_t>(s.kind) | (at_clock ? kFlagAtClock : 0)));
    wire::put_svarint(payload, int64_t{r.number} - next);
    next = int64_t{r.number} + 1;
    if (!at_clock) wire::put_svarint(payload, ts - clock);
    wire::put_double(payload, s.value);
  }
  std::string out;
  codec::put_header(out, kPartitionEntryMagic, tick);
  wire::put_u64(out, static_cast<uint64_t>(clock));
  codec::seal_header(out);
  wire::compress(out, payload, 1);
  return out;
}

void PartitionWriter::settle(uint32_t partition, uint64_t tick, bool in_log) {
  Impl::Part& part = impl_->parts.at(partition);
  auto it = part.defined.find(tick);
  if (it == part.defined.end()) return;
  if (in_log)
    for (const auto& [n, key] : it->second)
      if (n < part.by_number.size() && part.by_number[n].key == key) part.by_number[n].in_log = true;
  // Older ticks still waiting were answered out of order or never: their numbers stay
  // undefined (defined again), which costs bytes, never correctness.
  part.defined.erase(part.defined.begin(), std::next(it));
}

// --- the partition's state --------------------------------------------------------------

struct PartitionState::Impl {
  uint32_t partition = 0;
  uint64_t applied_seq = 0;
  int64_t clock = 0;
  std::unique_ptr<Aggregator> aggregator;
  struct Source {
    std::string url;
    uint32_t aggregator_id = 0;
    uint64_t epoch = 0, tick = 0;
    shm::SourceStatus status;
    // By the writer's number. A map, not a vector: a writer's numbers have holes (one
    // defined in an entry that was refused), and bad bytes must not size an allocation.
    std::unordered_map<uint32_t, NumberedSeries> numbers;
  };
  std::vector<Source> sources;  // in order of their first entry
  uint32_t next_aggregator_id = 0;

  Source* find(std::string_view url) {
    for (Source& s : sources)
      if (s.url == url) return &s;
    return nullptr;
  }
};

PartitionState::PartitionState(uint32_t partition, const Config& base) : impl_(std::make_unique<Impl>()) {
  impl_->partition = partition;
  impl_->aggregator = std::make_unique<Aggregator>(base);
}
PartitionState::~PartitionState() = default;
PartitionState::PartitionState(PartitionState&&) noexcept = default;
PartitionState& PartitionState::operator=(PartitionState&&) noexcept = default;
uint32_t PartitionState::partition() const { return impl_->partition; }
uint64_t PartitionState::applied_seq() const { return impl_->applied_seq; }
int64_t PartitionState::clock() const { return impl_->clock; }
Aggregator& PartitionState::aggregator() { return *impl_->aggregator; }
const Aggregator& PartitionState::aggregator() const { return *impl_->aggregator; }

std::vector<shm::SourceStatus> PartitionState::statuses() const {
  std::vector<shm::SourceStatus> out;
  for (const Impl::Source& s : impl_->sources) {
    out.push_back(s.status);
    out.back().url = s.url;
  }
  return out;
}

// Pass 1 reads and checks all of the entry; pass 2 changes the state and cannot fail on
// the bytes. Long because the two passes must read the same layout side by side.
PartitionState::Applied PartitionState::apply(std::string_view entry, uint64_t seq) {
  Impl& m = *impl_;
  wire::Reader header(entry);
  const uint64_t tick = codec::read_header(header, kPartitionEntryMagic, "partition entry", kEntryHeader);
  const auto clock = static_cast<int64_t>(header.u64("partition entry"));
  if (clock <= 0 || clock > kMaxTimeNs) throw std::invalid_argument("partition entry with a clock out of range");
  if (tick == 0) throw std::invalid_argument("partition entry with tick 0");
  const std::string payload = wire::decompress(entry.substr(kEntryHeader), Replica::kMaxEntryPayload);
  wire::Reader in(payload);
  const Config settings = codec::read_settings(in, m.aggregator->config());
  const std::string_view url = in.string("source URL", 64 * 1024);
  const uint64_t epoch = in.varint("source epoch");
  shm::SourceStatus status;
  codec::read_status(in, status);

  Impl::Source* source = m.find(url);
  // A tick counted already (which the append script refuses, but a log it did not guard
  // may hold) counts for nothing. Epochs are not compared: the script fences a lost
  // epoch off, and after a Redis that restarted empty the epochs start again from 1
  // while the ticks (the interval grid's) go on; another epoch numbers afresh.
  if (source && tick <= source->tick) {
    m.applied_seq = seq;
    return Applied::skipped;
  }
  const bool fresh_numbers = !source || epoch != source->epoch;
  std::vector<std::pair<uint32_t, codec::Definition>> definitions;
  const uint64_t n_defs = in.count("definition count", in.left());
  std::unordered_map<uint32_t, size_t> defined_here;  // number -> index in definitions
  for (uint64_t i = 0; i < n_defs; ++i) {
    auto n = static_cast<uint32_t>(in.count("series number", UINT32_MAX));
    codec::Definition d;
    codec::read_definition(in, d);
    if (!defined_here.emplace(n, definitions.size()).second)
      throw std::invalid_argument("partition entry: a series number defined twice");
    definitions.emplace_back(n, std::move(d));
  }
  auto usable = [&](int64_t n) {
    if (n < 0 || n > UINT32_MAX) return false;
    const auto number = static_cast<uint32_t>(n);
    return defined_here.count(number) || (!fresh_numbers && source->numbers.count(number));
  };
  const uint64_t n_samples = in.count("sample count", in.left());
  const size_t samples_at = payload.size() - in.left();
  int64_t next = 0;
  for (uint64_t i = 0; i < n_samples; ++i) {
    const uint8_t flags = in.byte("sample flags");
    if ((flags & ~kFlagsKnown) || (flags & kFlagKind) > static_cast<uint8_t>(SampleKind::bucket))
      throw std::invalid_argument("partition entry: unknown sample flags");
    const int64_t n = next + in.svarint("series number");
    if (!usable(n))
      throw std::invalid_argument("partition entry: a series number never defined");
    next = n + 1;
    if (!(flags & kFlagAtClock)) {
      int64_t ts = 0;
      if (__builtin_add_overflow(clock, in.svarint("sample time"), &ts) || ts <= 0 || ts > kMaxTimeNs)
        throw std::invalid_argument("partition entry: sample time out of range");
    }
    if (!std::isfinite(in.f64("sample value")))
      throw std::invalid_argument("partition entry: a sample value that is not finite");
  }
  if (!in.done()) throw std::invalid_argument("partition entry: bytes after its end");

  // Pass 2.
  m.applied_seq = seq;
  if (!codec::same_settings(settings, m.aggregator->config())) m.aggregator->reconfigure(settings);
  if (!source) {
    m.sources.push_back(Impl::Source{std::string(url), m.next_aggregator_id++, 0, 0, {}, {}});
    source = &m.sources.back();
  }
  if (epoch != source->epoch) source->numbers.clear();
  source->epoch = epoch;
  source->tick = tick;
  source->status = std::move(status);
  for (const auto& [n, d] : definitions) source->numbers[n] = keep_series(d);
  wire::Reader at(std::string_view(payload).substr(samples_at));
  std::vector<Sample> samples(n_samples);
  next = 0;
  for (Sample& s : samples) {
    const uint8_t flags = at.byte("");
    const auto n = static_cast<uint32_t>(next + at.svarint(""));
    next = int64_t{n} + 1;
    const NumberedSeries& series = source->numbers.at(n);
    s.metric = series.metric;
    s.suffix = series.suffix;
    s.labels = series.labels;
    s.kind = static_cast<SampleKind>(flags & kFlagKind);
    s.ts_ns = (flags & kFlagAtClock) ? clock : clock + at.svarint("");
    s.value = at.f64("");
  }
  m.clock = std::max(m.clock, clock);
  m.aggregator->apply(source->aggregator_id, samples, clock);
  m.aggregator->expire(m.clock);
  return Applied::applied;
}

std::string PartitionState::checkpoint() const {
  const Impl& m = *impl_;
  std::string payload;
  codec::put_settings(payload, m.aggregator->config());
  wire::put_varint(payload, m.partition);
  wire::put_varint(payload, static_cast<uint64_t>(m.clock));
  wire::put_varint(payload, m.next_aggregator_id);
  wire::put_varint(payload, m.sources.size());
  for (const Impl::Source& s : m.sources) {
    wire::put_string(payload, s.url);
    wire::put_varint(payload, s.aggregator_id);
    wire::put_varint(payload, s.epoch);
    wire::put_varint(payload, s.tick);
    codec::put_status(payload, s.status);
    // In number order, so that the same state gives the same bytes.
    std::vector<uint32_t> order;
    for (const auto& entry : s.numbers) order.push_back(entry.first);
    std::sort(order.begin(), order.end());
    wire::put_varint(payload, order.size());
    for (uint32_t number : order) {
      const NumberedSeries& n = s.numbers.at(number);
      wire::put_varint(payload, number);
      codec::put_definition(payload, n.metric, n.suffix, n.labels);
    }
  }
  m.aggregator->save(payload);
  std::string out;
  codec::put_header(out, kPartitionCheckpointMagic, m.applied_seq);
  codec::seal_header(out);
  wire::compress(out, payload, 1);
  return out;
}

PartitionState PartitionState::restore(std::string_view checkpoint, const Config& base) {
  wire::Reader header(checkpoint);
  const uint64_t seq = codec::read_header(header, kPartitionCheckpointMagic, "partition checkpoint", kCheckpointHeader);
  const std::string payload = wire::decompress(checkpoint.substr(kCheckpointHeader), Replica::kMaxCheckpointPayload);
  wire::Reader in(payload);
  const Config settings = codec::read_settings(in, base);
  PartitionState state(static_cast<uint32_t>(in.count("partition", UINT32_MAX)), settings);
  Impl& m = *state.impl_;
  m.applied_seq = seq;
  m.clock = static_cast<int64_t>(in.count("partition clock", kMaxTimeNs));
  m.next_aggregator_id = static_cast<uint32_t>(in.count("next source id", UINT32_MAX));
  const uint64_t n_sources = in.count("source count", in.left());
  for (uint64_t i = 0; i < n_sources; ++i) {
    Impl::Source s;
    s.url = in.string("source URL", 64 * 1024);
    s.aggregator_id = static_cast<uint32_t>(in.count("source id", UINT32_MAX));
    if (s.aggregator_id >= m.next_aggregator_id) throw std::invalid_argument("partition checkpoint: a source id past the next one");
    s.epoch = in.varint("source epoch");
    s.tick = in.varint("source tick");
    codec::read_status(in, s.status);
    if (m.find(s.url)) throw std::invalid_argument("partition checkpoint: a source twice");
    const uint64_t n_numbers = in.count("number count", in.left());
    codec::Definition d;
    for (uint64_t i = 0; i < n_numbers; ++i) {
      auto number = static_cast<uint32_t>(in.count("series number", UINT32_MAX));
      codec::read_definition(in, d);
      if (!s.numbers.emplace(number, keep_series(d)).second)
        throw std::invalid_argument("partition checkpoint: a series number twice");
    }
    m.sources.push_back(std::move(s));
  }
  m.aggregator->load(payload.substr(payload.size() - in.left()));
  return state;
}

bool HeldPartitions::apply(uint32_t partition, uint64_t seq, std::string_view entry, std::string* error) {
  try {
    parts_.at(partition).apply(entry, seq);
    return true;
  } catch (const std::exception& e) {
    *error = e.what();
    return false;
  }
}

}  // namespace ingest
