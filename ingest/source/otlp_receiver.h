// otlp_receiver.h: the OTLP/HTTP metrics receiver. Serves POST /v1/metrics (OTLP/JSON
// or OTLP/protobuf, gzip or not, Content-Length or chunked) on the writer's event loop
// and keeps the samples for the next tick, when the Pipeline takes them as the push
// source otlp://HOST:PORT. Status codes, limits and the mapping: docs/ingest.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>
#include <utility>
#include <memory>
#include <string>

#include "ingest/source/source.h"

struct event_base;

namespace ingest {

struct OtlpOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 4318;  // 0: any free port (tests), see OtlpReceiver::port()
  size_t max_body_bytes = size_t{4} << 20;  // received, and again once decompressed
  size_t max_pending = 100'000;             // samples waiting for the next tick
  std::chrono::milliseconds retry_after{2000};  // the interval: when there is room again
  size_t max_delta_series = 1'000'000;
  std::chrono::milliseconds delta_expire{60000};  // running totals unseen this long go
  // The source's name (url()) when not empty, else otlp://HOST:PORT as bound. A cluster
  // names it the same on every node: the replicated source table keys series by source
  // name, and a new leader whose receiver had another name would forget the pushed
  // series as belonging to a source that left.
  std::string name;
};

class OtlpReceiver final : public PushSource {
 public:
  // Binds host:port (SO_REUSEADDR, so a restarted writer rebinds at once) and serves
  // on base. Throws std::runtime_error naming the address and the system's reason.
  OtlpReceiver(event_base* base, const OtlpOptions& options);
  ~OtlpReceiver() override;
  OtlpReceiver(const OtlpReceiver&) = delete;
  OtlpReceiver& operator=(const OtlpReceiver&) = delete;

  const std::string& url() const override;
  Batch take(int64_t now_ns) override;
  // A request whose points were admitted is answered 200 only when the take that held
  // them is settled as committed; 503 with Retry-After when it is not.
  void settle(uint64_t id, bool committed) override;

  uint16_t port() const;  // the bound port
  size_t pending() const;  // samples waiting for the next take()
  size_t unanswered() const;  // admitted requests waiting for their take to be settled

  // Non-empty: every request is answered 503 with Retry-After and this reason, as on a
  // cluster node that does not lead (only the leader's ticks take pushed points).
  // Points already pending stay for the next take(). Lifting a refusal (the node starts
  // leading) forgets the delta running totals: they continue from the seed.
  void set_refusal(std::string reason);
  // Where delta running totals continue from (DeltaTotals::Seed): the replicated state.
  void set_delta_seed(std::function<std::optional<std::pair<double, int64_t>>(std::string_view key)> seed);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ingest
