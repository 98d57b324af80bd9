// fuzz_http_request: server::http::parse_request on arbitrary bytes, with several
// limits. Besides not crashing: a complete head lies within the input and the limit,
// every view it returns points into that head, "incomplete" is only said below the
// limit, and a decision taken on a prefix of the input stands for the whole input.
#include <cstdlib>
#include <string_view>

#include "server/http.h"

namespace {

using server::http::Parse;
using server::http::Request;

void require(bool ok) {
  if (!ok) std::abort();
}

bool inside(std::string_view part, std::string_view whole) {
  if (part.empty()) return true;  // an empty view may point anywhere
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

void check(std::string_view in, size_t max) {
  Request req;
  Parse p = server::http::parse_request(in, max, req);
  switch (p) {
    case Parse::complete: {
      require(req.head_bytes >= 4 && req.head_bytes <= in.size() && req.head_bytes <= max);
      std::string_view head = in.substr(0, req.head_bytes);
      require(head.substr(head.size() - 4) == "\r\n\r\n");
      for (std::string_view v : {req.method_text, req.target, req.path, req.query, req.if_none_match})
        require(inside(v, head));
      require(!req.method_text.empty() && !req.target.empty() && req.target.front() == '/');
      require(req.method == (req.method_text == "GET"    ? server::http::Method::get
                             : req.method_text == "HEAD" ? server::http::Method::head
                                                         : server::http::Method::other));
      require(req.target.substr(0, req.path.size()) == req.path);
      require(req.path.size() == req.target.size() ||
              (req.target[req.path.size()] == '?' && req.target.substr(req.path.size() + 1) == req.query));
      require(req.minor_version >= 0 && req.minor_version <= 9);
      // The bytes after the head change nothing: the head alone parses the same.
      Request again;
      require(server::http::parse_request(head, max, again) == Parse::complete);
      require(again.head_bytes == req.head_bytes && again.target == req.target &&
              again.keep_alive == req.keep_alive && again.has_body == req.has_body);
      break;
    }
    case Parse::incomplete:
      require(in.size() < max);
      break;
    case Parse::header_too_large:
      require(in.size() >= max);
      break;
    case Parse::bad_request:
    case Parse::bad_version:
      break;
    default:
      std::abort();
  }
  // What half the bytes decided, the whole keeps: complete stays complete with the same
  // head, an error stays an error.
  Request half;
  Parse q = server::http::parse_request(in.substr(0, in.size() / 2), max, half);
  if (q == Parse::complete) require(p == Parse::complete && req.head_bytes == half.head_bytes);
  if (q != Parse::complete && q != Parse::incomplete) require(p != Parse::complete && p != Parse::incomplete);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  for (size_t max : {size_t(0), size_t(1), size_t(16), size_t(64), size_t(256), size_t(8192)}) check(in, max);
  if (size > 0) check(in, size - 1);  // the limit just below the input
  check(in, size);
  return 0;
}
