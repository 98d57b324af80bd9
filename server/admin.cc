// server/admin.cc: the admin socket's framing (lines, ';', the empty line after each
// reply), its permission checks, and the text / JSON renderings of a Report.
#include "server/admin.h"

#include "ingest/ingest.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fmt/format.h>

namespace server {

// ---------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------

Report& Report::add_scalar(std::string name, Scalar value) {
  fields_.push_back(Field{std::move(name), std::move(value), {}, false});
  return *this;
}

Report& Report::add_list(std::string name, std::vector<Report> items) {
  fields_.push_back(Field{std::move(name), std::string(), std::move(items), true, false});
  return *this;
}

Report& Report::add_object(std::string name, Report object) {
  std::vector<Report> items;
  items.push_back(std::move(object));
  fields_.push_back(Field{std::move(name), std::string(), std::move(items), false, true});
  return *this;
}

std::string json_string(std::string_view text) {
  std::string out;
  ingest::append_json_string(out, text);
  return out;
}

namespace {

std::string scalar_text(const Report::Scalar& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          // One field, one line: a value never breaks the framing.
          std::string s = x;
          for (char& c : s)
            if (c == '\n' || c == '\r') c = ' ';
          return s;
        } else if constexpr (std::is_same_v<T, bool>) {
          return x ? "true" : "false";
        } else if constexpr (std::is_same_v<T, double>) {
          return fmt::format("{:.3f}", x);
        } else {
          return std::to_string(x);
        }
      },
      v);
}

std::string scalar_json(const Report::Scalar& v) {
  if (auto s = std::get_if<std::string>(&v)) return json_string(*s);
  if (auto d = std::get_if<double>(&v)) return std::isfinite(*d) ? fmt::format("{}", *d) : "null";
  return scalar_text(v);
}

}  // namespace

void Report::text_into(std::string& out, const std::string& prefix) const {
  for (const Field& f : fields_) {
    if (f.is_object) {
      f.items[0].text_into(out, prefix + f.name + ".");
    } else if (f.is_list) {
      for (size_t i = 0; i < f.items.size(); ++i) f.items[i].text_into(out, fmt::format("{}{}.{}.", prefix, f.name, i));
    } else {
      out += fmt::format("{}{}: {}\n", prefix, f.name, scalar_text(f.scalar));
    }
  }
}

std::string Report::text() const {
  std::string out;
  text_into(out, "");
  if (!out.empty()) out.pop_back();
  return out;
}

std::string Report::json() const {
  std::string out = "{";
  for (size_t k = 0; k < fields_.size(); ++k) {
    const Field& f = fields_[k];
    if (k) out += ",";
    out += json_string(f.name) + ":";
    if (f.is_object) {
      out += f.items[0].json();
      continue;
    }
    if (!f.is_list) {
      out += scalar_json(f.scalar);
      continue;
    }
    out += "[";
    for (size_t i = 0; i < f.items.size(); ++i) {
      if (i) out += ",";
      out += f.items[i].json();
    }
    out += "]";
  }
  out += "}";
  return out;
}

std::string Command::line() const {
  std::string out;
  for (const std::string& w : words) {
    if (!out.empty()) out += ' ';
    out += w;
  }
  return out;
}

std::string error_reply(const Command& command, std::string_view reason) {
  if (command.json) return fmt::format("{{\"error\":{}}}", json_string(reason));
  return fmt::format("Error: {}", reason);
}

std::string report_reply(const Command& command, const Report& report) {
  return command.json ? report.json() : report.text();
}

// ---------------------------------------------------------------------------------
// Lines
// ---------------------------------------------------------------------------------

namespace {

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

Command parse_command(std::string_view text) {
  Command c;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && is_blank(text[i])) ++i;
    size_t start = i;
    while (i < text.size() && !is_blank(text[i])) ++i;
    if (i > start) c.words.emplace_back(text.substr(start, i - start));
  }
  if (!c.words.empty() && c.words.back() == "json") {
    c.json = true;
    c.words.pop_back();
  }
  return c;
}

}  // namespace

AdminLine parse_admin_line(std::string_view line) {
  AdminLine out;
  size_t start = 0;
  while (start <= line.size()) {
    size_t end = std::min(line.find(';', start), line.size());
    Command c = parse_command(line.substr(start, end - start));
    if (!c.words.empty() || c.json) {
      if (out.commands.size() == kMaxCommandsPerLine) {
        out.commands.clear();
        out.error = fmt::format("too many commands on one line (at most {}); send them on several lines",
                                kMaxCommandsPerLine);
        return out;
      }
      out.commands.push_back(std::move(c));
    }
    start = end + 1;
  }
  return out;
}

// ---------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------

namespace {

// Replies the client has not read yet: past this, no further command runs until it
// reads (and, the input filling up, libevent stops reading from it).
constexpr size_t kMaxUnreadReplyBytes = 1024 * 1024;

}  // namespace

// One client. Commands run one at a time, in order: a command that waits (reload)
// holds back the ones after it, so replies come back in the order they were asked.
//
// Every queue is bounded: the input by the read watermark (one line and a little), the
// commands by the line they came from (the next line is parsed only when they are all
// answered), the output by kMaxUnreadReplyBytes. Commands run in a loop, never by
// recursion through the reply callback: a handler that replies at once returns into
// the loop, so a long line of `ping;ping;...` costs no stack.
struct AdminServer::Connection : std::enable_shared_from_this<Connection> {
  AdminServer* server = nullptr;
  bufferevent* bev = nullptr;
  std::deque<Command> queue;
  uint64_t started = 0;  // commands handed to the handler; names the one awaited
  bool busy = false;     // a command's reply is awaited
  bool running = false;  // inside run()
  bool eof = false;      // nothing more will be read
  bool dropped = false;  // closed, waiting for its deferred deletion

  ~Connection() {
    if (bev) bufferevent_free(bev);
  }

  size_t unread_reply_bytes() { return evbuffer_get_length(bufferevent_get_output(bev)); }

  void run() {
    if (running || dropped) return;  // running: a reply from inside the handler, the loop below goes on
    running = true;
    for (;;) {
      if (!stalled() && queue.empty()) take_line();
      if (stalled() || queue.empty()) break;
      Command c = std::move(queue.front());
      queue.pop_front();
      busy = true;
      std::weak_ptr<Connection> self = shared_from_this();
      ReplyFn reply_fn = [self, n = ++started](std::string body) {
        if (auto conn = self.lock()) conn->reply(n, std::move(body));
      };
      try {
        server->handler_(c, reply_fn);
      } catch (const std::exception& e) {  // never into libevent's C frames
        reply_fn(error_reply(c, e.what()));
      }
    }
    running = false;
    // Read only while lines are taken: libevent calls on_read again and again while
    // reading is on and the input sits at the watermark, expecting it to be drained.
    if (!eof) {
      if (stalled()) bufferevent_disable(bev, EV_READ);
      else bufferevent_enable(bev, EV_READ);
    }
    maybe_close();
  }

  // The next command cannot start: a reply is awaited, or the client is not reading.
  bool stalled() { return busy || unread_reply_bytes() >= kMaxUnreadReplyBytes; }

  void reply(uint64_t n, std::string body) {
    if (!busy || n != started) return;  // a second reply to one command: ignored
    write(std::move(body));
    busy = false;
    run();
  }

  void write(std::string body) {
    body += body.empty() ? "\n" : "\n\n";
    bufferevent_write(bev, body.data(), body.size());
  }

  // Close once the client has sent everything and every reply is flushed.
  void maybe_close() {
    if (eof && !busy && queue.empty() && evbuffer_get_length(bufferevent_get_input(bev)) == 0 &&
        unread_reply_bytes() == 0)
      server->drop(this);
  }

  // Moves the next complete line (at EOF: the rest, `printf ping | nc -U` sends no
  // newline) from the input into the queue, or answers it with its error.
  void take_line() {
    evbuffer* in = bufferevent_get_input(bev);
    size_t n = 0;
    if (char* line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF)) {
      queue_line(std::string_view(line, n));
      free(line);
      return;
    }
    size_t left = evbuffer_get_length(in);
    if (left > kMaxLineBytes) {
      write(fmt::format("Error: line too long (more than {} bytes)", kMaxLineBytes));
      evbuffer_drain(in, left);
      eof = true;  // a client that floods one line is not heard further
      bufferevent_disable(bev, EV_READ);
    } else if (eof && left > 0) {
      std::string rest(left, '\0');
      evbuffer_remove(in, rest.data(), rest.size());
      queue_line(rest);
    }
  }

  void queue_line(std::string_view text) {
    AdminLine line = parse_admin_line(text);
    if (!line.error.empty()) return write("Error: " + line.error);
    for (Command& c : line.commands) queue.push_back(std::move(c));
  }

  static void on_read(bufferevent*, void* arg) { static_cast<Connection*>(arg)->run(); }
  static void on_write(bufferevent*, void* arg) { static_cast<Connection*>(arg)->run(); }
  static void on_event(bufferevent*, short what, void* arg) {
    auto* c = static_cast<Connection*>(arg);
    if (what & BEV_EVENT_EOF) {
      c->eof = true;
      c->run();
    } else if (what & BEV_EVENT_ERROR) {
      c->server->drop(c);
    }
  }
};

// ---------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------

namespace {

sockaddr_un socket_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) throw std::runtime_error(fmt::format("admin socket path too long: {}", path));
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// True when something answers on path: another telemetryd is using it.
bool socket_in_use(const sockaddr_un& addr) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  bool used = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return used;
}

}  // namespace

AdminServer::AdminServer(event_base* base, std::string path, CommandHandler handler)
    : base_(base), path_(std::move(path)), handler_(std::move(handler)) {
  sockaddr_un addr = socket_address(path_);
  struct stat st;
  if (lstat(path_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) throw std::runtime_error(fmt::format("admin socket {} exists and is not a socket", path_));
    if (socket_in_use(addr)) throw std::runtime_error(fmt::format("admin socket {} is in use by a running service", path_));
    unlink(path_.c_str());  // left by a service that did not stop cleanly
  }
  fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::runtime_error(fmt::format("admin socket: {}", std::strerror(errno)));
  // The umask makes the file 0600 from the moment it exists: no window for others.
  mode_t old = umask(0177);
  int rc = bind(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  int err = errno;
  umask(old);
  if (rc != 0 || listen(fd_, 16) != 0) {
    if (rc == 0) err = errno;
    close(fd_);
    throw std::runtime_error(fmt::format("admin socket {}: {}", path_, std::strerror(err)));
  }
  accept_event_ = event_new(base_, fd_, EV_READ | EV_PERSIST, &AdminServer::on_accept, this);
  event_add(accept_event_, nullptr);
}

AdminServer::~AdminServer() {
  connections_.clear();
  if (accept_event_) event_free(accept_event_);
  if (fd_ >= 0) close(fd_);
  unlink(path_.c_str());
}

void AdminServer::on_accept(int fd, short, void* arg) {
  auto* self = static_cast<AdminServer*>(arg);
  int client = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (client < 0) return;
  ucred cred{};
  socklen_t len = sizeof cred;
  // The service's own uid, and root (who could read the segments anyway); nobody else.
  bool allowed = getsockopt(client, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
                 (cred.uid == geteuid() || cred.uid == 0);
  if (!allowed) {
    static const char refused[] = "Error: permission denied\n\n";
    (void)!::write(client, refused, sizeof refused - 1);
    close(client);
    return;
  }
  auto conn = std::make_shared<Connection>();
  conn->server = self;
  conn->bev = bufferevent_socket_new(self->base_, client, BEV_OPT_CLOSE_ON_FREE);
  bufferevent_setcb(conn->bev, &Connection::on_read, &Connection::on_write, &Connection::on_event, conn.get());
  // Reading stops once a whole line's worth is buffered and resumes as lines are taken.
  bufferevent_setwatermark(conn->bev, EV_READ, 0, kMaxLineBytes + 1);
  bufferevent_enable(conn->bev, EV_READ | EV_WRITE);
  self->connections_.push_back(std::move(conn));
}

void AdminServer::drop(Connection* c) {
  // Deferred: drop() may be called from inside one of c's own callbacks.
  for (auto it = connections_.begin(); it != connections_.end(); ++it) {
    if (it->get() != c) continue;
    std::shared_ptr<Connection> keep = *it;
    connections_.erase(it);
    keep->dropped = true;
    bufferevent_disable(keep->bev, EV_READ | EV_WRITE);
    event_base_once(base_, -1, EV_TIMEOUT, [](int, short, void* p) { delete static_cast<std::shared_ptr<Connection>*>(p); },
                    new std::shared_ptr<Connection>(std::move(keep)), nullptr);
    return;
  }
}

}  // namespace server
