// ingest/source: where samples come from besides the Pipeline's own http:// fetches:
// file:// read on a thread of its own (file_read.h), synthetic:// generated in process
// (synthetic.h), and push sources, which deliver between ticks (the OTLP/HTTP receiver,
// otlp_receiver.h, with gunzip.h for its bodies). fetch_budget.h bounds the bytes
// fetches in flight hold together.
//
// Guarantees
// ----------
// - No source can stall the writer's event loop: a slow disk, a hung mount or a FIFO
//   nobody writes holds only its own thread, bounded by the source timeout.
// - Every body is bounded: by max_body_bytes, by the fetch budget across sources, and
//   for gzip by the inflated size (a gzip bomb is refused at the limit, never held).
// - A push source hands over what arrived since the last take(), whole requests only:
//   a request refused is refused as a whole and counted.
// - The same synthetic:// URL (seed) gives the same data.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "ingest/format/format.h"

namespace ingest {

// A source that is not fetched: samples pushed to the writer between ticks (the
// OTLP/HTTP receiver, otlp_receiver.h). At every tick the Pipeline takes what arrived
// and applies it like a fetched body, as the source named url().
class PushSource {
 public:
  struct Batch {
    std::span<const Sample> samples;  // valid until the next take()
    uint64_t bytes = 0;               // body bytes received since the last take()
    uint64_t rejected = 0;            // data points refused on arrival
    std::string error;                // why the last request or point was refused, or ""
    uint64_t id = 0;                  // this take's number: 1, 2, ... (see settle)
  };
  virtual ~PushSource() = default;
  virtual const std::string& url() const = 0;
  virtual Batch take(int64_t now_ns) = 0;
  // What takes up to `id` held is committed (standalone: applied; a cluster leader: its
  // entry is in the log) or never will be (the tick was abandoned, or the state it went
  // into was replaced): a receiver answers its clients only now, 200 or retry later.
  // Called in take order, each take once at most; takes never settled by a Pipeline that
  // is destroyed are settled as not committed.
  virtual void settle(uint64_t id, bool committed) = 0;
};

}  // namespace ingest
