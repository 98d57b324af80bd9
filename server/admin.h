// server/admin.h: the admin socket, served by the supervisor on its event loop.
//
// Protocol (in the spirit of HAProxy's runtime API): a Unix stream socket, mode 0600,
// only the service's own uid may talk to it (SO_PEERCRED). A client sends lines; a
// line holds one command, or several joined with ';' (at most kMaxCommandsPerLine).
// Each command gets one reply, and every reply ends with an empty line, so a script
// knows where it stops; a refused line gets one error reply. Replies are
// `name: value` lines, or one JSON object when the command's last word is `json`.
// An error reply is one line `Error: reason` (JSON: {"error":"reason"}).
// The commands themselves are the supervisor's (supervisor.cc); this file only frames them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

struct event_base;
struct event;

namespace server {

// One reply's fields, in order. A field is a scalar or a list of nested reports
// (workers, sources). Text: `name: value`, list items as `name.I.field: value`.
class Report {
 public:
  using Scalar = std::variant<std::string, int64_t, uint64_t, double, bool>;
  Report& add(std::string name, std::string value) { return add_scalar(std::move(name), std::move(value)); }
  Report& add(std::string name, const char* value) { return add_scalar(std::move(name), std::string(value)); }
  Report& add(std::string name, int64_t value) { return add_scalar(std::move(name), value); }
  Report& add(std::string name, uint64_t value) { return add_scalar(std::move(name), value); }
  Report& add(std::string name, int value) { return add_scalar(std::move(name), int64_t(value)); }
  Report& add(std::string name, uint32_t value) { return add_scalar(std::move(name), uint64_t(value)); }
  Report& add(std::string name, double value) { return add_scalar(std::move(name), value); }
  Report& add(std::string name, bool value) { return add_scalar(std::move(name), value); }
  Report& add_list(std::string name, std::vector<Report> items);
  Report& add_object(std::string name, Report object);  // text: "name.field: value"
  std::string text() const;  // without the final empty line
  std::string json() const;

 private:
  struct Field {
    std::string name;
    Scalar scalar;
    std::vector<Report> items;
    bool is_list = false;
    bool is_object = false;  // items[0]
  };
  void text_into(std::string& out, const std::string& prefix) const;
  Report& add_scalar(std::string name, Scalar value);
  std::vector<Field> fields_;
};

std::string json_string(std::string_view text);  // quoted and escaped

// A parsed command: its words, minus a trailing `json`.
struct Command {
  std::vector<std::string> words;
  bool json = false;
  std::string line() const;  // the words joined by spaces
};

// What the framing allows: a longer line is refused and its connection closed; a line
// with more commands is refused whole (one error reply, none of them run).
inline constexpr size_t kMaxLineBytes = 64 * 1024;
inline constexpr size_t kMaxCommandsPerLine = 64;

// One line split at ';' into commands (empty ones skipped), or why it is refused.
struct AdminLine {
  std::vector<Command> commands;
  std::string error;  // "" when accepted
};
AdminLine parse_admin_line(std::string_view line);

// Called once with the reply body (no final empty line). May be called later, from the
// event loop, for commands that wait (reload, restart readers).
using ReplyFn = std::function<void(std::string)>;
using CommandHandler = std::function<void(const Command&, ReplyFn)>;

// Formats helpers for handlers.
std::string error_reply(const Command& command, std::string_view reason);
std::string report_reply(const Command& command, const Report& report);

class AdminServer {
 public:
  // Binds path (replacing a stale socket file; refusing a path another telemetryd
  // answers on) and listens. Throws std::runtime_error with the reason.
  AdminServer(event_base* base, std::string path, CommandHandler handler);
  ~AdminServer();  // closes every connection and unlinks the socket
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  const std::string& path() const { return path_; }
  int listen_fd() const { return fd_; }

  struct Connection;

 private:
  static void on_accept(int fd, short what, void* self);
  event_base* base_;
  std::string path_;
  CommandHandler handler_;
  int fd_ = -1;
  struct event* accept_event_ = nullptr;
  std::vector<std::shared_ptr<Connection>> connections_;
  friend struct Connection;
  void drop(Connection* c);
};

}  // namespace server
