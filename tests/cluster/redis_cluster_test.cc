// tests/cluster/redis_cluster_test.cc: cluster/ on a real Redis Cluster (three masters
// with a replica each, tests/cluster/redis_server.h): the hash slot against the
// server's own, nodes leading and following, the slot of the cluster's keys moved to
// another master while they run (MOVED, and ASK while its keys are half moved), and the
// master holding them killed (its replica promoted).
#include <random>

#include <catch2/catch.hpp>
#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "cluster/cluster.h"
#include "cluster/redis.h"
#include "cluster/scripts.h"
#include "cluster/slots.h"
#include "common/partitions.h"
#include "tests/cluster/redis_server.h"
#include "tests/cluster/test_node.h"

using namespace cluster_test;

namespace {

const uint16_t kTestSlot = cluster::key_slot(cluster::Keys(cluster::cluster_tag("test")).log);

std::string port_text(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

uint16_t other_master(RedisCluster& rc, uint16_t not_this) {
  for (uint16_t m : rc.masters())
    if (m != not_this) return m;
  throw std::runtime_error("no other master");
}

// Both nodes went on by `more` entries past `from`, the follower caught up with the
// leader, and they hold one history.
void check_goes_on(Loop& loop, TestNode& a, TestNode& b, uint64_t from, uint64_t more) {
  REQUIRE(loop.until([&] { return std::min(a.host.seq, b.host.seq) >= from + more; }, 20s));
  REQUIRE(loop.until([&] { return a.host.seq == b.host.seq; }, 5s));
  size_t common = 0;
  CHECK(agree(a.host, b.host, &common));
  CHECK(common >= more);
}

}  // namespace

TEST_CASE("Redis Cluster: the hash slot of a key is the server's") {
  RedisCluster rc;
  Client c(rc.ports()[0]);
  std::vector<std::string> keys{"", "{", "}", "{}", "{}x", "x{}", "{}{a}", "{a}{b}", "a{b}c", "a{b", "a}b{c}",
                                "}{a}", "{{a}}", "foo", "{user1000}.following", "123456789"};
  std::mt19937 random(7);
  const std::string alphabet = "ab{}:-\x01\xff";
  for (int i = 0; i < 600; ++i) {
    std::string key(random() % 24, ' ');
    for (char& ch : key) ch = alphabet[random() % alphabet.size()];
    keys.push_back(key);
    std::string tagged("{");  // (not "{" + ...: GCC 12 warns about it, wrongly, at -O3)
    tagged += std::to_string(random());
    keys.push_back(tagged + "}:log");
  }
  for (const char* name : {"test", "telemetryd", "prod.eu-1", "a:b"}) {
    cluster::Keys of_log(cluster::cluster_tag(name)), of_partition(common::partition_tag(name, 7));
    for (const std::string& key : {of_log.lease, of_log.checkpoints, of_partition.log, of_partition.sources})
      keys.push_back(key);
  }
  CHECK(cluster::crc16_xmodem("123456789") == 0x31C3);  // the check value the specification gives
  for (const std::string& key : keys) {
    INFO("key '" << key << "'");
    CHECK(std::to_string(cluster::key_slot(key)) == c.run({"CLUSTER", "KEYSLOT", key}));
  }
  // Every key of a cluster's log shares the slot of its name; a partition's, of NAME:P.
  cluster::Keys k(cluster::cluster_tag("prod")), p(common::partition_tag("prod", 3));
  for (const std::string& key : {k.lease, k.term, k.log, k.log_end, k.checkpoints, k.chunk_prefix + "9:1:0", k.nodes,
                                 k.node_info, k.partitioning})
    CHECK(cluster::key_slot(key) == cluster::key_slot("prod"));
  for (const std::string& key : {p.lease, p.log, p.log_end, p.checkpoints, p.chunk_prefix + "9:1:0", p.sources})
    CHECK(cluster::key_slot(key) == cluster::key_slot("prod:3"));
}

TEST_CASE("Redis Cluster: nodes lead and follow on the master of their slot") {
  RedisCluster rc;
  Loop loop;
  TestNode a(loop.base, rc.url(), "a"), b(loop.base, rc.url(), "b");
  check_goes_on(loop, a, b, 0, 20);
  CHECK(((a.role() == cluster::Role::leader) + (b.role() == cluster::Role::leader)) == 1);
  uint16_t owner = rc.master_of(kTestSlot);
  REQUIRE(owner != 0);
  CHECK(a.node->status().redis_address == port_text(owner) + " (master of slot " + std::to_string(kTestSlot) + ")");
  Client c(owner);
  CHECK(std::stoull(c.run({"XLEN", "{test}:log"})) >= 20);
  CHECK(log_end_in(c) >= 20);
  CHECK(a.node->status().replicas == 1);  // ROLE on a cluster master lists its replica
  // So the leader WAITs for that replica before it shows an entry: what it showed is there.
  TestNode& leader = a.role() == cluster::Role::leader ? a : b;
  REQUIRE(loop.until([&] { return leader.host.published >= 20; }));
  Client replica(uint16_t(std::stoi(c.list({"ROLE"}).at(3))));  // ROLE: master, offset, {ip, port, offset}
  replica.run({"READONLY"});  // a cluster replica redirects reads to its master otherwise
  CHECK(log_end_in(replica) >= 20);
}

// A Connection on its own: a command whose key moved already is answered through ASK
// while the migration runs (the connection stays where it is), and once the slot has
// moved the first command fails with MOVED and the connection follows to the new master.
TEST_CASE("Redis Cluster: ASK during a slot migration is followed and MOVED moves the connection") {
  RedisCluster rc;
  Loop loop;
  const uint16_t slot = cluster::key_slot("{ask}");
  cluster::Slots slots(loop.base, cluster::parse_address(rc.url()).cluster_seeds);
  bool up = false;
  cluster::Connection conn(loop.base, cluster::parse_address(rc.url()), "ask test", [&](bool u) { up = u; }, nullptr,
                           &slots, "{ask}");
  conn.start();
  REQUIRE(loop.until([&] { return up; }));
  uint16_t from = rc.master_of(slot), to = other_master(rc, from);
  CHECK(conn.server().port == from);
  auto run = [&](const std::vector<std::string>& args, std::string* error = nullptr) {
    std::string out = "(none)";
    bool answered = false;
    bool sent = conn.command(args, [&](const redisReply* r, const std::string& e) {
      answered = true;
      if (r) out = r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ? std::string(r->str, r->len)
                   : r->type == REDIS_REPLY_NIL                                 ? "(nil)"
                                                                                : "?";
      if (error) *error = e;
    });
    REQUIRE(sent);
    REQUIRE(loop.until([&] { return answered; }));
    return out;
  };
  run({"SET", "{ask}:moved", "one"});
  run({"SET", "{ask}:stays", "two"});
  rc.begin_migration(slot, from, to);
  rc.migrate_keys(slot, from, to, {"{ask}:moved"});
  uint64_t errors = conn.errors();
  CHECK(run({"GET", "{ask}:moved"}) == "one");  // ASK: on the target now
  CHECK(run({"GET", "{ask}:stays"}) == "two");  // still on the source
  CHECK(run({"SET", "{ask}:new", "three"}) == "OK");  // absent on the source: created on the target
  CHECK(conn.errors() == errors + 2);                   // the two redirects
  CHECK(conn.up());
  CHECK(conn.server().port == from);

  rc.migrate_keys(slot, from, to);
  rc.end_migration(slot, from, to);
  std::string error;
  CHECK(run({"GET", "{ask}:stays"}, &error) == "(none)");
  CHECK(error.rfind("MOVED " + std::to_string(slot) + " ", 0) == 0);
  REQUIRE(loop.until([&] { return up && conn.server().port == to; }));
  CHECK(run({"GET", "{ask}:stays"}) == "two");
  CHECK(run({"GET", "{ask}:new"}) == "three");
}

// The slot of the cluster's keys moved to another master the way a reshard does it,
// key by key while the nodes run: meanwhile single-key commands meet ASK and the scripts
// TRYAGAIN, then everything meets MOVED. The log goes on, whole, on the new master.
TEST_CASE("Redis Cluster: the nodes' slot moved to another master while they run") {
  RedisCluster rc;
  Loop loop;
  TestNode a(loop.base, rc.url(), "a"), b(loop.base, rc.url(), "b");
  check_goes_on(loop, a, b, 0, 10);
  uint16_t from = rc.master_of(kTestSlot), to = other_master(rc, from);
  rc.begin_migration(kTestSlot, from, to);
  for (const std::string& key : Client(from).list({"CLUSTER", "GETKEYSINSLOT", std::to_string(kTestSlot), "100"})) {
    rc.migrate_keys(kTestSlot, from, to, {key});
    loop.run_for(100ms);
  }
  rc.migrate_keys(kTestSlot, from, to);
  rc.end_migration(kTestSlot, from, to);
  uint64_t at_move = std::max(a.host.seq, b.host.seq);
  check_goes_on(loop, a, b, at_move, 15);
  std::string moved = port_text(to) + " (master of slot " + std::to_string(kTestSlot) + ")";
  CHECK(a.node->status().redis_address == moved);
  CHECK(b.node->status().redis_address == moved);
  Client c(to);
  CHECK(log_end_in(c) >= at_move + 15);
  CHECK(Client(from).run({"CLUSTER", "COUNTKEYSINSLOT", std::to_string(kTestSlot)}) == "0");
}

TEST_CASE("Redis Cluster: the master of the nodes slot killed: its replica is promoted and the nodes go on") {
  RedisCluster rc;
  Loop loop;
  TestNode a(loop.base, rc.url(), "a"), b(loop.base, rc.url(), "b");
  check_goes_on(loop, a, b, 0, 10);
  uint16_t old_master = rc.master_of(kTestSlot);
  REQUIRE(old_master != 0);
  rc.kill_now(old_master);
  uint64_t at_kill = std::max(a.host.seq, b.host.seq);
  uint16_t promoted = 0;
  REQUIRE(loop.until([&] {
    promoted = rc.master_of(kTestSlot);
    return promoted != 0 && promoted != old_master;
  }, 20s));
  check_goes_on(loop, a, b, at_kill, 15);
  std::string now = port_text(promoted) + " (master of slot " + std::to_string(kTestSlot) + ")";
  CHECK(a.node->status().redis_address == now);
  CHECK(b.node->status().redis_address == now);
  Client c(promoted);
  CHECK(log_end_in(c) >= at_kill + 15);
  CHECK(((a.role() == cluster::Role::leader) + (b.role() == cluster::Role::leader)) == 1);
}
