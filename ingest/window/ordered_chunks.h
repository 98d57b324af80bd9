// ordered_chunks.h: work cut into chunks that several threads produce at once and the
// calling thread consumes one by one in chunk order (internal). The build renders series
// bodies this way: what the consumer makes of the chunks (the snapshot's bytes) is the
// same whatever the number of threads, since only the producing is spread.
#pragma once

#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

namespace ingest {

// Calls produce(c, slot) for every chunk c in [0, count) and consume(c, slot) for each
// in order, with the slot produce() filled. threads <= 1 (or a single chunk): both on
// the calling thread, chunk by chunk, in slots[0]. Otherwise `threads` threads produce
// into 2 x threads slots (resized here, and kept by the caller for their capacity)
// while the calling thread consumes: a producer waits for its slot's previous chunk to
// be consumed, the consumer for its chunk to be produced (C++20 atomic wait: blocked,
// not spinning). produce() runs on the threads and must touch nothing that another
// produce() or consume() writes; it must not throw (a throw ends the process). A throw
// from consume() stops the producers and reaches the caller once they have stopped.
template <typename Slot, typename Produce, typename Consume>
void run_ordered_chunks(size_t count, size_t threads, std::vector<Slot>& slots,
                        Produce&& produce, Consume&& consume) {
  if (threads <= 1 || count <= 1) {
    if (slots.empty()) slots.resize(1);
    for (size_t c = 0; c < count; ++c) {
      produce(c, slots[0]);
      consume(c, slots[0]);
    }
    return;
  }
  const size_t n_slots = 2 * threads;
  if (slots.size() < n_slots) slots.resize(n_slots);
  // ready[s] is 1 + the chunk slot s holds once produced. Release by the producer after
  // it filled the slot, acquire by the consumer before it reads it.
  std::vector<std::atomic<size_t>> ready(n_slots);
  for (auto& r : ready) r.store(0, std::memory_order_relaxed);
  // Chunks consumed so far. Release by the consumer once it is done with a slot,
  // acquire by the producer that fills the slot again.
  std::atomic<size_t> consumed{0};
  // The next chunk to claim: only hands out numbers, orders nothing (relaxed).
  std::atomic<size_t> next{0};
  auto producer = [&] {
    for (;;) {
      const size_t c = next.fetch_add(1, std::memory_order_relaxed);
      if (c >= count) return;
      const size_t free_once = c >= n_slots ? c - n_slots + 1 : 0;  // chunk c - n_slots consumed
      for (size_t k = consumed.load(std::memory_order_acquire); k < free_once;
           k = consumed.load(std::memory_order_acquire))
        consumed.wait(k, std::memory_order_acquire);
      produce(c, slots[c % n_slots]);
      ready[c % n_slots].store(c + 1, std::memory_order_release);
      ready[c % n_slots].notify_one();
    }
  };
  std::vector<std::jthread> pool;
  pool.reserve(threads);
  for (size_t t = 0; t < threads; ++t) pool.emplace_back(producer);
  for (size_t c = 0; c < count; ++c) {
    std::atomic<size_t>& r = ready[c % n_slots];
    for (size_t got = r.load(std::memory_order_acquire); got != c + 1;
         got = r.load(std::memory_order_acquire))
      r.wait(got, std::memory_order_acquire);
    try {
      consume(c, slots[c % n_slots]);
    } catch (...) {
      // No chunk is claimed any more, and a producer waiting for its slot is let go
      // (it fills a slot nobody reads): the pool can be joined.
      next.store(count, std::memory_order_relaxed);
      consumed.store(count + n_slots, std::memory_order_release);
      consumed.notify_all();
      pool.clear();
      throw;
    }
    consumed.store(c + 1, std::memory_order_release);
    consumed.notify_all();
  }
}  // the pool's jthreads join here, every chunk claimed

}  // namespace ingest
