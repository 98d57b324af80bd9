// fuzz_admin_command: server::parse_admin_line on arbitrary bytes. Besides not
// crashing: a line is refused whole or split into at most kMaxCommandsPerLine
// commands, exactly when it has more non-empty commands; every word is non-empty and
// holds no separator; and the commands, written back as a line, parse the same.
#include <cstdlib>
#include <string>
#include <string_view>

#include "server/admin.h"

namespace {

void require(bool ok) {
  if (!ok) std::abort();
}

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// The commands a line holds, counted without the parser: segments between ';' that
// hold something other than blanks.
size_t non_empty_segments(std::string_view line) {
  size_t n = 0;
  bool seen = false;
  for (char c : line) {
    if (c == ';') {
      n += seen;
      seen = false;
    } else if (!is_blank(c)) {
      seen = true;
    }
  }
  return n + seen;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  std::string_view line(reinterpret_cast<const char*>(data), size);
  server::AdminLine parsed = server::parse_admin_line(line);
  size_t expected = non_empty_segments(line);
  if (expected > server::kMaxCommandsPerLine) {
    require(!parsed.error.empty() && parsed.commands.empty());
    return 0;
  }
  require(parsed.error.empty() && parsed.commands.size() == expected);
  std::string written;
  for (const server::Command& c : parsed.commands) {
    require(!c.words.empty() || c.json);
    for (const std::string& w : c.words) {
      require(!w.empty());
      for (char ch : w) require(ch != ';' && !is_blank(ch));
    }
    written += c.line() + (c.json ? " json" : "") + ";";
  }
  server::AdminLine again = server::parse_admin_line(written);
  require(again.error.empty() && again.commands.size() == parsed.commands.size());
  for (size_t i = 0; i < again.commands.size(); ++i)
    require(again.commands[i].words == parsed.commands[i].words && again.commands[i].json == parsed.commands[i].json);
  return 0;
}
