// Tests of the store in one process: segments, identity checks, publish and read,
// buffer growth, and the reader slot table.
#include <catch2/catch.hpp>
#include <cstring>
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>

#include "shm/layout.h"
#include "test_util.h"

using namespace shm;
using namespace shm_test;

TEST_CASE("segments are created with mode 0600 and removed by remove()", "[store]") {
  ScopedName n;
  {
    auto store = Store::create(options(n.name));
    for (std::string path : {"/dev/shm/" + n.name, "/dev/shm/" + n.name + ".0.1", "/dev/shm/" + n.name + ".2.1"}) {
      struct stat st;
      REQUIRE(stat(path.c_str(), &st) == 0);
      CHECK((st.st_mode & 0777) == 0600);
      CHECK(st.st_uid == geteuid());
    }
  }
  Store::remove(n.name);
  struct stat st;
  CHECK(stat(("/dev/shm/" + n.name).c_str(), &st) != 0);
  CHECK(stat(("/dev/shm/" + n.name + ".0.1").c_str(), &st) != 0);
}

TEST_CASE("publish makes a snapshot current and readers see each generation", "[store]") {
  ScopedName n;
  auto store = Store::create(options(n.name));
  Writer writer(*store);
  Reader reader(*store, 0);
  CHECK_FALSE(reader.enter());  // nothing published yet
  for (uint64_t g = 1; g <= 10; ++g) {
    REQUIRE(writer.publish(snapshot_of(100, fmt::format("g{}", g))) == g);
    auto guard = reader.enter();
    REQUIRE(guard);
    CHECK(guard->generation() == g);
    CHECK(*guard->view().find("k7") == fmt::format("g{}:7", g));
    CHECK(guard->view().verify());
  }
  StoreInfo info = store->info();
  CHECK(info.generation == 10);
  CHECK(info.publishes == 10);
  CHECK(info.snapshot_records == 100);
  CHECK(info.writer_pid == getpid());
  CHECK(info.readers[0].pid == getpid());
}

TEST_CASE("publish with an explicit generation skips ahead and refuses to go back", "[store]") {
  ScopedName n;
  auto store = Store::create(options(n.name));
  Writer writer(*store);
  Reader reader(*store, 0);
  REQUIRE(writer.publish(snapshot_of(10, "a"), 41) == 41);
  REQUIRE(writer.publish(snapshot_of(10, "b")) == 42);  // current + 1
  REQUIRE(writer.publish(snapshot_of(10, "c"), 50) == 50);
  for (uint64_t stale : {uint64_t(50), uint64_t(49), uint64_t(1)}) {
    try {
      writer.publish(snapshot_of(10, "old"), stale);
      FAIL("generation " << stale << " was published after 50");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("generation 50 is already published") != std::string::npos);
    }
  }
  CHECK_THROWS_AS(writer.publish(snapshot_of(10, "huge"), uint64_t{1} << 56), Error);
  auto guard = reader.enter();
  REQUIRE(guard);
  CHECK(guard->generation() == 50);
  CHECK(*guard->view().find("k7") == "c:7");
}

TEST_CASE("a snapshot larger than its buffer grows the buffer and readers re-map", "[store]") {
  ScopedName n;
  auto store = Store::create(options(n.name, 2));
  Writer writer(*store);
  Reader reader(*store, 0);
  writer.publish(snapshot_of(10, "small"));
  { auto g = reader.enter(); REQUIRE(g); CHECK(*g->view().find("k1") == "small:1"); }
  // 20,000 records of ~20 bytes do not fit in 64 KiB.
  for (int round = 0; round < 4; ++round) {
    std::string tag = fmt::format("big{}-{}", round, std::string(size_t(round) * 40, 'x'));
    uint64_t g = writer.publish(snapshot_of(20000 * (round + 1), tag));
    REQUIRE(g != 0);
    auto guard = reader.enter();
    REQUIRE(guard);
    CHECK(guard->generation() == g);
    CHECK(guard->view().record_count() == size_t(20000 * (round + 1)));
    CHECK(*guard->view().find("k19999") == tag + ":19999");
    CHECK(guard->view().verify());
  }
  StoreInfo info = store->info();
  CHECK(info.buffer_grows >= 2);
  CHECK(info.publish_skipped == 0);
}

TEST_CASE("a second live writer is refused", "[store]") {
  ScopedName n;
  auto store = Store::create(options(n.name));
  Writer w(*store);
  pid_t child = spawn([&] {
    auto s = Store::open(n.name);
    try {
      Writer second(*s);
    } catch (const Error& e) {
      return std::string(e.what()).find("already has a live writer") != std::string::npos ? 0 : 2;
    }
    return 1;
  });
  CHECK(wait_child(child) == 0);
}

TEST_CASE("a reader slot held by a live process is refused and a dead owner's slot is taken over", "[store]") {
  ScopedName n;
  auto store = Store::create(options(n.name));
  Pipe ready, done;
  pid_t child = spawn([&] {
    auto s = Store::open(n.name);
    Reader r(*s, 3);
    ready.signal();
    done.wait();
    return 0;
  });
  REQUIRE(ready.wait());
  CHECK_THROWS_WITH(Reader(*store, 3), Catch::Contains("held by live pid"));
  kill(child, SIGKILL);
  wait_child(child);
  Reader mine(*store, 3);  // the owner is gone: no supervisor needed
  CHECK(store->info().readers[3].pid == getpid());
}

TEST_CASE("a store whose creator still runs is refused and a stale one is replaced", "[store]") {
  ScopedName n;
  {
    auto live = Store::create(options(n.name));
    CHECK_THROWS_WITH(Store::create(options(n.name)), Catch::Contains("in use by a running telemetryd"));
  }
  // A creator that died without cleaning up leaves segments behind.
  Pipe made;
  uint64_t old_start_id = 0;
  pid_t child = spawn([&] {
    Store::remove(n.name);
    auto s = Store::create(options(n.name));
    Writer w(*s);
    w.publish(snapshot_of(5, "old"));
    made.signal();
    _exit(0);  // no destructor, no remove: like a crash
    return 0;
  });
  REQUIRE(made.wait());
  REQUIRE(wait_child(child) == 0);
  old_start_id = Store::open(n.name)->info().start_id;
  auto store = Store::create(options(n.name));
  StoreInfo info = store->info();
  CHECK(info.start_id != old_start_id);
  CHECK(info.generation == 0);
  CHECK(info.creator_pid == getpid());
}

TEST_CASE("a segment with a wrong magic or version or owner is refused", "[store]") {
  ScopedName n;
  SECTION("wrong magic") {
    int fd = shm_open(("/" + n.name).c_str(), O_CREAT | O_RDWR, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(ftruncate(fd, sizeof(Store::Control) + 4096) == 0);
    close(fd);
    CHECK_THROWS_WITH(Store::create(options(n.name)), Catch::Contains("wrong magic"));
    CHECK_THROWS_WITH(Store::open(n.name), Catch::Contains("wrong magic"));
  }
  SECTION("wrong layout version") {
    auto store = Store::create(options(n.name));
    store->control().layout_version = kLayoutVersion + 1;
    CHECK_THROWS_WITH(Store::open(n.name), Catch::Contains("layout version"));
    CHECK_THROWS_WITH(Store::create(options(n.name)), Catch::Contains("layout version"));
  }
  SECTION("owned by another uid") {
    if (geteuid() != 0) return;  // only root can give a segment away
    auto store = Store::create(options(n.name));
    REQUIRE(chown(("/dev/shm/" + n.name).c_str(), 12345, 12345) == 0);
    CHECK_THROWS_WITH(Store::open(n.name), Catch::Contains("owned by uid 12345"));
  }
}

TEST_CASE("store options are validated", "[store]") {
  ScopedName n;
  auto o = options(n.name);
  o.buffer_count = 1;
  CHECK_THROWS_WITH(Store::create(o), Catch::Contains("buffer_count"));
  o = options(n.name);
  o.reader_slots = 0;
  CHECK_THROWS_AS(Store::create(o), Error);
  o = options(n.name);
  o.reclaim_timeout = std::chrono::hours(2);
  CHECK_THROWS_WITH(Store::create(o), Catch::Contains("reclaim_timeout"));
  o = options("bad/name");
  CHECK_THROWS_WITH(Store::create(o), Catch::Contains("invalid shm name"));
}

TEST_CASE("source statuses round-trip through the control segment", "[store]") {
  ScopedName n;
  auto store = Store::create(options(n.name));
  Writer w(*store);
  SourceStatus s;
  s.url = "http://127.0.0.1:9/metrics";
  s.format = "otlp";
  s.last_status = 503;
  s.errors = 4;
  s.last_error = std::string(400, 'e');  // longer than the slot: truncated, not overflowed
  w.set_source_status(0, s);
  w.set_source_count(1);
  auto got = store->sources();
  REQUIRE(got.size() == 1);
  CHECK(got[0].url == s.url);
  CHECK(got[0].format == "otlp");
  CHECK(got[0].last_status == 503);
  CHECK(got[0].errors == 4);
  CHECK(got[0].last_error == std::string(kSourceErrorBytes - 1, 'e'));
}

TEST_CASE("a process killed in the middle of a hand-over does not block the slot or the role", "[store][failure]") {
  ScopedName n;
  auto store = Store::create(options(n.name, 2));
  // A child marks slot 2 and the writer role busy, as Reader::Reader and Writer::Writer
  // do between their CAS and their final store, and dies there.
  Pipe marked;
  pid_t child = spawn([&] {
    auto s = Store::open(n.name);
    s->control().slots[2].pid.store(-getpid());
    s->control().slots[2].reading.store(pack_current(1, 0));
    s->control().writer_pid.store(-getpid());
    marked.signal();
    pause();
    return 0;
  });
  REQUIRE(marked.wait());
  CHECK_THROWS_WITH(Writer(*store), Catch::Contains("already has a live writer"));  // holder alive
  kill(child, SIGKILL);
  REQUIRE(wait_child(child) == 128 + SIGKILL);

  Writer writer(*store);  // the holder is dead: the role is taken over
  // The slot's stale announcement names buffer 0; both buffers get used without a skip.
  for (int g = 1; g <= 4; ++g) CHECK(writer.publish(snapshot_of(5, fmt::format("g{}", g))) == uint64_t(g));
  CHECK(store->info().publish_skipped == 0);
  CHECK(store->info().readers[2].pid == 0);
  Reader reader(*store, 2);
  CHECK(reader.enter()->generation() == 4);
}

TEST_CASE("the supervisor clears a slot its reaped child left busy", "[store][failure]") {
  ScopedName n;
  auto store = Store::create(options(n.name, 2));
  pid_t child = spawn([&] {
    auto s = Store::open(n.name);
    s->control().slots[1].pid.store(-getpid());
    return 0;
  });
  REQUIRE(wait_child(child) == 0);
  store->clear_reader_slot(1, child);
  CHECK(store->info().readers[1].pid == 0);
  CHECK(store->info().stale_slots_cleared == 1);
}

TEST_CASE("a missing buffer segment is an shm::Error for a reader until a publish names a live buffer",
          "[store][failure]") {
  ScopedName n;
  const uint32_t buffers = GENERATE(2u, 3u);
  auto store = Store::create(options(n.name, buffers));
  Writer writer(*store);
  Reader reader(*store, 0);
  REQUIRE(writer.publish(snapshot_of(10, "g1")) == 1);
  // Unlinked behind everyone's back (an operator, systemd-logind's RemoveIPC) before
  // this reader has mapped it.
  const std::string path = fmt::format("/{}.{}.1", n.name, store->info().current_buffer);
  REQUIRE(shm_unlink(path.c_str()) == 0);
  std::string what;
  try {
    reader.enter();
  } catch (const Error& e) {  // any other exception type fails the test
    what = e.what();
  }
  CHECK_THAT(what, Catch::Contains(path) && Catch::Contains(std::strerror(ENOENT)));
  CHECK(store->info().readers[0].reading_generation == 0);  // the failed read left
  // Each later publish names a live buffer: the writer replaces the missing one by a new
  // incarnation when it comes round to it.
  for (uint64_t g = 2; g <= 2 * buffers + 1; ++g) {
    REQUIRE(writer.publish(snapshot_of(10, fmt::format("g{}", g))) == g);
    auto guard = reader.enter();
    REQUIRE(guard);
    CHECK(guard->generation() == g);
    CHECK(*guard->view().find("k3") == fmt::format("g{}:3", g));
  }
}

TEST_CASE("remove() removes its own segments and not those of a store named NAME.1", "[store]") {
  ScopedName n;
  struct Other {
    std::string name;
    ~Other() { Store::remove(name); }
  } other{n.name + ".1"};
  auto mine = Store::create(options(n.name));
  auto theirs = Store::create(options(other.name));
  Store::remove(n.name);
  CHECK(segments_of(n.name) == std::set<std::string>{other.name, other.name + ".0.1", other.name + ".1.1",
                                                     other.name + ".2.1"});
  CHECK_NOTHROW(Store::open(other.name));
  Store::remove(other.name);
  CHECK(segments_of(n.name).empty());
  // A store named like a buffer of another ("NAME.1.2") could not be told apart from it.
  CHECK_THROWS_WITH(Store::create(options(n.name + ".1.2")), Catch::Contains("DIGITS.DIGITS"));
}

TEST_CASE("a control segment corrupted after open never makes a process read out of bounds", "[store][failure]") {
  ScopedName n;
  auto store = Store::create(options(n.name, 2));
  Writer writer(*store);
  REQUIRE(writer.publish(snapshot_of(10, "one")) == 1);
  auto opened = Store::open(n.name);
  Reader reader(*opened, 0);
  Store::Control& c = store->control();
  c.buffer_count = 200;
  c.reader_slots = 255;
  c.current.store(pack_current(5, 100));
  CHECK_THROWS_WITH(reader.enter(), Catch::Contains("current names buffer 100 of 2"));
  StoreInfo info = opened->info();  // the counts validated at open, not the ones in shm now
  CHECK(info.buffer_count == 2);
  CHECK(info.buffer_capacity.size() == 2);
  CHECK(info.readers.size() == 8);
  CHECK_THROWS_WITH(Reader(*opened, 100), Catch::Contains("out of range"));

  // Opened in this state, it is refused.
  CHECK_THROWS_WITH(Store::open(n.name), Catch::Contains("invalid buffer count 200"));
  c.buffer_count = 2;
  c.reader_slots = 0;
  CHECK_THROWS_WITH(Store::open(n.name), Catch::Contains("invalid reader slot count 0"));
  c.reader_slots = 8;
  c.reclaim_timeout_ms = ~uint64_t{0};
  CHECK_THROWS_WITH(Store::open(n.name), Catch::Contains("invalid reclaim timeout"));
}

TEST_CASE("a growth replaces a segment already present under the new incarnation's name", "[store][failure]") {
  ScopedName n;
  auto store = Store::create(options(n.name, 2));
  Writer writer(*store);  // its clean-up has run: the leftovers below come after it
  for (int i = 0; i < 2; ++i) {
    int fd = shm_open(fmt::format("/{}.{}.2", n.name, i).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(ftruncate(fd, 100) == 0);
    close(fd);
  }
  Reader reader(*store, 0);
  for (uint64_t g = 1; g <= 2; ++g) {
    REQUIRE(writer.publish(snapshot_of(20000, fmt::format("g{}", g))) == g);  // grows into /NAME.I.2
    auto guard = reader.enter();
    REQUIRE(guard);
    CHECK(*guard->view().find("k19999") == fmt::format("g{}:19999", g));
  }
  CHECK(segments_of(n.name) == std::set<std::string>{n.name, n.name + ".0.2", n.name + ".1.2"});
}

TEST_CASE("a buffer segment replaced under a running service gets a new incarnation readers re-map",
          "[store][failure]") {
  ScopedName n;
  auto store = Store::create(options(n.name, 2));
  Writer writer(*store);
  Reader reader(*store, 0);
  for (uint64_t g = 1; g <= 2; ++g) {  // the reader maps both buffers
    REQUIRE(writer.publish(snapshot_of(10, fmt::format("g{}", g))) == g);
    REQUIRE(reader.enter());
  }
  // The buffer written next is unlinked and a segment of the same name and size made.
  const uint32_t next = (store->info().current_buffer + 1) % 2;
  const std::string path = fmt::format("/{}.{}.1", n.name, next);
  REQUIRE(shm_unlink(path.c_str()) == 0);
  int fd = shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(ftruncate(fd, 64 << 10) == 0);
  close(fd);
  // Written into that name under the same seq, it would stay invisible to a reader that
  // mapped the old segment.
  REQUIRE(writer.publish(snapshot_of(10, "g3")) == 3);
  auto guard = reader.enter();
  REQUIRE(guard);
  CHECK(*guard->view().find("k1") == "g3:1");
  CHECK(store->control().buffers[next].seq.load() == 2);
}
