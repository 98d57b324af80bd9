// partition_util.h: a deterministic source for the partition tests (tests/ingest and
// tests/cluster): what source S gives at tick T is a function of (S, T) alone, so that
// two pullers fetching the same tick send the same samples, and a reference aggregator
// can be fed any tick again.
#pragma once

#include <deque>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "ingest/ingest.h"

namespace ingest_test {

struct SourceTick {
  std::deque<std::string> text;  // stable storage for names and values
  std::vector<std::vector<ingest::Label>> labels;
  std::vector<ingest::Sample> samples;
};

// Series j of source s: metric m<j % 5>, labels host=h<j> and src=s<s>; about one series in
// eleven is absent at a tick (churn), the kinds alternate between gauge and counter.
inline SourceTick source_tick(int source, uint64_t tick, int series, int64_t clock) {
  SourceTick t;
  t.labels.reserve(series);
  for (int j = 0; j < series; ++j) {
    if ((j + tick / 7) % 11 == 0) continue;
    const std::string& metric = t.text.emplace_back(fmt::format("m{}", j % 5));
    const std::string& host = t.text.emplace_back(fmt::format("h{}", j));
    const std::string& src = t.text.emplace_back(fmt::format("s{}", source));
    t.labels.push_back({ingest::Label{"host", host}, ingest::Label{"src", src}});
    ingest::Sample s;
    s.metric = metric;
    s.labels = t.labels.back();
    s.kind = j % 2 ? ingest::SampleKind::counter : ingest::SampleKind::gauge;
    s.value = j % 2 ? double(tick * (j + 1) + source) : double((tick * 31 + j * 7 + source) % 101) / 4;
    s.ts_ns = j % 3 == 0 ? 0 : clock - 1000;
    t.samples.push_back(s);
  }
  return t;
}

}  // namespace ingest_test
