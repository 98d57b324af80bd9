// replica.cc: log entries, the series dictionary, the source table and checkpoints
// (replica.h; the layouts are described in docs/architecture.md, Replication).
//
// An entry's payload, all of it in one zstd frame behind a fixed header:
//   settings   interval, window, stale_after, expire_after (ms), max_series,
//              max_series_per_source, prom_series_limit
//   sources    the leader's source URLs, in its configuration's order
//   groups     per source that answered, in the order the leader's sources answered:
//              its index in sources and its samples; a sample is a flags byte (kind,
//              "at the clock", "defines its series"), then the series (its definition:
//              metric, suffix and sorted labels; or its dictionary id as a difference
//              from the previous id of the group plus one), the timestamp unless it is
//              the clock (a difference from it) and the value (8 bytes)
//   statuses   per source, everything SourceStatus holds but the URL
// A series not in the dictionary when the entry starts is defined at each of its
// samples; ids are handed out when the entry is applied, the same way on every node.
#include "ingest/replica/replica.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ingest/internal.h"
#include "ingest/replica/codec.h"
#include "ingest/replica/wire.h"

namespace ingest {

using namespace codec;

namespace {

constexpr char kEntryMagic[4] = {'t', 'd', 'l', 'g'};
constexpr char kCheckpointMagic[4] = {'t', 'd', 'c', 'k'};
constexpr uint32_t kNoId = UINT32_MAX;
static_assert(kNoId == IdIndex::kAbsent);
constexpr int64_t kMs = 1'000'000;

constexpr uint8_t kFlagKind = 0x03;
constexpr uint8_t kFlagAtClock = 0x04;
constexpr uint8_t kFlagDefines = 0x08;
constexpr uint8_t kFlagsKnown = kFlagKind | kFlagAtClock | kFlagDefines;

size_t wire_size(uint64_t v) {
  size_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

}  // namespace

// --- sources ---------------------------------------------------------------------------

uint32_t Replica::source_id(std::string_view url) const {
  for (const auto& [u, id] : sources_)
    if (u == url) return id;
  return kNoId;
}

void Replica::reconcile_sources(std::span<const std::string> urls, Aggregator& aggregator) {
  auto gone = [&](const std::pair<std::string, uint32_t>& entry) {
    if (std::find(urls.begin(), urls.end(), entry.first) != urls.end()) return false;
    aggregator.forget_source(entry.second);
    positions_.erase(entry.first);
    return true;
  };
  sources_.erase(std::remove_if(sources_.begin(), sources_.end(), gone), sources_.end());
  for (const std::string& url : urls)
    if (source_id(url) == kNoId) sources_.emplace_back(url, next_source_id_++);
}

// --- dictionary --------------------------------------------------------------------------

Replica::DictSeries Replica::make_series(std::string_view key, std::string_view metric, std::string_view suffix,
                                         std::span<const Label> labels) {
  size_t bytes = key.size() + metric.size() + suffix.size();
  for (const Label& l : labels) bytes += l.name.size() + l.value.size();
  DictSeries d;
  d.text = std::make_unique_for_overwrite<char[]>(bytes);
  char* at = d.text.get();
  auto keep = [&at](std::string_view s) {
    std::memcpy(at, s.data(), s.size());
    std::string_view kept(at, s.size());
    at += s.size();
    return kept;
  };
  d.key = keep(key);
  d.metric = keep(metric);
  d.suffix = keep(suffix);
  d.labels.reserve(labels.size());
  for (const Label& l : labels) {
    std::string_view name = keep(l.name);
    d.labels.push_back(Label{name, keep(l.value)});
  }
  d.live = true;
  return d;
}

uint32_t Replica::define(std::string_view metric, std::string_view suffix,
                         std::span<const Label> labels) {
  key_scratch_.clear();
  append_series_key(key_scratch_, metric, suffix, labels);
  if (uint32_t id = ids_.find(key_scratch_, key_of()); id != kNoId) return id;
  DictSeries d = make_series(key_scratch_, metric, suffix, labels);
  uint32_t id;
  if (!free_ids_.empty()) {
    id = free_ids_.back();
    free_ids_.pop_back();
    dict_[id] = std::move(d);
  } else {
    id = static_cast<uint32_t>(dict_.size());
    dict_.push_back(std::move(d));
  }
  ids_.insert(dict_[id].key, id, key_of());
  return id;
}

// Series that no entry has had for the window and expire_after leave the dictionary
// (the Aggregator has let them go by then), in id order, so that ids are reused alike
// everywhere.
void Replica::sweep(int64_t clock, const Config& settings) {
  const int64_t keep_ns = (settings.window.count() + settings.expire_after.count()) * kMs;
  for (uint32_t id = 0; id < dict_.size(); ++id) {
    DictSeries& d = dict_[id];
    if (!d.live || clock - d.last_used <= keep_ns) continue;
    ids_.erase(d.key, key_of());
    d = DictSeries{};
    free_ids_.push_back(id);
  }
}

// --- entries -----------------------------------------------------------------------------

void Replica::stage_begin(const Config& settings, std::span<const std::string> urls) {
  staged_.clear();
  put_settings(staged_, settings);
  wire::put_varint(staged_, urls.size());
  for (const std::string& url : urls) wire::put_string(staged_, url);
  staged_urls_.assign(urls.begin(), urls.end());
  groups_.clear();
  staged_groups_ = 0;
}

std::string Replica::take_staged() {
  std::string payload = std::move(staged_);
  wire::put_varint(payload, staged_groups_);
  payload.append(groups_);
  staged_.clear();
  groups_.clear();
  staged_groups_ = 0;
  return payload;
}

size_t Replica::stage(uint32_t url_index, std::span<const Sample> samples, int64_t clock) {
  std::string& out = groups_;
  wire::put_varint(out, url_index);
  const size_t count_at = out.size();
  wire::put_varint(out, samples.size());
  std::vector<uint32_t>& guess = positions_[staged_urls_[url_index]];
  guess.resize(samples.size(), kNoId);
  int64_t next = 0;  // the id expected after the previous one
  size_t left_out = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    const Sample& s = samples[i];
    // What the parsers never give, and apply() would refuse the whole entry for.
    if (!std::isfinite(s.value) || s.ts_ns < 0 || s.kind > SampleKind::bucket) {
      ++left_out;
      continue;
    }
    std::span<const Label> labels = sorted_sample_labels(s, label_scratch_);
    uint32_t id = guess[i];
    if (id >= dict_.size() || !dict_[id].live ||
        !series_key_equals(dict_[id].key, s.metric, s.suffix, labels)) {
      key_scratch_.clear();
      append_series_key(key_scratch_, s.metric, s.suffix, labels);
      id = ids_.find(key_scratch_, key_of());
      guess[i] = id;
    }
    // A time past kMaxTimeNs is too far ahead of the clock either way (too_new).
    const int64_t ts = std::min(s.ts_ns, kMaxTimeNs);
    const bool at_clock = ts == 0 || ts == clock;
    uint8_t flags = static_cast<uint8_t>(s.kind) | (at_clock ? kFlagAtClock : 0) |
                    (id == kNoId ? kFlagDefines : 0);
    if (id == kNoId && series_fault(s.metric, s.suffix, labels)) {
      ++left_out;
      continue;
    }
    out.push_back(static_cast<char>(flags));
    if (id == kNoId) {
      put_definition(out, s.metric, s.suffix, labels);
    } else {
      wire::put_svarint(out, int64_t{id} - next);
      next = int64_t{id} + 1;
    }
    if (!at_clock) wire::put_svarint(out, ts - clock);
    wire::put_double(out, s.value);
  }
  if (left_out) {  // the count written ahead was too high
    std::string count;
    wire::put_varint(count, samples.size() - left_out);
    out.replace(count_at, wire_size(samples.size()), count);
  }
  ++staged_groups_;
  return left_out;
}

// Long as one piece: pass 2 applies what pass 1 checked, from pass 1's locals (urls, groups).
void Replica::apply(std::string_view payload, uint64_t seq, int64_t clock, Aggregator& aggregator,
                    std::vector<ApplyStats>* stats, std::vector<shm::SourceStatus>* statuses) {
  // Pass 1 reads and checks everything; pass 2 applies. The leader's own staged
  // payloads take the same two passes.
  struct Group {
    uint32_t url_index;
    uint64_t samples;
    size_t at;  // where its first sample starts in the payload
  };
  wire::Reader in(payload);
  Config settings = read_settings(in, aggregator.config());
  uint64_t n_urls = in.count("source count", in.left());
  std::vector<std::string> urls;
  for (uint64_t i = 0; i < n_urls; ++i) {
    urls.emplace_back(in.string("source URL"));
    for (uint64_t j = 0; j < i; ++j)
      if (urls[j] == urls[i]) throw std::invalid_argument("entry: a source URL twice");
  }
  uint64_t n_groups = in.count("group count", in.left());
  std::vector<Group> groups;
  Definition def;
  for (uint64_t g = 0; g < n_groups; ++g) {
    Group group;
    group.url_index = static_cast<uint32_t>(in.count("group source", n_urls ? n_urls - 1 : 0));
    if (n_urls == 0) throw std::invalid_argument("entry: a group without sources");
    group.samples = in.count("group sample count", in.left());
    group.at = payload.size() - in.left();
    int64_t next = 0;
    for (uint64_t i = 0; i < group.samples; ++i) {
      uint8_t flags = in.byte("sample flags");
      if ((flags & ~kFlagsKnown) || (flags & kFlagKind) > static_cast<uint8_t>(SampleKind::bucket))
        throw std::invalid_argument("entry: unknown sample flags");
      if (flags & kFlagDefines) {
        read_definition(in, def);
      } else {
        int64_t id = next + in.svarint("series id");
        if (id < 0 || id >= static_cast<int64_t>(dict_.size()) || !dict_[static_cast<size_t>(id)].live)
          throw std::invalid_argument("entry: a series id not in the dictionary");
        next = id + 1;
      }
      int64_t ts = clock;
      if (!(flags & kFlagAtClock)) {
        int64_t d = in.svarint("sample time");
        if (__builtin_add_overflow(clock, d, &ts) || ts <= 0 || ts > kMaxTimeNs)
          throw std::invalid_argument("entry: sample time out of range");
      }
      if (!std::isfinite(in.f64("sample value")))
        throw std::invalid_argument("entry: a sample value that is not finite");
    }
    groups.push_back(group);
  }
  std::vector<shm::SourceStatus> read_statuses;
  if (statuses) {
    uint64_t n = in.count("status count", n_urls);
    if (n != n_urls) throw std::invalid_argument("entry: statuses do not match sources");
    read_statuses.resize(n);
    for (uint64_t i = 0; i < n; ++i) {
      read_statuses[i].url = urls[i];
      read_status(in, read_statuses[i]);
    }
  }
  if (!in.done()) throw std::invalid_argument("entry: bytes after its end");

  // Pass 2: nothing below throws on bad bytes.
  if (!same_settings(settings, aggregator.config())) aggregator.reconfigure(settings);
  reconcile_sources(urls, aggregator);
  if (stats) stats->assign(n_urls, ApplyStats{});
  std::vector<Sample> samples;
  for (const Group& group : groups) {
    wire::Reader at(payload.substr(group.at));
    samples.clear();
    samples.reserve(group.samples);
    int64_t next = 0;
    for (uint64_t i = 0; i < group.samples; ++i) {
      uint8_t flags = at.byte("");
      uint32_t id;
      if (flags & kFlagDefines) {
        read_definition(at, def);
        id = define(def.metric, def.suffix, def.labels);
      } else {
        id = static_cast<uint32_t>(next + at.svarint(""));
        next = int64_t{id} + 1;
      }
      DictSeries& d = dict_[id];
      d.last_used = clock;
      Sample s;
      s.metric = d.metric;
      s.suffix = d.suffix;
      s.labels = d.labels;
      s.kind = static_cast<SampleKind>(flags & kFlagKind);
      s.ts_ns = (flags & kFlagAtClock) ? clock : clock + at.svarint("");
      s.value = at.f64("");
      samples.push_back(s);
    }
    ApplyStats st = aggregator.apply(source_id(urls[group.url_index]), samples, clock);
    if (stats) {
      ApplyStats& sum = (*stats)[group.url_index];
      sum.accepted += st.accepted;
      sum.duplicate += st.duplicate;
      sum.too_old += st.too_old;
      sum.too_new += st.too_new;
      sum.over_limit += st.over_limit;
      if (st.repeated && !sum.repeated) sum.first_repeated = st.first_repeated;
      sum.repeated += st.repeated;
    }
  }
  // Every 16th entry: a sweep walks the whole dictionary.
  if (seq % 16 == 0) sweep(clock, settings);
  if (statuses) *statuses = std::move(read_statuses);
}

void Replica::put_statuses(std::string& out, const std::vector<shm::SourceStatus>& statuses) {
  wire::put_varint(out, statuses.size());
  for (const shm::SourceStatus& s : statuses) codec::put_status(out, s);
}

std::string Replica::seal_entry(uint64_t seq, int64_t clock, std::string_view payload) {
  std::string out;
  put_header(out, kEntryMagic, seq);
  wire::put_u64(out, static_cast<uint64_t>(clock));
  seal_header(out);
  wire::compress(out, payload, 1);
  return out;
}

void Replica::read_entry_header(std::string_view entry, uint64_t* seq, int64_t* clock) {
  wire::Reader in(entry);
  *seq = read_header(in, kEntryMagic, "log entry", kEntryHeaderBytes);
  *clock = static_cast<int64_t>(in.u64("log entry"));
  if (*seq == 0) throw std::invalid_argument("log entry with seq 0");
  if (*clock <= 0 || *clock > kMaxTimeNs) throw std::invalid_argument("log entry with a clock out of range");
}

// --- checkpoints -------------------------------------------------------------------------
//
// Payload: settings, the source table (next id, then URL and id of each), the
// dictionary (its size, the free ids in order, then id, last use and definition of each
// live series), the Aggregator's state (Aggregator::save).

std::string Replica::checkpoint(const Aggregator& aggregator, uint64_t seq) const {
  std::string payload;
  put_settings(payload, aggregator.config());
  wire::put_varint(payload, next_source_id_);
  wire::put_varint(payload, sources_.size());
  for (const auto& [url, id] : sources_) {
    wire::put_string(payload, url);
    wire::put_varint(payload, id);
  }
  wire::put_varint(payload, dict_.size());
  wire::put_varint(payload, free_ids_.size());
  for (uint32_t id : free_ids_) wire::put_varint(payload, id);
  for (uint32_t id = 0; id < dict_.size(); ++id) {
    const DictSeries& d = dict_[id];
    if (!d.live) continue;
    wire::put_varint(payload, id);
    wire::put_svarint(payload, d.last_used);
    put_definition(payload, d.metric, d.suffix, d.labels);
  }
  aggregator.save(payload);
  std::string out;
  put_header(out, kCheckpointMagic, seq);
  seal_header(out);
  wire::compress(out, payload, 1);
  return out;
}

void Replica::restore(std::string_view checkpoint, const Config& base, Replica* replica,
                      std::unique_ptr<Aggregator>* aggregator, uint64_t* seq) {
  wire::Reader header(checkpoint);
  uint64_t at_seq = read_header(header, kCheckpointMagic, "checkpoint", kCheckpointHeaderBytes);
  std::string payload = wire::decompress(checkpoint.substr(kCheckpointHeaderBytes), kMaxCheckpointPayload);
  wire::Reader in(payload);
  Config settings = read_settings(in, base);
  Replica r;
  r.next_source_id_ = static_cast<uint32_t>(in.count("checkpoint next source id", UINT32_MAX));
  uint64_t n_sources = in.count("checkpoint source count", in.left());
  for (uint64_t i = 0; i < n_sources; ++i) {
    std::string url(in.string("checkpoint source URL"));
    auto id = static_cast<uint32_t>(in.count("checkpoint source id", UINT32_MAX));
    if (id >= r.next_source_id_) throw std::invalid_argument("checkpoint: a source id past the next one");
    if (r.source_id(url) != kNoId) throw std::invalid_argument("checkpoint: a source URL twice");
    for (const auto& entry : r.sources_)
      if (entry.second == id) throw std::invalid_argument("checkpoint: a source id twice");
    r.sources_.emplace_back(std::move(url), id);
  }
  uint64_t dict_size = in.count("checkpoint dictionary size", std::min<uint64_t>(UINT32_MAX - 1, in.left()));
  uint64_t n_free = in.count("checkpoint free ids", dict_size);
  r.dict_.resize(dict_size);
  std::vector<bool> is_free(dict_size, false);
  for (uint64_t i = 0; i < n_free; ++i) {
    auto id = static_cast<uint32_t>(in.count("checkpoint free id", dict_size - 1));
    if (is_free[id]) throw std::invalid_argument("checkpoint: a free id twice");
    is_free[id] = true;
    r.free_ids_.push_back(id);
  }
  // Each series goes straight to its id, the table sized for all of them up front:
  // one probe per series, which also finds a key twice.
  r.ids_.reserve(dict_size - n_free);
  Definition def;
  for (uint64_t i = 0; i < dict_size - n_free; ++i) {
    auto id = static_cast<uint32_t>(in.count("checkpoint series id", dict_size - 1));
    if (is_free[id] || r.dict_[id].live) throw std::invalid_argument("checkpoint: bad series id");
    int64_t last_used = in.svarint("checkpoint series use");
    if (last_used < 0 || last_used > kMaxTimeNs) throw std::invalid_argument("checkpoint: series use out of range");
    read_definition(in, def);
    r.key_scratch_.clear();
    append_series_key(r.key_scratch_, def.metric, def.suffix, def.labels);
    DictSeries& d = r.dict_[id];
    d = make_series(r.key_scratch_, def.metric, def.suffix, def.labels);
    d.last_used = last_used;
    if (!r.ids_.insert(d.key, id, r.key_of())) throw std::invalid_argument("checkpoint: a series twice");
  }
  auto restored = std::make_unique<Aggregator>(settings);
  restored->load(payload.substr(payload.size() - in.left()));
  *replica = std::move(r);
  *aggregator = std::move(restored);
  *seq = at_seq;
}

}  // namespace ingest
