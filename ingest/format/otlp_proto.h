// otlp_proto.h: OTLP/protobuf metrics bodies (an ExportMetricsServiceRequest) ->
// samples: the same samples, in the same order, that Parser gives for the request's
// OTLP/JSON form (the mapping is otlp_points.h's, the rules parser.cc's).
#pragma once

#include <memory>
#include <span>
#include <string_view>

#include "ingest/format/format.h"

namespace ingest {

// Reusable; not thread-safe. Samples are views into the decoder, valid until its next
// parse.
class OtlpProtoParser {
 public:
  OtlpProtoParser();
  ~OtlpProtoParser();
  OtlpProtoParser(const OtlpProtoParser&) = delete;
  OtlpProtoParser& operator=(const OtlpProtoParser&) = delete;

  // ok false: the body is not a valid message (nothing kept); rejected counts the data
  // points refused one by one, error says why the first was.
  ParseResult parse(std::string_view body);
  std::span<const Sample> samples() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ingest
