// shm/snapshot.cc: the snapshot format: SnapshotBuilder lays records and lists out
// flat (see shm/layout.h), SnapshotView reads them back with every access bounds-checked.
#include <algorithm>
#include <cassert>
#include <bit>
#include <cstring>
#include <fmt/format.h>

#include "shm/layout.h"

namespace shm {

static_assert(std::endian::native == std::endian::little,
              "the snapshot format is little-endian; a big-endian port must byte-swap");

// ---------------------------------------------------------------------------------
// hash_bytes: four independent multiply-rotate lanes over 32-byte blocks (so the
// checksum of a large snapshot runs at memory speed), then 8-byte words, then the
// tail, then a final avalanche. Not cryptographic: it detects corruption and spreads
// keys over an index, nothing more.
// ---------------------------------------------------------------------------------

namespace {

constexpr uint64_t kP1 = 0x9e3779b185ebca87ull;
constexpr uint64_t kP2 = 0xc2b2ae3d27d4eb4full;
constexpr uint64_t kP3 = 0x165667b19e3779f9ull;
constexpr uint64_t kP4 = 0x85ebca77c2b2ae63ull;

inline uint64_t read64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint64_t lane(uint64_t acc, uint64_t word) {
  return std::rotl(acc + word * kP2, 31) * kP1;
}
inline uint64_t avalanche(uint64_t h) {
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

}  // namespace

uint64_t hash_bytes(const void* data, size_t size, uint64_t seed) {
  const auto* p = static_cast<const unsigned char*>(data);
  const unsigned char* end = p + size;
  uint64_t h;
  if (size >= 32) {
    uint64_t a = seed + kP1 + kP2, b = seed + kP2, c = seed, d = seed - kP1;
    for (; end - p >= 32; p += 32) {
      a = lane(a, read64(p));
      b = lane(b, read64(p + 8));
      c = lane(c, read64(p + 16));
      d = lane(d, read64(p + 24));
    }
    h = std::rotl(a, 1) + std::rotl(b, 7) + std::rotl(c, 12) + std::rotl(d, 18);
    for (uint64_t v : {a, b, c, d}) h = (h ^ lane(0, v)) * kP1 + kP4;
  } else {
    h = seed + kP3;
  }
  h += size;
  for (; end - p >= 8; p += 8) h = std::rotl(h ^ lane(0, read64(p)), 27) * kP1 + kP4;
  if (end - p >= 4) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    h = std::rotl(h ^ (v * kP1), 23) * kP2 + kP3;
    p += 4;
  }
  for (; p < end; ++p) h = std::rotl(h ^ (*p * kP3), 11) * kP1;
  return avalanche(h);
}

namespace {

constexpr size_t align8(size_t n) { return (n + 7) & ~size_t{7}; }

// Buckets for n entries: a power of two at most half full, so that a probe sequence
// for a missing key stays short.
uint32_t buckets_for(size_t n) {
  return static_cast<uint32_t>(std::bit_ceil(std::max<size_t>(16, n * 2)));
}

}  // namespace

// ---------------------------------------------------------------------------------
// SnapshotBuilder
// ---------------------------------------------------------------------------------

struct SnapshotBuilder::Impl {
  struct Entry {
    uint64_t hash;
    uint64_t key_at;  // offset in arena
    uint64_t value_at;
    uint32_t key_len;
    uint32_t value_len;
  };
  struct List {
    uint64_t hash;
    std::string name;
    std::vector<uint32_t> entries;
  };

  std::string arena;             // keys and values, back to back
  std::vector<Entry> entries;    // insertion order
  // Dedups keys as they come: open addressing over (high 32 bits of the hash << 32 |
  // entry index + 1), 0 = empty. The tag rejects other keys without touching `entries`,
  // so an add costs one random access, not two.
  std::vector<uint64_t> table;
  std::vector<List> lists;
  size_t record_bytes = 0;       // records section, as serialized

  std::string_view key_of(const Entry& e) const { return {arena.data() + e.key_at, e.key_len}; }
  static uint64_t slot_of(uint64_t hash, size_t entry) { return (hash >> 32 << 32) | (entry + 1); }
  static uint32_t entry_of(uint64_t slot) { return static_cast<uint32_t>(slot) - 1; }

  // Index of the table slot holding this key, or where it would go (found = false).
  size_t probe(std::string_view key, uint64_t h, bool& found) const {
    size_t mask = table.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      uint64_t t = table[i];
      if (t == 0) {
        found = false;
        return i;
      }
      if (t >> 32 == h >> 32) {
        const Entry& e = entries[entry_of(t)];
        if (e.hash == h && key_of(e) == key) {
          found = true;
          return i;
        }
      }
    }
  }
  void grow_table() {
    std::vector<uint64_t> old(table.size() ? table.size() * 2 : 1024, 0);
    old.swap(table);
    size_t mask = table.size() - 1;
    for (uint64_t t : old) {
      if (t == 0) continue;
      size_t i = entries[entry_of(t)].hash & mask;
      while (table[i] != 0) i = (i + 1) & mask;
      table[i] = t;
    }
  }
  std::optional<uint32_t> find(std::string_view key) const {
    if (table.empty()) return std::nullopt;
    bool found;
    size_t i = probe(key, hash_bytes(key.data(), key.size()), found);
    if (!found) return std::nullopt;
    return entry_of(table[i]);
  }

  size_t lists_bytes() const {
    size_t n = 0;
    for (const List& l : lists) n += align8(sizeof(ListHeader) + 8 * l.entries.size() + l.name.size());
    return n;
  }
  size_t tables_bytes() const {
    return 8 * entries.size() + sizeof(IndexSlot) * buckets_for(entries.size()) + 8 * lists.size() +
           sizeof(IndexSlot) * buckets_for(lists.size());
  }
};

SnapshotBuilder::SnapshotBuilder() : impl_(std::make_unique<Impl>()) {}
SnapshotBuilder::~SnapshotBuilder() = default;
SnapshotBuilder::SnapshotBuilder(SnapshotBuilder&&) noexcept = default;
SnapshotBuilder& SnapshotBuilder::operator=(SnapshotBuilder&&) noexcept = default;

uint32_t SnapshotBuilder::add(std::string_view key, std::string_view value) {
  return add(key, value, hash_bytes(key.data(), key.size()));
}

uint32_t SnapshotBuilder::add(std::string_view key, std::string_view value, uint64_t h) {
  assert(h == hash_bytes(key.data(), key.size()));  // what prefetch(key) returned
  Impl& m = *impl_;
  if (key.size() > UINT32_MAX || value.size() > UINT32_MAX || m.entries.size() >= UINT32_MAX / 2)
    throw Error(fmt::format("snapshot record too large: key {} bytes, value {} bytes", key.size(),
                            value.size()));
  if ((m.entries.size() + 1) * 2 > m.table.size()) m.grow_table();
  bool found;
  size_t slot = m.probe(key, h, found);
  uint64_t value_at = m.arena.size() + (found ? 0 : key.size());
  if (!found) {
    m.entries.push_back({h, m.arena.size(), value_at, static_cast<uint32_t>(key.size()),
                         static_cast<uint32_t>(value.size())});
    m.table[slot] = Impl::slot_of(h, m.entries.size() - 1);
    m.arena.append(key);
    m.record_bytes += align8(sizeof(RecordHeader) + key.size() + value.size());
  } else {
    // Last value wins; the old value's bytes stay in the arena until clear().
    Impl::Entry& e = m.entries[Impl::entry_of(m.table[slot])];
    m.record_bytes -= align8(sizeof(RecordHeader) + e.key_len + e.value_len);
    m.record_bytes += align8(sizeof(RecordHeader) + e.key_len + value.size());
    e.value_at = value_at;
    e.value_len = static_cast<uint32_t>(value.size());
  }
  m.arena.append(value);
  return Impl::entry_of(m.table[slot]);
}

uint64_t SnapshotBuilder::prefetch(std::string_view key) const {
  const Impl& m = *impl_;
  uint64_t h = hash_bytes(key.data(), key.size());
  if (!m.table.empty()) __builtin_prefetch(&m.table[h & (m.table.size() - 1)]);
  return h;
}

void SnapshotBuilder::add_list(std::string_view name, std::span<const uint32_t> records) {
  Impl& m = *impl_;
  for (uint32_t r : records)
    if (r >= m.entries.size()) throw Error(fmt::format("snapshot list '{}' names record {} of {}", name, r, m.entries.size()));
  Impl::List list{hash_bytes(name.data(), name.size()), std::string(name), {records.begin(), records.end()}};
  for (Impl::List& l : m.lists) {
    if (l.hash == list.hash && l.name == name) {
      l = std::move(list);
      return;
    }
  }
  m.lists.push_back(std::move(list));
}

void SnapshotBuilder::add_list(std::string_view name, std::span<const std::string_view> keys) {
  std::vector<uint32_t> records;
  records.reserve(keys.size());
  for (std::string_view k : keys) {
    auto e = impl_->find(k);
    if (!e) throw Error(fmt::format("snapshot list '{}' names key '{}' that is not a record", name, k));
    records.push_back(*e);
  }
  add_list(name, std::span<const uint32_t>(records));
}

void SnapshotBuilder::add_list(std::string_view name, const std::vector<std::string>& keys) {
  std::vector<std::string_view> views(keys.begin(), keys.end());
  add_list(name, std::span<const std::string_view>(views));
}

void SnapshotBuilder::reserve(size_t records, size_t bytes) {
  Impl& m = *impl_;
  m.entries.reserve(records);
  m.arena.reserve(bytes);
  while (m.table.size() < records * 2) m.grow_table();
}

size_t SnapshotBuilder::record_count() const { return impl_->entries.size(); }
size_t SnapshotBuilder::list_count() const { return impl_->lists.size(); }

size_t SnapshotBuilder::serialized_size() const {
  return sizeof(SnapshotHeader) + impl_->tables_bytes() + impl_->record_bytes + impl_->lists_bytes();
}

namespace {

// Writes entries into an open-addressing index of `buckets` slots at `index`.
void fill_index(std::byte* index, uint32_t buckets, uint64_t hash, uint64_t offset) {
  auto* slots = reinterpret_cast<IndexSlot*>(index);
  size_t mask = buckets - 1;
  size_t i = hash & mask;
  while (slots[i].offset != 0) i = (i + 1) & mask;
  slots[i] = IndexSlot{static_cast<uint32_t>(hash >> 32), 0, offset};
}

}  // namespace

void SnapshotBuilder::serialize_into(std::span<std::byte> out, uint64_t generation,
                                     uint64_t built_at_ns) const {
  const Impl& m = *impl_;
  const size_t size = serialized_size();
  if (out.size() < size)
    throw Error(fmt::format("snapshot needs {} bytes, buffer has {}", size, out.size()));
  if (m.entries.size() > UINT32_MAX / 2 || m.lists.size() > UINT32_MAX / 2)
    throw Error("snapshot has too many records or lists");
  std::byte* base = out.data();

  SnapshotHeader h{};
  h.magic = kSnapshotMagic;
  h.format_version = kFormatVersion;
  h.header_size = sizeof(SnapshotHeader);
  h.generation = generation;
  h.built_at_ns = built_at_ns;
  h.size = size;
  h.record_count = static_cast<uint32_t>(m.entries.size());
  h.record_buckets = buckets_for(m.entries.size());
  h.list_count = static_cast<uint32_t>(m.lists.size());
  h.list_buckets = buckets_for(m.lists.size());

  size_t at = sizeof(SnapshotHeader);
  std::byte* record_dir = base + at;
  at += 8 * size_t{h.record_count};
  std::byte* record_index = base + at;
  at += sizeof(IndexSlot) * size_t{h.record_buckets};
  std::byte* list_dir = base + at;
  at += 8 * size_t{h.list_count};
  std::byte* list_index = base + at;
  at += sizeof(IndexSlot) * size_t{h.list_buckets};
  std::memset(record_index, 0, sizeof(IndexSlot) * size_t{h.record_buckets});
  std::memset(list_index, 0, sizeof(IndexSlot) * size_t{h.list_buckets});

  std::vector<uint64_t> record_at(m.entries.size());
  for (size_t i = 0; i < m.entries.size(); ++i) {
    const Impl::Entry& e = m.entries[i];
    record_at[i] = at;
    RecordHeader rh{e.key_len, e.value_len};
    std::memcpy(base + at, &rh, sizeof rh);
    std::memcpy(base + at + sizeof rh, m.arena.data() + e.key_at, e.key_len);
    std::memcpy(base + at + sizeof rh + e.key_len, m.arena.data() + e.value_at, e.value_len);
    size_t end = at + sizeof rh + e.key_len + e.value_len;
    at = align8(end);
    std::memset(base + end, 0, at - end);  // padding is part of the checksum: make it defined
    std::memcpy(record_dir + 8 * i, &record_at[i], 8);
    fill_index(record_index, h.record_buckets, e.hash, record_at[i]);
  }
  for (size_t i = 0; i < m.lists.size(); ++i) {
    const Impl::List& l = m.lists[i];
    uint64_t list_at = at;
    ListHeader lh{static_cast<uint32_t>(l.name.size()), static_cast<uint32_t>(l.entries.size())};
    std::memcpy(base + at, &lh, sizeof lh);
    at += sizeof lh;
    for (uint32_t e : l.entries) {
      std::memcpy(base + at, &record_at[e], 8);
      at += 8;
    }
    std::memcpy(base + at, l.name.data(), l.name.size());
    size_t end = at + l.name.size();
    at = align8(end);
    std::memset(base + end, 0, at - end);
    std::memcpy(list_dir + 8 * i, &list_at, 8);
    fill_index(list_index, h.list_buckets, l.hash, list_at);
  }
  if (at != size) throw Error(fmt::format("snapshot layout bug: wrote {} of {} bytes", at, size));

  h.checksum = hash_bytes(base + sizeof h, size - sizeof h, generation);
  std::memcpy(base, &h, sizeof h);
}

std::vector<std::byte> SnapshotBuilder::serialize(uint64_t generation, uint64_t built_at_ns) const {
  std::vector<std::byte> out(serialized_size());
  serialize_into(out, generation, built_at_ns);
  return out;
}

void SnapshotBuilder::clear() {
  // Keep every buffer's capacity: the writer builds a snapshot of about the same size
  // every interval.
  Impl& m = *impl_;
  m.arena.clear();
  m.entries.clear();
  std::fill(m.table.begin(), m.table.end(), 0);
  m.lists.clear();
  m.record_bytes = 0;
}

// ---------------------------------------------------------------------------------
// SnapshotView. Every field read from the buffer is treated as hostile: offsets and
// lengths are checked against the snapshot's size before use, with arithmetic that
// cannot overflow (all operands are < 2^33 after the first check).
// ---------------------------------------------------------------------------------

namespace {

template <class T>
T load(std::span<const std::byte> b, size_t at) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}

using Layout = SnapshotView::Layout;

// The table offsets the header implies, or nullopt with the reason.
std::optional<Layout> layout_of(const SnapshotHeader& h, std::string* why) {
  auto fail = [&](std::string msg) {
    if (why) *why = std::move(msg);
    return std::nullopt;
  };
  if (!std::has_single_bit(h.record_buckets) || !std::has_single_bit(h.list_buckets))
    return fail("index size is not a power of two");
  if (h.record_count >= h.record_buckets || h.list_count >= h.list_buckets)
    return fail("index is overfull");
  Layout l;
  l.record_count = h.record_count;
  l.record_buckets = h.record_buckets;
  l.list_count = h.list_count;
  l.list_buckets = h.list_buckets;
  l.record_dir = sizeof(SnapshotHeader);
  l.record_index = l.record_dir + 8 * size_t{h.record_count};
  l.list_dir = l.record_index + sizeof(IndexSlot) * size_t{h.record_buckets};
  l.list_index = l.list_dir + 8 * size_t{h.list_count};
  l.body_end = l.list_index + sizeof(IndexSlot) * size_t{h.list_buckets};
  if (l.body_end > h.size) return fail("tables extend past the end of the snapshot");
  return l;
}

}  // namespace

std::optional<SnapshotView> SnapshotView::open(std::span<const std::byte> bytes, std::string* why) {
  auto fail = [&](std::string msg) {
    if (why) *why = std::move(msg);
    return std::nullopt;
  };
  if (bytes.size() < sizeof(SnapshotHeader)) return fail("snapshot shorter than its header");
  auto h = load<SnapshotHeader>(bytes, 0);
  if (h.magic != kSnapshotMagic) return fail("not a snapshot (wrong magic)");
  if (h.format_version != kFormatVersion)
    return fail(fmt::format("snapshot format version {} (this build reads {})", h.format_version,
                            kFormatVersion));
  if (h.header_size != sizeof(SnapshotHeader)) return fail("wrong snapshot header size");
  if (h.size > bytes.size())
    return fail(fmt::format("snapshot truncated: header says {} bytes, have {}", h.size, bytes.size()));
  auto layout = layout_of(h, why);
  if (!layout) return std::nullopt;
  SnapshotView v;
  v.bytes_ = bytes.first(h.size);
  v.layout_ = *layout;
  return v;
}

SnapshotView::SnapshotView(std::span<const std::byte> bytes) {
  std::string why;
  auto v = open(bytes, &why);
  if (!v) throw Error("invalid snapshot: " + why);
  *this = *v;
}

uint64_t SnapshotView::generation() const { return bytes_.empty() ? 0 : load<SnapshotHeader>(bytes_, 0).generation; }
uint64_t SnapshotView::built_at_ns() const { return bytes_.empty() ? 0 : load<SnapshotHeader>(bytes_, 0).built_at_ns; }
size_t SnapshotView::size() const { return bytes_.size(); }
size_t SnapshotView::record_count() const { return layout_.record_count; }
size_t SnapshotView::list_count() const { return layout_.list_count; }

namespace {

// The record at `at`, if it lies inside [body_start, size).
std::optional<Record> record_at(std::span<const std::byte> b, uint64_t at, size_t body_start) {
  if (at < body_start || at > b.size() - sizeof(RecordHeader)) return std::nullopt;
  auto rh = load<RecordHeader>(b, at);
  size_t key_at = at + sizeof rh;
  if (uint64_t{rh.key_len} + rh.value_len > b.size() - key_at) return std::nullopt;
  const char* p = reinterpret_cast<const char*>(b.data()) + key_at;
  return Record{{p, rh.key_len}, {p + rh.key_len, rh.value_len}};
}

struct ListAt {
  std::string_view name;
  uint32_t count;
  size_t offsets_at;
};
std::optional<ListAt> list_at(std::span<const std::byte> b, uint64_t at, size_t body_start) {
  if (at < body_start || at > b.size() - sizeof(ListHeader)) return std::nullopt;
  auto lh = load<ListHeader>(b, at);
  size_t offsets_at = at + sizeof lh;
  if (8 * uint64_t{lh.count} + lh.name_len > b.size() - offsets_at) return std::nullopt;
  const char* name = reinterpret_cast<const char*>(b.data()) + offsets_at + 8 * size_t{lh.count};
  return ListAt{{name, lh.name_len}, lh.count, offsets_at};
}

// Probes an index for `key`; calls match(offset) on each slot whose tag matches, until
// it returns true. Bounded by the bucket count whatever the contents.
template <class Match>
bool probe_index(std::span<const std::byte> b, size_t index_at, uint32_t buckets, std::string_view key,
                 Match match) {
  uint64_t h = hash_bytes(key.data(), key.size());
  uint32_t tag = static_cast<uint32_t>(h >> 32);
  size_t mask = buckets - 1;
  size_t i = h & mask;
  for (uint32_t n = 0; n < buckets; ++n, i = (i + 1) & mask) {
    auto slot = load<IndexSlot>(b, index_at + i * sizeof(IndexSlot));
    if (slot.offset == 0) return false;
    if (slot.tag == tag && match(slot.offset)) return true;
  }
  return false;
}

}  // namespace

std::optional<std::string_view> SnapshotView::find(std::string_view key) const {
  if (bytes_.empty()) return std::nullopt;
  const Layout& l = layout_;
  std::optional<std::string_view> found;
  probe_index(bytes_, l.record_index, l.record_buckets, key, [&](uint64_t at) {
    auto r = record_at(bytes_, at, l.body_end);
    if (r && r->key == key) found = r->value;
    return found.has_value();
  });
  return found;
}

std::optional<Record> SnapshotView::record(size_t i) const {
  if (i >= layout_.record_count) return std::nullopt;
  return record_at(bytes_, load<uint64_t>(bytes_, layout_.record_dir + 8 * i), layout_.body_end);
}

std::vector<Record> SnapshotView::list(std::string_view name) const {
  std::vector<Record> out;
  if (bytes_.empty()) return out;
  const Layout& l = layout_;
  probe_index(bytes_, l.list_index, l.list_buckets, name, [&](uint64_t at) {
    auto list = list_at(bytes_, at, l.body_end);
    if (!list || list->name != name) return false;
    out.reserve(list->count);
    for (uint32_t i = 0; i < list->count; ++i)
      if (auto r = record_at(bytes_, load<uint64_t>(bytes_, list->offsets_at + 8 * size_t{i}), l.body_end))
        out.push_back(*r);
    return true;
  });
  return out;
}

ListView SnapshotView::find_list(std::string_view name) const {
  ListView out;
  if (bytes_.empty()) return out;
  const Layout& l = layout_;
  probe_index(bytes_, l.list_index, l.list_buckets, name, [&](uint64_t at) {
    auto list = list_at(bytes_, at, l.body_end);
    if (!list || list->name != name) return false;
    out = ListView(bytes_, list->offsets_at, list->count, l.body_end);
    return true;
  });
  return out;
}

std::optional<Record> ListView::at(size_t i) const {
  if (i >= count_) return std::nullopt;
  return record_at(bytes_, load<uint64_t>(bytes_, offsets_at_ + 8 * i), body_end_);
}

std::vector<std::string_view> SnapshotView::list_names() const {
  std::vector<std::string_view> out;
  for (size_t i = 0; i < layout_.list_count; ++i)
    if (auto list = list_at(bytes_, load<uint64_t>(bytes_, layout_.list_dir + 8 * i), layout_.body_end))
      out.push_back(list->name);
  return out;
}

bool SnapshotView::verify(std::string* why) const {
  auto fail = [&](std::string msg) {
    if (why) *why = std::move(msg);
    return false;
  };
  if (bytes_.empty()) return fail("empty view");
  auto h = load<SnapshotHeader>(bytes_, 0);
  uint64_t sum = hash_bytes(bytes_.data() + sizeof h, bytes_.size() - sizeof h, h.generation);
  if (sum != h.checksum) return fail("checksum mismatch");
  const Layout& l = layout_;
  for (size_t i = 0; i < l.record_count; ++i) {
    auto r = record(i);
    if (!r) return fail(fmt::format("record {} out of bounds", i));
    auto v = find(r->key);
    if (!v || v->data() != r->value.data()) return fail(fmt::format("record {} not reachable by its key", i));
  }
  for (size_t i = 0; i < l.list_count; ++i) {
    auto list = list_at(bytes_, load<uint64_t>(bytes_, l.list_dir + 8 * i), l.body_end);
    if (!list) return fail(fmt::format("list {} out of bounds", i));
    for (uint32_t j = 0; j < list->count; ++j)
      if (!record_at(bytes_, load<uint64_t>(bytes_, list->offsets_at + 8 * size_t{j}), l.body_end))
        return fail(fmt::format("list '{}' entry {} out of bounds", list->name, j));
  }
  return true;
}

}  // namespace shm
