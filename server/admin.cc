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
  fields_.push_back(Field{std::move(name), std::string(), std::move(items), true});
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

std::string Report::text() const {
  std::string out;
  for (const Field& f : fields_) {
    if (!f.is_list) {
      out += fmt::format("{}: {}\n", f.name, scalar_text(f.scalar));
      continue;
    }
    for (size_t i = 0; i < f.items.size(); ++i)
      for (const Field& g : f.items[i].fields_)
        out += fmt::format("{}.{}.{}: {}\n", f.name, i, g.name, scalar_text(g.scalar));
  }
  if (!out.empty()) out.pop_back();
  return out;
}

std::string Report::json() const {
  std::string out = "{";
  for (size_t k = 0; k < fields_.size(); ++k) {
    const Field& f = fields_[k];
    if (k) out += ",";
    out += json_string(f.name) + ":";
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
// Connections
// ---------------------------------------------------------------------------------

namespace {

constexpr size_t kMaxLineBytes = 64 * 1024;

Command parse_command(std::string_view text) {
  Command c;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r')) ++i;
    size_t start = i;
    while (i < text.size() && text[i] != ' ' && text[i] != '\t' && text[i] != '\r') ++i;
    if (i > start) c.words.emplace_back(text.substr(start, i - start));
  }
  if (!c.words.empty() && c.words.back() == "json") {
    c.json = true;
    c.words.pop_back();
  }
  return c;
}

}  // namespace

// One client. Commands run one at a time, in order: a command that waits (reload)
// holds back the ones after it, so replies come back in the order they were asked.
struct AdminServer::Connection : std::enable_shared_from_this<Connection> {
  AdminServer* server = nullptr;
  bufferevent* bev = nullptr;
  std::deque<Command> queue;
  bool busy = false;
  bool eof = false;

  ~Connection() {
    if (bev) bufferevent_free(bev);
  }

  void run_next() {
    while (!busy && !queue.empty()) {
      Command c = std::move(queue.front());
      queue.pop_front();
      busy = true;
      std::weak_ptr<Connection> self = shared_from_this();
      server->handler_(c, [self](std::string body) {
        if (auto conn = self.lock()) conn->reply(std::move(body));
      });
    }
    maybe_close();
  }

  void reply(std::string body) {
    body += body.empty() ? "\n" : "\n\n";
    bufferevent_write(bev, body.data(), body.size());
    busy = false;
    run_next();
  }

  // Close once the client has sent everything and every reply is flushed.
  void maybe_close() {
    if (eof && !busy && queue.empty() && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
      server->drop(this);
  }

  void queue_line(std::string_view text) {
    size_t start = 0;
    while (start <= text.size()) {
      size_t end = text.find(';', start);
      if (end == std::string_view::npos) end = text.size();
      Command c = parse_command(text.substr(start, end - start));
      if (!c.words.empty() || c.json) queue.push_back(std::move(c));
      start = end + 1;
    }
  }

  void read_lines(bool at_eof = false) {
    evbuffer* in = bufferevent_get_input(bev);
    size_t n = 0;
    while (char* line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF)) {
      queue_line(std::string_view(line, n));
      free(line);
    }
    if (at_eof && evbuffer_get_length(in) > 0 && evbuffer_get_length(in) <= kMaxLineBytes) {
      // `printf 'ping' | nc -U`: a last line without its newline still counts.
      std::string rest(evbuffer_get_length(in), '\0');
      evbuffer_remove(in, rest.data(), rest.size());
      queue_line(rest);
    }
    if (evbuffer_get_length(in) > kMaxLineBytes) {
      std::string e = "Error: line too long\n\n";
      bufferevent_write(bev, e.data(), e.size());
      evbuffer_drain(in, evbuffer_get_length(in));
      eof = true;
      bufferevent_disable(bev, EV_READ);
    }
    run_next();
  }

  static void on_read(bufferevent*, void* arg) { static_cast<Connection*>(arg)->read_lines(); }
  static void on_write(bufferevent*, void* arg) { static_cast<Connection*>(arg)->maybe_close(); }
  static void on_event(bufferevent*, short what, void* arg) {
    auto* c = static_cast<Connection*>(arg);
    if (what & BEV_EVENT_EOF) {
      c->eof = true;
      c->read_lines(true);
      c->maybe_close();
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
  bufferevent_enable(conn->bev, EV_READ | EV_WRITE);
  self->connections_.push_back(std::move(conn));
}

void AdminServer::drop(Connection* c) {
  // Deferred: drop() may be called from inside one of c's own callbacks.
  for (auto it = connections_.begin(); it != connections_.end(); ++it) {
    if (it->get() != c) continue;
    std::shared_ptr<Connection> keep = *it;
    connections_.erase(it);
    bufferevent_disable(keep->bev, EV_READ | EV_WRITE);
    event_base_once(base_, -1, EV_TIMEOUT, [](int, short, void* p) { delete static_cast<std::shared_ptr<Connection>*>(p); },
                    new std::shared_ptr<Connection>(std::move(keep)), nullptr);
    return;
  }
}

}  // namespace server
