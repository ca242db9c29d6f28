// The patterns tokenizer.json uses to split and replace text: an Oniguruma regex (what the
// library compiles them with) run on PCRE2, or a literal string.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace odmoe::tokenizer_detail {

// Rewrites the Oniguruma escapes whose meaning differs in PCRE2 (UTF + UCP mode): \s and
// \S (PCRE2 also counts U+180E as space), \w and \W (Oniguruma includes marks), \h and \H
// (a hex digit in Oniguruma, horizontal space in PCRE2). Known remaining differences:
// multi-character case folding under (?i) (Oniguruma matches "ss" to "ß") and POSIX
// classes such as [[:alpha:]].
std::string onig_to_pcre2(std::string_view pattern);

class Regex {
 public:
  // Compiles an Oniguruma-syntax pattern; throws odmoe::Error (kTokenizer, "regex") naming the
  // pattern and the position PCRE2 objects to.
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  const std::string& pattern() const { return pattern_; }

  // Every match in `s` (valid UTF-8) as [begin, end) byte ranges, in the order and with the
  // empty-match rule of the onig crate's find_iter.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const;

 private:
  struct Code;
  std::string pattern_;
  std::unique_ptr<Code> code_;
};

// A split/replace pattern: a literal string or a regex.
class Pattern {
 public:
  static Pattern literal(std::string s);
  static Pattern regex(const std::string& onig_pattern);

  bool is_literal() const { return !regex_; }
  const std::string& text() const { return text_; }  // the literal, or the regex source

  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const;

 private:
  std::string text_;
  std::shared_ptr<const Regex> regex_;
};

}  // namespace odmoe::tokenizer_detail
