// NFD, NFC, NFKD, NFKC, StripAccents and Lowercase against the `tokenizers` library, code
// point by code point: tests/data/tokenizer/normalizer_golden.txt
// (tests/fixtures/make_normalizer_tables.py) holds, for every form and context (alone; before,
// after and between marks of other classes; after the base a code point composes with; ...),
// a count and hash of the outputs that differ from the input per block of code points. Every
// case is normalized here and compared; nothing depends on the ICU installed. Then
// hand-picked cases where ICU's newer Unicode differs from the library's, Hangul, offsets,
// and long inputs.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "../src/tokenizer/normalized_string.h"  // the tokenizer's internals under test
#include "test_util.h"
#include "../src/tokenizer/unicode.h"

namespace odmoe::tokenizer_detail {
namespace {

struct Golden {
  uint32_t block = 0;
  std::map<std::string, std::pair<std::string, std::string>> contexts;  // name -> (prefix, suffix)
  std::vector<std::string> context_order;
  std::map<uint32_t, uint32_t> base, partner;
  // (form, context, block start) -> (count, hash)
  std::map<std::tuple<std::string, std::string, uint32_t>, std::pair<size_t, uint64_t>> blocks;
};

uint32_t hex(const std::string& s) { return static_cast<uint32_t>(std::stoul(s, nullptr, 16)); }

std::string cps_hex(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    size_t len = 0;
    char buf[16];
    std::snprintf(buf, sizeof buf, "%s%04X", out.empty() ? "" : " ", utf8_decode(s, i, &len));
    out += buf;
    i += len;
  }
  return out;
}

// A context's prefix or suffix: "-", or comma-separated hex code points and "base"/"partner".
std::string decode_affix(const std::string& field) {
  if (field == "-") return "";
  std::string out;
  std::stringstream ss(field);
  for (std::string w; std::getline(ss, w, ',');) {
    if (w == "base" || w == "partner")
      out += "\x01" + w + "\x01";
    else
      utf8_append(out, hex(w));
  }
  return out;
}

Golden load_golden() {
  const std::string path = test::data_dir() + "/tokenizer/normalizer_golden.txt";
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  Golden g;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    std::stringstream ss(line);
    std::string kind;
    ss >> kind;
    if (kind == "#") {
      std::string w;
      if (ss >> w && w == "block") ss >> g.block;
    } else if (kind == "context") {
      std::string name, pre, suf;
      ss >> name >> pre >> suf;
      g.contexts[name] = {decode_affix(pre), decode_affix(suf)};
      g.context_order.push_back(name);
    } else if (kind == "base" || kind == "partner") {
      std::string c, v;
      ss >> c >> v;
      (kind == "base" ? g.base : g.partner)[hex(c)] = hex(v);
    } else {
      std::string ctx, start, hash;
      size_t n = 0;
      ss >> ctx >> start >> n >> hash;
      g.blocks[{kind, ctx, hex(start)}] = {n, std::stoull(hash, nullptr, 16)};
    }
  }
  return g;
}

std::string fill(std::string affix, const std::string& key, uint32_t v) {
  const std::string marker = "\x01" + key + "\x01";
  for (size_t at; (at = affix.find(marker)) != std::string::npos;) affix.replace(at, marker.size(), utf8_encode(v));
  return affix;
}

uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001B3ull;
  return h;
}

std::vector<uint32_t> code_points(bool all) {
  std::vector<uint32_t> out;
  auto add = [&](uint32_t a, uint32_t b) {
    for (uint32_t c = a; c < b; ++c)
      if ((c < 0xD800 || c > 0xDFFF) && c != '\n') out.push_back(c);
  };
  if (all) {
    add(0, 0x110000);
  } else {
    add(0, 0x40000);
    add(0xE0000, 0xE1000);
  }
  return out;
}

// Normalizes the cases joined by "\n" (a starter that composes with nothing) as the script
// has the library do, through NString as the tokenizer does; returns each case's output.
std::vector<std::string> run_form(const std::string& form, const std::vector<std::string>& cases) {
  std::string joined;
  for (const std::string& c : cases) (joined += c) += '\n';
  joined.pop_back();
  NString s = NString::root(joined);
  if (form == "StripAccents") {
    s.strip_accents();
  } else if (form == "Lowercase") {
    s.lowercase();
  } else {
    const NormForm f = form == "NFD" ? NormForm::kNFD : form == "NFC" ? NormForm::kNFC : form == "NFKD" ? NormForm::kNFKD : NormForm::kNFKC;
    s.normalize(f);
  }
  std::vector<std::string> out;
  std::stringstream ss(s.text);
  for (std::string line; std::getline(ss, line, '\n');) out.push_back(line);
  if (!s.text.empty() && s.text.back() == '\n') out.push_back("");
  return out;
}

TEST(TokenizerNormalizer, EveryCodePointInEveryContextMatchesTheLibrary) {
  const Golden g = load_golden();
  ASSERT_GT(g.block, 0u);
  ASSERT_EQ(g.context_order.size(), 14u);
  ASSERT_GT(g.base.size(), 50u);
  const std::vector<uint32_t> all = code_points(true), ctx = code_points(false);
  size_t n_cases = 0, n_changed = 0, failures = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (const std::string form : {"NFD", "NFC", "NFKD", "NFKC", "StripAccents", "Lowercase"}) {
    for (const std::string& name : g.context_order) {
      if ((form == "StripAccents" || form == "Lowercase") && name != "alone") continue;
      const auto& [pre, suf] = g.contexts.at(name);
      const std::vector<uint32_t>& cps = name == "alone" ? all : ctx;
      std::vector<std::string> cases;
      cases.reserve(cps.size());
      for (uint32_t c : cps)
        cases.push_back(fill(pre, "base", g.base.count(c) ? g.base.at(c) : 0x61) + utf8_encode(c) +
                        fill(suf, "partner", g.partner.count(c) ? g.partner.at(c) : 0x345));
      const std::vector<std::string> outs = run_form(form, cases);
      ASSERT_EQ(outs.size(), cases.size()) << form << " " << name;
      // Per block: count and hash of the changed cases, and the first few for the report.
      std::map<uint32_t, std::pair<size_t, uint64_t>> got;
      std::map<uint32_t, std::string> shown;
      for (size_t i = 0; i < cases.size(); ++i) {
        ++n_cases;
        if (outs[i] == cases[i]) continue;
        ++n_changed;
        const uint32_t blk = cps[i] / g.block * g.block;
        auto& [n, h] = got.try_emplace(blk, 0, 0xCBF29CE484222325ull).first->second;
        ++n;
        const unsigned char le[4] = {static_cast<unsigned char>(cps[i]), static_cast<unsigned char>(cps[i] >> 8),
                                     static_cast<unsigned char>(cps[i] >> 16), 0};
        h = fnv1a(h, le, 4);
        h = fnv1a(h, outs[i].data(), outs[i].size());
        h = fnv1a(h, "\xff", 1);
        if (std::count(shown[blk].begin(), shown[blk].end(), '\n') < 8)
          shown[blk] += "\n    " + cps_hex(cases[i]) + " -> " + cps_hex(outs[i]);
      }
      std::map<uint32_t, std::pair<size_t, uint64_t>> want;
      for (const auto& [key, v] : g.blocks)
        if (std::get<0>(key) == form && std::get<1>(key) == name) want[std::get<2>(key)] = v;
      for (const auto& [blk, v] : want) {
        if (got.count(blk) && got.at(blk) == v) continue;
        ++failures;
        ADD_FAILURE() << form << " " << name << " block " << std::hex << blk << ": library changes " << std::dec
                      << v.first << " cases, odmoe " << (got.count(blk) ? got.at(blk).first : 0)
                      << " (or differently); odmoe's first changes:" << shown[blk]
                      << "\n  (the library's: tests/fixtures/make_normalizer_tables.py --explain HEX)";
      }
      for (const auto& [blk, v] : got)
        if (!want.count(blk)) {
          ++failures;
          ADD_FAILURE() << form << " " << name << " block " << std::hex << blk << std::dec
                        << ": the library leaves every case alone, odmoe changes " << v.first << ":" << shown[blk];
        }
      if (failures > 20) GTEST_FAIL() << "stopping after 20 failing blocks";
    }
  }
  std::printf("%zu cases, %zu changed by normalization, %.1f s\n", n_cases, n_changed,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  EXPECT_GT(n_changed, 100000u);
}

std::string norm(NormForm f, const std::string& s) {
  std::string out;
  std::vector<NormEdit> edits;
  return unicode_normalize(f, s, out, edits) ? out : s;
}

// Marks Unicode 10-14 assigned are unknown to the library (Unicode 9.0): starters that pass
// through unchanged and block composition, whatever the ICU on the machine says.
TEST(TokenizerNormalizer, MarksNewerThanTheLibrarysUnicodeAreStartersThatPassThrough) {
  EXPECT_STREQ(normalization_unicode_version(), "9.0");
  for (NormForm f : {NormForm::kNFC, NormForm::kNFKC, NormForm::kNFD, NormForm::kNFKD}) {
    EXPECT_EQ(norm(f, "a\u07FD\u0301"), "a\u07FD\u0301");          // NKo dantayalan (11.0)
    EXPECT_EQ(norm(f, "e\u1DF6\u0301"), "e\u1DF6\u0301");          // combining supplement (10.0)
    EXPECT_EQ(norm(f, "a\u1DFA\u0301"), "a\u1DFA\u0301");          // (14.0)
    EXPECT_EQ(norm(f, "\u0316\U00011943"), "\u0316\U00011943");    // Dives Akuru (13.0)
    EXPECT_EQ(norm(f, "\U00011943\u0301"), "\U00011943\u0301");
  }
  EXPECT_EQ(canonical_combining_class(0x07FD), 0);
  EXPECT_EQ(canonical_combining_class(0x0316), 220);
  EXPECT_FALSE(is_combining_mark(0x1DFA));
  EXPECT_TRUE(is_combining_mark(0x1AB0));  // Unicode 7.0
  std::string lower;
  append_lowercase(0x10D50, lower);  // Garay (Unicode 16.0): the library's Rust std knows it
  append_lowercase(0x130, lower);    // İ: the full mapping, i + U+0307
  EXPECT_EQ(lower, "\U00010D70i\u0307");
}

TEST(TokenizerNormalizer, KnownCompositionsDecompositionsAndHangul) {
  EXPECT_EQ(norm(NormForm::kNFC, "e\u0301"), "\u00E9");
  EXPECT_EQ(norm(NormForm::kNFD, "\u00C5\u0316"), "A\u0316\u030A");
  EXPECT_EQ(norm(NormForm::kNFC, "\u00C5\u0316"), "\u00C5\u0316");
  EXPECT_EQ(norm(NormForm::kNFC, "\u1E0B\u0323"), "\u1E0D\u0307");
  EXPECT_EQ(norm(NormForm::kNFC, "\uFB2C"), "\u05E9\u05BC\u05C1");  // composition exclusion
  EXPECT_EQ(norm(NormForm::kNFC, "\u0344"), "\u0308\u0301");        // non-starter decomposition
  EXPECT_EQ(norm(NormForm::kNFC, "\u1100\u1161\u11A8"), "\uAC01");
  EXPECT_EQ(norm(NormForm::kNFD, "\uAC01"), "\u1100\u1161\u11A8");
  EXPECT_EQ(norm(NormForm::kNFC, "\uAC00\u11A7"), "\uAC00\u11A7");  // U+11A7 is no T jamo
  EXPECT_EQ(norm(NormForm::kNFKC, "\u1100\uFFC2"), "\uAC00");       // a compatibility V jamo composes
  EXPECT_EQ(norm(NormForm::kNFKC, "\uFDFA").size(), 33u);
  std::string out;
  std::vector<NormEdit> edits;
  EXPECT_FALSE(unicode_normalize(NormForm::kNFC, "plain ascii and caf\u00E9", out, edits));
  EXPECT_TRUE(out.empty() && edits.empty());
}

// Edits cover the input in order; a segment's common prefix and suffix stay unchanged, so
// where text came from (Metaspace "first") is kept as the library keeps it.
TEST(TokenizerNormalizer, EditsCoverTheInputAndKeepUnchangedParts) {
  const std::string in = "x a\u0301\u0316 e\u0301 \uFB01n";
  std::string out;
  std::vector<NormEdit> edits;
  ASSERT_TRUE(unicode_normalize(NormForm::kNFKC, in, out, edits));
  EXPECT_EQ(out, "x \u00E1\u0316 \u00E9 fin");
  size_t old_at = 0, new_at = 0;
  for (const NormEdit& e : edits) {
    EXPECT_EQ(e.old_begin, old_at);
    EXPECT_EQ(e.new_begin, new_at);
    EXPECT_EQ(in.substr(e.old_begin, e.old_len) == out.substr(e.new_begin, e.new_len), !e.changed);
    old_at += e.old_len;
    new_at += e.new_len;
  }
  EXPECT_EQ(old_at, in.size());
  EXPECT_EQ(new_at, out.size());
  // The reordered marks after an unchanged 'a': only the marks change.
  ASSERT_TRUE(unicode_normalize(NormForm::kNFD, "a\u0301\u0316", out, edits));
  ASSERT_EQ(edits.size(), 2u);
  EXPECT_FALSE(edits[0].changed);
  EXPECT_EQ(edits[0].old_len, 1u);
  EXPECT_TRUE(edits[1].changed);
  // Where the first character's decomposition points: at the origin.
  NString s = NString::root("\uFDFAx");
  s.normalize(NormForm::kNFKC);
  EXPECT_EQ(s.n_origin, 33u);
}

// 1 MB inputs: ordinary text, and pathological runs of marks (sorted in n log n).
TEST(TokenizerNormalizer, LongInputs) {
  std::string text;
  while (text.size() < (1u << 20)) text += "Caf\u00E9 cre\u0300me bru\u0302le\u0301e, \uAC00\uB098\u1100\u1161 \uFB01 ";
  std::string marks = "a";
  while (marks.size() < (1u << 20)) marks += "\u0301\u0316\u0334\u0345";
  for (NormForm f : {NormForm::kNFC, NormForm::kNFD, NormForm::kNFKC, NormForm::kNFKD}) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string a = norm(f, text), b = norm(f, marks);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("form %d: 2 MB in %.3f s\n", static_cast<int>(f), secs);
    EXPECT_EQ(norm(f, a), a);  // idempotent
    EXPECT_EQ(norm(f, b), b);
    EXPECT_LT(secs, 30.0);
  }
  const std::string b = norm(NormForm::kNFC, marks);
  EXPECT_EQ(b.substr(0, 6), "\u00E1\u0334\u0334");  // class 1s, 220s, 230s (the first composes), 240s
}

}  // namespace
}  // namespace odmoe::tokenizer_detail
