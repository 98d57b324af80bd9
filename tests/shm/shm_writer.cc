// tests/shm/shm_writer.cc: a writer in a process of its own, for the crash tests. A test
// forks and execs it with TELEMETRYD_FAILPOINTS set: a fresh process reads the variable
// at its first failpoint, whereas a forked copy of the test binary inherits the table
// the test process may already have read (without the variable).
//   shm_writer NAME publish RECORDS TAG   publishes one snapshot: RECORDS records k<i> = TAG:<i>
//   shm_writer NAME source URL            sets the source count to 1 and source 0's url
// Exit status: 0 done, 2 bad command line, 3 shm::Error (its message on stderr).
#include <string>

#include "test_util.h"

int main(int argc, char** argv) {
  if (argc < 4) return 2;
  const std::string name = argv[1], command = argv[2];
  try {
    auto store = shm::Store::open(name);
    shm::Writer writer(*store);
    if (command == "publish" && argc == 5) {
      return writer.publish(shm_test::snapshot_of(std::stoi(argv[3]), argv[4])) != 0 ? 0 : 4;
    }
    if (command == "source") {
      shm::SourceStatus status;
      status.url = argv[3];
      status.samples = 7;
      writer.set_source_count(1);
      writer.set_source_status(0, status);
      return 0;
    }
    return 2;
  } catch (const shm::Error& e) {
    fmt::print(stderr, "shm_writer: {}\n", e.what());
    return 3;
  }
}
