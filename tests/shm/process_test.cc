// Multi-process tests of the publish / read / reclaim protocol: a stress run with forked
// readers checking every snapshot they see, and the failure cases with real signals:
// a reader SIGKILLed or SIGSTOPped inside a read, a writer killed mid-build, and writers
// (tests/shm/shm_writer) killed by a failpoint at each step of a buffer growth or of a
// source status update.
#include <catch2/catch.hpp>
#include <csignal>
#include <random>
#include <thread>

#include "shm/layout.h"
#include "test_util.h"

using namespace shm;
using namespace shm_test;

namespace {

// A snapshot whose records check themselves: each value names the generation and
// carries a hash of its key and generation, so a torn or mixed read cannot pass.
SnapshotBuilder self_checking(uint64_t generation, int records) {
  SnapshotBuilder b;
  for (int i = 0; i < records; ++i) {
    std::string key = fmt::format("r{}", i);
    std::string seed = fmt::format("{}/{}", key, generation);
    uint64_t h = hash_bytes(seed.data(), seed.size());
    // Vary the length so records move around between generations.
    b.add(key, fmt::format("{} {:016x} {}", generation, h, std::string(size_t((generation + i) % 37), '.')));
  }
  return b;
}

// 0 when every record of v is consistent with v's generation.
int check_snapshot(const SnapshotView& v, int records, std::mt19937& rng, bool full) {
  if (v.record_count() != size_t(records)) return 10;
  for (int k = 0; k < (full ? records : 8); ++k) {
    int i = full ? k : int(rng() % unsigned(records));
    std::string key = fmt::format("r{}", i);
    auto val = v.find(key);
    if (!val) return 11;
    std::string seed = fmt::format("{}/{}", key, v.generation());
    uint64_t h = hash_bytes(seed.data(), seed.size());
    std::string expect = fmt::format("{} {:016x} ", v.generation(), h);
    if (val->substr(0, expect.size()) != expect) return 12;
  }
  if (full && !v.verify()) return 13;
  return 0;
}

}  // namespace

TEST_CASE("stress: 4 readers over 10000 generations see every read consistent and monotonic", "[process]") {
  ScopedName n;
  constexpr int kReaders = 4, kRecords = 64;
  constexpr uint64_t kGenerations = 10000;
  const uint32_t buffers = GENERATE(2u, 3u);  // two buffers: the tightest reuse
  auto store = Store::create(options(n.name, buffers));
  Writer writer(*store);
  writer.publish(self_checking(1, kRecords));

  std::vector<pid_t> readers;
  for (int r = 0; r < kReaders; ++r) {
    readers.push_back(spawn([&, r] {
      auto s = Store::open(n.name);
      Reader reader(*s, uint32_t(r));
      std::mt19937 rng{unsigned(r)};
      uint64_t last = 0, reads = 0;
      const uint64_t deadline = monotonic_ns() + 120'000'000'000ull;  // bound, not a timing check
      while (last < kGenerations && monotonic_ns() < deadline) {
        auto g = reader.enter();
        if (!g) return 20;
        if (g->generation() < last) return 21;  // went backwards
        last = g->generation();
        if (int bad = check_snapshot(g->view(), kRecords, rng, reads % 64 == 0)) return bad;
        ++reads;
        // Four spinning readers on two cores would be preempted inside reads and make
        // every publish wait out a time slice; real readers block on sockets instead.
        if (reads % 4 == 0) usleep(20);
      }
      reader.count_requests(reads);
      return last == kGenerations ? 0 : 22;
    }));
  }
  uint64_t published = 1;
  while (published < kGenerations) {
    uint64_t g = writer.publish(self_checking(published + 1, kRecords));
    if (g != 0) published = g;  // 0: skipped (all buffers held); try again
  }
  for (pid_t p : readers) CHECK(wait_child(p) == 0);
  StoreInfo info = store->info();
  CHECK(info.generation == kGenerations);
  CHECK(info.publishes + 0 == kGenerations);
}

TEST_CASE("a reader SIGKILLed inside a read does not block the writer", "[process][failure]") {
  ScopedName n;
  auto store = Store::create(options(n.name, 2));
  Writer writer(*store);
  writer.publish(snapshot_of(10, "one"));
  pid_t child = spawn_reader_inside_read(n.name, 0);  // announces the current buffer
  CHECK(store->info().readers[0].reading_generation == 1);
  kill(child, SIGKILL);
  wait_child(child);

  SECTION("the writer detects the dead owner itself (pid + start token)") {
    // With two buffers, generation 3 needs the dead reader's buffer.
    CHECK(writer.publish(snapshot_of(10, "two")) == 2);
    CHECK(writer.publish(snapshot_of(10, "three")) == 3);
    CHECK(store->info().stale_slots_cleared == 1);
    CHECK(store->info().publish_skipped == 0);
  }
  SECTION("the supervisor clears the slot when it reaps the reader") {
    store->clear_reader_slot(0, child);
    CHECK(store->info().readers[0].pid == 0);
    CHECK(writer.publish(snapshot_of(10, "two")) == 2);
    CHECK(writer.publish(snapshot_of(10, "three")) == 3);
  }
  Reader fresh(*store, 0);
  auto g = fresh.enter();
  REQUIRE(g);
  CHECK(*g->view().find("k1") == "three:1");
}

TEST_CASE("a dead reader never makes a publish skip even with no reclaim wait", "[process][failure]") {
  ScopedName n;
  auto o = options(n.name, 2);
  o.reclaim_timeout = std::chrono::milliseconds(0);  // the writer gives up at once ...
  auto store = Store::create(o);
  Writer writer(*store);
  writer.publish(snapshot_of(10, "one"));
  pid_t child = spawn_reader_inside_read(n.name, 0);  // announces the current buffer
  kill(child, SIGKILL);
  wait_child(child);
  CHECK(writer.publish(snapshot_of(10, "two")) == 2);
  CHECK(writer.publish(snapshot_of(10, "three")) == 3);  // ... but checks liveness first
  CHECK(store->info().publish_skipped == 0);
}

TEST_CASE("a reader SIGKILLed while the writer waits on it unblocks the writer", "[process][failure]") {
  ScopedName n;
  auto o = options(n.name, 2);
  o.reclaim_timeout = std::chrono::milliseconds(20000);  // long: the kill must end the wait
  auto store = Store::create(o);
  Writer writer(*store);
  writer.publish(snapshot_of(10, "one"));
  pid_t child = spawn_reader_inside_read(n.name, 0);  // announces the current buffer
  writer.publish(snapshot_of(10, "two"));
  // The reaper kills the child after a moment, while publish() below waits on it.
  pid_t reaper = spawn([&] {
    usleep(100000);
    kill(child, SIGKILL);
    return 0;
  });
  std::thread waiter([&] { wait_child(child); });  // reaps it so its pid stops existing
  CHECK(writer.publish(snapshot_of(10, "three")) == 3);
  waiter.join();
  CHECK(wait_child(reaper) == 0);
}

TEST_CASE("a reader SIGSTOPped inside a read makes the writer skip and never deadlock", "[process][failure]") {
  ScopedName n;
  const uint32_t buffers = GENERATE(2u, 3u);
  auto store = Store::create(options(n.name, buffers));
  Writer writer(*store);
  writer.publish(snapshot_of(10, "one"));
  Pipe inside;
  pid_t child = spawn([&] {
    auto s = Store::open(n.name);
    Reader r(*s, 0);
    {
      auto g = r.enter();
      inside.signal();
      raise(SIGSTOP);  // stopped inside the read
    }
    return 0;
  });
  REQUIRE(inside.wait());
  int status;
  REQUIRE(waitpid(child, &status, WUNTRACED) == child);
  REQUIRE(WIFSTOPPED(status));

  Reader other(*store, 1);
  uint64_t published = 0, skipped = 0;
  for (int i = 0; i < 6; ++i) {
    uint64_t g = writer.publish(snapshot_of(10, fmt::format("n{}", i)));
    if (g == 0) {
      ++skipped;
    } else {
      published = g;
    }
    auto guard = other.enter();  // other readers keep reading the newest snapshot
    REQUIRE(guard);
    CHECK(guard->generation() == std::max<uint64_t>(published, 1));
  }
  if (buffers == 2) {
    // Generation 2 went into the free buffer; every later one needs the held buffer.
    CHECK(published == 2);
    CHECK(skipped == 5);
    CHECK(store->info().publish_skipped == 5);
  } else {
    CHECK(published == 7);  // the spare buffer steps around the stopped reader
    CHECK(skipped == 0);
  }
  kill(child, SIGCONT);
  CHECK(wait_child(child) == 0);
  CHECK(writer.publish(snapshot_of(10, "after")) != 0);  // and publishes as soon as it can
}

TEST_CASE("a writer killed mid-build leaves the current snapshot intact", "[process][failure]") {
  ScopedName n;
  auto store = Store::create(options(n.name, 2));
  Pipe started;
  // The writer publishes ever larger snapshots (growth, long builds) until it is killed.
  pid_t writer_pid = spawn([&] {
    auto s = Store::open(n.name);
    Writer w(*s);
    for (uint64_t g = 1;; ++g) {
      w.publish(self_checking(g, int(2000 + (g % 7) * 3000)));
      if (g == 3) started.signal();
    }
    return 0;
  });
  REQUIRE(started.wait());
  usleep(20000 + unsigned(getpid() % 7) * 3000);
  kill(writer_pid, SIGKILL);
  wait_child(writer_pid);
  store->clear_writer(writer_pid);

  Reader reader(*store, 0);
  uint64_t last;
  {
    auto g = reader.enter();
    REQUIRE(g);
    last = g->generation();
    CHECK(last >= 3);
    std::string why;
    CHECK(g->view().verify(&why));
    INFO(why);
    std::mt19937 rng(1);
    CHECK(check_snapshot(g->view(), int(g->view().record_count()), rng, true) == 0);
  }
  // A replacement writer continues above every generation published before.
  Writer next(*store);
  uint64_t g = next.publish(self_checking(0, 10));
  CHECK(g == last + 1);
  auto guard = reader.enter();
  REQUIRE(guard);
  CHECK(guard->generation() == g);
}

TEST_CASE("a writer killed at any step of a buffer growth leaves every buffer readable", "[process][failure]") {
  const std::string point = GENERATE("shm.grow.after_create", "shm.grow.after_record", "shm.grow.after_unlink");
  ScopedName n;
  const std::string& name = n.name;
  auto store = Store::create(options(name, 2));  // 64 KiB buffers
  REQUIRE(run_writer("", {name, "publish", "10", "small"}) == 0);  // generation 1, in buffer 1

  // 20,000 records do not fit in 64 KiB: buffer 0 grows to incarnation 2, and the
  // writer is killed at `point`.
  REQUIRE(run_writer(point + "=kill", {name, "publish", "20000", "big"}) == 128 + SIGKILL);
  const uint64_t seq0 = store->control().buffers[0].seq.load();
  std::set<std::string> left = segments_of(name);
  INFO(point << ": buffer 0 records incarnation " << seq0);
  if (point == "shm.grow.after_create") {
    CHECK(seq0 == 1);
    CHECK(left == std::set<std::string>{name, name + ".0.1", name + ".0.2", name + ".1.1"});
  } else if (point == "shm.grow.after_record") {
    CHECK(seq0 == 2);
    CHECK(left == std::set<std::string>{name, name + ".0.1", name + ".0.2", name + ".1.1"});
  } else {
    CHECK(seq0 == 2);
    CHECK(left == std::set<std::string>{name, name + ".0.2", name + ".1.1"});
  }
  // Whatever the step, every descriptor names a segment that exists.
  for (uint32_t i = 0; i < 2; ++i)
    CHECK(left.count(fmt::format("{}.{}.{}", name, i, store->control().buffers[i].seq.load())) == 1);

  // A reader in a process of its own (a fresh mapping of everything) reads the current
  // snapshot; it would exit 99 on an exception and 128 + n on a signal.
  auto read_in_child = [&](uint64_t generation, int records, const std::string& tag) {
    return wait_child(spawn([&] {
      auto s = Store::open(name);
      Reader r(*s, 0);
      auto g = r.enter();
      if (!g || g->generation() != generation) return 20;
      if (g->view().record_count() != size_t(records) || !g->view().verify()) return 21;
      return g->view().find(fmt::format("k{}", records - 1)) == fmt::format("{}:{}", tag, records - 1) ? 0 : 22;
    }));
  };
  CHECK(read_in_child(1, 10, "small") == 0);

  // A new writer takes over (the dead one's role is free once it is reaped) and removes
  // what the dead one left. A small snapshot goes into buffer 0 as it is recorded, then
  // bigger ones make both buffers grow.
  REQUIRE(run_writer("", {name, "publish", "10", "small2"}) == 0);
  CHECK(read_in_child(2, 10, "small2") == 0);
  REQUIRE(run_writer("", {name, "publish", "40000", "bigger"}) == 0);
  CHECK(read_in_child(3, 40000, "bigger") == 0);
  REQUIRE(run_writer("", {name, "publish", "40000", "again"}) == 0);
  CHECK(read_in_child(4, 40000, "again") == 0);

  // Nothing leaked: the control segment and the one recorded incarnation of each buffer.
  const Store::Control& c = store->control();
  CHECK(segments_of(name) == std::set<std::string>{name, fmt::format("{}.0.{}", name, c.buffers[0].seq.load()),
                                                   fmt::format("{}.1.{}", name, c.buffers[1].seq.load())});
}

TEST_CASE("a writer killed inside set_source_status leaves a source table the next writer rewrites",
          "[process][failure]") {
  ScopedName n;
  auto store = Store::create(options(n.name));
  REQUIRE(run_writer("shm.source.mid_write=kill", {n.name, "source", "http://127.0.0.1:9/first"}) == 128 + SIGKILL);
  REQUIRE(store->sources().size() == 1);  // half written: wrong at worst, never out of bounds
  REQUIRE(run_writer("", {n.name, "source", "http://127.0.0.1:9/next"}) == 0);
  auto got = store->sources();
  REQUIRE(got.size() == 1);
  CHECK(got[0].url == "http://127.0.0.1:9/next");
  CHECK(got[0].samples == 7);
}
