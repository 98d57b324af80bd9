// prometheus.h: the parser of the Prometheus text exposition format (0.0.4) and of
// OpenMetrics text, used by ingest::Parser (internal; the rules are in docs/ingest.md).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ingest/format/format.h"
#include "ingest/internal.h"

namespace ingest {

// Whether a body of this Content-Type is Prometheus text: application/openmetrics-text
// (then *openmetrics is set), text/plain with a version parameter, or bare text/plain
// unless the body's first byte that is not blank opens a JSON document ('{' or '[',
// which no text-format line starts with).
bool is_prometheus_text(std::string_view content_type, std::string_view body,
                        bool* openmetrics);

// A family's type, from its TYPE line (untyped without one). `other` is
// gaugehistogram, info and stateset, whose samples are taken as gauges.
enum class PromType : uint8_t { untyped, counter, gauge, histogram, summary, other };

// A value as the text format writes it: decimal or exponent notation, NaN, and
// infinities with an optional sign (+Inf, -Inf). False for anything else, or out of a
// double's range. Also reads histogram bounds (le).
bool parse_float(std::string_view text, double* out);

class PrometheusParser {
 public:
  // Replaces samples with the body's samples. Their views point into body and into this
  // parser's buffers: valid until the next parse. A bad line is rejected on its own
  // (ParseResult::rejected, the first one's line number and reason in error); only
  // what makes the whole body untrustworthy (text after `# EOF`, an OpenMetrics body
  // without it) rejects the body.
  ParseResult parse(std::string_view body, bool openmetrics, std::vector<Sample>& samples);

  size_t buffer_bytes() const;
  void release();  // frees every buffer; samples from the last parse are invalid

 private:
  struct Family {
    std::string_view name;
    PromType type = PromType::untyped;
    bool typed = false;  // named by a TYPE line (not only by samples)
  };
  struct Raw {
    std::string_view metric, suffix;
    uint32_t label_begin, label_count;
    double value;
    int64_t ts_ns;
    SampleKind kind;
  };

  const char* sample_line(std::string_view line);
  const char* type_line(std::string_view rest);
  const char* labels(const char*& p, const char* end);
  const char* classify(std::string_view name, Raw& raw, bool* skip);
  // The family of that name met earlier in this body, or the free slot where it goes
  // (name empty; filling it, count it in family_count_).
  Family* family_slot(std::string_view name);
  void reject(size_t line, const char* why);

  bool openmetrics_ = false;
  bool utf8_checked_ = false;  // the whole body is valid UTF-8: values need no check
  size_t line_ = 0;
  ParseResult result_;
  Family current_;
  std::vector<Family> families_;  // open addressing by name; empty name: free
  size_t family_count_ = 0;
  std::vector<Raw> raw_;
  std::vector<Label> labels_;
  std::string unescaped_;
  Arena arena_;
};

}  // namespace ingest
