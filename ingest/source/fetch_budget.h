// fetch_budget.h: the bound on the bytes that fetches in flight hold together
// (fetch_memory_limit), shared by the event loop's HTTP fetches and the threads that
// read file:// sources.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>

namespace ingest {

// Relaxed atomics throughout: the counters guard no other data, and each holder gives
// back exactly what it took, so the total is right whatever order threads see it in.
class FetchBudget {
 public:
  explicit FetchBudget(size_t limit) : limit_(limit) {}

  void set_limit(size_t limit) { limit_.store(limit, std::memory_order_relaxed); }
  size_t limit() const { return limit_.load(std::memory_order_relaxed); }
  size_t used() const { return used_.load(std::memory_order_relaxed); }
  size_t peak() const { return peak_.load(std::memory_order_relaxed); }

  // Takes n bytes if the total stays within the limit; false, taking nothing, if not.
  bool take(size_t n) {
    size_t limit = this->limit();
    size_t used = used_.load(std::memory_order_relaxed);
    do {
      if (used > limit || n > limit - used) return false;  // used > limit: lowered by a reload
    } while (!used_.compare_exchange_weak(used, used + n, std::memory_order_relaxed));
    size_t peak = peak_.load(std::memory_order_relaxed);
    while (used + n > peak &&
           !peak_.compare_exchange_weak(peak, used + n, std::memory_order_relaxed)) {
    }
    return true;
  }
  void give_back(size_t n) { used_.fetch_sub(n, std::memory_order_relaxed); }

 private:
  std::atomic<size_t> limit_;
  std::atomic<size_t> used_{0};
  std::atomic<size_t> peak_{0};
};

}  // namespace ingest
