// cluster/slots.cc: hash slots and the slot map of a Redis Cluster (see slots.h). A
// refresh is one Query that walks a copy of the node list with one short-lived
// connection at a time, like a Sentinel ask (ask_in_turn.h).
#include "cluster/slots.h"

#include <charconv>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>

#include "cluster/ask_in_turn.h"

namespace cluster {

namespace {
std::string text_of(const redisReply* r) { return std::string(r->str, r->len); }

bool parse_number(std::string_view text, int lo, int hi, int& out) {
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return !text.empty() && ec == std::errc() && p == text.data() + text.size() && out >= lo && out <= hi;
}

bool same(const HostPort& a, const HostPort& b) { return a.host == b.host && a.port == b.port; }

void add_unique(std::vector<HostPort>& list, const HostPort& hp) {
  for (const HostPort& h : list)
    if (same(h, hp)) return;
  list.push_back(hp);
}
}  // namespace

uint16_t crc16_xmodem(std::string_view bytes) {
  uint16_t crc = 0;
  for (unsigned char byte : bytes) {
    crc ^= uint16_t(byte << 8);
    for (int bit = 0; bit < 8; ++bit) crc = crc & 0x8000 ? uint16_t((crc << 1) ^ 0x1021) : uint16_t(crc << 1);
  }
  return crc;
}

uint16_t key_slot(std::string_view key) {
  size_t open = key.find('{');
  if (open != std::string_view::npos) {
    size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) key = key.substr(open + 1, close - open - 1);
  }
  return crc16_xmodem(key) % kSlotCount;
}

bool parse_redirect(std::string_view error, Redirect* out) {
  Redirect r;
  if (error.rfind("MOVED ", 0) == 0) {
    error.remove_prefix(6);
  } else if (error.rfind("ASK ", 0) == 0) {
    r.ask = true;
    error.remove_prefix(4);
  } else {
    return false;
  }
  size_t space = error.find(' ');
  int slot = 0;
  if (space == std::string_view::npos || !parse_number(error.substr(0, space), 0, kSlotCount - 1, slot)) return false;
  r.slot = uint16_t(slot);
  std::string_view where = error.substr(space + 1);
  size_t colon = where.rfind(':');
  if (colon == std::string_view::npos || !parse_number(where.substr(colon + 1), 1, 65535, r.to.port)) return false;
  r.to.host = std::string(where.substr(0, colon));
  if (r.to.host.empty()) return false;
  *out = std::move(r);
  return true;
}

struct Slots::Query : AskInTurn {
  explicit Query(Slots* slots) : AskInTurn(slots->base_, slots->nodes_), owner(slots) {}

  Slots* owner;
  std::vector<std::pair<uint16_t, Answer>> waiting;
  std::vector<Range> ranges;    // found: the answer
  std::vector<HostPort> nodes;  // found: every node it named

  void reset() override {
    ranges.clear();
    nodes.clear();
  }
  void send(redisAsyncContext* ac) override;
  void finished() override { owner->finish(*this); }
  // CLUSTER SLOTS: [[first, last, [host, port, id, ...] (master), [replica]...], ...].
  // A master without a host (null, "" or "?") is on the host this was asked of.
  bool parse(const redisReply* r, const HostPort& asked) {
    if (r->type != REDIS_REPLY_ARRAY) return false;
    for (size_t i = 0; i < r->elements; ++i) {
      const redisReply* e = r->element[i];
      if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
          e->element[1]->type != REDIS_REPLY_INTEGER)
        return false;
      long long first = e->element[0]->integer, last = e->element[1]->integer;
      if (first < 0 || last < first || last >= kSlotCount) return false;
      for (size_t n = 2; n < e->elements; ++n) {
        const redisReply* node = e->element[n];
        if (node->type != REDIS_REPLY_ARRAY || node->elements < 2 || node->element[1]->type != REDIS_REPLY_INTEGER)
          return false;
        HostPort hp{asked.host, int(node->element[1]->integer)};
        const redisReply* host = node->element[0];
        if (host->type == REDIS_REPLY_STRING && host->len > 0 && text_of(host) != "?") hp.host = text_of(host);
        if (hp.port < 1 || hp.port > 65535) return false;
        if (n == 2) ranges.push_back(Range{uint16_t(first), uint16_t(last), hp});
        add_unique(nodes, hp);
      }
    }
    return true;
  }
};

Slots::Slots(event_base* base, std::vector<HostPort> seeds) : base_(base), seeds_(std::move(seeds)), nodes_(seeds_) {}

Slots::~Slots() = default;

const HostPort* Slots::known_master(uint16_t slot) const {
  for (const Range& r : ranges_)
    if (slot >= r.first && slot <= r.last) return &r.master;
  return nullptr;
}

void Slots::moved(uint16_t slot, const HostPort& master) {
  std::vector<Range> ranges;
  for (const Range& r : ranges_) {
    if (slot < r.first || slot > r.last) {
      ranges.push_back(r);
      continue;
    }
    if (r.first < slot) ranges.push_back(Range{r.first, uint16_t(slot - 1), r.master});
    if (slot < r.last) ranges.push_back(Range{uint16_t(slot + 1), r.last, r.master});
  }
  ranges.push_back(Range{slot, slot, master});
  ranges_ = std::move(ranges);
  add_unique(nodes_, master);
}

void Slots::ask(uint16_t slot, Answer done) {
  if (query_) {  // a refresh is in flight: its answer is as fresh as one more
    query_->waiting.emplace_back(slot, std::move(done));
    return;
  }
  query_ = std::make_unique<Query>(this);
  Query& q = *query_;
  q.waiting.emplace_back(slot, std::move(done));
  q.start();
}

void Slots::finish(Query& q) {
  if (q.found) {
    ranges_ = std::move(q.ranges);
    // The node that answered first next time, then the ones it named, then the seeds
    // (a seed that is down now may be back later).
    std::vector<HostPort> nodes{q.asked()};
    for (const HostPort& n : q.nodes) add_unique(nodes, n);
    for (const HostPort& s : seeds_) add_unique(nodes, s);
    nodes_ = std::move(nodes);
  }
  std::unique_ptr<Query> done = std::move(query_);  // an answer may ask again
  for (auto& [slot, answer] : done->waiting) {
    if (!done->found) {
      answer(nullptr, "no node of the Redis Cluster answered CLUSTER SLOTS (" + done->errors + ")");
    } else if (const HostPort* master = known_master(slot)) {
      HostPort copy = *master;  // a later answer may change the map
      answer(&copy, std::string());
    } else {
      answer(nullptr, "no master serves slot " + std::to_string(slot) + " (the Redis Cluster is not fully set up)");
    }
  }
}

void Slots::Query::send(redisAsyncContext* ac) {
  redisAsyncCommand(ac, [](redisAsyncContext* ac, void* r, void* privdata) {
    auto* q = static_cast<Query*>(privdata);
    auto* reply = static_cast<redisReply*>(r);
    if (!reply || !q->current(ac)) return;
    if (reply->type == REDIS_REPLY_ERROR) {
      q->outcome(text_of(reply));
    } else if (!q->parse(reply, q->asked())) {
      q->ranges.clear();
      q->nodes.clear();
      q->outcome("an answer to CLUSTER SLOTS that is not a slot map");
    } else if (q->ranges.empty()) {
      q->outcome("serves no slot (not part of a cluster yet)");
    } else {
      q->found = true;
      q->outcome(std::string());
    }
  }, this, "CLUSTER SLOTS");
}

}  // namespace cluster
