// codec.h: the pieces of replicated bytes that the interval log's entries, the
// partition logs' entries and their checkpoints share: the aggregation settings, a
// series definition, a source's status. Internal to ingest/replica/.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ingest/ingest.h"
#include "ingest/replica/wire.h"

namespace ingest::codec {

// The fixed header in front of an entry's or a checkpoint's zstd frame: magic, format
// version, a u64 (a seq or a tick), what the caller adds (an entry's clock), then a hash
// of those bytes, since the zstd checksum only covers the payload. read_header checks
// magic, version and the hash (the last 8 of header_bytes) and returns the u64.
void put_header(std::string& out, const char (&magic)[4], uint64_t seq);
void seal_header(std::string& out);
uint64_t read_header(wire::Reader& in, const char (&magic)[4], const char* what, size_t header_bytes);

// The settings of Config that aggregation depends on; read_settings gives base with them,
// resolved (throws std::invalid_argument when they are not a sound configuration).
void put_settings(std::string& out, const Config& c);
Config read_settings(wire::Reader& in, const Config& base);
bool same_settings(const Config& a, const Config& b);

// A series definition as read: views into the bytes.
struct Definition {
  std::string_view metric, suffix;
  std::vector<Label> labels;
};
// Why a series may not be held (names as the parsers allow them, labels sorted by
// distinct names), or null.
const char* series_fault(std::string_view metric, std::string_view suffix, std::span<const Label> labels);
// Throws std::invalid_argument on a series no entry may hold.
void read_definition(wire::Reader& in, Definition& d);
void put_definition(std::string& out, std::string_view metric, std::string_view suffix,
                    std::span<const Label> labels);

// Everything SourceStatus holds but the URL.
void read_status(wire::Reader& in, shm::SourceStatus& s);
void put_status(std::string& out, const shm::SourceStatus& s);

}  // namespace ingest::codec
