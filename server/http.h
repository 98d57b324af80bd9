// server/http.h: the small HTTP/1.1 request parser and helpers of the reader. It parses
// a request head in place (views into the connection's input buffer), so a keep-alive
// GET costs no allocation. Only what a read-only GET API needs: no request bodies, no
// trailers, no obsolete line folding; anything outside that is reported, never guessed.
// Pure functions, no sockets: tests feed them strings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace server::http {

enum class Method { get, head, other };

struct Request {
  Method method = Method::other;
  std::string_view method_text;
  std::string_view target;  // as sent: path + "?" + query
  std::string_view path;    // still percent-encoded
  std::string_view query;   // after '?', "" when none
  int minor_version = 1;    // HTTP/1.<minor>
  bool keep_alive = true;   // after the version default and the Connection header
  bool has_body = false;    // Content-Length > 0 or any Transfer-Encoding
  std::string_view if_none_match;
  size_t head_bytes = 0;    // bytes of the request line + headers + blank line
};

enum class Parse {
  complete,           // `req` filled; consume req.head_bytes
  incomplete,         // need more bytes (and fewer than max_head_bytes are buffered)
  bad_request,        // 400
  header_too_large,   // 431: no complete head within max_head_bytes
  bad_version,        // 505: not HTTP/1.x
};

// Parses the request head at the start of `in`.
Parse parse_request(std::string_view in, size_t max_head_bytes, Request& req);

// Percent-decodes `in` and appends it to `out`. `plus_is_space` for query components
// (application/x-www-form-urlencoded). False on a malformed escape.
bool percent_decode_append(std::string_view in, std::string& out, bool plus_is_space);
// The inverse, for clients (tests, benchmarks): every byte but RFC 3986's unreserved
// ones as %XX.
std::string percent_encode(std::string_view in);

// True when an If-None-Match value (a list of entity tags, or "*") names `etag`
// (quoted, strong). Weak comparison, as RFC 9110 asks for If-None-Match.
bool etag_matches(std::string_view if_none_match, std::string_view etag);

// The reason phrase of a status code the reader sends.
std::string_view reason_phrase(int status);

// Appends `v` in decimal.
void append_uint(std::string& out, uint64_t v);

// Appends `s` escaped as a Prometheus label value (\\, \", \n).
void append_prom_label_value(std::string& out, std::string_view s);

}  // namespace server::http
