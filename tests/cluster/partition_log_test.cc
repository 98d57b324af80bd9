// tests/cluster/partition_log_test.cc: a partition's log, which several writers append
// to (cluster/scripts.h, kPartitionAppendScript), against a real redis-server: the chain
// computed inside Redis, resends, late and stale appends, and a seeded run of two
// pullers handing a source back and forth with lost replies, checked exactly.
#include <map>
#include <random>
#include <set>

#include <catch2/catch.hpp>

#include "cluster/scripts.h"
#include "tests/cluster/redis_server.h"

using namespace cluster_test;

namespace {

const cluster::Keys kKeys("{test:0}");

struct Append {
  std::string outcome;  // "OK", "DUP", "OLD", "STALE"
  uint64_t seq = 0;
};

// begun: the writer knows the log had begun (kPartitionAppendScript's last argument).
Append append(Client& c, const std::string& source, uint64_t epoch, uint64_t tick, const std::string& entry,
              bool begun = false) {
  try {
    std::vector<std::string> r =
        c.list({"EVAL", cluster::kPartitionAppendScript, "4", kKeys.log, kKeys.log_end, kKeys.checkpoints,
                kKeys.sources, source, std::to_string(epoch), std::to_string(tick), "0", entry, "1000",
                begun ? "1" : "0"});
    return {r.at(0), std::stoull(r.at(1))};
  } catch (const std::runtime_error& e) {
    std::string what = e.what();
    for (const char* kind : {"STALE", "OLD", "EMPTY"})
      if (what.find(kind) != std::string::npos) return {kind, 0};
    throw;
  }
}

struct LogEntry {
  uint64_t seq;
  std::map<std::string, std::string> fields;
};

std::vector<LogEntry> read_log(Client& c) {
  std::vector<std::string> flat = c.list({"XRANGE", kKeys.log, "-", "+"});
  // Flattened: ID, then field/value pairs (7 of them) per entry.
  std::vector<LogEntry> out;
  for (size_t i = 0; i + 14 < flat.size() + 1; i += 15) {
    LogEntry e{std::stoull(flat[i]), {}};
    for (size_t f = i + 1; f < i + 15; f += 2) e.fields[flat[f]] = flat[f + 1];
    out.push_back(std::move(e));
  }
  return out;
}

// Every entry follows the one before: seqs 1..n without a hole, each q the previous h.
void check_chain(const std::vector<LogEntry>& log) {
  std::string prev = "0000000000000000";
  for (size_t i = 0; i < log.size(); ++i) {
    CHECK(log[i].seq == i + 1);
    CHECK(log[i].fields.at("q") == prev);
    CHECK(log[i].fields.at("h").size() == 16);
    prev = log[i].fields.at("h");
  }
}

}  // namespace

TEST_CASE("a partition's log: writers interleave into one chain, computed by Redis from the bytes") {
  RedisServer redis, other;
  Client c(redis.port()), d(other.port());
  CHECK(append(c, "a", 1, 100, "a100").outcome == "OK");
  CHECK(append(c, "b", 1, 100, "b100").outcome == "OK");
  Append third = append(c, "a", 1, 101, "a101");
  CHECK(third.outcome == "OK");
  CHECK(third.seq == 3);
  std::vector<LogEntry> log = read_log(c);
  REQUIRE(log.size() == 3);
  check_chain(log);
  CHECK(log[1].fields.at("s") == "b");
  CHECK(log[1].fields.at("e") == "b100");
  CHECK(c.run({"GET", kKeys.log_end}) == "3 " + log[2].fields.at("h"));

  // The same history on another Redis has the same hashes; another entry, another hash.
  append(d, "a", 1, 100, "a100");
  append(d, "b", 1, 100, "b100");
  append(d, "a", 1, 101, "a101!");
  std::vector<LogEntry> again = read_log(d);
  CHECK(again[1].fields.at("h") == log[1].fields.at("h"));
  CHECK(again[2].fields.at("h") != log[2].fields.at("h"));
}

TEST_CASE("a partition's log: a resend is DUP, a late tick OLD, a lost epoch STALE, and a new epoch fences the old") {
  RedisServer redis;
  Client c(redis.port());
  CHECK(append(c, "a", 1, 10, "x").outcome == "OK");
  Append dup = append(c, "a", 1, 10, "x");
  CHECK(dup.outcome == "DUP");
  CHECK(dup.seq == 1);
  CHECK(append(c, "a", 1, 9, "y").outcome == "OLD");   // a paused puller's late entry
  CHECK(append(c, "a", 2, 10, "z").outcome == "OLD");  // the new puller's first tick was covered ...
  CHECK(append(c, "a", 2, 10, "z").outcome == "OLD");  // (sent again: not a DUP, the entry is not its own)
  CHECK(append(c, "a", 1, 11, "y").outcome == "STALE");  // ... and the old puller is fenced off
  CHECK(append(c, "a", 2, 11, "z").outcome == "OK");
  CHECK(append(c, "a", 1, 12, "y").outcome == "STALE");
  CHECK(read_log(c).size() == 2);
  CHECK(c.run({"HGET", kKeys.sources, "a"}) == "2 11 2 2");
}

// Two pullers take turns with one source, each with its own epoch (a newer turn, a
// higher epoch), and both keep appending for a while after losing it (a paused puller),
// with replies lost at random: the log must hold each tick at most once, ticks rising,
// and every tick a puller saw confirmed (OK or DUP) exactly once.
TEST_CASE("a partition's log: pullers handing a source over with lost replies never count a tick twice") {
  RedisServer redis;
  Client c(redis.port());
  uint32_t seed = std::random_device{}();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  std::set<uint64_t> confirmed;
  uint64_t epoch = 1;
  uint64_t next_tick[3] = {0, 1, 1};   // per puller (1, 2): the next tick it fetches
  uint64_t puller_epoch[3] = {0, 1, 0};
  int owner = 1;
  for (int step = 0; step < 400; ++step) {
    if (rng() % 25 == 0) {  // a hand-over: the other puller takes the source at a higher epoch
      owner = 3 - owner;
      puller_epoch[owner] = ++epoch;
      next_tick[owner] = std::max(next_tick[owner], next_tick[3 - owner] - rng() % 3);
    }
    int who = rng() % 4 == 0 ? 3 - owner : owner;  // the old owner is sometimes still at it
    if (puller_epoch[who] == 0) continue;
    uint64_t tick = next_tick[who];
    Append a = append(c, "src", puller_epoch[who], tick, "tick " + std::to_string(tick));
    bool lost = rng() % 5 == 0;
    if (lost) a = append(c, "src", puller_epoch[who], tick, "tick " + std::to_string(tick));  // resend
    if (a.outcome == "OK" || a.outcome == "DUP") confirmed.insert(tick);
    next_tick[who] = tick + 1;
  }
  std::vector<LogEntry> log = read_log(c);
  check_chain(log);
  std::map<uint64_t, int> times;
  uint64_t previous = 0;
  for (const LogEntry& e : log) {
    uint64_t tick = std::stoull(e.fields.at("k"));
    CHECK(tick > previous);
    previous = tick;
    ++times[tick];
    CHECK(e.fields.at("e") == "tick " + std::to_string(tick));
  }
  for (uint64_t tick : confirmed) CHECK(times[tick] == 1);
  CHECK(times.size() == log.size());
  CHECK(confirmed.size() == log.size());
}

// A writer that knows the log had begun finds it empty once Redis lost it (restarted
// without persistence): refused, since the partition's primary writes a checkpoint of its
// state first and an entry appended before that would never be applied; after the
// checkpoint the log goes on past it.
TEST_CASE("a partition's log: a writer that knew it had begun is refused while Redis has lost it") {
  RedisServer redis;
  Client c(redis.port());
  CHECK(append(c, "a", 1, 100, "a100", true).outcome == "EMPTY");
  CHECK(c.run({"EXISTS", kKeys.log}) == "0");
  // The primary's checkpoint at its applied seq 40 (the commit script's record).
  c.run({"LPUSH", kKeys.checkpoints, "40 1 1 0 1 00000000000000aa"});
  Append after = append(c, "a", 1, 100, "a100", true);
  CHECK(after.outcome == "OK");
  CHECK(after.seq == 41);
  // A writer that never saw the log begin starts it (a new cluster).
  c.run({"DEL", kKeys.checkpoints, kKeys.log, kKeys.log_end, kKeys.sources});
  CHECK(append(c, "b", 1, 100, "b100").outcome == "OK");
}
