// tests/cluster/safety_test.cc: the cluster's safety argument (docs/architecture.md,
// Cluster) case by case against a real redis-server: the append script's chain and
// idempotence, the acquire rule and follower-only nodes, two histories that share
// terms, Redis restarted empty under a leader, and a node cut off from Redis. Logs are
// written into Redis by hand where a failover's outcome has to be exact.
#include <catch2/catch.hpp>
#include <event2/event.h>

#include "cluster/cluster.h"
#include "cluster/scripts.h"
#include "tests/cluster/redis_server.h"
#include "tests/cluster/tcp_proxy.h"
#include "tests/cluster/test_node.h"
#include "tests/server/e2e_util.h"

using namespace cluster_test;

namespace {

// A log written by hand the way a leader writes it: entry "entry ID SEQ" for each seq,
// term `term`, chained; log-end set to the last. Returns each seq's chain hash.
std::map<uint64_t, uint64_t> write_log(Client& c, const std::string& id, uint64_t from, uint64_t to, uint64_t term,
                                       uint64_t prev_hash = 0) {
  std::map<uint64_t, uint64_t> hashes;
  for (uint64_t s = from; s <= to; ++s) {
    std::string entry = "entry " + id + " " + std::to_string(s);
    prev_hash = cluster::chain_hash(prev_hash, entry);
    hashes[s] = prev_hash;
    c.run({"XADD", "{test}:log", std::to_string(s) + "-0", "t", std::to_string(term), "h",
           cluster::hash_text(prev_hash), "p", "0", "e", entry});
    c.run({"SET", "{test}:log-end", std::to_string(s) + " " + cluster::hash_text(prev_hash)});
  }
  return hashes;
}

// The log replaced by another history written by hand (write_log), as a failover to a
// replica that did not have its tail leaves it.
void replace_log(Client& c, const std::string& id, uint64_t to, uint64_t term) {
  c.run({"DEL", "{test}:log", "{test}:log-end"});
  write_log(c, id, 1, to, term);
}

// The digest TestHost reaches by applying entries "entry ID 1..to" in order.
uint64_t digest_of(const std::string& id, uint64_t to) {
  uint64_t d = 0;
  for (uint64_t s = 1; s <= to; ++s) d = mix(d, "entry " + id + " " + std::to_string(s));
  return d;
}

std::string append(Client& c, const std::string& lease, uint64_t seq, uint64_t prev, uint64_t hash) {
  try {
    return c.run({"EVAL", cluster::kAppendScript, "4", "{test}:lease", "{test}:log", "{test}:log-end", "{test}:checkpoints",
                  lease, std::to_string(seq), "1", "0", "entry", cluster::hash_text(prev), cluster::hash_text(hash),
                  "1000"});
  } catch (const std::runtime_error& e) {
    return e.what();
  }
}

bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("the chain hash depends on every byte and on the entry before") {
  std::string a(1000, 'x');
  uint64_t h = cluster::chain_hash(0, a);
  for (size_t i : {size_t(0), size_t(7), size_t(8), size_t(999)}) {
    std::string b = a;
    b[i] = 'y';
    CHECK(cluster::chain_hash(0, b) != h);
  }
  CHECK(cluster::chain_hash(1, a) != h);
  CHECK(cluster::chain_hash(0, a + "x") != h);
  CHECK(cluster::parse_hash(cluster::hash_text(h)) == h);
  CHECK(cluster::hash_text(1) == "0000000000000001");
}

TEST_CASE("the append script: a resend after a lost reply is success, another history or a gap is refused") {
  RedisServer redis;
  Client c(redis.port());
  c.run({"SET", "{test}:lease", "a 1"});
  uint64_t h1 = cluster::chain_hash(0, "one"), h2 = cluster::chain_hash(h1, "two");
  CHECK(append(c, "a 1", 1, 0, h1) == "1-0");
  // The same entry again (its reply was lost): the log has it, which is what was asked.
  CHECK(append(c, "a 1", 1, 0, h1) == "DUP");
  // ... even once the lease has passed on: the entry is there whoever leads now.
  c.run({"SET", "{test}:lease", "b 2"});
  CHECK(append(c, "a 1", 1, 0, h1) == "DUP");
  CHECK(contains(append(c, "a 1", 2, h1, h2), "FENCED the lease"));
  c.run({"SET", "{test}:lease", "a 1"});
  // Another entry at a seq the log holds: fenced.
  CHECK(contains(append(c, "a 1", 1, 0, h2), "FENCED the log already ends at 1"));
  // Not following the log's end: refused, with where the log ends.
  CHECK(append(c, "a 1", 2, h2, h1) == "DIVERGED the log ends at 1 " + cluster::hash_text(h1));
  CHECK(append(c, "a 1", 3, h2, h1) == "GAP the log ends at 1 " + cluster::hash_text(h1));
  CHECK(append(c, "a 1", 2, h1, h2) == "2-0");
  // An older entry resent: found in the stream by its seq.
  CHECK(append(c, "a 1", 1, 0, h1) == "DUP");
  CHECK(c.run({"GET", "{test}:log-end"}) == "2 " + cluster::hash_text(h2));
}

TEST_CASE("a checkpoint with a missing chunk is recorded not at all: its other chunks keep their expiry") {
  RedisServer redis;
  Client c(redis.port());
  c.run({"SET", "{test}:lease", "a 1"});
  c.run({"SET", "{test}:checkpoint:9:1:0", "x", "PX", "60000"});
  c.run({"SET", "{test}:checkpoint:9:1:2", "x", "PX", "60000"});
  CHECK_THROWS(c.run({"EVAL", cluster::kCommitCheckpointScript, "3", "{test}:lease", "{test}:checkpoints", "{test}:log",
                      "a 1", "9", "1", "3", "{test}:checkpoint:", "0", "1", cluster::hash_text(5)}));
  CHECK(c.run({"PTTL", "{test}:checkpoint:9:1:0"}) != "-1");
  CHECK(c.run({"PTTL", "{test}:checkpoint:9:1:2"}) != "-1");
  CHECK(c.run({"LLEN", "{test}:checkpoints"}) == "0");
}

TEST_CASE("the acquire script: a follower-only node that applied more does not hold the lease up") {
  RedisServer redis;
  Client c(redis.port());
  c.run({"ZADD", "{test}:nodes", "99999999999999", "f"});
  c.run({"HSET", "{test}:node-info", "f", "follower 100 0 0"});
  auto acquire = [&](const std::string& id, uint64_t applied) {
    return c.list({"EVAL", cluster::kAcquireScript, "6", "{test}:lease", "{test}:term", "{test}:log-end", "{test}:checkpoints",
                   "{test}:nodes", "{test}:node-info", id, "5000", "0", std::to_string(applied)});
  };
  auto r = acquire("c", 50);
  REQUIRE(r.size() >= 2);
  CHECK(r[0] == "1");
  // A node that may lead and applied more still has precedence.
  c.run({"DEL", "{test}:lease"});
  c.run({"ZADD", "{test}:nodes", "99999999999999", "d"});
  c.run({"HSET", "{test}:node-info", "d", "candidate 80 0 1"});
  CHECK(acquire("c", 50)[0] == "0");
  CHECK(acquire("d", 80)[0] == "1");
  // What a node applied past the log's end (a paused leader's ticks that never reached
  // the log) does not count: the others take over at once, not when its membership
  // expires.
  c.run({"DEL", "{test}:lease"});
  c.run({"SET", "{test}:log-end", "60 " + cluster::hash_text(7)});
  CHECK(acquire("c", 60)[0] == "1");
}

// The log lost its tail (a failover) and the node holding the most is follower-only:
// a candidate behind it takes the lease and leads on.
TEST_CASE("a leader within two leases while a follower-only node holds the most") {
  RedisServer redis;
  Client c(redis.port());
  write_log(c, "x", 1, 10, 3);
  Loop loop;
  TestNode f(loop.base, redis, "f", false);
  REQUIRE(loop.until([&] { return f.host.seq == 10; }));
  // The log loses 7..10: what a replica promoted before it had them holds.
  replace_log(c, "x", 6, 3);
  REQUIRE(loop.until([&] { return applied_in(c, "f") == 10; }));
  TestNode a(loop.base, redis, "a");
  REQUIRE(loop.until([&] { return a.host.seq == 6; }));
  // A lease's time after connecting plus a renewal period, then two leases at most.
  CHECK(loop.until([&] { return a.role() == cluster::Role::leader && a.host.leading; }, 4 * kLease));
  // The follower-only node does not mix its lost entries into the new history.
  REQUIRE(loop.until([&] { return f.host.seq > 12 && a.host.seq > 12; }, 10s));
  loop.run_for(200ms);
  CHECK(agree(a.host.history, f.host.history, nullptr, [](uint64_t s) { return s > 10; }));
}

// Two histories with the same terms: a follower applied entries 1..5 of one; the log it
// reads on is another (terms are INCRs on an asynchronously replicated key: after a
// failover, two leaders can hold the same term). The chain tells them apart.
TEST_CASE("a follower never applies an entry of another history that has the same terms") {
  RedisServer redis;
  Client c(redis.port());
  write_log(c, "x", 1, 5, 5);
  Loop loop;
  TestNode f(loop.base, redis, "f", false);
  REQUIRE(loop.until([&] { return f.host.seq == 5; }));
  CHECK(f.host.history.at(5) == digest_of("x", 5));
  // The log is replaced by another history of the same term, one entry longer.
  replace_log(c, "y", 6, 5);
  REQUIRE(loop.until([&] { return f.host.seq == 6; }));
  loop.run_for(200ms);
  // It started again from the log's first entry (no checkpoint) rather than applying
  // y's entry 6 on top of x's 1..5.
  CHECK(f.host.resets == 1);
  CHECK(f.host.history.at(6) == digest_of("y", 6));
  CHECK(f.node->status().reloads == 1);
  // And the variant with a lower term on the new history: no busy loop, the same end.
  replace_log(c, "z", 7, 2);
  REQUIRE(loop.until([&] { return f.host.seq == 7 && f.host.history.at(7) == digest_of("z", 7); }));
  CHECK(f.host.resets == 2);
}

TEST_CASE("Redis restarted empty within the lease: the leader keeps its state, re-seeds the log and goes on") {
  RedisServer redis;
  Loop loop;
  TestNode a(loop.base, redis, "a");
  REQUIRE(loop.until([&] { return a.role() == cluster::Role::leader && a.host.seq >= 10; }));
  uint64_t before = a.host.seq;
  redis.kill_now();
  redis.start();
  REQUIRE(loop.until([&] { return a.role() == cluster::Role::leader && a.host.seq > before + 10; }, 15s));
  CHECK(a.host.resets == 0);
  CHECK(a.host.restores == 0);
  // The log starts again at a checkpoint of the leader's state, not at 1.
  Client c(redis.port());
  auto first = c.list({"XRANGE", "{test}:log", "-", "+", "COUNT", "1"});
  REQUIRE_FALSE(first.empty());
  CHECK(std::stoull(first[0]) > before);
  CHECK(c.run({"LLEN", "{test}:checkpoints"}) != "0");
}

// Redis unreachable past the lease: the leader stops ingesting (whoever leads next
// gives the same seqs other data), says it is degraded, and nothing is reset.
TEST_CASE("Redis away: no node ingests without it, both report degraded, and the cluster goes on after") {
  RedisServer redis;
  TcpProxy proxy(redis.port());
  Loop loop;
  TestNode a(loop.base, proxy.url(), "a"), b(loop.base, proxy.url(), "b");
  REQUIRE(loop.until([&] {
    return (a.role() == cluster::Role::leader && b.host.seq >= 10) ||
           (b.role() == cluster::Role::leader && a.host.seq >= 10);
  }));
  proxy.retarget(e2e::free_port());  // nothing listens there
  loop.run_for(2 * kLease);
  uint64_t a_seq = a.host.seq, b_seq = b.host.seq;
  loop.run_for(2 * kLease);
  CHECK(a.host.seq == a_seq);
  CHECK(b.host.seq == b_seq);
  CHECK(!a.host.leading);
  CHECK(!b.host.leading);
  CHECK(a.node->status().degraded);
  CHECK(b.node->status().degraded);
  proxy.retarget(redis.port());
  uint64_t top = std::max(a_seq, b_seq);
  REQUIRE(loop.until([&] { return std::min(a.host.seq, b.host.seq) > top + 10; }, 15s));
  CHECK(!a.node->status().degraded);
  CHECK(a.host.resets + b.host.resets == 0);
  loop.run_for(200ms);
  size_t common = 0;
  CHECK(agree(a.host.history, b.host.history, &common, [&](uint64_t s) { return s > top; }));
  CHECK(common >= 10);
}

// Acknowledged means replicated: with a replica, a leader shows an entry only once the
// replica has it (WAIT), so a failover never loses an entry a node has shown.
TEST_CASE("a leader shows an entry only once the master's replica has it") {
  RedisServer master;
  RedisServer replica(master.port());
  Client c(master.port());
  REQUIRE(e2e::wait_for([&] { return c.run({"INFO", "replication"}).find("connected_slaves:1") != std::string::npos; }, 10s));
  Loop loop;
  TestNode a(loop.base, master, "a");
  REQUIRE(loop.until([&] { return a.role() == cluster::Role::leader && a.host.published >= 5; }));
  replica.stop_process(true);
  loop.run_for(300ms);
  uint64_t shown = a.host.published;
  loop.run_for(2 * kLease / 3);
  // Whatever it applied meanwhile, it shows nothing the replica does not have.
  CHECK(a.host.published <= shown + 1);
  CHECK(a.node->status().replica_waits > 0);
  replica.stop_process(false);
  REQUIRE(loop.until([&] { return a.host.published > shown + 3; }, 10s));
}

// Serialising a large state takes seconds; the lease must not depend on it.
TEST_CASE("a checkpoint that takes longer than the lease to make does not cost the leader its lease") {
  RedisServer redis;
  Loop loop;
  TestNode a(loop.base, redis, "a", true, 0, 5);
  REQUIRE(loop.until([&] { return a.role() == cluster::Role::leader && a.host.leading; }));
  uint64_t term = a.node->status().term;
  a.host.checkpoint_delay = 2 * kLease;
  Client c(redis.port());
  uint64_t first = a.node->status().checkpoint_seq;
  bool stayed = loop.until([&] {
    return a.role() != cluster::Role::leader || a.node->status().checkpoint_seq > first + 10;
  }, 20s);
  CHECK(stayed);
  CHECK(a.role() == cluster::Role::leader);
  CHECK(a.node->status().term == term);
  CHECK(a.node->status().checkpoint_seq > first + 10);
}
