// server/http.cc: request-head parsing and the small encoders the reader's responses
// use. See http.h for what is (deliberately) not supported.
#include "server/http.h"

#include <cctype>

#include <charconv>
#include <cstring>

namespace server::http {
namespace {

bool is_tchar(unsigned char c) {
  // RFC 9110 token characters.
  if (c >= '0' && c <= '9') return true;
  if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != 0;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if ((a[i] | 0x20) != (b[i] | 0x20)) return false;  // only used with letters and '-'
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Calls f(token) for each comma-separated, trimmed, non-empty element of a list header.
template <typename F>
void for_each_list_item(std::string_view value, F&& f) {
  while (!value.empty()) {
    size_t comma = value.find(',');
    std::string_view item = trim(value.substr(0, comma));
    if (!item.empty()) f(item);
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
}

Parse parse_request_line(std::string_view line, Request& req) {
  size_t sp1 = line.find(' ');
  if (sp1 == 0 || sp1 == std::string_view::npos) return Parse::bad_request;
  req.method_text = line.substr(0, sp1);
  for (unsigned char c : req.method_text)
    if (!is_tchar(c)) return Parse::bad_request;
  req.method = req.method_text == "GET" ? Method::get : req.method_text == "HEAD" ? Method::head : Method::other;

  size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return Parse::bad_request;
  req.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (req.target.empty() || req.target.front() != '/') return Parse::bad_request;
  for (unsigned char c : req.target)
    if (c <= 0x20 || c == 0x7f) return Parse::bad_request;
  size_t q = req.target.find('?');
  req.path = req.target.substr(0, q);
  req.query = q == std::string_view::npos ? std::string_view{} : req.target.substr(q + 1);

  std::string_view version = line.substr(sp2 + 1);
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
      version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9')
    return Parse::bad_request;
  if (version[5] != '1') return Parse::bad_version;
  req.minor_version = version[7] - '0';
  req.keep_alive = req.minor_version >= 1;
  return Parse::complete;
}

}  // namespace

Parse parse_request(std::string_view in, size_t max_head_bytes, Request& req) {
  req = Request{};
  // The head must end within max_head_bytes, so nothing past them is looked at: every
  // position below is inside `head`, and no size is computed by a subtraction that
  // could wrap.
  const std::string_view head = in.substr(0, max_head_bytes);
  // Robustness (RFC 9112 2.2): ignore empty lines before the request line.
  size_t start = 0;
  while (start + 1 < head.size() && head[start] == '\r' && head[start + 1] == '\n') start += 2;

  // Judge the request line as soon as it is complete, so garbage gets its 400 at once
  // instead of waiting for a blank line that may never come.
  const std::string_view rest = head.substr(start);
  const size_t line_end = rest.find("\r\n");
  if (line_end == std::string_view::npos) {
    if (in.size() >= max_head_bytes) return Parse::header_too_large;
    // A bare LF or NUL in what we have cannot become a valid request line.
    if (rest.find('\n') != std::string_view::npos || rest.find('\0') != std::string_view::npos)
      return Parse::bad_request;
    return Parse::incomplete;
  }
  if (Parse p = parse_request_line(rest.substr(0, line_end), req); p != Parse::complete) return p;

  // The blank line, searched from the request line's own CRLF (so that a request
  // without headers matches too); line_crlf <= head.size() since the CRLF is in rest.
  const size_t line_crlf = start + line_end;
  const void* found = memmem(head.data() + line_crlf, head.size() - line_crlf, "\r\n\r\n", 4);
  if (!found) return in.size() >= max_head_bytes ? Parse::header_too_large : Parse::incomplete;
  const size_t blank = static_cast<size_t>(static_cast<const char*>(found) - head.data());  // >= line_crlf
  req.head_bytes = blank + 4;

  // The header lines, each with its CRLF: from after the request line's CRLF to the
  // end of the last header's (blank + 2 >= line_crlf + 2).
  std::string_view headers = head.substr(line_crlf + 2, blank + 2 - (line_crlf + 2));
  int hosts = 0;
  bool have_length = false;
  uint64_t length = 0;
  while (!headers.empty()) {
    size_t eol = headers.find("\r\n");
    std::string_view line = headers.substr(0, eol);
    headers.remove_prefix(eol == std::string_view::npos ? headers.size() : eol + 2);
    if (line.empty() || line.front() == ' ' || line.front() == '\t') return Parse::bad_request;  // obs-fold
    size_t colon = line.find(':');
    if (colon == 0 || colon == std::string_view::npos) return Parse::bad_request;
    std::string_view name = line.substr(0, colon);
    for (unsigned char c : name)
      if (!is_tchar(c)) return Parse::bad_request;  // also rejects "Name :"
    std::string_view value = trim(line.substr(colon + 1));
    for (unsigned char c : value)
      if ((c < 0x20 && c != '\t') || c == 0x7f) return Parse::bad_request;

    if (iequals(name, "host")) {
      ++hosts;
    } else if (iequals(name, "connection")) {
      for_each_list_item(value, [&](std::string_view token) {
        if (iequals(token, "close")) req.keep_alive = false;
        else if (iequals(token, "keep-alive") && req.minor_version == 0) req.keep_alive = true;
      });
    } else if (iequals(name, "content-length")) {
      uint64_t v = 0;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (value.empty() || ec != std::errc{} || p != value.data() + value.size()) return Parse::bad_request;
      if (have_length && v != length) return Parse::bad_request;  // request smuggling guard
      have_length = true;
      length = v;
    } else if (iequals(name, "transfer-encoding")) {
      req.has_body = true;
    } else if (iequals(name, "if-none-match")) {
      req.if_none_match = value;
    }
  }
  if (length > 0) req.has_body = true;
  if (req.minor_version >= 1 && hosts != 1) return Parse::bad_request;  // RFC 9112 3.2
  if (hosts > 1) return Parse::bad_request;
  return Parse::complete;
}

std::string percent_encode(std::string_view in) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : in) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

bool percent_decode_append(std::string_view in, std::string& out, bool plus_is_space) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      int hi = hex(in[i + 1]), lo = hex(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return true;
}

bool etag_matches(std::string_view if_none_match, std::string_view etag) {
  bool match = false;
  for_each_list_item(if_none_match, [&](std::string_view tag) {
    if (tag == "*") match = true;
    if (tag.substr(0, 2) == "W/") tag.remove_prefix(2);
    if (tag == etag) match = true;
  });
  return match;
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

void append_uint(std::string& out, uint64_t v) {
  char buf[24];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, p);
}

void append_prom_label_value(std::string& out, std::string_view s) {
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
}

}  // namespace server::http
