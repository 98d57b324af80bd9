// test_util.h: helpers shared by the ingest tests.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

#include "ingest/ingest.h"

namespace ingest_test {

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string data_path(const std::string& name) {
  return std::string(INGEST_TEST_DATA) + "/" + name;
}

inline ingest::Config small_config() {
  ingest::Config c;
  c.interval = std::chrono::milliseconds(1000);
  c.window = std::chrono::milliseconds(10000);
  return c;
}

constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kT0 = 1'732'700'000 * kSec;  // a fixed "now" for deterministic tests

}  // namespace ingest_test
