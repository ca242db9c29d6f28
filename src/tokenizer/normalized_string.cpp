#include "normalized_string.h"

#include <algorithm>
#include <array>

namespace odmoe::tokenizer_detail {

namespace {

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
// take the code points 256, 257, ... in byte order.
struct ByteLevelTable {
  std::array<uint32_t, 256> cp{};
  std::array<std::string, 256> utf8;
  ByteLevelTable() {
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    uint32_t n = 0;
    for (int b = 0; b < 256; ++b) {
      const auto i = static_cast<size_t>(b);
      cp[i] = printable(b) ? static_cast<uint32_t>(b) : 256 + n++;
      utf8[i] = utf8_encode(cp[i]);
    }
  }
};

const ByteLevelTable& byte_table() {
  static const ByteLevelTable t;
  return t;
}

// Accumulates the n_origin of a rebuilt string: appended runs extend it while every byte so
// far maps to the origin.
struct OriginCounter {
  size_t n = 0;
  bool open = true;
  void add(size_t len, bool at_origin) {
    if (!open || len == 0) return;
    if (at_origin)
      n += len;
    else
      open = false;
  }
};

}  // namespace

const std::string& byte_level_char(unsigned char b) {
  return byte_table().utf8[b];
}

int byte_level_byte(uint32_t c) {
  static const std::array<int16_t, 324> inverse = [] {
    std::array<int16_t, 324> a{};
    a.fill(-1);
    for (size_t b = 0; b < 256; ++b) a[byte_table().cp[b]] = static_cast<int16_t>(b);
    return a;
  }();
  return c < inverse.size() ? inverse[c] : -1;
}

std::vector<Span> spans_from_matches(std::string_view s,
                                     const std::vector<std::pair<size_t, size_t>>& matches) {
  std::vector<Span> out;
  if (s.empty()) {
    out.push_back({0, 0, false});
    return out;
  }
  out.reserve(matches.size() * 2 + 1);
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (prev != b) out.push_back({prev, b, false});
    out.push_back({b, e, true});
    prev = e;
  }
  if (prev != s.size()) out.push_back({prev, s.size(), false});
  return out;
}

NString NString::root(std::string_view s) {
  NString r;
  r.text.assign(s);
  r.at_origin = true;
  r.n_origin = s.empty() ? 0 : utf8_char_len(static_cast<unsigned char>(s[0]));
  return r;
}

NString NString::slice(size_t begin, size_t end) const {
  NString r;
  r.text = text.substr(begin, end - begin);
  r.at_origin = at_origin && begin < n_origin;
  r.n_origin = r.at_origin ? std::min(n_origin, end) - begin : 0;
  return r;
}

void NString::prepend(std::string_view s) {
  if (text.empty()) return;
  text.insert(0, s);
  if (n_origin > 0) n_origin += s.size();
}

void NString::replace(const Pattern& pattern, std::string_view content) {
  const auto matches = pattern.find_all(text);
  if (matches.empty()) return;
  std::string out;
  out.reserve(text.size());
  OriginCounter origin;
  auto copy = [&](size_t b, size_t e) {  // unchanged bytes keep their own alignment
    out.append(text, b, e - b);
    const size_t zero = b < n_origin ? std::min(e, n_origin) - b : 0;
    origin.add(zero, true);
    origin.add(e - b - zero, false);
  };
  size_t last = 0;
  for (const auto& [b, e] : matches) {
    copy(last, b);
    // The inserted text points at the last byte it replaced (or at the origin when it
    // replaced nothing at the very start).
    out.append(content);
    origin.add(content.size(), e == 0 || e - 1 < n_origin);
    last = e;
  }
  copy(last, text.size());
  text = std::move(out);
  n_origin = origin.n;
}

void NString::normalize(NormForm form) {
  std::string out;
  std::vector<NormEdit> edits;
  if (!unicode_normalize(form, text, out, edits)) return;
  OriginCounter origin;
  for (const NormEdit& e : edits) {
    if (e.changed) {
      origin.add(e.new_len, e.old_begin < n_origin);
    } else {
      const size_t zero = e.old_begin < n_origin ? std::min(e.old_len, n_origin - e.old_begin) : 0;
      origin.add(zero, true);
      origin.add(e.old_len - zero, false);
    }
  }
  text = std::move(out);
  n_origin = origin.n;
}

void NString::lowercase() {
  std::string out;
  out.reserve(text.size());
  OriginCounter origin;
  for (size_t i = 0; i < text.size();) {
    size_t len = 0;
    const uint32_t c = utf8_decode(text, i, &len);
    const size_t before = out.size();
    append_lowercase(c, out);
    origin.add(out.size() - before, i < n_origin);
    i += len;
  }
  text = std::move(out);
  n_origin = origin.n;
}

void NString::strip(bool left, bool right) {
  size_t b = 0, e = text.size();
  if (left) {
    while (b < e) {
      size_t len = 0;
      if (!is_white_space(utf8_decode(text, b, &len))) break;
      b += len;
    }
  }
  if (right) {
    while (e > b) {
      size_t s = e - 1;
      while (s > b && (static_cast<unsigned char>(text[s]) & 0xC0) == 0x80) --s;
      size_t len = 0;
      if (!is_white_space(utf8_decode(text, s, &len))) break;
      e = s;
    }
  }
  if (b == 0 && e == text.size()) return;
  n_origin = n_origin > b ? std::min(n_origin, e) - b : 0;
  text = text.substr(b, e - b);
}

void NString::strip_accents() {
  std::string out;
  out.reserve(text.size());
  size_t new_origin = 0;
  for (size_t i = 0; i < text.size();) {
    size_t len = 0;
    const uint32_t c = utf8_decode(text, i, &len);
    if (!is_combining_mark(c)) {
      out.append(text, i, len);
      if (i < n_origin) new_origin += len;
    }
    i += len;
  }
  text = std::move(out);
  n_origin = new_origin;
}

void NString::byte_level_map() {
  std::string out;
  out.reserve(text.size() * 2);
  size_t new_origin = 0;
  const ByteLevelTable& t = byte_table();
  for (size_t i = 0; i < text.size(); ++i) {
    const std::string& c = t.utf8[static_cast<unsigned char>(text[i])];
    out += c;
    if (i < n_origin) new_origin += c.size();
  }
  text = std::move(out);
  n_origin = new_origin;
}

std::vector<NString> split_spans(const NString& s, const std::vector<Span>& spans, SplitBehavior behavior) {
  // (begin, end) of each piece to keep.
  std::vector<std::pair<size_t, size_t>> keep;
  keep.reserve(spans.size());
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Span& sp : spans) keep.emplace_back(sp.begin, sp.end);
      break;
    case SplitBehavior::kRemoved:
      for (const Span& sp : spans)
        if (!sp.is_match) keep.emplace_back(sp.begin, sp.end);
      break;
    case SplitBehavior::kContiguous: {
      bool prev = false;
      for (const Span& sp : spans) {
        if (sp.is_match == prev && !keep.empty())
          keep.back().second = sp.end;
        else
          keep.emplace_back(sp.begin, sp.end);
        prev = sp.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool prev = false;
      for (const Span& sp : spans) {
        if (sp.is_match && !prev && !keep.empty())
          keep.back().second = sp.end;
        else
          keep.emplace_back(sp.begin, sp.end);
        prev = sp.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool prev = false;  // whether the span to the right matched
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !prev && !keep.empty())
          keep.back().first = it->begin;
        else
          keep.emplace_back(it->begin, it->end);
        prev = it->is_match;
      }
      std::reverse(keep.begin(), keep.end());
      break;
    }
  }
  std::vector<NString> out;
  out.reserve(keep.size());
  for (const auto& [b, e] : keep) out.push_back(s.slice(b, e));
  return out;
}

}  // namespace odmoe::tokenizer_detail
