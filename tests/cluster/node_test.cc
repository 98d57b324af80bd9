// tests/cluster/node_test.cc: cluster/ against a real redis-server with opaque
// payloads: lease, renewal, fencing, terms, the log tail, checkpoints and trimming,
// and Redis killed and restarted. The nodes run in this process on one event loop
// (or in a forked child where a test stops one with SIGSTOP).
#include <csignal>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <event2/event.h>

#include "cluster/cluster.h"
#include "cluster/redis.h"
#include "tests/cluster/redis_server.h"
#include "tests/cluster/tcp_proxy.h"
#include "tests/cluster/test_node.h"
#include "tests/server/e2e_util.h"

using namespace cluster_test;

TEST_CASE("cluster address parsing") {
  auto a = cluster::parse_address("redis://10.0.0.5:6380/3");
  CHECK(a.server.host == "10.0.0.5");
  CHECK(a.server.port == 6380);
  CHECK(a.db == 3);
  CHECK(!a.via_sentinel());
  CHECK(a.text() == "redis://10.0.0.5:6380/3");
  CHECK(cluster::parse_address("redis://localhost:6379").db == 0);
  auto s = cluster::parse_address("redis-sentinel://10.0.0.1:26379,10.0.0.2:26380/main/2");
  REQUIRE(s.sentinels.size() == 2);
  CHECK(s.sentinels[1].host == "10.0.0.2");
  CHECK(s.sentinels[1].port == 26380);
  CHECK(s.master == "main");
  CHECK(s.db == 2);
  CHECK(s.text() == "redis-sentinel://10.0.0.1:26379,10.0.0.2:26380/main/2");
  CHECK(cluster::parse_address("redis-sentinel://h:1/m").db == 0);
  auto c = cluster::parse_address("redis-cluster://10.0.0.1:7000,10.0.0.2:7001");
  CHECK(c.via_cluster());
  CHECK(!c.via_sentinel());
  REQUIRE(c.cluster_seeds.size() == 2);
  CHECK(c.cluster_seeds[1].host == "10.0.0.2");
  CHECK(c.cluster_seeds[1].port == 7001);
  CHECK(c.db == 0);
  CHECK(c.text() == "redis-cluster://10.0.0.1:7000,10.0.0.2:7001");
  CHECK(cluster::parse_address("redis-cluster://h:7000").cluster_seeds.size() == 1);
  try {
    cluster::parse_address("redis-cluster://h:7000/1");
    FAIL("a database was accepted on a Redis Cluster");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("only database 0") != std::string::npos);
  }
  for (const char* bad : {"http://x:1", "redis://x", "redis://:1", "redis://x:0", "redis://x:1/16", "redis://x:1/",
                          "redis://x:70000", "redis://x:1/a", "redis-sentinel://h:1", "redis-sentinel://h:1/",
                          "redis-sentinel:///m", "redis-sentinel://h:1,/m", "redis-sentinel://h/m",
                          "redis-sentinel://h:1/m/16", "redis-sentinel://h:1/m x",
                          "redis-cluster://", "redis-cluster://h", "redis-cluster://h:1,", "redis-cluster://h:1/0",
                          "redis-cluster://h:1,:2", "redis-cluster://h:0"})
    CHECK_THROWS_AS(cluster::parse_address(bad), std::invalid_argument);
}

TEST_CASE("one of two nodes takes the lease and keeps it by renewing") {
  RedisServer redis;
  Loop loop;
  TestNode a(loop.base, redis, "a"), b(loop.base, redis, "b");
  REQUIRE(loop.until([&] { return a.role() == cluster::Role::leader || b.role() == cluster::Role::leader; }));
  TestNode& leader = a.role() == cluster::Role::leader ? a : b;
  TestNode& other = &leader == &a ? b : a;
  uint64_t term = leader.node->status().term;
  // Five lease periods: a lease that was not renewed would have passed to the other.
  loop.run_for(5 * kLease);
  CHECK(leader.role() == cluster::Role::leader);
  CHECK(leader.node->status().term == term);
  CHECK(other.role() == cluster::Role::follower);
  CHECK(other.node->status().leader_id == leader.host.id);
  Client c(redis.port());
  CHECK(c.run({"GET", "{test}:lease"}) == leader.host.id + " " + std::to_string(term));
  // The follower applied what the leader appended, in order.
  REQUIRE(loop.until([&] { return other.host.seq >= 20; }));
  size_t common = 0;
  CHECK(agree(leader.host, other.host, &common));
  CHECK(common >= 20);
  CHECK(other.node->status().synced);
}

TEST_CASE("a follower-only node never takes the lease") {
  RedisServer redis;
  Loop loop;
  TestNode f(loop.base, redis, "f", false);
  loop.run_for(4 * kLease);
  CHECK(f.role() == cluster::Role::follower);
  Client c(redis.port());
  CHECK(c.run({"EXISTS", "{test}:lease"}) == "0");
  TestNode l(loop.base, redis, "l");
  REQUIRE(loop.until([&] { return f.host.seq >= 10; }));
  CHECK(l.role() == cluster::Role::leader);
  CHECK(agree(l.host, f.host));
}

TEST_CASE("the append script refuses a node whose lease ran out or passed on") {
  RedisServer redis;
  Client c(redis.port());
  // Node a holds term 1 with a short lease and appends; then its lease runs out, b takes
  // term 2, and a's append under term 1 is refused inside Redis.
  Loop loop;
  TestNode a(loop.base, redis, "a");
  REQUIRE(loop.until([&] { return a.role() == cluster::Role::leader && a.host.seq >= 3; }));
  uint64_t a_term = a.node->status().term;
  c.run({"SET", "{test}:lease", "b " + std::to_string(a_term + 1), "PX", "5000"});
  c.run({"SET", "{test}:term", std::to_string(a_term + 1)});
  // a notices at its next renewal (a third of the lease) and stops appending.
  REQUIRE(loop.until([&] { return a.role() != cluster::Role::leader; }, 2 * kLease));
  CHECK_FALSE(a.host.leading);
  auto ids = c.list({"XRANGE", "{test}:log", "-", "+"});
  uint64_t appended = a.node->status().entries_appended;
  loop.run_for(kLease);
  CHECK(a.node->status().entries_appended == appended);
  CHECK(c.list({"XRANGE", "{test}:log", "-", "+"}) == ids);
}

TEST_CASE("a leader stopped past its lease is fenced off and becomes a follower") {
  RedisServer redis;
  std::string record = history_file();
  pid_t child = fork_node(redis.url(), "old", record);
  Client c(redis.port());
  auto info_of = [&](const std::string& id) {
    try {
      return c.run({"HGET", "{test}:node-info", id});
    } catch (...) {
      return std::string();
    }
  };
  Loop loop;
  REQUIRE(loop.until([&] { return info_of("old").rfind("leader", 0) == 0 && c.run({"XLEN", "{test}:log"}) >= "1"; }));
  std::string old_lease = c.run({"GET", "{test}:lease"});
  kill(child, SIGSTOP);
  TestNode fresh(loop.base, redis, "new");
  // Within two lease periods of the stop the new node leads and appends.
  REQUIRE(loop.until([&] { return fresh.role() == cluster::Role::leader && fresh.host.leading; }, 3 * kLease));
  uint64_t new_term = fresh.node->status().term;
  CHECK(c.run({"GET", "{test}:lease"}) != old_lease);
  loop.run_for(200ms);
  kill(child, SIGCONT);
  // The old leader finds its lease gone at once and reports itself a non-leader within
  // one renew period (its heartbeat carries its role).
  REQUIRE(loop.until([&] { return info_of("old").rfind("leader", 0) != 0; }, kLease));
  loop.run_for(2 * kLease);
  CHECK(fresh.role() == cluster::Role::leader);
  // In the log, terms never go back along the IDs: nothing of the old term after the
  // new term's first entry.
  auto flat = c.list({"XRANGE", "{test}:log", "-", "+"});
  uint64_t highest = 0;
  bool new_seen = false;
  for (size_t i = 0; i + 1 < flat.size(); ++i) {
    if (flat[i] != "t") continue;
    uint64_t t = std::stoull(flat[i + 1]);
    CHECK(t >= highest);
    highest = std::max(highest, t);
    if (t == new_term) new_seen = true;
    if (new_seen) CHECK(t == new_term);
  }
  CHECK(new_seen);
  // The old node follows the new leader: its applied seq reaches the new leader's.
  REQUIRE(loop.until([&] { return applied_in(c, "old") + 5 >= fresh.host.seq; }));
  kill_child(child);
  // Whatever the old leader applied on its own after the stop was rolled back: from
  // the new term's first entry on, it holds exactly the new leader's states.
  size_t compared = 0;
  CHECK(agree(fresh.host.history, read_history(record), &compared));
  CHECK(compared >= 10);
}

TEST_CASE("a leader whose loop was held past its lease steps down, reloads and leads again") {
  RedisServer redis;
  Loop loop;
  TestNode a(loop.base, redis, "a");
  REQUIRE(loop.until([&] { return a.role() == cluster::Role::leader && a.host.seq >= 3; }));
  // Redis stops answering one tick before the loop is held past the lease and past the
  // reply deadline: when the loop runs again the node drops its connection (an append
  // is in flight) and then finds its lease gone with that entry never appended, so it
  // reloads the checkpoint while the connection is going.
  a.host.block_at = a.host.seq + 3;
  a.host.block_for = 3500ms;
  a.host.before_block = [&] { redis.stop_process(true); };
  // Redis answers again only after the node's timers have run (no reply decides first).
  struct Joined {
    std::thread thread;
    ~Joined() {
      if (thread.joinable()) thread.join();
    }
  } resume;
  a.host.after_block = [&] {
    resume.thread = std::thread([&] {
      std::this_thread::sleep_for(500ms);
      redis.stop_process(false);
    });
  };
  REQUIRE(loop.until([&] { return a.host.block_at == 0; }));
  uint64_t after = a.host.seq;
  REQUIRE(loop.until([&] { return a.role() == cluster::Role::leader && a.host.leading && a.host.seq > after + 10; },
                     10s));
  CHECK(a.node->status().synced);
}

TEST_CASE("terms only grow, also after Redis restarted empty") {
  RedisServer redis;
  Loop loop;
  uint64_t last_term = 0;
  {
    TestNode a(loop.base, redis, "a");
    REQUIRE(loop.until([&] { return a.role() == cluster::Role::leader && a.host.seq >= 5; }));
    last_term = a.node->status().term;
    redis.kill_now();
    loop.run_for(200ms);
    redis.start();
    // The node re-forms the cluster on the empty Redis: a higher term than any before,
    // its seq continuing, a checkpoint written at once.
    REQUIRE(loop.until([&] { return a.role() == cluster::Role::leader && a.node->status().term > last_term; }));
    Client c(redis.port());
    REQUIRE(loop.until([&] { return c.run({"LLEN", "{test}:checkpoints"}) == "1"; }));
    last_term = a.node->status().term;
  }
  // Another node after that one is gone: still a higher term.
  loop.run_for(2 * kLease);
  TestNode b(loop.base, redis, "b");
  REQUIRE(loop.until([&] { return b.role() == cluster::Role::leader; }));
  CHECK(b.node->status().term > last_term);
}

TEST_CASE("checkpoints are chunked, a late node restores one and the log is trimmed behind the older kept") {
  RedisServer redis;
  Loop loop;
  constexpr size_t kPad = 2'500'000;  // three chunks of at most 1 MB
  TestNode leader(loop.base, redis, "l", true, kPad, 5);
  REQUIRE(loop.until([&] { return leader.host.seq >= 40; }, 20s));
  Client c(redis.port());
  auto manifests = c.list({"LRANGE", "{test}:checkpoints", "0", "-1"});
  REQUIRE(manifests.size() == 2);
  unsigned long long seq_new = 0, term = 0, chunks = 0, seq_old = 0;
  REQUIRE(std::sscanf(manifests[0].c_str(), "%llu %llu %llu", &seq_new, &term, &chunks) == 3);
  REQUIRE(std::sscanf(manifests[1].c_str(), "%llu", &seq_old) == 1);
  CHECK(chunks == 3);
  CHECK(seq_old < seq_new);
  for (unsigned i = 0; i < chunks; ++i) {
    auto len = std::stoull(c.run({"STRLEN", "{test}:checkpoint:" + std::to_string(seq_new) + ":" +
                                            std::to_string(term) + ":" + std::to_string(i)}));
    CHECK(len <= (1u << 20));
    CHECK(len > 0);
  }
  // Older checkpoints' chunks are gone: what stays for good is the two kept ones (a
  // newer one may be being written, and one whose recording failed, e.g. when the
  // leader lost its lease in between, expires by itself).
  size_t kept_chunks = 0;
  for (const auto& key : c.list({"KEYS", "{test}:checkpoint:*"})) {
    unsigned long long seq = 0;
    REQUIRE(std::sscanf(key.c_str(), "{test}:checkpoint:%llu", &seq) == 1);
    if (c.run({"PTTL", key}) != "-1") continue;
    CHECK(seq >= seq_old);
    CHECK(seq <= seq_new);
    ++kept_chunks;
  }
  CHECK(kept_chunks == 6);
  // The log holds nothing behind the older kept checkpoint.
  auto first = c.list({"XRANGE", "{test}:log", "-", "+", "COUNT", "1"});
  REQUIRE_FALSE(first.empty());
  CHECK(std::stoull(first[0]) >= seq_old);

  TestNode late(loop.base, redis, "late", true, kPad, 5);
  REQUIRE(loop.until([&] { return late.node->status().synced && late.host.seq + 3 >= leader.host.seq; }, 20s));
  CHECK(late.host.restores == 1);
  size_t common = 0;
  loop.run_for(300ms);
  CHECK(agree(leader.host, late.host, &common));
  CHECK(common >= 3);
}

TEST_CASE("Redis killed and restarted: the nodes keep their state and the cluster re-forms") {
  RedisServer redis;
  Loop loop;
  TestNode a(loop.base, redis, "a"), b(loop.base, redis, "b");
  REQUIRE(loop.until([&] {
    return (a.role() == cluster::Role::leader && b.host.seq >= 10) ||
           (b.role() == cluster::Role::leader && a.host.seq >= 10);
  }));
  TestNode& leader = a.role() == cluster::Role::leader ? a : b;
  TestNode& follower = &leader == &a ? b : a;
  uint64_t before = leader.host.seq;
  uint64_t follower_before = follower.host.seq;
  redis.kill_now();
  loop.run_for(3 * kLease);
  // Both keep their state; nobody ingests without Redis.
  CHECK(leader.host.seq >= before);
  CHECK(follower.host.seq >= follower_before);
  CHECK(!leader.host.leading);
  CHECK(leader.node->status().redis != cluster::RedisState::connected);
  redis.start();
  // Re-formed: someone leads, both agree from the new state on, seqs never went back.
  REQUIRE(loop.until([&] {
    return (a.role() == cluster::Role::leader || b.role() == cluster::Role::leader) &&
           std::min(a.host.seq, b.host.seq) > before + 20;
  }, 15s));
  loop.run_for(300ms);
  CHECK(a.host.resets + b.host.resets == 0);
  uint64_t top = std::min(a.host.seq, b.host.seq);
  CHECK(a.host.history.at(top) == b.host.history.at(top));
  Client c(redis.port());
  CHECK(c.run({"LLEN", "{test}:checkpoints"}) != "0");
}

TEST_CASE("a command queued before the loop stalls past its reply deadline is answered, not dropped") {
  // A snapshot build or a checkpoint of a million series holds the writer's loop for
  // seconds: that time is not the server's, and must not count against its deadline.
  RedisServer redis;
  Loop loop;
  cluster::Connection c(loop.base, cluster::parse_address(redis.url()), "test", [](bool) {});
  c.start();
  REQUIRE(loop.until([&] { return c.up(); }));
  bool answered = false;
  std::string error = "no callback";
  REQUIRE(c.command({"PING"}, [&](const redisReply* reply, const std::string& e) {
    answered = reply != nullptr;
    error = e;
  }, 1000ms));
  std::this_thread::sleep_for(1500ms);  // the loop does not turn: PING is not even sent yet
  REQUIRE(loop.until([&] { return answered || error != "no callback"; }));
  CHECK(error == "");
  CHECK(answered);
  CHECK(c.up());
}

// A master, its replica and a sentinel (real processes). The first sentinel in the
// address is not there: the nodes ask the next one. A forced failover promotes the
// replica; the nodes move to it (the old master becomes a replica, whose writes fail)
// and go on with one history.
TEST_CASE("behind Sentinel: nodes find the master, move with a failover and keep one history") {
  RedisServer master;
  RedisServer replica(master.port());
  SentinelServer sentinel(master.port(), "tm");
  std::string url = "redis-sentinel://127.0.0.1:" + std::to_string(e2e::free_port()) + ",127.0.0.1:" +
                    std::to_string(sentinel.port()) + "/tm";
  Loop loop;
  TestNode a(loop.base, url, "a"), b(loop.base, url, "b");
  Client on_master(master.port()), on_replica(replica.port()), on_sentinel(sentinel.port());
  auto xlen = [](Client& c) { return std::stoull(c.run({"XLEN", "{test}:log"})); };
  REQUIRE(loop.until([&] { return xlen(on_master) >= 5; }, 20s));
  CHECK(a.node->status().redis_address == "127.0.0.1:" + std::to_string(master.port()) + " (master tm)");

  // The sentinel refuses a failover until it has seen the replica in sync (NOGOODSLAVE).
  REQUIRE(loop.until([&] {
    try {
      on_sentinel.run({"SENTINEL", "FAILOVER", "tm"});
      return true;
    } catch (const std::exception&) {
      return false;
    }
  }, 30s));
  REQUIRE(loop.until([&] { return on_replica.list({"ROLE"}).at(0) == "master"; }, 30s));
  uint64_t at_switch = xlen(on_replica);
  std::string moved = "127.0.0.1:" + std::to_string(replica.port()) + " (master tm)";
  REQUIRE(loop.until([&] {
    return a.node->status().redis_address == moved && b.node->status().redis_address == moved &&
           xlen(on_replica) >= at_switch + 5;
  }, 30s));
  int leaders = (a.role() == cluster::Role::leader) + (b.role() == cluster::Role::leader);
  CHECK(leaders == 1);
  loop.run_for(300ms);
  size_t common = 0;
  CHECK(agree(a.host, b.host, &common));
  CHECK(common >= 10);
}

TEST_CASE("a node never uses a server that is not the master, nor one no sentinel names") {
  RedisServer master;
  RedisServer replica(master.port());
  Loop loop;
  TestNode on_replica(loop.base, replica.url(), "on-replica");
  TestNode nowhere(loop.base,
                   "redis-sentinel://127.0.0.1:" + std::to_string(e2e::free_port()) + ",127.0.0.1:" +
                       std::to_string(e2e::free_port()) + "/tm",
                   "nowhere");
  loop.run_for(2s);
  for (TestNode* n : {&on_replica, &nowhere}) {
    CHECK(n->node->status().redis != cluster::RedisState::connected);
    CHECK(n->role() != cluster::Role::leader);
  }
  CHECK(Client(master.port()).run({"EXISTS", "{test}:lease"}) == "0");
}


// A failover that loses the log's tail, made real: the replica stops following (its
// data is then what a replica promoted at that moment holds), the leader goes on on the
// master, and the nodes are moved to the replica (the proxy in front of Redis switches).
// The log there ends before what the nodes applied: the node holding the most takes the
// lease (or keeps it), its first append finds the gap and a checkpoint of its state
// covers it, so what the nodes had applied is not lost, and both go on with one history.
TEST_CASE("a failover that lost the log's tail: a checkpoint covers the gap and the nodes keep one history") {
  RedisServer master;
  RedisServer replica(master.port());
  TcpProxy proxy(master.port());
  Loop loop;
  TestNode a(loop.base, proxy.url(), "a"), b(loop.base, proxy.url(), "b");
  Client on_master(master.port()), on_replica(replica.port());
  REQUIRE(loop.until([&] { return log_end_in(on_master) >= 10; }));
  on_replica.run({"REPLICAOF", "NO", "ONE"});
  uint64_t kept = log_end_in(on_replica);
  REQUIRE(loop.until([&] { return std::min(a.host.seq, b.host.seq) >= kept + 10; }));
  uint64_t term_before = std::max(a.node->status().term, b.node->status().term);
  uint64_t lost_to = log_end_in(on_master);
  uint64_t applied_before = std::max(a.host.seq, b.host.seq);
  proxy.retarget(replica.port());

  // The log goes on from the nodes' state, past the tail it had lost, and is whole: from
  // the newest checkpoint on, every seq is in the stream.
  REQUIRE(loop.until([&] { return log_end_in(on_replica) >= applied_before + 5; }, 20s));
  uint64_t checkpoint = std::stoull(on_replica.run({"LINDEX", "{test}:checkpoints", "0"}));
  CHECK(checkpoint >= lost_to);
  uint64_t expect = checkpoint + 1;
  for (const std::string& id : on_replica.list({"XRANGE", "{test}:log", std::to_string(expect) + "-0", "+"})) {
    if (id.size() < 3 || id.compare(id.size() - 2, 2, "-0") != 0) continue;  // fields and values
    CHECK(id == std::to_string(expect) + "-0");
    expect = std::stoull(id) + 1;
  }
  CHECK(expect > applied_before + 5);
  REQUIRE(loop.until([&] { return std::min(a.host.seq, b.host.seq) >= applied_before + 10; }, 20s));
  TestNode late(loop.base, proxy.url(), "late");
  REQUIRE(loop.until([&] { return late.node->status().synced && late.host.seq + 3 >= std::max(a.host.seq, b.host.seq); }, 20s));
  loop.run_for(300ms);
  CHECK(agree(late.host, a.host.seq > b.host.seq ? a.host : b.host));
  CHECK(std::max(a.node->status().term, b.node->status().term) >= term_before);
  // One history: the same state at every seq both applied, except the ticks a leader
  // applied around the switch and never got into the log (its own, replaced by the
  // next leader's entries of those seqs).
  CHECK(agree(a.host.history, b.host.history, nullptr,
              [&](uint64_t seq) { return seq <= lost_to || seq > applied_before + 1; }));
}

// A follower that applied entries the failover lost, away (stopped) while another node
// took over from the earlier end of the log and went past it: when it runs again the
// next entry it reads follows a different entry than the one it applied. It must
// reload, not apply it on top of the lost history.
TEST_CASE("a follower that applied entries a failover lost reloads instead of mixing two histories") {
  RedisServer master;
  RedisServer replica(master.port());
  TcpProxy proxy(master.port());
  std::string record = history_file();
  pid_t follower = fork_node(proxy.url(), "f", record, false);
  Loop loop;
  auto first = std::make_unique<TestNode>(loop.base, proxy.url(), "first");
  Client on_master(master.port()), on_replica(replica.port());
  REQUIRE(loop.until([&] { return applied_in(on_master, "f") >= 10; }));
  on_replica.run({"REPLICAOF", "NO", "ONE"});
  uint64_t kept = log_end_in(on_replica);
  REQUIRE(loop.until([&] { return applied_in(on_master, "f") >= kept + 10; }));
  kill(follower, SIGSTOP);
  uint64_t lost_to = applied_in(on_master, "f");
  first.reset();  // the leader is gone too
  proxy.retarget(replica.port());

  TestNode next(loop.base, proxy.url(), "next");
  REQUIRE(loop.until([&] { return next.role() == cluster::Role::leader && next.host.seq >= lost_to + 10; }, 20s));
  kill(follower, SIGCONT);
  REQUIRE(loop.until([&] { return applied_in(on_replica, "f") >= lost_to + 15; }, 20s));
  kill_child(follower);
  // The follower's last record of seqs up to lost_to may be the lost history's.
  size_t compared = 0;
  CHECK(agree(next.host.history, read_history(record), &compared, [&](uint64_t seq) { return seq > lost_to; }));
  CHECK(compared >= 5);
}
