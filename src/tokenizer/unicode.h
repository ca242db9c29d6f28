// UTF-8 and Unicode helpers of the tokenizer: what Rust's str and char give the `tokenizers`
// library for free. Character classes come from ICU; normalization, combining marks and
// lowercase mappings come from the library's own data (unicode_norm.cpp), whatever ICU the
// machine has.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace odmoe::tokenizer_detail {

inline constexpr uint32_t kReplacementChar = 0xFFFD;

// Byte length of the UTF-8 character whose first byte is `lead` (in valid UTF-8).
inline size_t utf8_char_len(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

// Decodes the character at byte `i` of valid UTF-8 `s`; stores its length in *len.
uint32_t utf8_decode(std::string_view s, size_t i, size_t* len);
void utf8_append(std::string& out, uint32_t cp);
inline std::string utf8_encode(uint32_t cp) {
  std::string s;
  utf8_append(s, cp);
  return s;
}
// Number of characters in valid UTF-8.
size_t utf8_count(std::string_view s);

// Validates as Rust's str::from_utf8 does; on failure *bad_offset is the start of the first
// invalid sequence.
bool utf8_valid(std::string_view s, size_t* bad_offset);

// Rust's String::from_utf8_lossy as a stream: every maximal invalid subsequence (a byte that
// cannot start a character, or a valid prefix cut short) becomes one U+FFFD. Bytes that may
// still complete a character are held until the next feed() or finish().
class Utf8LossyDecoder {
 public:
  void feed(std::string_view bytes, std::string& out);
  void finish(std::string& out);  // a held incomplete prefix becomes one U+FFFD

 private:
  unsigned char pending_[4] = {0, 0, 0, 0};
  size_t n_pending_ = 0;
  size_t n_needed_ = 0;  // total length of the held character
};
std::string utf8_lossy(std::string_view bytes);

// Character classes with the definitions the library's Rust code uses.
bool is_white_space(uint32_t c);                      // char::is_whitespace, regex \s: White_Space
bool is_word_char(uint32_t c);                        // regex \w: Alphabetic, M, Nd, Pc, Join_Control
bool is_numeric(uint32_t c);                          // char::is_numeric: Nd, Nl, No
bool is_combining_mark(uint32_t c);                   // Mn, Mc, Me in the library's Unicode version
void append_lowercase(uint32_t c, std::string& out);  // char::to_lowercase in the library's build

enum class NormForm { kNFC, kNFD, kNFKC, kNFKD };

// A span of a normalization: [old_begin, old_begin + old_len) became
// [new_begin, new_begin + new_len); `changed` is false where the text was copied.
struct NormEdit {
  size_t old_begin = 0, old_len = 0, new_begin = 0, new_len = 0;
  bool changed = false;
};

// Normalizes valid UTF-8 exactly as the `tokenizers` library does (its Unicode version, see
// normalization_unicode_version). Returns false (and leaves `out` and `edits` empty) when the
// text is already normalized, the common case. Edits cover the input in order; a changed
// edit is the part of a segment that differs (a common prefix and suffix stay unchanged).
bool unicode_normalize(NormForm form, std::string_view in, std::string& out, std::vector<NormEdit>& edits);

uint8_t canonical_combining_class(uint32_t c);  // in the library's Unicode version
const char* normalization_unicode_version();    // of the tables: "9.0" for tokenizers 0.23.3
const char* normalization_tokenizers_version(); // the library version they were read from

}  // namespace odmoe::tokenizer_detail
