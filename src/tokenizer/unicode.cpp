#include "unicode.h"

#include <unicode/uchar.h>


namespace odmoe::tokenizer_detail {

uint32_t utf8_decode(std::string_view s, size_t i, size_t* len) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  const size_t n = utf8_char_len(b0);
  *len = n;
  if (n == 1) return b0;
  auto cont = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(s[i + k]) & 0x3F); };
  if (n == 2) return ((b0 & 0x1Fu) << 6) | cont(1);
  if (n == 3) return ((b0 & 0x0Fu) << 12) | (cont(1) << 6) | cont(2);
  return ((b0 & 0x07u) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3);
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

size_t utf8_count(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

namespace {

// Length of the character a lead byte starts, 0 for a byte that cannot start one
// (Rust's utf8_char_width).
size_t lead_width(unsigned char b) {
  if (b < 0x80) return 1;
  if (b < 0xC2) return 0;
  if (b < 0xE0) return 2;
  if (b < 0xF0) return 3;
  if (b < 0xF5) return 4;
  return 0;
}

// Whether `b` may follow lead byte `lead` as its second byte (the first continuation has the
// narrow ranges that exclude overlongs, surrogates and code points above U+10FFFF).
bool second_ok(unsigned char lead, unsigned char b) {
  switch (lead) {
    case 0xE0:
      return b >= 0xA0 && b <= 0xBF;
    case 0xED:
      return b >= 0x80 && b <= 0x9F;
    case 0xF0:
      return b >= 0x90 && b <= 0xBF;
    case 0xF4:
      return b >= 0x80 && b <= 0x8F;
    default:
      return b >= 0x80 && b <= 0xBF;
  }
}

bool is_cont(unsigned char b) {
  return (b & 0xC0) == 0x80;
}

}  // namespace

bool utf8_valid(std::string_view s, size_t* bad_offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const size_t w = lead_width(p[i]);
    bool ok = w != 0 && i + w <= n;
    if (ok) ok = second_ok(p[i], p[i + 1]);
    for (size_t k = 2; ok && k < w; ++k) ok = is_cont(p[i + k]);
    if (!ok) {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    i += w;
  }
  return true;
}

void Utf8LossyDecoder::feed(std::string_view bytes, std::string& out) {
  for (char ch : bytes) {
    const auto b = static_cast<unsigned char>(ch);
    if (n_pending_ > 0) {
      const bool ok = n_pending_ == 1 ? second_ok(pending_[0], b) : is_cont(b);
      if (ok) {
        pending_[n_pending_++] = b;
        if (n_pending_ == n_needed_) {
          out.append(reinterpret_cast<const char*>(pending_), n_pending_);
          n_pending_ = 0;
        }
        continue;
      }
      // The held prefix is cut short: one U+FFFD for it, then `b` starts afresh.
      utf8_append(out, kReplacementChar);
      n_pending_ = 0;
    }
    const size_t w = lead_width(b);
    if (w == 1) {
      out += static_cast<char>(b);
    } else if (w == 0) {
      utf8_append(out, kReplacementChar);
    } else {
      pending_[0] = b;
      n_pending_ = 1;
      n_needed_ = w;
    }
  }
}

void Utf8LossyDecoder::finish(std::string& out) {
  if (n_pending_ > 0) utf8_append(out, kReplacementChar);
  n_pending_ = 0;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  Utf8LossyDecoder d;
  d.feed(bytes, out);
  d.finish(out);
  return out;
}

bool is_white_space(uint32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_WHITE_SPACE);
}

bool is_word_char(uint32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  const auto u = static_cast<UChar32>(c);
  if (u_hasBinaryProperty(u, UCHAR_ALPHABETIC) || u_hasBinaryProperty(u, UCHAR_JOIN_CONTROL)) return true;
  switch (u_charType(u)) {
    case U_NON_SPACING_MARK:
    case U_ENCLOSING_MARK:
    case U_COMBINING_SPACING_MARK:
    case U_DECIMAL_DIGIT_NUMBER:
    case U_CONNECTOR_PUNCTUATION:
      return true;
    default:
      return false;
  }
}

bool is_numeric(uint32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      return true;
    default:
      return false;
  }
}

}  // namespace odmoe::tokenizer_detail
