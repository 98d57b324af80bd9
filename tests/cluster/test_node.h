// tests/cluster/test_node.h: what the cluster tests build nodes from: TestHost (a
// state that is a seq and a digest of every entry applied in order; as leader it makes
// one entry every 50ms), TestNode (a Node on a real redis-server around one), a Loop to
// run them, nodes in forked children that record their history, and the comparisons.
#pragma once

#include <csignal>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "cluster/cluster.h"
#include "tests/cluster/redis_server.h"

namespace cluster_test {

using namespace std::chrono_literals;

inline constexpr auto kLease = 600ms;

inline uint64_t mix(uint64_t digest, std::string_view entry) {
  uint64_t h = digest ^ 0x9e3779b97f4a7c15ULL;
  for (unsigned char c : entry) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

// State: a seq and a digest of every entry applied in order; as leader it makes one
// entry every 50ms. Checkpoints carry `padding` more bytes, to exercise chunking.
struct TestHost : cluster::Host {
  TestHost(event_base* b, std::string node_id, size_t padding = 0) : base(b), id(std::move(node_id)), pad(padding) {
    tick = event_new(base, -1, EV_PERSIST, [](int, short, void* a) { static_cast<TestHost*>(a)->produce(); }, this);
  }
  ~TestHost() override { event_free(tick); }

  uint64_t applied_seq() const override { return seq; }
  Applied apply(uint64_t s, std::string_view entry, std::string* error) override {
    if (s <= seq) return Applied::duplicate;
    if (s > seq + 1) return Applied::gap;
    if (entry.substr(0, 6) != "entry ") {
      if (error) *error = "not an entry";
      return Applied::bad;
    }
    advance(s, entry);
    return Applied::applied;
  }
  std::string checkpoint() const override {
    std::this_thread::sleep_for(checkpoint_delay);  // a large state's serialisation
    std::string bytes = "ckpt " + std::to_string(seq) + " " + std::to_string(digest) + "\n";
    for (size_t i = 0; i < pad; ++i) bytes += char((i * 2654435761u + seq) >> 7);
    return bytes;
  }
  void restore(std::string_view bytes) override {
    unsigned long long s = 0, d = 0;
    if (std::sscanf(std::string(bytes.substr(0, 64)).c_str(), "ckpt %llu %llu", &s, &d) != 2)
      throw std::invalid_argument("not a checkpoint");
    if (bytes.size() != bytes.find('\n') + 1 + pad) throw std::invalid_argument("checkpoint of the wrong size");
    seq = s;
    digest = d;
    ++restores;
    history[seq] = digest;
    record();
  }
  void reset() override {
    seq = digest = 0;
    ++resets;
  }
  void publish_to(uint64_t s) override { published = std::max(published, s); }
  void set_leading(bool on) override {
    leading = on;
    if (on) {
      timeval tv{0, 50'000};
      event_add(tick, &tv);
    } else {
      event_del(tick);
    }
  }
  void produce() {
    if (block_at && seq + 2 == block_at && before_block) before_block();
    if (block_at && seq + 1 == block_at) {
      block_at = 0;
      std::this_thread::sleep_for(block_for);  // a turn of the loop that holds it
      if (after_block) after_block();
      return;
    }
    uint64_t s = seq + 1;
    std::string entry = "entry " + id + " " + std::to_string(s);
    advance(s, entry);
    node->append(s, entry);
  }
  void advance(uint64_t s, std::string_view entry) {
    seq = s;
    digest = mix(digest, entry);
    history[seq] = digest;
    record();
  }
  // A child process's history, for the parent to compare.
  void record() {
    if (record_to) std::fprintf(record_to, "%llu %llu\n", (unsigned long long)seq, (unsigned long long)digest);
  }

  event_base* base;
  std::string id;
  size_t pad;
  event* tick = nullptr;
  cluster::Node* node = nullptr;
  bool leading = false;
  std::FILE* record_to = nullptr;
  uint64_t block_at = 0;  // produce() of this seq first blocks the loop for block_for
  std::chrono::milliseconds block_for{0};
  std::chrono::milliseconds checkpoint_delay{0};
  std::function<void()> before_block, after_block;
  uint64_t seq = 0, digest = 0;
  uint64_t published = 0;  // the newest seq the node said may be shown
  int restores = 0;
  int resets = 0;
  std::map<uint64_t, uint64_t> history;  // seq -> digest after applying it
};

// A test node's settings: cluster "test" on the Redis at url, leases of kLease.
inline cluster::Settings node_settings(const std::string& url, const std::string& id, bool may_lead) {
  cluster::Settings s;
  s.redis = cluster::parse_address(url);
  s.name = "test";
  s.node_id = id;
  s.lease = kLease;
  s.may_lead = may_lead;
  return s;
}

struct TestNode {
  TestNode(event_base* base, const RedisServer& redis, std::string id, bool may_lead = true, size_t pad = 0,
           uint32_t checkpoint_every = 30)
      : TestNode(base, redis.url(), std::move(id), may_lead, pad, checkpoint_every) {}
  TestNode(event_base* base, const std::string& url, std::string id, bool may_lead = true, size_t pad = 0,
           uint32_t checkpoint_every = 30)
      : host(base, id, pad) {
    cluster::Settings s = node_settings(url, id, may_lead);
    s.checkpoint_every = checkpoint_every;
    node = std::make_unique<cluster::Node>(base, s, host);
    host.node = node.get();
    node->start();
  }
  cluster::Role role() const { return node->status().role; }
  TestHost host;
  std::unique_ptr<cluster::Node> node;
};

struct Loop {
  Loop() : base(event_base_new()) {}
  ~Loop() { event_base_free(base); }
  // Runs the loop until pred holds or limit passes.
  bool until(const std::function<bool()>& pred, std::chrono::milliseconds limit = 10s) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
      if (std::chrono::steady_clock::now() >= end) return false;
      timeval tv{0, 10'000};
      event_base_loopexit(base, &tv);
      event_base_dispatch(base);
    }
    return true;
  }
  void run_for(std::chrono::milliseconds d) {
    until([] { return false; }, d);
  }
  event_base* base;
};

// A node alone in a forked child (so that a test can SIGSTOP it) that records each
// state it reaches to `record`, one "SEQ DIGEST" line each, for the parent to compare.
inline pid_t fork_node(const std::string& url, const std::string& id, const std::string& record, bool may_lead = true) {
  pid_t child = fork();
  if (child != 0) return child;
  event_base* base = event_base_new();
  TestHost host(base, id);
  host.record_to = std::fopen(record.c_str(), "w");
  setvbuf(host.record_to, nullptr, _IOLBF, 0);
  cluster::Node node(base, node_settings(url, id, may_lead), host);
  host.node = &node;
  node.start();
  event_base_dispatch(base);
  _exit(0);
}

inline std::string history_file() { return "/tmp/cluster-test-" + std::to_string(getpid()) + ".history"; }

// seq -> the digest last recorded for it; removes the file.
inline std::map<uint64_t, uint64_t> read_history(const std::string& record) {
  std::map<uint64_t, uint64_t> history;
  if (std::FILE* f = std::fopen(record.c_str(), "r")) {
    unsigned long long seq, digest;
    while (std::fscanf(f, "%llu %llu", &seq, &digest) == 2) history[seq] = digest;
    std::fclose(f);
  }
  std::remove(record.c_str());
  return history;
}

inline void kill_child(pid_t child) {
  kill(child, SIGKILL);
  int status;
  waitpid(child, &status, 0);
}

using History = std::map<uint64_t, uint64_t>;  // seq -> digest after applying it

// The histories agree wherever both applied the same seq (of the seqs `counts` accepts).
inline bool agree(const History& a, const History& b, size_t* common = nullptr,
           const std::function<bool(uint64_t)>& counts = {}) {
  size_t n = 0;
  for (const auto& [seq, digest] : a) {
    auto it = b.find(seq);
    if (it == b.end() || (counts && !counts(seq))) continue;
    if (it->second != digest) return false;
    ++n;
  }
  if (common) *common = n;
  return true;
}
inline bool agree(const TestHost& a, const TestHost& b, size_t* common = nullptr) {
  return agree(a.history, b.history, common);
}

inline uint64_t log_end_in(Client& c) {
  std::string v = c.run({"GET", "{test}:log-end"});
  return v == "(nil)" ? 0 : std::stoull(v);
}
inline uint64_t applied_in(Client& c, const std::string& id) {  // from the node's heartbeat
  std::string info = c.run({"HGET", "{test}:node-info", id});
  auto space = info.find(' ');
  return space == std::string::npos ? 0 : std::stoull(info.substr(space + 1));
}

}  // namespace cluster_test
