// tests/server/admin_test.cc: the admin socket's framing (server/admin.h) in-process:
// an AdminServer on this test's event_base with a small command handler, and a real
// Unix socket client. One thread: the test writes, then runs the loop (non-blocking
// passes) while it reads, until the replies it expects arrive or a deadline passes.
#include <event2/event.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "server/admin.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::string repeat(const std::string& s, size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (size_t i = 0; i < n; ++i) out += s;
  return out;
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

// The handler's commands: `ping` answers at once; `wait` answers when the test calls
// release(); `twice` answers two times (the second must be dropped). Every call records
// how deep the stack is, to show that commands do not recurse into each other.
struct Handler {
  size_t calls = 0;
  uintptr_t lowest_stack = UINTPTR_MAX, highest_stack = 0;
  std::vector<server::ReplyFn> waiting;

  void operator()(const server::Command& c, server::ReplyFn reply) {
    char here;
    auto at = reinterpret_cast<uintptr_t>(&here);
    lowest_stack = std::min(lowest_stack, at);
    highest_stack = std::max(highest_stack, at);
    ++calls;
    std::string line = c.line();
    if (line == "wait") return waiting.push_back(std::move(reply));
    if (line == "twice") {
      reply("once");
      return reply("twice");
    }
    if (line == "ping") return reply(server::report_reply(c, server::Report().add("ping", "pong")));
    reply(server::error_reply(c, "unknown"));
  }
  void release(std::string body) {
    auto fn = std::move(waiting.front());
    waiting.erase(waiting.begin());
    fn(std::move(body));
  }
  size_t stack_span() const { return highest_stack >= lowest_stack ? highest_stack - lowest_stack : 0; }
};

struct Fixture {
  std::string dir;
  event_base* base = event_base_new();
  Handler handler;
  std::optional<server::AdminServer> admin;
  int fd = -1;
  std::string received;
  std::string unsent;
  bool closed = false;  // the server closed its side

  Fixture() {
    char tmpl[] = "/tmp/admin_test.XXXXXX";
    REQUIRE(mkdtemp(tmpl));
    dir = tmpl;
    admin.emplace(base, dir + "/admin.sock",
                  [this](const server::Command& c, server::ReplyFn r) { handler(c, std::move(r)); });
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, admin->path().c_str(), sizeof a.sun_path - 1);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }
  ~Fixture() {
    if (fd >= 0) close(fd);
    admin.reset();
    event_base_free(base);
    std::string cmd = "rm -rf " + dir;
    (void)!std::system(cmd.c_str());
  }

  void send(const std::string& bytes) { unsent += bytes; }

  // One pass: write what the socket takes, run the loop once without blocking, read
  // what arrived (unless `read` is false: a client that does not read its replies).
  // True when anything moved.
  bool pass(bool read = true) {
    bool moved = false;
    while (!unsent.empty()) {
      ssize_t n = ::send(fd, unsent.data(), unsent.size(), MSG_NOSIGNAL);
      if (n <= 0) break;
      unsent.erase(0, size_t(n));
      moved = true;
    }
    size_t calls = handler.calls;
    event_base_loop(base, EVLOOP_NONBLOCK);
    moved |= handler.calls != calls;
    while (read && !closed) {
      char buf[65536];
      ssize_t n = ::read(fd, buf, sizeof buf);
      // A server that closes with input unread makes the kernel report ECONNRESET
      // (after the data it sent).
      if (n == 0 || (n < 0 && errno == ECONNRESET)) closed = true;
      if (n <= 0) break;
      received.append(buf, size_t(n));
      moved = true;
    }
    return moved;
  }

  bool pump_until(const std::function<bool()>& done, std::chrono::seconds limit = 30s) {
    auto deadline = Clock::now() + limit;
    while (!done()) {
      if (Clock::now() > deadline) return false;
      if (!pass()) poll(nullptr, 0, 1);
    }
    return true;
  }
  bool replies(size_t n) {
    return pump_until([&] { return count(received, "\n\n") >= n || closed; }) && count(received, "\n\n") >= n;
  }
};

}  // namespace

TEST_CASE("parse_admin_line splits a line into commands and skips empty ones", "[admin]") {
  auto line = server::parse_admin_line(" show  info ;; ping json;\tshow\tworkers\r");
  CHECK(line.error.empty());
  REQUIRE(line.commands.size() == 3);
  CHECK(line.commands[0].words == std::vector<std::string>{"show", "info"});
  CHECK(!line.commands[0].json);
  CHECK(line.commands[1].words == std::vector<std::string>{"ping"});
  CHECK(line.commands[1].json);
  CHECK(line.commands[2].line() == "show workers");
  CHECK(server::parse_admin_line("").commands.empty());
  CHECK(server::parse_admin_line(" ; ;").commands.empty());
  // `json` alone is a command (that the handler calls empty), not nothing.
  CHECK(server::parse_admin_line("json").commands.size() == 1);
}

TEST_CASE("parse_admin_line refuses a line of more than kMaxCommandsPerLine commands whole", "[admin]") {
  auto most = server::parse_admin_line(repeat("ping;", server::kMaxCommandsPerLine));
  CHECK(most.error.empty());
  CHECK(most.commands.size() == server::kMaxCommandsPerLine);
  auto over = server::parse_admin_line(repeat("ping;", server::kMaxCommandsPerLine + 1));
  CHECK(over.commands.empty());
  CHECK(over.error.find("too many commands") != std::string::npos);
  // Empty commands do not count.
  CHECK(server::parse_admin_line(repeat("ping;;", server::kMaxCommandsPerLine)).error.empty());
}

TEST_CASE("a line of 13,000 commands gets one error reply and the connection goes on", "[admin]") {
  Fixture f;
  f.send(repeat("ping;", 13000) + "\n" + "ping\n");
  REQUIRE(f.replies(2));
  CHECK(f.received.rfind("Error: too many commands on one line", 0) == 0);
  CHECK(f.received.substr(f.received.find("\n\n") + 2) == "ping: pong\n\n");
  CHECK(f.handler.calls == 1);  // none of the 13,000 ran
  CHECK(!f.closed);
}

TEST_CASE("pipelined commands run in a loop, not by recursion through their replies", "[admin]") {
  Fixture f;
  // 12,800 commands in one write: before the loop, each synchronous reply started the
  // next command from inside itself, one stack frame set per command.
  const size_t lines = 200;
  f.send(repeat(repeat("ping;", server::kMaxCommandsPerLine) + "\n", lines));
  const size_t total = lines * server::kMaxCommandsPerLine;
  REQUIRE(f.replies(total));
  CHECK(count(f.received, "ping: pong\n\n") == total);
  CHECK(f.handler.calls == total);
  CHECK(f.handler.stack_span() < 16 * 1024);
}

TEST_CASE("a client that does not read its replies stops its commands, then gets every reply", "[admin]") {
  Fixture f;
  const size_t lines = 8000;  // 512,000 commands, 6 MB of replies: far more than the bounds
  const size_t total = lines * server::kMaxCommandsPerLine;
  f.send(repeat(repeat("ping;", server::kMaxCommandsPerLine) + "\n", lines));
  // Without reading: the loop makes progress until the unread replies reach the bound
  // and the socket buffers fill, then nothing moves any more.
  auto deadline = Clock::now() + 30s;
  int idle = 0;
  while (idle < 200 && Clock::now() < deadline) {
    if (f.pass(false)) idle = 0;
    else ++idle;
  }
  CHECK(f.handler.calls < total / 2);
  CHECK(!f.unsent.empty());  // the server stopped reading too
  // Reading, everything arrives, in order.
  REQUIRE(f.replies(total));
  CHECK(count(f.received, "ping: pong\n\n") == total);
  CHECK(f.handler.calls == total);
}

TEST_CASE("a waiting command holds back the next ones and its late reply runs them in order", "[admin]") {
  Fixture f;
  f.send("wait;ping\nping json\n");
  f.pump_until([&] { return !f.handler.waiting.empty(); });
  for (int i = 0; i < 20; ++i) f.pass();
  CHECK(f.received.empty());
  CHECK(f.handler.calls == 1);
  f.handler.release("waited: yes");
  REQUIRE(f.replies(3));
  CHECK(f.received == "waited: yes\n\nping: pong\n\n{\"ping\":\"pong\"}\n\n");
}

TEST_CASE("a second reply to one command is dropped", "[admin]") {
  Fixture f;
  f.send("twice\nping\n");
  REQUIRE(f.replies(2));
  CHECK(f.received == "once\n\nping: pong\n\n");
}

TEST_CASE("a line longer than kMaxLineBytes is refused and the connection closed", "[admin]") {
  Fixture f;
  f.send("ping\n" + std::string(server::kMaxLineBytes + 10, 'x') + "\nping\n");
  REQUIRE(f.pump_until([&] { return f.closed; }));
  CHECK(f.received.rfind("ping: pong\n\nError: line too long", 0) == 0);
  CHECK(count(f.received, "\n\n") == 2);
  CHECK(f.handler.calls == 1);
}

TEST_CASE("a last line without its newline is run at EOF", "[admin]") {
  Fixture f;
  f.send("ping");
  f.pass();
  ::shutdown(f.fd, SHUT_WR);
  REQUIRE(f.pump_until([&] { return f.closed; }));
  CHECK(f.received == "ping: pong\n\n");
}
