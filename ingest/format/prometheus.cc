// prometheus.cc: Prometheus text exposition (0.0.4) and OpenMetrics text bodies ->
// samples, one line at a time.
//
// Errors follow the JSON parsers' rule. A line that cannot be read (a bad name, label,
// escape, value or timestamp, a sample that does not fit its family's TYPE, a second
// TYPE) is rejected alone, counted, and the first one's line number and reason are
// reported; the other lines are kept. The body as a whole is refused only when it
// cannot be trusted as one exposition: text after `# EOF`, or an OpenMetrics body that
// does not end with `# EOF` (cut short on the way).
//
// Families: a sample belongs to the family of the last TYPE line when its name is that
// family's name plus a suffix the type allows (counter: `_total`; histogram: `_bucket`,
// `_sum`, `_count`; summary: `_sum`, `_count`); any other name starts a family of its
// own, untyped unless a TYPE line named it earlier in the body.
#include "ingest/format/prometheus.h"

#include <simdjson.h>

#include <array>
#include <charconv>
#include <cstring>
#include <functional>

#include <fmt/format.h>

namespace ingest {

namespace {

constexpr auto kNameChar = [] {
  std::array<bool, 256> t{};
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (char c : std::string_view("_.:/-")) t[static_cast<unsigned char>(c)] = true;
  return t;
}();

inline bool name_char(char c) { return kNameChar[static_cast<unsigned char>(c)]; }
inline bool blank(char c) { return c == ' ' || c == '\t'; }
inline void skip_blanks(const char*& p, const char* end) {
  while (p < end && blank(*p)) ++p;
}

bool starts_with_ci(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    char c = text[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != prefix[i]) return false;
  }
  return true;
}

std::string_view trim_end(std::string_view s) {
  while (!s.empty() && (blank(s.back()) || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

const Label* find_label(std::span<const Label> labels, std::string_view name) {
  for (const Label& l : labels)
    if (l.name == name) return &l;
  return nullptr;
}

// Family names are short and hashed once per family: eight bytes at a time.
uint64_t hash_name(std::string_view name) {
  uint64_t h = name.size();
  size_t i = 0;
  for (; i + 8 <= name.size(); i += 8) {
    uint64_t chunk;
    std::memcpy(&chunk, name.data() + i, 8);
    h = (h ^ chunk) * 0x9e3779b97f4a7c15;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, name.data() + i, name.size() - i);
  h = (h ^ tail) * 0x9e3779b97f4a7c15;
  return h ^ (h >> 29);
}

// Powers of ten that a double holds exactly.
constexpr double kExact10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

// The usual value, a short decimal (`254.99`, `1.445857e+06`), without from_chars: with
// at most 15 significant digits and a power of ten up to 22, digits and power are both
// exact doubles, so one multiplication or division rounds correctly (Clinger's fast
// path). False when the text is anything else; parse_float then asks from_chars.
bool parse_short_decimal(const char* p, const char* end, double* out) {
  uint64_t digits = 0;
  int count = 0, scale = 0;
  while (p < end && *p >= '0' && *p <= '9') {
    digits = digits * 10 + static_cast<uint64_t>(*p++ - '0');
    ++count;
  }
  if (p < end && *p == '.') {
    ++p;
    while (p < end && *p >= '0' && *p <= '9') {
      digits = digits * 10 + static_cast<uint64_t>(*p++ - '0');
      ++count;
      --scale;
    }
  }
  if (count == 0) return false;
  if (p < end && (*p == 'e' || *p == 'E')) {
    ++p;
    bool negative = p < end && *p == '-';
    if (p < end && (*p == '-' || *p == '+')) ++p;
    int exponent = 0, exponent_digits = 0;
    while (p < end && *p >= '0' && *p <= '9' && exponent_digits < 4) {
      exponent = exponent * 10 + (*p++ - '0');
      ++exponent_digits;
    }
    if (exponent_digits == 0) return false;
    scale += negative ? -exponent : exponent;
  }
  if (p != end || count > 15) return false;
  if (scale >= 0 && scale <= 22) *out = static_cast<double>(digits) * kExact10[scale];
  else if (scale < 0 && scale >= -22) *out = static_cast<double>(digits) / kExact10[-scale];
  else return false;
  return true;
}

}  // namespace

bool parse_float(std::string_view text, double* out) {
  const char* p = text.data();
  const char* end = p + text.size();
  if (p == end) return false;
  bool negative = *p == '-';
  if (*p == '+' || *p == '-') ++p;
  if (p == end || *p == '+' || *p == '-') return false;
  if (parse_short_decimal(p, end, out)) {
    if (negative) *out = -*out;
    return true;
  }
  auto [stop, ec] = std::from_chars(p, end, *out);
  if (ec != std::errc() || stop != end) return false;
  if (negative) *out = -*out;
  return true;
}

bool is_prometheus_text(std::string_view content_type, std::string_view body,
                        bool* openmetrics) {
  *openmetrics = false;
  while (!content_type.empty() && blank(content_type.front())) content_type.remove_prefix(1);
  if (starts_with_ci(content_type, "application/openmetrics-text")) {
    *openmetrics = true;
    return true;
  }
  if (!starts_with_ci(content_type, "text/plain")) return false;
  // A version parameter (`version=0.0.4`) is the text format's own claim; bare text/plain
  // is also what servers label JSON files with.
  if (content_type.find("version=") != std::string_view::npos) return true;
  size_t first = body.find_first_not_of(" \t\r\n");
  return first == std::string_view::npos || (body[first] != '{' && body[first] != '[');
}

void PrometheusParser::reject(size_t line, const char* why) {
  if (result_.rejected++ == 0) result_.error = fmt::format("line {}: {}", line, why);
}

PrometheusParser::Family* PrometheusParser::family_slot(std::string_view name) {
  if ((family_count_ + 1) * 2 > families_.size()) {
    std::vector<Family> old = std::move(families_);
    families_.assign(std::max<size_t>(64, old.size() * 2), Family{});
    size_t mask = families_.size() - 1;
    for (const Family& f : old) {
      if (f.name.empty()) continue;
      size_t i = hash_name(f.name) & mask;
      while (!families_[i].name.empty()) i = (i + 1) & mask;
      families_[i] = f;
    }
  }
  size_t mask = families_.size() - 1;
  size_t i = hash_name(name) & mask;
  while (!families_[i].name.empty() && families_[i].name != name) i = (i + 1) & mask;
  return &families_[i];
}

ParseResult PrometheusParser::parse(std::string_view body, bool openmetrics,
                                    std::vector<Sample>& samples) {
  samples.clear();
  raw_.clear();
  labels_.clear();
  arena_.reset();
  if (family_count_) {
    std::fill(families_.begin(), families_.end(), Family{});
    family_count_ = 0;
  }
  current_ = Family{};
  result_ = ParseResult{};
  result_.format = Format::prometheus;
  openmetrics_ = openmetrics;
  // One pass over the whole body (simdjson's validator, several GB/s) spares a check of
  // every label value; only a body that fails it has its values checked one by one.
  utf8_checked_ = simdjson::validate_utf8(body.data(), body.size());

  const char* p = body.data();
  const char* const end = p + body.size();
  bool eof = false;
  line_ = 0;
  while (p < end) {
    ++line_;
    const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
    const char* stop = nl ? nl : end;
    std::string_view line(p, static_cast<size_t>(stop - p));
    p = nl ? nl + 1 : end;
    line = trim_end(line);
    size_t lead = 0;
    while (lead < line.size() && blank(line[lead])) ++lead;
    line.remove_prefix(lead);
    if (eof) {
      if (line.empty()) continue;
      result_.error = fmt::format("line {}: text after # EOF", line_);
      return result_;
    }
    if (line.empty()) continue;
    if (line.size() > kMaxLineBytes) {
      reject(line_, "line longer than 65536 bytes");
      continue;
    }
    if (line[0] == '#') {
      std::string_view rest = line.substr(1);
      while (!rest.empty() && blank(rest.front())) rest.remove_prefix(1);
      if (rest == "EOF") {
        eof = true;
      } else if (rest.size() > 5 && rest.substr(0, 4) == "TYPE" && blank(rest[4])) {
        if (const char* why = type_line(rest.substr(5))) reject(line_, why);
      }
      continue;  // HELP and other comments carry nothing to keep
    }
    if (!nl) {
      // The format ends every line with a newline: one without may have been cut.
      reject(line_, "no newline at the end of the body (cut short?)");
      break;
    }
    if (const char* why = sample_line(line)) reject(line_, why);
  }
  if (openmetrics_ && !eof) {
    result_.error = "no # EOF at the end of an OpenMetrics body (cut short?)";
    result_.rejected = 0;
    raw_.clear();
    return result_;
  }

  result_.ok = true;
  samples.reserve(raw_.size());
  for (const Raw& r : raw_) {
    Sample s;
    s.metric = r.metric;
    s.suffix = r.suffix;
    s.labels = std::span<const Label>(labels_).subspan(r.label_begin, r.label_count);
    s.value = r.value;
    s.ts_ns = r.ts_ns;
    s.kind = r.kind;
    samples.push_back(s);
  }
  return result_;
}

const char* PrometheusParser::type_line(std::string_view rest) {
  const char* p = rest.data();
  const char* end = p + rest.size();
  skip_blanks(p, end);
  const char* name_begin = p;
  while (p < end && name_char(*p)) ++p;
  std::string_view name(name_begin, static_cast<size_t>(p - name_begin));
  if (name.empty() || name.size() > kMaxMetricNameBytes)
    return "TYPE line without a valid metric name";
  if (p == end || !blank(*p)) return "TYPE line without a type";
  skip_blanks(p, end);
  std::string_view word(p, static_cast<size_t>(end - p));
  Family f{name, PromType::untyped, true};
  if (word == "counter") f.type = PromType::counter;
  else if (word == "gauge") f.type = PromType::gauge;
  else if (word == "histogram") f.type = PromType::histogram;
  else if (word == "summary") f.type = PromType::summary;
  else if (word == "untyped" || word == "unknown") f.type = PromType::untyped;
  else if (word == "gaugehistogram" || word == "info" || word == "stateset") f.type = PromType::other;
  else return "unknown metric type in a TYPE line";
  Family* slot = family_slot(name);
  if (!slot->name.empty())
    return slot->typed ? "a second TYPE line for the same metric"
                       : "TYPE line after samples of its metric";
  *slot = f;
  ++family_count_;
  current_ = f;
  return nullptr;
}

namespace {

enum class Role { gauge, counter, bucket, skip, bad, none };

// What a sample named family + suffix is within a family of that type; none: the name
// is not this family's.
Role role_in(PromType type, std::string_view suffix) {
  const bool counter = type == PromType::counter;
  const bool histogram = type == PromType::histogram;
  const bool summary = type == PromType::summary;
  if (suffix.empty()) return histogram ? Role::bad : counter ? Role::counter : Role::gauge;
  if (suffix == "_total") return counter ? Role::counter : Role::none;
  if (suffix == "_created") return counter || histogram || summary ? Role::skip : Role::none;
  if (suffix == "_bucket")
    return histogram ? Role::bucket : type == PromType::other ? Role::gauge : Role::none;
  if (suffix == "_sum" || suffix == "_count")
    return histogram || summary ? Role::counter : Role::none;
  if (suffix == "_gsum" || suffix == "_gcount" || suffix == "_info")
    return type == PromType::other ? Role::gauge : Role::none;
  return Role::none;
}

}  // namespace

const char* PrometheusParser::classify(std::string_view name, Raw& raw, bool* skip) {
  Role role = Role::none;
  if (!current_.name.empty() && name.size() >= current_.name.size() &&
      std::memcmp(name.data(), current_.name.data(), current_.name.size()) == 0)
    role = role_in(current_.type, name.substr(current_.name.size()));
  if (role == Role::none) {
    // Another family: one named earlier in the body (its samples out of place, which
    // the format does not allow but costs nothing to take), or a new, untyped one.
    Family* slot = family_slot(name);
    if (slot->name.empty()) {
      *slot = Family{name, PromType::untyped, false};
      ++family_count_;
    }
    current_ = *slot;
    role = role_in(current_.type, std::string_view());
  }
  auto labels = std::span<const Label>(labels_).subspan(raw.label_begin, raw.label_count);
  raw.metric = name;
  raw.suffix = {};
  switch (role) {
    case Role::skip: *skip = true; return nullptr;
    case Role::bad: return "a histogram's samples are named _bucket, _sum or _count";
    case Role::none: return "unreachable";
    case Role::gauge:
      raw.kind = SampleKind::gauge;
      if (current_.type == PromType::summary && !find_label(labels, "quantile"))
        return "a summary sample without a quantile label";
      break;
    case Role::counter: raw.kind = SampleKind::counter; break;
    case Role::bucket: {
      raw.kind = SampleKind::bucket;
      const Label* le = find_label(labels, "le");
      double bound;
      if (!le || !parse_float(le->value, &bound) || std::isnan(bound))
        return "a histogram bucket without a numeric le label";
      break;
    }
  }
  if (current_.type == PromType::histogram || current_.type == PromType::summary) {
    // The family's name and the suffix apart: the aggregator finds the histogram of a
    // bucket by the family's name.
    raw.metric = name.substr(0, current_.name.size());
    raw.suffix = name.substr(current_.name.size());
  }
  if (raw.kind != SampleKind::gauge && raw.value < 0)
    return "a negative counter or bucket value";
  return nullptr;
}

const char* PrometheusParser::labels(const char*& p, const char* end) {
  ++p;  // '{'
  const size_t first = labels_.size();
  for (;;) {
    skip_blanks(p, end);
    if (p == end) return "label set without }";
    if (*p == '}') {
      ++p;
      return nullptr;
    }
    const char* name = p;
    while (p < end && name_char(*p)) ++p;
    if (p == name) return "expected a label name";
    Label label;
    label.name = std::string_view(name, static_cast<size_t>(p - name));
    if (label.name.size() > kMaxLabelNameBytes) return "invalid label name";
    // A label set is short: comparing with those before costs less than a set.
    for (size_t i = first; i < labels_.size(); ++i)
      if (labels_[i].name == label.name) return "duplicate label name";
    if (labels_.size() - first == kMaxLabels) return "too many labels";
    skip_blanks(p, end);
    if (p == end || *p != '=') return "expected = after a label name";
    ++p;
    skip_blanks(p, end);
    if (p == end || *p != '"') return "expected a quoted label value";
    const char* value = ++p;
    while (p < end && *p != '"' && *p != '\\') ++p;
    if (p == end) return "label value without a closing quote";
    if (*p == '"') {
      label.value = std::string_view(value, static_cast<size_t>(p - value));
      if (label.value.size() > kMaxLabelValueBytes) return "label value too long";
    } else {
      // Escapes (rare): unescaped into the arena.
      unescaped_.assign(value, p);
      while (p < end && *p != '"') {
        if (*p != '\\') {
          unescaped_ += *p++;
          continue;
        }
        if (p + 1 == end) return "label value without a closing quote";
        char c = p[1];
        if (c == 'n') unescaped_ += '\n';
        else if (c == '\\' || c == '"') unescaped_ += c;
        else return "invalid escape in a label value (only \\\\, \\\" and \\n)";
        p += 2;
      }
      if (p == end) return "label value without a closing quote";
      if (unescaped_.size() > kMaxLabelValueBytes) return "label value too long";
      label.value = arena_.store(unescaped_);
    }
    ++p;  // the closing quote
    if (!utf8_checked_ && !simdjson::validate_utf8(label.value.data(), label.value.size()))
      return "label value is not valid UTF-8";
    labels_.push_back(label);
    skip_blanks(p, end);
    if (p < end && *p == ',') {
      ++p;
      continue;
    }
    if (p < end && *p == '}') {
      ++p;
      return nullptr;
    }
    return "expected , or } after a label";
  }
}

const char* PrometheusParser::sample_line(std::string_view line) {
  const char* p = line.data();
  const char* const end = p + line.size();
  while (p < end && name_char(*p)) ++p;
  std::string_view name(line.data(), static_cast<size_t>(p - line.data()));
  if (name.empty()) return "expected a metric name";
  if (name.size() > kMaxMetricNameBytes)  // its bytes are of the alphabet already
    return "invalid metric name (1-255 bytes of A-Z a-z 0-9 _ . : / -)";
  Raw raw;
  raw.label_begin = static_cast<uint32_t>(labels_.size());
  auto fail = [&](const char* why) {
    labels_.resize(raw.label_begin);
    return why;
  };
  const char* after_name = p;
  skip_blanks(p, end);
  if (p < end && *p == '{') {
    if (const char* why = labels(p, end)) return fail(why);
  } else {
    p = after_name;
  }
  raw.label_count = static_cast<uint32_t>(labels_.size() - raw.label_begin);
  if (p == end || !blank(*p)) return fail("expected a blank and a value after the series");
  skip_blanks(p, end);
  const char* value = p;
  while (p < end && !blank(*p)) ++p;
  if (!parse_float(std::string_view(value, static_cast<size_t>(p - value)), &raw.value))
    return fail("invalid value");
  skip_blanks(p, end);
  raw.ts_ns = 0;
  if (p < end && *p != '#') {
    const char* ts = p;
    while (p < end && !blank(*p)) ++p;
    std::string_view text(ts, static_cast<size_t>(p - ts));
    if (openmetrics_) {
      double seconds;
      if (!parse_float(text, &seconds) || !seconds_to_ns(seconds, &raw.ts_ns))
        return fail("invalid timestamp (Unix seconds expected)");
    } else {
      // Milliseconds; int64 nanoseconds end in 2262.
      int64_t ms = 0;
      auto [stop, ec] = std::from_chars(text.data(), text.data() + text.size(), ms);
      if (ec != std::errc() || stop != text.data() + text.size() || ms <= 0 ||
          ms >= 9'000'000'000'000)
        return fail("invalid timestamp (Unix milliseconds expected)");
      raw.ts_ns = ms * 1'000'000;
    }
    skip_blanks(p, end);
  }
  // OpenMetrics may follow with an exemplar (` # {labels} value [ts]`): not kept.
  if (p < end && !(openmetrics_ && *p == '#')) return fail("unexpected text after the value");
  bool skip = false;
  if (const char* why = classify(name, raw, &skip)) return fail(why);

  if (skip) return fail(nullptr);
  if (!std::isfinite(raw.value)) {
    ++result_.skipped;
    return fail(nullptr);
  }
  raw_.push_back(raw);
  return nullptr;
}

size_t PrometheusParser::buffer_bytes() const {
  return raw_.capacity() * sizeof(Raw) + labels_.capacity() * sizeof(Label) +
         families_.capacity() * sizeof(Family) + unescaped_.capacity() + arena_.bytes();
}

void PrometheusParser::release() {
  std::vector<Raw>().swap(raw_);
  std::vector<Label>().swap(labels_);
  std::vector<Family>().swap(families_);
  family_count_ = 0;
  std::string().swap(unescaped_);
  arena_.release();
}

}  // namespace ingest
