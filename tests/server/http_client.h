// tests/server/http_client.h: a tiny blocking HTTP/1.1 client for the in-process reader
// tests (http_test, ui_test): send a request, read one response (Content-Length,
// chunked or close-delimited; pipelined bytes of the next kept for it).
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <catch2/catch.hpp>
#include <cctype>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace test_http {

struct Response {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string header(const std::string& n) const {
    auto it = headers.find(n);
    return it == headers.end() ? "" : it->second;
  }
};

inline void send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    REQUIRE(n > 0);
    data.remove_prefix(static_cast<size_t>(n));
  }
}

// Reads more bytes into buf; false on EOF, error or timeout.
inline bool fill(int fd, std::string& buf) {
  char tmp[65536];
  ssize_t n = recv(fd, tmp, sizeof tmp, 0);
  if (n <= 0) return false;
  buf.append(tmp, static_cast<size_t>(n));
  return true;
}

// One response from fd; `buf` keeps bytes of the next (pipelined) response.
inline std::optional<Response> read_response(int fd, std::string& buf, bool head_request = false) {
  size_t end;
  while ((end = buf.find("\r\n\r\n")) == std::string::npos)
    if (!fill(fd, buf)) return std::nullopt;
  Response r;
  std::string head = buf.substr(0, end + 2);
  buf.erase(0, end + 4);
  r.status = std::stoi(head.substr(9, 3));
  for (size_t pos = head.find("\r\n") + 2; pos < head.size();) {
    size_t eol = head.find("\r\n", pos);
    std::string line = head.substr(pos, eol - pos);
    size_t colon = line.find(':');
    std::string name = line.substr(0, colon);
    for (auto& ch : name) ch = static_cast<char>(tolower(ch));
    r.headers[name] = line.substr(colon + 2);
    pos = eol + 2;
  }
  if (head_request || r.status == 304) return r;
  if (r.header("transfer-encoding") == "chunked") {
    for (;;) {
      size_t eol;
      while ((eol = buf.find("\r\n")) == std::string::npos)
        if (!fill(fd, buf)) return std::nullopt;
      size_t size = std::stoul(buf.substr(0, eol), nullptr, 16);
      while (buf.size() < eol + 2 + size + 2)
        if (!fill(fd, buf)) return std::nullopt;
      r.body.append(buf, eol + 2, size);
      buf.erase(0, eol + 2 + size + 2);
      if (size == 0) return r;
    }
  }
  if (r.headers.count("content-length")) {
    size_t len = std::stoul(r.header("content-length"));
    while (buf.size() < len)
      if (!fill(fd, buf)) return std::nullopt;
    r.body = buf.substr(0, len);
    buf.erase(0, len);
    return r;
  }
  while (fill(fd, buf)) {
  }  // close-delimited
  r.body = std::move(buf);
  buf.clear();
  return r;
}

}  // namespace test_http
