// id_index.h: the Replica dictionary's index, key -> id (internal to ingest/replica).
//
// Open addressing with linear probing over 8-byte slots: id + 1 (0: empty) and the low
// half of the key's hash, which is both the key's home slot and a compare made before
// the key's. The keys themselves stay where the ids lead (key_of(id)), so that finding
// or adding a key at a million costs about one cache miss in the table, where a
// node-based map takes three or four (restoring a checkpoint adds every series).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

namespace ingest {

class IdIndex {
 public:
  static constexpr uint32_t kAbsent = UINT32_MAX;

  size_t size() const { return count_; }
  // Room for n keys without growing.
  void reserve(size_t n) {
    size_t slots = std::max<size_t>(slots_.size(), 1024);
    while (slots < 2 * n + 2) slots *= 2;
    if (slots != slots_.size()) rehash(slots);
  }
  // key_of(id) is the key of an id the index holds.
  template <class KeyOf>
  uint32_t find(std::string_view key, const KeyOf& key_of) const {
    if (slots_.empty()) return kAbsent;
    const uint32_t h = hash_of(key);
    const size_t mask = slots_.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot s = slots_[i];
      if (!s.id_plus_1) return kAbsent;
      if (s.hash == h && key_of(s.id_plus_1 - 1) == key) return s.id_plus_1 - 1;
    }
  }
  // False, and nothing added, when key is there already.
  template <class KeyOf>
  bool insert(std::string_view key, uint32_t id, const KeyOf& key_of) {
    if (2 * (count_ + 1) + 2 > slots_.size()) reserve(count_ + 1);
    const uint32_t h = hash_of(key);
    const size_t mask = slots_.size() - 1;
    size_t i = h & mask;
    for (; slots_[i].id_plus_1; i = (i + 1) & mask)
      if (slots_[i].hash == h && key_of(slots_[i].id_plus_1 - 1) == key) return false;
    slots_[i] = Slot{id + 1, h};
    ++count_;
    return true;
  }
  // Linear probing's deletion: the slots after the hole that may move into it (whose
  // home is not cyclically in (hole, them]) move back, so that no probe stops early.
  template <class KeyOf>
  void erase(std::string_view key, const KeyOf& key_of) {
    if (slots_.empty()) return;
    const uint32_t h = hash_of(key);
    const size_t mask = slots_.size() - 1;
    size_t hole = h & mask;
    for (;; hole = (hole + 1) & mask) {
      const Slot s = slots_[hole];
      if (!s.id_plus_1) return;
      if (s.hash == h && key_of(s.id_plus_1 - 1) == key) break;
    }
    for (size_t j = (hole + 1) & mask; slots_[j].id_plus_1; j = (j + 1) & mask) {
      const size_t home = slots_[j].hash & mask;
      const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
      if (stays) continue;
      slots_[hole] = slots_[j];
      hole = j;
    }
    slots_[hole] = Slot{0, 0};
    --count_;
  }

 private:
  struct Slot {
    uint32_t id_plus_1;
    uint32_t hash;
  };
  static uint32_t hash_of(std::string_view key) {
    return static_cast<uint32_t>(std::hash<std::string_view>{}(key));
  }
  void rehash(size_t slots) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(slots, Slot{0, 0});
    const size_t mask = slots - 1;
    for (const Slot& s : old) {
      if (!s.id_plus_1) continue;
      size_t i = s.hash & mask;
      while (slots_[i].id_plus_1) i = (i + 1) & mask;
      slots_[i] = s;
    }
  }

  std::vector<Slot> slots_;  // a power of two, at most half full
  size_t count_ = 0;
};

}  // namespace ingest
