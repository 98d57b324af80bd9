// tests/fuzz/replay_main.cc: the main() of a fuzz target's replay program. ctest runs
// it over the target's kept corpus and every crash ever found (tests/data/fuzz/NAME and
// the folders named beside it), so each input that once broke something is tried again
// by every build, with or without clang and libFuzzer. Arguments are files or folders;
// each file is one input. Exits non-zero if no input was found (a replay that ran
// nothing must not pass) or, like the fuzzer, aborts on the first failing input.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size);

namespace {

size_t replay_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // A copy of exactly `size` bytes, so AddressSanitizer catches a read one past the end.
  auto* data = static_cast<unsigned char*>(std::malloc(bytes.size() ? bytes.size() : 1));
  std::copy(bytes.begin(), bytes.end(), data);
  LLVMFuzzerTestOneInput(data, bytes.size());
  std::free(data);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  size_t inputs = 0;
  for (int i = 1; i < argc; ++i) {
    std::filesystem::path arg(argv[i]);
    if (std::filesystem::is_directory(arg)) {
      for (const auto& entry : std::filesystem::recursive_directory_iterator(arg))
        if (entry.is_regular_file()) inputs += replay_file(entry.path());
    } else if (std::filesystem::is_regular_file(arg)) {
      inputs += replay_file(arg);
    } else {
      std::fprintf(stderr, "replay: %s: no such file or folder\n", argv[i]);
      return 2;
    }
  }
  std::printf("replayed %zu inputs\n", inputs);
  return inputs ? 0 : 1;
}
