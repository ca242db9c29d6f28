#include "regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <optional>

#include "odmoe/core/error.h"
#include "unicode.h"

namespace odmoe::tokenizer_detail {

// Oniguruma's classes (Unicode mode, as the library compiles them): \s is the C0 spaces,
// U+0085 and Z (PCRE2 adds U+180E); \w is letters, marks, numbers and connector
// punctuation (PCRE2 lacks marks); \h is a hex digit (PCRE2: horizontal space).
constexpr std::string_view kOnigSpace = "\\t\\n\\x0B\\f\\r\\x{85}\\p{Z}";
constexpr std::string_view kOnigWord = "\\p{L}\\p{M}\\p{N}\\p{Pc}";
constexpr std::string_view kOnigHex = "0-9a-fA-F";

std::string onig_to_pcre2(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 32);
  bool in_class = false;
  size_t i = 0;
  const size_t n = p.size();
  while (i < n) {
    const char c = p[i];
    if (c == '\\' && i + 1 < n) {
      const char d = p[i + 1];
      if (d == 'Q') {  // \Q...\E quotes verbatim in both dialects
        const size_t e = p.find("\\E", i + 2);
        const size_t stop = e == std::string_view::npos ? n : e + 2;
        out.append(p.substr(i, stop - i));
        i = stop;
        continue;
      }
      std::string rep;
      auto set = [&](const char* open, std::string_view cls, const char* close) {
        rep = open;
        rep += cls;
        rep += close;
      };
      if (!in_class) {
        switch (d) {
          case 's':
            set("[", kOnigSpace, "]");
            break;
          case 'S':
            set("[^", kOnigSpace, "]");
            break;
          case 'w':
            set("[", kOnigWord, "]");
            break;
          case 'W':
            set("[^", kOnigWord, "]");
            break;
          case 'h':
            set("[", kOnigHex, "]");
            break;
          case 'H':
            set("[^", kOnigHex, "]");
            break;
          default:
            break;
        }
      } else {
        // Inside a class only the positive forms can be spelled out; the negated ones are left
        // as PCRE2 reads them (they differ on U+180E, marks and hex digits).
        switch (d) {
          case 's':
            set("", kOnigSpace, "");
            break;
          case 'w':
            set("", kOnigWord, "");
            break;
          case 'h':
            set("", kOnigHex, "");
            break;
          default:
            break;
        }
      }
      if (!rep.empty()) {
        out += rep;
      } else {
        out += c;
        out += d;
      }
      i += 2;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      ++i;
      if (i < n && p[i] == '^') out += p[i++];
      if (i < n && p[i] == ']') out += p[i++];  // a leading ] is a literal
      continue;
    }
    if (in_class && c == '[' && i + 1 < n && p[i + 1] == ':') {  // POSIX class [:alpha:]
      const size_t e = p.find(":]", i + 2);
      if (e != std::string_view::npos) {
        out.append(p.substr(i, e + 2 - i));
        i = e + 2;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
    ++i;
  }
  return out;
}

struct Regex::Code {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Code() {
    if (code) pcre2_code_free(code);
  }
};

namespace {

std::string pcre2_message(int err) {
  PCRE2_UCHAR buf[256];
  const int n = pcre2_get_error_message(err, buf, sizeof buf);
  return n < 0 ? "PCRE2 error " + std::to_string(err) : std::string(reinterpret_cast<const char*>(buf));
}

// Per-thread match state: a match context with a JIT stack big enough for long runs of
// whitespace, and match data for the whole-match pair only.
struct MatchEnv {
  pcre2_match_context* mctx = nullptr;
  pcre2_jit_stack* jstack = nullptr;
  pcre2_match_data* md = nullptr;
  MatchEnv() {
    mctx = pcre2_match_context_create(nullptr);
    jstack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
    if (mctx && jstack) pcre2_jit_stack_assign(mctx, nullptr, jstack);
    md = pcre2_match_data_create(1, nullptr);
  }
  ~MatchEnv() {
    if (md) pcre2_match_data_free(md);
    if (jstack) pcre2_jit_stack_free(jstack);
    if (mctx) pcre2_match_context_free(mctx);
  }
  MatchEnv(const MatchEnv&) = delete;
  MatchEnv& operator=(const MatchEnv&) = delete;
};

MatchEnv& match_env() {
  thread_local MatchEnv env;
  ODMOE_CHECK(env.mctx && env.md, kTokenizer, "regex-memory", "cannot allocate PCRE2 match data", "");
  return env;
}

}  // namespace

Regex::Regex(const std::string& pattern) : pattern_(pattern), code_(std::make_unique<Code>()) {
  const std::string p = onig_to_pcre2(pattern);
  int err = 0;
  PCRE2_SIZE off = 0;
  code_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(), PCRE2_UTF | PCRE2_UCP, &err,
                              &off, nullptr);
  ODMOE_CHECK(code_->code != nullptr, kTokenizer, "regex",
              "the regex '" << pattern << "' does not compile: " << pcre2_message(err) << " (at byte " << off
                            << " of its PCRE2 form '" << p << "')",
              "odmoe runs tokenizer.json regexes on PCRE2; Oniguruma-only syntax is not supported");
  code_->jit = pcre2_jit_compile(code_->code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() = default;

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view s) const {
  MatchEnv& env = match_env();
  std::vector<std::pair<size_t, size_t>> out;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  const size_t n = s.size();
  size_t last_end = 0;
  std::optional<size_t> last_match_end;
  while (last_end <= n) {
    // Subjects are valid UTF-8 by construction (checked on entry to encode), so PCRE2 need
    // not re-check the whole subject on every call.
    int rc = pcre2_match(code_->code, subject, n, last_end, PCRE2_NO_UTF_CHECK, env.md, env.mctx);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
      rc =
          pcre2_match(code_->code, subject, n, last_end, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, env.md, env.mctx);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    ODMOE_CHECK(rc >= 0, kTokenizer, "regex-match",
                "matching the regex '" << pattern_ << "' failed at byte " << last_end << " of a " << n
                                       << "-byte piece: " << pcre2_message(rc),
                "the text makes the regex backtrack too much; split the prompt");
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(env.md);
    const size_t b = ov[0], e = ov[1];
    // The onig crate's rule: an empty match right where the previous match ended is skipped
    // by stepping one character, so the iteration always advances.
    if (b == e && last_match_end && *last_match_end == e) {
      last_end += last_end < n ? utf8_char_len(static_cast<unsigned char>(s[last_end])) : 1;
      continue;
    }
    last_end = e;
    last_match_end = e;
    out.emplace_back(b, e);
  }
  return out;
}

Pattern Pattern::literal(std::string s) {
  Pattern p;
  p.text_ = std::move(s);
  return p;
}

Pattern Pattern::regex(const std::string& onig_pattern) {
  Pattern p;
  p.text_ = onig_pattern;
  p.regex_ = std::make_shared<const Regex>(onig_pattern);
  return p;
}

std::vector<std::pair<size_t, size_t>> Pattern::find_all(std::string_view s) const {
  if (regex_) return regex_->find_all(s);
  std::vector<std::pair<size_t, size_t>> out;
  if (text_.empty()) return out;  // callers reject empty literals when loading
  for (size_t pos = s.find(text_); pos != std::string_view::npos; pos = s.find(text_, pos + text_.size()))
    out.emplace_back(pos, pos + text_.size());
  return out;
}

}  // namespace odmoe::tokenizer_detail
