// NFD, NFKD, NFC and NFKC (and StripAccents' marks, Lowercase's mappings) over the
// `tokenizers` library's own Unicode data
// (unicode_norm_tables.inc, read back from the library by
// tests/fixtures/make_normalizer_tables.py), so that odmoe normalizes every code point as the
// library does whatever ICU the machine has. Hangul syllables are (de)composed by the
// algorithm of Unicode section 3.12, as the library does.
//
// The text is cut into segments that normalize independently: a segment starts at each
// character whose decomposition begins with a starter (combining class 0) that cannot
// compose with a character before it. Each segment is decomposed, put in canonical order
// (a stable sort of each run of non-starters by class) and, for NFC and NFKC, composed.
#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <memory>
#include <span>

#include "unicode.h"

namespace odmoe::tokenizer_detail {

namespace {

struct CccRange {
  uint32_t first, last;
  uint8_t ccc;
};
struct MarkRange {
  uint32_t first, last;
};
struct Decomposition {
  uint32_t cp;
  uint32_t offset;  // into kDecompositionPool
  uint32_t len;
};
struct CompositionPair {
  uint32_t first, second, composite;
};

#include "unicode_norm_tables.inc"

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

bool is_hangul_syllable(uint32_t c) {
  return c >= kSBase && c < kSBase + kSCount;
}

// Per code point, 16 bits: the combining class, and flags.
enum : uint16_t {
  kCccMask = 0xFF,
  kHasCanonical = 1u << 8,   // a canonical decomposition (Hangul syllables excepted)
  kHasCompat = 1u << 9,      // a compatibility decomposition other than the canonical one
  kComposesBack = 1u << 10,  // second of a composition pair (or a Hangul V or T jamo)
  kMark = 1u << 11,          // General_Category M to the library (StripAccents)
  kNoBoundary = 1u << 12,    // + form: no segment starts here (bits 12..15)
};

constexpr size_t kBlockBits = 7, kBlockSize = size_t{1} << kBlockBits, kMaxCp = 0x110000;

int form_index(NormForm f) {
  switch (f) {
    case NormForm::kNFD:
      return 0;
    case NormForm::kNFKD:
      return 1;
    case NormForm::kNFC:
      return 2;
    case NormForm::kNFKC:
      return 3;
  }
  return 0;
}
bool is_compat(NormForm f) { return f == NormForm::kNFKD || f == NormForm::kNFKC; }
bool is_composing(NormForm f) { return f == NormForm::kNFC || f == NormForm::kNFKC; }

const Decomposition* find_decomposition(std::span<const Decomposition> table, uint32_t c) {
  auto it = std::lower_bound(table.begin(), table.end(), c, [](const Decomposition& d, uint32_t x) { return d.cp < x; });
  return it != table.end() && it->cp == c ? &*it : nullptr;
}

// A two-level table of the 16-bit properties: blocks of 128 code points, identical blocks
// shared (about 300 distinct blocks).
class Properties {
 public:
  Properties() {
    std::vector<uint16_t> dense(kMaxCp, 0);
    for (const CccRange& r : kCccRanges)
      for (uint32_t c = r.first; c <= r.last; ++c) dense[c] |= r.ccc;
    for (const MarkRange& r : kCombiningMarks)
      for (uint32_t c = r.first; c <= r.last; ++c) dense[c] |= kMark;
    for (const Decomposition& d : kCanonical) dense[d.cp] |= kHasCanonical;
    for (const Decomposition& d : kCompatibility) dense[d.cp] |= kHasCompat;
    for (const CompositionPair& p : kCompositions) dense[p.second] |= kComposesBack;
    for (uint32_t c = kVBase; c < kVBase + kVCount; ++c) dense[c] |= kComposesBack;
    for (uint32_t c = kTBase + 1; c < kTBase + kTCount; ++c) dense[c] |= kComposesBack;
    // A segment cannot start at a character whose decomposition (in each form) begins with a
    // non-starter, or, when composing, with a character that composes with one before it.
    std::vector<uint16_t> flags(dense);
    for (uint32_t c = 0; c < kMaxCp; ++c) {
      if (dense[c] == 0) continue;
      for (NormForm f : {NormForm::kNFD, NormForm::kNFKD, NormForm::kNFC, NormForm::kNFKC}) {
        uint32_t first = c;
        const Decomposition* d = nullptr;
        if (is_compat(f) && (dense[c] & kHasCompat)) d = find_decomposition(kCompatibility, c);
        if (!d && (dense[c] & kHasCanonical)) d = find_decomposition(kCanonical, c);
        if (d) first = kDecompositionPool[d->offset];
        const uint16_t p = dense[first];
        if ((p & kCccMask) != 0 || (is_composing(f) && (p & kComposesBack)))
          flags[c] |= static_cast<uint16_t>(kNoBoundary << form_index(f));
      }
    }
    std::map<std::vector<uint16_t>, uint16_t> seen;
    index_.resize(kMaxCp >> kBlockBits);
    for (size_t b = 0; b < index_.size(); ++b) {
      std::vector<uint16_t> block(flags.begin() + static_cast<long>(b * kBlockSize),
                                  flags.begin() + static_cast<long>((b + 1) * kBlockSize));
      auto [it, fresh] = seen.emplace(block, static_cast<uint16_t>(blocks_.size() / kBlockSize));
      if (fresh) blocks_.insert(blocks_.end(), block.begin(), block.end());
      index_[b] = it->second;
    }
  }
  uint16_t operator()(uint32_t c) const {
    if (c >= kMaxCp) return 0;
    return blocks_[(size_t{index_[c >> kBlockBits]} << kBlockBits) | (c & (kBlockSize - 1))];
  }

 private:
  std::vector<uint16_t> index_, blocks_;
};

const Properties& props() {
  static const Properties p;
  return p;
}

uint8_t ccc_of(uint16_t p) { return static_cast<uint8_t>(p & kCccMask); }

// Appends the full decomposition of c in the form's kind (canonical or compatibility).
void decompose(uint32_t c, bool compat, std::vector<uint32_t>& out) {
  if (is_hangul_syllable(c)) {
    const uint32_t s = c - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  const uint16_t p = props()(c);
  const Decomposition* d = nullptr;
  if (compat && (p & kHasCompat)) d = find_decomposition(kCompatibility, c);
  if (!d && (p & kHasCanonical)) d = find_decomposition(kCanonical, c);
  if (!d) {
    out.push_back(c);
    return;
  }
  out.insert(out.end(), kDecompositionPool + d->offset, kDecompositionPool + d->offset + d->len);
}

// The primary composite of (a, b), or 0.
uint32_t compose_pair(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (is_hangul_syllable(a) && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  const CompositionPair key{a, b, 0};
  auto less = [](const CompositionPair& x, const CompositionPair& y) {
    return x.first != y.first ? x.first < y.first : x.second < y.second;
  };
  auto it = std::lower_bound(std::begin(kCompositions), std::end(kCompositions), key, less);
  return it != std::end(kCompositions) && it->first == a && it->second == b ? it->composite : 0;
}

// Canonical order: each run of non-starters stably sorted by combining class.
void reorder(std::vector<uint32_t>& cps) {
  const Properties& pr = props();
  for (size_t i = 0; i < cps.size();) {
    if (ccc_of(pr(cps[i])) == 0) {
      ++i;
      continue;
    }
    size_t j = i + 1;
    while (j < cps.size() && ccc_of(pr(cps[j])) != 0) ++j;
    if (j - i > 1)
      std::stable_sort(cps.begin() + static_cast<long>(i), cps.begin() + static_cast<long>(j),
                       [&](uint32_t x, uint32_t y) { return ccc_of(pr(x)) < ccc_of(pr(y)); });
    i = j;
  }
}

// Canonical composition of a decomposed, ordered sequence, in place: a character composes
// with the last starter unless a character between them has class 0 or a class >= its own.
void compose(std::vector<uint32_t>& cps) {
  const Properties& pr = props();
  size_t n = 0;  // length of the composed prefix
  bool have_starter = false;
  size_t starter = 0;
  uint8_t last_ccc = 0;
  for (const uint32_t c : cps) {
    const uint8_t ccc = ccc_of(pr(c));
    if (have_starter) {
      const bool adjacent = starter + 1 == n;
      if (adjacent || (last_ccc != 0 && last_ccc < ccc)) {
        if (const uint32_t comp = compose_pair(cps[starter], c)) {
          cps[starter] = comp;
          continue;
        }
      }
    }
    if (ccc == 0) {
      have_starter = true;
      starter = n;
    }
    last_ccc = ccc;
    cps[n++] = c;
  }
  cps.resize(n);
}

// The normalizer's state over one text: segments are normalized into `work` and written
// out (with their edits) only once some segment has changed.
class Run {
 public:
  Run(NormForm form, std::string_view in, std::string& out, std::vector<NormEdit>& edits)
      : form_(form), in_(in), out_(out), edits_(edits), no_boundary_(static_cast<uint16_t>(kNoBoundary << form_index(form))) {}

  bool go() {
    const Properties& pr = props();
    const uint16_t inert_mask = static_cast<uint16_t>(kCccMask | kHasCanonical | no_boundary_ |
                                                      (is_compat(form_) ? kHasCompat : 0));
    size_t i = 0;
    while (i < in_.size()) {
      size_t len = 0;
      const uint32_t c = utf8_decode(in_, i, &len);
      size_t j = i + len;
      // The segment runs to the next character a segment may start at.
      bool simple = (pr(c) & inert_mask) == 0 && !is_hangul_syllable(c);
      while (j < in_.size()) {
        size_t l2 = 0;
        const uint32_t d = static_cast<unsigned char>(in_[j]) < 0x80 ? static_cast<unsigned char>(in_[j]) : utf8_decode(in_, j, &l2);
        if (d < 0x80 || (pr(d) & no_boundary_) == 0) break;
        j += l2;
        simple = false;
      }
      if (!simple) segment(i, j);
      i = j;
    }
    if (!changed_) return false;
    copy_unchanged(in_.size());
    return true;
  }

 private:
  void segment(size_t b, size_t e) {
    src_.clear();
    work_.clear();
    for (size_t i = b; i < e;) {
      size_t len = 0;
      const uint32_t c = utf8_decode(in_, i, &len);
      src_.push_back(c);
      decompose(c, is_compat(form_), work_);
      i += len;
    }
    reorder(work_);
    if (is_composing(form_)) compose(work_);
    if (work_ == src_) return;
    // Only the differing middle is an edit: a common prefix and suffix keep their alignment.
    size_t pre = 0, byte_pre = 0;
    while (pre < src_.size() && pre < work_.size() && src_[pre] == work_[pre]) byte_pre += utf8_encode(src_[pre++]).size();
    size_t suf = 0, byte_suf = 0;
    while (suf < src_.size() - pre && suf < work_.size() - pre &&
           src_[src_.size() - 1 - suf] == work_[work_.size() - 1 - suf]) {
      byte_suf += utf8_encode(src_[src_.size() - 1 - suf]).size();
      ++suf;
    }
    if (!changed_) {
      changed_ = true;
      out_.reserve(in_.size() + in_.size() / 4 + 16);
    }
    copy_unchanged(b + byte_pre);
    NormEdit ed;
    ed.old_begin = b + byte_pre;
    ed.old_len = e - byte_suf - ed.old_begin;
    ed.new_begin = out_.size();
    for (size_t k = pre; k < work_.size() - suf; ++k) utf8_append(out_, work_[k]);
    ed.new_len = out_.size() - ed.new_begin;
    ed.changed = true;
    edits_.push_back(ed);
    clean_from_ = e - byte_suf;
  }

  // Copies the unchanged input [clean_from_, upto) to the output as one unchanged edit.
  void copy_unchanged(size_t upto) {
    if (upto <= clean_from_) return;
    NormEdit ed;
    ed.old_begin = clean_from_;
    ed.old_len = upto - clean_from_;
    ed.new_begin = out_.size();
    ed.new_len = ed.old_len;
    edits_.push_back(ed);
    out_.append(in_, clean_from_, ed.old_len);
    clean_from_ = upto;
  }

  NormForm form_;
  std::string_view in_;
  std::string& out_;
  std::vector<NormEdit>& edits_;
  uint16_t no_boundary_;
  bool changed_ = false;
  size_t clean_from_ = 0;
  std::vector<uint32_t> src_, work_;
};

}  // namespace

bool unicode_normalize(NormForm form, std::string_view in, std::string& out, std::vector<NormEdit>& edits) {
  out.clear();
  edits.clear();
  Run run(form, in, out, edits);
  if (run.go()) return true;
  out.clear();
  edits.clear();
  return false;
}

uint8_t canonical_combining_class(uint32_t c) { return ccc_of(props()(c)); }

bool is_combining_mark(uint32_t c) { return c >= 0x300 && (props()(c) & kMark) != 0; }

void append_lowercase(uint32_t c, std::string& out) {
  if (c < 0x80) {
    out += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    return;
  }
  const Decomposition* d = find_decomposition(kLowercase, c);
  if (!d) {
    utf8_append(out, c);
    return;
  }
  for (uint32_t k = 0; k < d->len; ++k) utf8_append(out, kDecompositionPool[d->offset + k]);
}

const char* normalization_unicode_version() { return kNormUnicodeVersion; }
const char* normalization_tokenizers_version() { return kNormTokenizersVersion; }

}  // namespace odmoe::tokenizer_detail
