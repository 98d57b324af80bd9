// cluster_log_entries: prints a cluster's Redis log (the stream {NAME}:log) one entry
// per line, decoded without the aggregator and without the series dictionary, so that
// bench/cluster/reference.py can compute what the nodes must serve from what was
// committed. The payload layout is the one ingest/replica/replica.cc writes (docs/architecture.md,
// Replication); a series is printed by body position, not by name.
//
//   cluster_log_entries HOST PORT NAME
//
// Per entry, tab-separated: seq, term, clock (Unix ns), interval ms, window ms, then per
// group the source URL and its samples as TS:VALUE (ns, value as a C99 hex float so that
// it reads back bit for bit), space-separated; a group is "URL<TAB>samples". Exits 1 with
// a message on a malformed entry or a Redis error.
#include <hiredis/hiredis.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "ingest/replica/replica.h"
#include "ingest/replica/wire.h"

using ingest::Replica;
namespace wire = ingest::wire;

namespace {

constexpr uint8_t kFlagAtClock = 0x04;
constexpr uint8_t kFlagDefines = 0x08;

void skip_definition(wire::Reader& in) {
  in.string("metric");
  in.string("suffix");
  uint64_t labels = in.count("label count", 1024);
  for (uint64_t i = 0; i < labels; ++i) {
    in.string("label name");
    in.string("label value");
  }
}

std::string decode(std::string_view entry, std::string_view term) {
  uint64_t seq;
  int64_t clock;
  Replica::read_entry_header(entry, &seq, &clock);
  std::string payload =
      wire::decompress(entry.substr(Replica::kEntryHeaderBytes), Replica::kMaxEntryPayload);
  wire::Reader in(payload);
  uint64_t interval = in.varint("interval"), window = in.varint("window");
  for (int i = 0; i < 5; ++i) in.varint("settings");
  std::vector<std::string_view> urls(in.count("source count", 4096));
  for (auto& u : urls) u = in.string("source URL");
  std::string out = fmt::format("{}\t{}\t{}\t{}\t{}", seq, term, clock, interval, window);
  uint64_t groups = in.count("group count", urls.size());
  for (uint64_t g = 0; g < groups; ++g) {
    uint64_t url = in.count("group source", urls.size() - 1);
    uint64_t samples = in.count("sample count", in.left());
    out += fmt::format("\t{}\t", urls[url]);
    for (uint64_t i = 0; i < samples; ++i) {
      uint8_t flags = in.byte("flags");
      if (flags & kFlagDefines)
        skip_definition(in);
      else
        in.svarint("series id");
      int64_t ts = clock;
      if (!(flags & kFlagAtClock)) ts += in.svarint("sample time");
      out += fmt::format("{}{}:{:a}", i ? " " : "", ts, in.f64("value"));
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: cluster_log_entries HOST PORT NAME\n");
    return 2;
  }
  redisContext* c = redisConnect(argv[1], std::atoi(argv[2]));
  if (!c || c->err) {
    std::fprintf(stderr, "redis %s:%s: %s\n", argv[1], argv[2], c ? c->errstr : "no memory");
    return 1;
  }
  std::string key = std::string("{") + argv[3] + "}:log";  // cluster::Keys
  std::string from = "-";
  for (;;) {
    auto* r = static_cast<redisReply*>(redisCommand(c, "XRANGE %s %s + COUNT 1000", key.c_str(), from.c_str()));
    if (!r || r->type != REDIS_REPLY_ARRAY) {
      std::fprintf(stderr, "XRANGE %s: %s\n", key.c_str(), r && r->str ? r->str : c->errstr);
      return 1;
    }
    if (r->elements == 0) {
      freeReplyObject(r);
      break;
    }
    for (size_t i = 0; i < r->elements; ++i) {
      redisReply* e = r->element[i];
      std::string_view id(e->element[0]->str, e->element[0]->len), term = "?";
      std::string_view bytes;
      redisReply* fields = e->element[1];
      for (size_t f = 0; f + 1 < fields->elements; f += 2) {
        std::string_view name(fields->element[f]->str, fields->element[f]->len);
        std::string_view value(fields->element[f + 1]->str, fields->element[f + 1]->len);
        if (name == "t") term = value;
        if (name == "e") bytes = value;
      }
      try {
        std::printf("%s\n", decode(bytes, term).c_str());
      } catch (const std::exception& ex) {
        std::fprintf(stderr, "log entry %.*s: %s\n", static_cast<int>(id.size()), id.data(), ex.what());
        return 1;
      }
      from = id;
      from.insert(from.begin(), '(');  // exclusive: after this ID
    }
    freeReplyObject(r);
  }
  redisFree(c);
  return 0;
}
