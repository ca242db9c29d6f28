// A piece of the input on its way through normalizers and pre-tokenizers: the library's
// NormalizedString reduced to what changes ids.
//
// The library tracks, for every byte, the range of the original text it came from. The only
// consumer that changes ids is Metaspace with prepend_scheme "first", which asks whether a
// piece starts at original offset 0. So a piece keeps two facts instead of the whole map:
// `at_origin` (the library's offsets_original().0 == 0, fixed when the piece is cut out) and
// `n_origin`, how many leading bytes map to the start of the piece's own original text
// (alignment starts only grow along a string, so those bytes are a prefix). Each operation
// updates them with the library's rule for where new characters point: a replacement points
// at the last byte of what it replaced, a prepended string at the first character.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "regex.h"
#include "unicode.h"

namespace odmoe::tokenizer_detail {

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// One span of a string cut by a pattern: [begin, end), and whether the pattern matched it.
struct Span {
  size_t begin = 0, end = 0;
  bool is_match = false;
};

// Covers `s` with the matches of a pattern and the gaps between them (the library's
// Pattern::find_matches: an empty string gives one empty non-match).
std::vector<Span> spans_from_matches(std::string_view s,
                                     const std::vector<std::pair<size_t, size_t>>& matches);
// Each character for which `pred` holds is its own match.
template <typename Pred>
std::vector<Span> spans_from_predicate(std::string_view s, Pred pred) {
  std::vector<Span> out;
  if (s.empty()) {
    out.push_back({0, 0, false});
    return out;
  }
  size_t last = 0;
  for (size_t i = 0; i < s.size();) {
    size_t len = 0;
    const uint32_t c = utf8_decode(s, i, &len);
    if (pred(c)) {
      if (last < i) out.push_back({last, i, false});
      out.push_back({i, i + len, true});
      last = i + len;
    }
    i += len;
  }
  if (last < s.size()) out.push_back({last, s.size(), false});
  return out;
}

struct NString {
  std::string text;
  bool at_origin = false;
  size_t n_origin = 0;

  // The whole input: only its first character maps to original offset 0.
  static NString root(std::string_view s);

  // The library's slice(Range::Normalized(begin..end)).
  NString slice(size_t begin, size_t end) const;
  void prepend(std::string_view s);
  // Replaces every match of `pattern` by `content`.
  void replace(const Pattern& pattern, std::string_view content);
  void normalize(NormForm form);
  void lowercase();
  void strip(bool left, bool right);
  void strip_accents();   // removes combining marks
  void byte_level_map();  // every byte becomes its GPT-2 byte-level character
};

// NormalizedString::split: cuts `s` along `spans` (which cover it) with `behavior`. Empty
// pieces are kept; callers drop them as the library does.
std::vector<NString> split_spans(const NString& s, const std::vector<Span>& spans, SplitBehavior behavior);

// The GPT-2 byte-to-character table of the ByteLevel pre-tokenizer and decoder.
const std::string& byte_level_char(unsigned char b);  // UTF-8 of the character for byte b
int byte_level_byte(uint32_t c);                      // the byte of a character, -1 if none

}  // namespace odmoe::tokenizer_detail
