// replication_test.cc: the log entries and checkpoints that make a Pipeline's
// aggregation replicable. Followers fed a leader's entries, and nodes that restored a
// checkpoint and then applied the rest, must publish the same records and lists as the
// leader for every seq; bad, duplicate and out-of-order entries change nothing.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <thread>

#include <event2/event.h>
#include <fmt/format.h>

#include "ingest/ingest.h"
#include "ingest/replica/replica.h"
#include "test_util.h"

using namespace ingest;
using namespace ingest_test;

namespace {

struct Base {
  event_base* base = event_base_new();
  ~Base() { event_base_free(base); }
};

// Every record (in insertion order) and every list of a snapshot, as text.
std::string dump(const shm::SnapshotBuilder& b) {
  std::vector<std::byte> bytes = b.serialize(1, 0);
  shm::SnapshotView view{std::span<const std::byte>(bytes)};
  std::string out;
  for (size_t i = 0; i < view.record_count(); ++i) {
    auto r = view.record(i);
    REQUIRE(r);
    out.append(r->key).append(" = ").append(r->value).append("\n");
  }
  for (std::string_view name : view.list_names()) {
    out.append("list ").append(name).append(":");
    for (const shm::Record& r : view.list(name)) out.append(" ").append(r.key);
    out.append("\n");
  }
  return out;
}

// A Pipeline and what it published, by seq.
struct Node {
  Base b;
  std::map<uint64_t, std::string> published;
  std::map<uint64_t, std::vector<shm::SourceStatus>> statuses;
  std::vector<std::pair<uint64_t, std::string>> entries;  // what its sink got
  Pipeline pipeline;
  explicit Node(const Config& c)
      : pipeline(b.base, c, [this](const shm::SnapshotBuilder& sb,
                                   const std::vector<shm::SourceStatus>& s, uint64_t seq) {
          published[seq] = dump(sb);
          statuses[seq] = s;
        }) {}
  // commit: the log takes each entry at once (the leader may show it).
  void lead(bool commit = true) {
    pipeline.set_entry_sink([this, commit](uint64_t seq, std::string entry) {
      entries.emplace_back(seq, std::move(entry));
      if (commit) pipeline.publish_committed(seq);
    });
  }
};

void write_file(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  std::ofstream(tmp, std::ios::binary) << text;
  REQUIRE(std::rename(tmp.c_str(), path.c_str()) == 0);
}

std::string temp_path(const std::string& name) {
  return fmt::format("/tmp/telemetryd_replication_{}_{}", getpid(), name);
}

// Tick t's Prometheus body: a counter reset at tick 4, a histogram, a gauge, a
// series that goes away after tick 3 (stale, then expired) and one that starts late.
std::string prometheus_body(int t) {
  std::string out = "# TYPE jobs_total counter\n";
  out += fmt::format("jobs_total{{q=\"a\"}} {}\n", t < 4 ? 100 + 7 * t : 3 * t);
  out += fmt::format("jobs_total{{q=\"b\"}} {}\n", 0.1 * t * t);
  out += "# TYPE req_seconds histogram\n";
  out += fmt::format("req_seconds_bucket{{le=\"0.1\"}} {}\n", 2 * t);
  out += fmt::format("req_seconds_bucket{{le=\"1\"}} {}\n", 5 * t);
  out += fmt::format("req_seconds_bucket{{le=\"+Inf\"}} {}\n", 6 * t);
  out += fmt::format("req_seconds_sum {}\n", 1.25 * t);
  out += fmt::format("req_seconds_count {}\n", 6 * t);
  out += "# TYPE temp gauge\n";
  out += fmt::format("temp{{room=\"x\"}} {}\n", 20 + 0.37 * t);
  if (t <= 3) out += fmt::format("temp{{room=\"gone\"}} {}\n", 1.0 / (t + 1));
  if (t >= 6) out += fmt::format("temp{{room=\"late\"}} {}\n", -0.0 + t);
  return out;
}

// Native JSON: samples with their own timestamps (just behind the clock), repeated
// series and one far in the future (dropped alike everywhere).
std::string native_body(int t) {
  double now = static_cast<double>(shm::realtime_ns()) / 1e9;
  return fmt::format(
      R"({{"samples": [{{"metric": "load", "labels": {{"host": "h1"}}, "value": {}, "ts": {:.3f}}},)"
      R"( {{"metric": "load", "labels": {{"host": "h1"}}, "value": 5, "ts": {:.3f}}},)"
      R"( {{"metric": "load", "labels": {{"host": "h{}"}}, "value": {}}},)"
      R"( {{"metric": "future", "value": 1, "ts": {:.3f}}}]}})",
      0.5 * t, now - 0.02, now - 0.03, t % 3, 1e300 * t, now + 1000);
}

Config leader_config(const std::string& prom, const std::string& native) {
  Config c;
  c.sources = {"file://" + prom + "?format=prometheus", "file://" + native,
               "synthetic://?hosts=3&metrics=4&seed=5"};
  c.interval = std::chrono::milliseconds(100);
  c.window = std::chrono::milliseconds(500);
  c.stale_after = std::chrono::milliseconds(150);
  c.expire_after = std::chrono::milliseconds(350);
  return c;
}

// A follower's own configuration, unlike the leader's: it must follow the entries'.
Config follower_config() {
  Config c;
  c.sources = {"synthetic://?hosts=50&metrics=2&seed=1"};
  c.interval = std::chrono::milliseconds(5000);
  c.window = std::chrono::milliseconds(60000);
  c.max_series = 10;
  return c;
}

Node& follower(std::vector<std::unique_ptr<Node>>& nodes) {
  nodes.push_back(std::make_unique<Node>(follower_config()));
  nodes.back()->pipeline.set_fetching(false);
  return *nodes.back();
}

}  // namespace

TEST_CASE("replication - followers and nodes joining from a checkpoint publish the leader's records and lists at every seq") {
  const std::string prom = temp_path("prom.txt"), native = temp_path("native.json");
  write_file(prom, prometheus_body(0));
  write_file(native, native_body(0));
  Node leader(leader_config(prom, native));
  leader.lead();
  leader.pipeline.set_applied_seq(40);  // a writer continuing from its store's generation
  std::vector<std::unique_ptr<Node>> nodes;
  Node& from_start = follower(nodes);
  from_start.pipeline.set_applied_seq(40);
  Node* joined = nullptr;
  Node* joined_from_follower = nullptr;

  constexpr int kTicks = 14;
  for (int t = 0; t < kTicks; ++t) {
    write_file(prom, prometheus_body(t));
    write_file(native, native_body(t));
    if (t == 8) {  // a reload: one source less, a shorter window
      Config c = leader_config(prom, native);
      c.sources.pop_back();
      c.window = std::chrono::milliseconds(400);
      leader.pipeline.reconfigure(c);
    }
    leader.pipeline.run_once();
    REQUIRE(leader.entries.size() == size_t(t + 1));
    const auto& [seq, entry] = leader.entries.back();
    REQUIRE(seq == uint64_t(41 + t));
    CHECK(Pipeline::entry_seq(entry) == seq);
    for (auto& n : nodes) REQUIRE(n->pipeline.apply_entry(entry) == Pipeline::EntryResult::applied);
    // Checkpoints are the same bytes on the leader and on a follower at the same seq.
    CHECK(from_start.pipeline.checkpoint() == leader.pipeline.checkpoint());
    if (t == 5) {  // the reset at tick 4 is inside the window
      auto counter = leader.pipeline.aggregator().series(R"(jobs_total{q="a"})");
      REQUIRE(counter);
      CHECK(counter->resets > 0);
    }
    if (t == 4) {
      joined = &follower(nodes);
      joined->pipeline.restore(leader.pipeline.checkpoint());
      CHECK(joined->pipeline.applied_seq() == seq);
    }
    if (t == 9) {
      joined_from_follower = &follower(nodes);
      joined_from_follower->pipeline.restore(from_start.pipeline.checkpoint());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(60));  // lets the window slide
  }
  REQUIRE(joined);
  REQUIRE(joined_from_follower);
  for (const auto& [seq, body] : leader.published) {
    INFO("seq " << seq);
    CHECK(from_start.published.at(seq) == body);
    CHECK(from_start.statuses.at(seq).size() == leader.statuses.at(seq).size());
    if (seq > 45) CHECK(joined->published.at(seq) == body);
    if (seq > 50) CHECK(joined_from_follower->published.at(seq) == body);
  }
  // The followers aggregate with the leader's settings, not their own.
  for (auto& n : nodes) {
    CHECK(n->pipeline.aggregator().config().window == std::chrono::milliseconds(400));
    CHECK(n->pipeline.aggregator().config().max_series == leader.pipeline.config().max_series);
    CHECK(n->pipeline.applied_seq() == leader.pipeline.applied_seq());
  }
  // The statuses published are the leader's.
  const auto& last = from_start.statuses.at(leader.pipeline.applied_seq());
  REQUIRE(last.size() == 2);
  CHECK(last[0].url == leader.pipeline.config().sources[0]);
  CHECK(last[0].samples == leader.pipeline.statuses()[0].samples);
  CHECK(last[1].dropped == leader.pipeline.statuses()[1].dropped);
  // What the run went through: a stale series, then the same series expired, a
  // counter reset, the source removed by the reload gone everywhere.
  bool saw_stale = false;
  for (const auto& [seq, body] : leader.published)
    saw_stale |= body.find("room=\\\"gone\\\"") != std::string::npos &&
                 body.find("\"stale\":true") != std::string::npos;
  CHECK(saw_stale);
  const std::string& final_body = leader.published.rbegin()->second;
  CHECK(final_body.find("room=\\\"gone\\\"") == std::string::npos);
  CHECK(final_body.find("room=\\\"late\\\"") != std::string::npos);
  CHECK(leader.published.begin()->second.find("dc=") != std::string::npos);
  CHECK(final_body.find("dc=") == std::string::npos);
  std::remove(prom.c_str());
  std::remove(native.c_str());
}

TEST_CASE("replication - a leader shows a tick only once the log has its entry, and then the follower's bytes") {
  const std::string prom = temp_path("commit_prom.txt"), native = temp_path("commit_native.json");
  write_file(prom, prometheus_body(1));
  write_file(native, native_body(1));
  Node leader(leader_config(prom, native));
  leader.lead(false);
  std::vector<std::unique_ptr<Node>> nodes;
  Node& f = follower(nodes);
  leader.pipeline.run_once();
  REQUIRE(leader.entries.size() == 1);
  CHECK(leader.published.empty());  // applied, not shown: the log may never have it
  leader.pipeline.publish_committed(leader.entries[0].first + 1);  // not a seq it applied
  CHECK(leader.published.empty());
  leader.pipeline.publish_committed(leader.entries[0].first);
  REQUIRE(leader.published.size() == 1);
  REQUIRE(f.pipeline.apply_entry(leader.entries[0].second) == Pipeline::EntryResult::applied);
  CHECK(leader.published.begin()->second == f.published.at(leader.entries[0].first));
  // Two ticks wait; the older one's commit shows nothing (the state has moved on), the
  // newer one's shows the newest state, as the follower has it after both entries.
  write_file(prom, prometheus_body(2));
  leader.pipeline.run_once();
  write_file(prom, prometheus_body(3));
  leader.pipeline.run_once();
  REQUIRE(leader.entries.size() == 3);
  leader.pipeline.publish_committed(leader.entries[1].first);
  CHECK(leader.published.size() == 1);
  leader.pipeline.publish_committed(leader.entries[2].first);
  REQUIRE(leader.published.size() == 2);
  for (size_t i = 1; i < 3; ++i)
    REQUIRE(f.pipeline.apply_entry(leader.entries[i].second) == Pipeline::EntryResult::applied);
  CHECK(leader.published.rbegin()->second == f.published.at(leader.entries[2].first));
  std::remove(prom.c_str());
  std::remove(native.c_str());
}

TEST_CASE("replication - a standalone recovery: a checkpoint, entries applied unshown, one build, then ticks as the leader") {
  const std::string prom = temp_path("replay_prom.txt"), native = temp_path("replay_native.json");
  write_file(native, native_body(1));
  Node leader(leader_config(prom, native));
  leader.lead();
  for (int t = 1; t <= 4; ++t) {
    write_file(prom, prometheus_body(t));
    leader.pipeline.run_once();
  }
  REQUIRE(leader.entries.size() == 4);
  // A standalone writer's recovery: a checkpoint, then the log after it, one build.
  Node from_checkpoint(leader_config(prom, native));
  Node first(leader_config(prom, native));
  for (size_t i = 0; i < 2; ++i)
    REQUIRE(first.pipeline.apply_entry(leader.entries[i].second) == Pipeline::EntryResult::applied);
  from_checkpoint.pipeline.restore(first.pipeline.checkpoint());
  for (size_t i = 2; i < 4; ++i)
    REQUIRE(from_checkpoint.pipeline.apply_entry(leader.entries[i].second, nullptr, false) ==
            Pipeline::EntryResult::applied);
  CHECK(from_checkpoint.published.empty());
  CHECK(from_checkpoint.pipeline.apply_entry(leader.entries[3].second, nullptr, false) ==
        Pipeline::EntryResult::duplicate);
  from_checkpoint.pipeline.show_applied();
  REQUIRE(from_checkpoint.published.size() == 1);
  CHECK(from_checkpoint.published.at(leader.entries[3].first) == leader.published.at(leader.entries[3].first));
  // And it goes on as the leader: its next tick is the leader's next seq.
  from_checkpoint.lead();
  write_file(prom, prometheus_body(5));
  from_checkpoint.pipeline.run_once();
  REQUIRE(from_checkpoint.entries.size() == 1);
  CHECK(from_checkpoint.entries[0].first == leader.entries[3].first + 1);
  std::remove(prom.c_str());
  std::remove(native.c_str());
}

TEST_CASE("replication - duplicate, gap, bad and unknown-version entries change nothing") {
  Node leader(leader_config("/nonexistent/a", "/nonexistent/b"));
  Config c = leader_config("/nonexistent/a", "/nonexistent/b");
  c.sources = {"synthetic://?hosts=2&metrics=3&seed=7"};
  Node source_leader(c);
  source_leader.lead();
  for (int i = 0; i < 3; ++i) source_leader.pipeline.run_once();
  REQUIRE(source_leader.entries.size() == 3);
  const std::string& e1 = source_leader.entries[0].second;
  const std::string& e2 = source_leader.entries[1].second;
  const std::string& e3 = source_leader.entries[2].second;

  Node f(follower_config());
  f.pipeline.set_fetching(false);
  std::string error;
  CHECK(f.pipeline.apply_entry(e2, &error) == Pipeline::EntryResult::gap);
  REQUIRE(f.pipeline.apply_entry(e1, &error) == Pipeline::EntryResult::applied);
  const std::string at_one = f.pipeline.checkpoint();
  CHECK(f.pipeline.apply_entry(e1, &error) == Pipeline::EntryResult::duplicate);
  CHECK(f.pipeline.apply_entry(e3, &error) == Pipeline::EntryResult::gap);

  SECTION("corrupt bytes anywhere") {
    for (size_t at = 0; at < e2.size(); at += std::max<size_t>(1, e2.size() / 40)) {
      std::string bad = e2;
      bad[at] = static_cast<char>(bad[at] ^ 0x5a);
      auto r = f.pipeline.apply_entry(bad, &error);
      // A flipped seq byte reads as another seq (a gap or a duplicate), never applied.
      CHECK(r != Pipeline::EntryResult::applied);
      CHECK(f.pipeline.checkpoint() == at_one);
    }
  }
  SECTION("truncated") {
    for (size_t n : {size_t(0), size_t(3), size_t(31), size_t(32), e2.size() / 2, e2.size() - 1}) {
      CHECK(f.pipeline.apply_entry(e2.substr(0, n), &error) == Pipeline::EntryResult::bad);
      CHECK(!error.empty());
    }
    CHECK(f.pipeline.checkpoint() == at_one);
  }
  SECTION("unknown version") {
    std::string newer = e2;
    newer[4] = static_cast<char>(kLogFormatVersion + 1);
    CHECK(Pipeline::entry_seq(newer) == 0);
    CHECK(f.pipeline.apply_entry(newer, &error) == Pipeline::EntryResult::bad);
    CHECK(error.find("version 2") != std::string::npos);
    CHECK(f.pipeline.checkpoint() == at_one);
  }
  SECTION("the good one still applies after the bad ones") {
    CHECK(f.pipeline.apply_entry("garbage", &error) == Pipeline::EntryResult::bad);
    CHECK(Pipeline::entry_seq("garbage") == 0);
    CHECK(f.pipeline.apply_entry(e2, &error) == Pipeline::EntryResult::applied);
    CHECK(f.pipeline.apply_entry(e3, &error) == Pipeline::EntryResult::applied);
    CHECK(f.pipeline.checkpoint() == source_leader.pipeline.checkpoint());
    CHECK(f.published.rbegin()->second == source_leader.published.rbegin()->second);
  }
}

TEST_CASE("replication - checkpoints: an empty state round trips, bad bytes change nothing") {
  Config c = leader_config("/nonexistent/a", "/nonexistent/b");
  c.sources = {"synthetic://?hosts=2&metrics=3&seed=7"};
  Node leader(c);
  leader.lead();
  Node empty(follower_config());
  empty.pipeline.set_fetching(false);
  const std::string blank = empty.pipeline.checkpoint();
  Node restored(follower_config());
  restored.pipeline.set_fetching(false);
  restored.pipeline.restore(blank);
  CHECK(restored.pipeline.applied_seq() == 0);
  CHECK(restored.pipeline.checkpoint() == blank);

  leader.pipeline.run_once();
  leader.pipeline.run_once();
  for (auto& [seq, entry] : leader.entries)
    REQUIRE(restored.pipeline.apply_entry(entry) == Pipeline::EntryResult::applied);
  CHECK(restored.published.at(2) == leader.published.at(2));

  const std::string good = leader.pipeline.checkpoint();
  const std::string before = restored.pipeline.checkpoint();
  std::string newer = good;
  newer[4] = static_cast<char>(kLogFormatVersion + 1);
  CHECK_THROWS_AS(restored.pipeline.restore(newer), std::invalid_argument);
  CHECK_THROWS_AS(restored.pipeline.restore(good.substr(0, good.size() - 1)), std::invalid_argument);
  CHECK_THROWS_AS(restored.pipeline.restore(""), std::invalid_argument);
  std::string flipped = good;
  flipped[good.size() / 2] = static_cast<char>(flipped[good.size() / 2] ^ 1);
  CHECK_THROWS_AS(restored.pipeline.restore(flipped), std::invalid_argument);
  CHECK(restored.pipeline.checkpoint() == before);
  CHECK(restored.pipeline.applied_seq() == 2);
}

TEST_CASE("replication - a leader's tick abandoned half-way leaves no trace") {
  // A source that never answers keeps the tick in flight.
  int listener = -1;
  uint16_t port = 0;
  {
    listener = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(listener, 4) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port = ntohs(a.sin_port);
  }
  Config c = leader_config("/nonexistent/a", "/nonexistent/b");
  c.sources = {"synthetic://?hosts=2&metrics=3&seed=7", fmt::format("http://127.0.0.1:{}/", port)};
  c.source_timeout = std::chrono::milliseconds(30000);
  Node leader(c);
  leader.lead();
  const std::string before = leader.pipeline.checkpoint();
  leader.pipeline.start();
  // The synthetic source answered inside start(); the http one never will.
  for (int i = 0; i < 20; ++i) event_base_loop(leader.b.base, EVLOOP_NONBLOCK);
  CHECK(leader.entries.empty());
  CHECK(leader.pipeline.apply_entry("x") == Pipeline::EntryResult::bad);  // busy
  SECTION("fetching turned off") { leader.pipeline.set_fetching(false); }
  SECTION("the sink cleared") {
    leader.pipeline.set_entry_sink({});
    // Abandoned: a follower's entry applies (it would be refused while a tick runs).
    Config other = c;
    other.sources = {"synthetic://?hosts=1&metrics=1&seed=2"};
    Node source(other);
    source.lead();
    source.pipeline.run_once();
    CHECK(leader.pipeline.apply_entry(source.entries.at(0).second) == Pipeline::EntryResult::applied);
    leader.pipeline.set_fetching(false);
    CHECK(leader.published.size() == 1);
    CHECK(leader.published.at(1) == source.published.at(1));
    ::close(listener);
    return;
  }
  CHECK(leader.pipeline.checkpoint() == before);
  CHECK(leader.pipeline.applied_seq() == 0);
  CHECK(leader.published.empty());
  ::close(listener);
}

TEST_CASE("replication - a leader leaves out samples no entry may hold, and keeps the rest of the tick") {
  Config c = Config{}.resolved();
  Aggregator aggregator(c);
  Replica replica;
  static const Label good[] = {{"host", "a"}};
  static const Label unsorted[] = {{"z", "1"}, {"a", "2"}};
  Sample samples[] = {
      Sample{"cpu", "", good, {}, 1.5, 0, SampleKind::gauge},
      Sample{"cpu", "", good, {}, std::nan(""), 0, SampleKind::gauge},
      Sample{"bad name{", "", {}, {}, 1, 0, SampleKind::gauge},
      Sample{"mem", "", unsorted, {}, 2, 0, SampleKind::gauge},  // sorted when staged
      Sample{"h", "", {}, {}, 2, 0, SampleKind::histogram},
  };
  const std::string urls[] = {"synthetic://"};
  replica.stage_begin(c, urls);
  CHECK(replica.stage(0, samples, kT0) == 3);
  std::vector<ApplyStats> stats;
  replica.apply(replica.take_staged(), 1, kT0, aggregator, &stats, nullptr);
  REQUIRE(stats.size() == 1);
  CHECK(stats[0].accepted == 2);
  CHECK(aggregator.series(R"(cpu{host="a"})"));
  CHECK(aggregator.series(R"(mem{a="2",z="1"})"));
}

namespace {

// A push source (the OTLP receiver's place in the Pipeline) that hands over the same
// gauge, counter and histogram bucket at every tick, the values moving.
class FixedPush final : public PushSource {
 public:
  const std::string& url() const override { return url_; }
  Batch take(int64_t now_ns) override {
    ++takes_;
    samples_.clear();
    samples_.push_back(sample("push_temp", "", SampleKind::gauge, 20.0 + takes_, now_ns));
    samples_.push_back(sample("push_requests_total", "", SampleKind::counter, 10.0 * takes_, now_ns));
    samples_.push_back(sample("push_latency", "_bucket", SampleKind::bucket, 3.0 * takes_, now_ns));
    return Batch{samples_, 100, 0, "", uint64_t(takes_)};
  }
  void settle(uint64_t id, bool committed) override { settled.emplace_back(id, committed); }
  std::vector<std::pair<uint64_t, bool>> settled;  // in the order settle() was called

 private:
  Sample sample(std::string_view metric, std::string_view suffix, SampleKind kind, double value, int64_t ts) {
    Sample s;
    s.metric = metric;
    s.suffix = suffix;
    s.labels = kind == SampleKind::bucket ? std::span<const Label>(le_) : std::span<const Label>();
    s.resource_labels = resource_;
    s.value = value;
    s.ts_ns = ts;
    s.kind = kind;
    return s;
  }
  std::string url_ = "otlp://127.0.0.1:4318";
  int takes_ = 0;
  Label le_[1] = {{"le", "0.5"}};
  Label resource_[1] = {{"service.name", "checkout"}};
  std::vector<Sample> samples_;
};

}  // namespace

TEST_CASE("replication - pushed points reach the followers through the leader's entries") {
  const std::string prom = temp_path("prom.txt"), native = temp_path("native.json");
  write_file(prom, prometheus_body(0));
  write_file(native, native_body(0));
  FixedPush push;
  Node leader(leader_config(prom, native));
  leader.pipeline.add_push_source(&push);
  leader.lead();
  std::vector<std::unique_ptr<Node>> nodes;
  Node& f = follower(nodes);  // has no push source of its own
  for (int t = 0; t < 4; ++t) {
    leader.pipeline.run_once();
    REQUIRE(f.pipeline.apply_entry(leader.entries.back().second) == Pipeline::EntryResult::applied);
  }
  for (const auto& [seq, body] : leader.published) {
    INFO("seq " << seq);
    CHECK(f.published.at(seq) == body);
  }
  const std::string& last = leader.published.rbegin()->second;
  CHECK(last.find(R"(push_temp{service.name=\"checkout\"})") != std::string::npos);
  auto counter = f.pipeline.aggregator().series(R"(push_requests_total{service.name="checkout"})");
  REQUIRE(counter);
  CHECK(counter->count == 4);
  CHECK(counter->last == 40.0);
  const auto& statuses = f.statuses.at(leader.pipeline.applied_seq());
  REQUIRE(statuses.size() == 4);  // the three configured sources, then the push source
  CHECK(statuses[3].url == "otlp://127.0.0.1:4318");
  CHECK(statuses[3].samples == 12);  // accepted since the start: 3 a tick
  std::remove(prom.c_str());
  std::remove(native.c_str());
}

TEST_CASE("replication - pushed points are settled as committed only once their entry is in the log") {
  FixedPush push;
  Config c = follower_config();
  Node leader(c);
  leader.pipeline.add_push_source(&push);
  leader.lead(false);
  leader.pipeline.run_once();
  leader.pipeline.run_once();
  REQUIRE(leader.entries.size() == 2);
  CHECK(push.settled.empty());  // applied here, not in the log yet: no answer
  leader.pipeline.publish_committed(leader.entries[0].first);
  REQUIRE(push.settled.size() == 1);
  CHECK(push.settled[0] == std::make_pair(uint64_t(1), true));
  // The node stops leading with the second tick unacknowledged: its clients are told
  // to retry, never that their points were kept.
  leader.pipeline.set_fetching(false);
  REQUIRE(push.settled.size() == 2);
  CHECK(push.settled[1] == std::make_pair(uint64_t(2), false));
  // Standalone: settled as committed when the tick is applied.
  FixedPush alone_push;
  Node alone(c);
  alone.pipeline.add_push_source(&alone_push);
  alone.pipeline.run_once();
  REQUIRE(alone_push.settled.size() == 1);
  CHECK(alone_push.settled[0] == std::make_pair(uint64_t(1), true));
}

TEST_CASE("replication - a node catching up builds only the snapshot it shows") {
  const std::string prom = temp_path("catchup_prom.txt"), native = temp_path("catchup_native.json");
  write_file(prom, prometheus_body(1));
  write_file(native, native_body(1));
  Node leader(leader_config(prom, native));
  leader.lead();
  for (int t = 0; t < 3; ++t) leader.pipeline.run_once();
  std::vector<std::unique_ptr<Node>> nodes;
  Node& f = follower(nodes);
  for (const auto& [seq, entry] : leader.entries)
    REQUIRE(f.pipeline.apply_entry(entry, nullptr, false) == Pipeline::EntryResult::applied);
  CHECK(f.published.empty());
  f.pipeline.show_applied();
  REQUIRE(f.published.size() == 1);
  CHECK(f.published.begin()->first == leader.entries.back().first);
  CHECK(f.published.begin()->second == leader.published.rbegin()->second);
  f.pipeline.show_applied();  // nothing new applied: nothing built
  CHECK(f.published.size() == 1);
  std::remove(prom.c_str());
  std::remove(native.c_str());
}

// A series that goes away for longer than expire_after and comes back: expired (and
// made again) by a node that builds every entry; a node that applies the entries
// without building must hold the same state, byte for byte.
TEST_CASE("replication - a node that applies entries without building holds the state of one that builds each") {
  const std::string path = temp_path("expiry.json");
  Config c;
  c.sources = {"file://" + path};
  c.interval = std::chrono::milliseconds(1000);
  c.window = std::chrono::milliseconds(10000);
  c.expire_after = std::chrono::milliseconds(2000);
  Node leader(c);
  leader.lead();
  for (int t = 0; t < 7; ++t) {
    // "comes" at ticks 0 and 5; "stays" at every tick. Tick clocks are at least an
    // interval apart, however fast the ticks run here.
    write_file(path, std::string(R"({"samples": [{"metric": "stays", "value": 1})") +
                         (t == 0 || t == 5 ? R"(, {"metric": "comes", "value": 2})" : "") + "]}");
    leader.pipeline.run_once();
  }
  std::vector<std::unique_ptr<Node>> nodes;
  Node& each = follower(nodes);
  Node& once = follower(nodes);
  for (const auto& [seq, entry] : leader.entries) {
    REQUIRE(each.pipeline.apply_entry(entry) == Pipeline::EntryResult::applied);
    REQUIRE(once.pipeline.apply_entry(entry, nullptr, false) == Pipeline::EntryResult::applied);
  }
  once.pipeline.show_applied();
  CHECK(once.pipeline.checkpoint() == each.pipeline.checkpoint());
  CHECK(once.published.rbegin()->second == each.published.rbegin()->second);
  auto comes = each.pipeline.aggregator().series("comes");
  REQUIRE(comes);
  CHECK(comes->count == 1);  // expired at tick 2 or later, made again at tick 5
  std::remove(path.c_str());
}

// A node that applied entries up to a later clock (a leader fenced off, a follower ahead)
// and reloads an older checkpoint replays and shows the earlier seqs again: each must be
// built at its own entry's clock, not at the latest clock the node had seen (which expired
// a window's oldest sample a tick early: another body than every other node's at that seq).
TEST_CASE("replication - a node that reloads an older checkpoint shows each seq at that entry's clock") {
  const std::string path = temp_path("reload.json");
  Config c;
  c.sources = {"file://" + path};
  c.interval = std::chrono::milliseconds(1000);
  c.window = std::chrono::milliseconds(3000);
  Node leader(c);
  leader.lead();
  std::string checkpoint_at_2;
  for (int t = 0; t < 8; ++t) {
    write_file(path, R"({"samples": [{"metric": "m", "value": )" + std::to_string(t) + "}]}");
    leader.pipeline.run_once();
    if (t == 1) checkpoint_at_2 = leader.pipeline.checkpoint();
  }
  std::vector<std::unique_ptr<Node>> nodes;
  Node& ahead = follower(nodes);
  for (const auto& [seq, entry] : leader.entries) REQUIRE(ahead.pipeline.apply_entry(entry) == Pipeline::EntryResult::applied);
  ahead.published.clear();
  ahead.pipeline.restore(checkpoint_at_2);
  for (const auto& [seq, entry] : leader.entries)
    if (seq > 2) REQUIRE(ahead.pipeline.apply_entry(entry) == Pipeline::EntryResult::applied);
  for (const auto& [seq, body] : ahead.published) {
    INFO("seq " << seq);
    CHECK(body == leader.published.at(seq));
  }
  CHECK(ahead.published.size() == 6);
  std::remove(path.c_str());
}
