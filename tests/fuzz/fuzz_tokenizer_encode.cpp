// Fuzz target: what a user's text and a model's sampled ids do to a tokenizer that loaded
// fine, as `odmoe generate` uses it.
//
// Input: byte 0 picks one of the project's real tokenizers (the bundled model's and the
// test fixtures: metaspace with byte fallback, byte-level with NFC/NFKC and split regexes,
// suffix BPE, ...) and the add_special_tokens / skip_special_tokens flags; the rest is the
// prompt, arbitrary bytes. As generate does, the prompt is checked with is_valid_utf8 first
// (compared here with an independent validator); valid text is encoded, and invalid text
// must be refused by encode with an odmoe::Error. The ids encode gives, and the input's
// bytes read as ids (in and around the vocabulary), are decoded, and streamed through a
// StreamDecoder, which must give decode()'s text in valid UTF-8 pieces.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "odmoe/core/error.h"
#include "odmoe/tokenizer/tokenizer.h"

namespace {

// RFC 3629 well-formed UTF-8 (the table of Unicode 15 section 3.9, D92), written apart from
// odmoe's validator so the two can be compared.
bool reference_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    auto in = [&](size_t k, unsigned lo, unsigned hi) {
      if (i + k >= s.size()) return false;
      const auto c = static_cast<unsigned char>(s[i + k]);
      return c >= lo && c <= hi;
    };
    size_t len = 0;
    if (b <= 0x7F) len = 1;
    else if (b >= 0xC2 && b <= 0xDF && in(1, 0x80, 0xBF)) len = 2;
    else if (b == 0xE0 && in(1, 0xA0, 0xBF) && in(2, 0x80, 0xBF)) len = 3;
    else if (((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) && in(1, 0x80, 0xBF) && in(2, 0x80, 0xBF)) len = 3;
    else if (b == 0xED && in(1, 0x80, 0x9F) && in(2, 0x80, 0xBF)) len = 3;
    else if (b == 0xF0 && in(1, 0x90, 0xBF) && in(2, 0x80, 0xBF) && in(3, 0x80, 0xBF)) len = 4;
    else if (b >= 0xF1 && b <= 0xF3 && in(1, 0x80, 0xBF) && in(2, 0x80, 0xBF) && in(3, 0x80, 0xBF)) len = 4;
    else if (b == 0xF4 && in(1, 0x80, 0x8F) && in(2, 0x80, 0xBF) && in(3, 0x80, 0xBF)) len = 4;
    else return false;
    i += len;
  }
  return true;
}

const std::vector<std::unique_ptr<odmoe::Tokenizer>>& tokenizers() {
  static const std::vector<std::unique_ptr<odmoe::Tokenizer>> all = [] {
    const std::string root = ODMOE_SOURCE_DIR;
    const char* const files[] = {
        "weights-tools/models/shakespeare-mixtral/tokenizer.json",
        "tests/data/tokenizer/bytelevel-4k.json",
        "tests/data/tokenizer/bytelevel-flags.json",
        "tests/data/tokenizer/metaspace-flags.json",
        "tests/data/tokenizer/llama-legacy.json",
        "tests/data/tokenizer/gpt2-prefix.json",
        "tests/data/tokenizer/misc.json",
        "tests/data/tokenizer/suffix-bpe.json",
        "tests/data/hf/qwen2_moe/tokenizer.json",
    };
    std::vector<std::unique_ptr<odmoe::Tokenizer>> v;
    for (const char* f : files) {
      try {
        v.push_back(std::make_unique<odmoe::Tokenizer>(odmoe::Tokenizer::from_file(root + "/" + f)));
      } catch (const odmoe::Error& e) {
        std::fprintf(stderr, "fuzz_tokenizer_encode: cannot load %s: %s\n", f, e.to_string().c_str());
        std::abort();
      }
    }
    return v;
  }();
  return all;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto& all = tokenizers();
  const odmoe::Tokenizer& tok = *all[data[0] % all.size()];
  const bool add_special = (data[0] / all.size()) & 1;
  const bool skip_special = (data[0] / all.size()) & 2;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);

  size_t bad = text.size();
  const bool valid = odmoe::Tokenizer::is_valid_utf8(text, &bad);
  ODMOE_FUZZ_REQUIRE(valid == reference_utf8(text), "is_valid_utf8 disagrees with the UTF-8 definition");
  if (!valid) {
    ODMOE_FUZZ_REQUIRE(bad < text.size() && reference_utf8(text.substr(0, bad)) && !reference_utf8(text.substr(bad)),
                       "is_valid_utf8 named the wrong offset");
  }
  std::vector<int32_t> ids;
  try {
    ids = tok.encode(text, add_special);
    ODMOE_FUZZ_REQUIRE(valid, "encode() accepted invalid UTF-8");
  } catch (const odmoe::Error& e) {
    // Refusing invalid UTF-8 is the only failure these tokenizers have.
    ODMOE_FUZZ_REQUIRE(!valid && e.code() == "invalid-utf8", "encode() refused a valid text");
  }
  const int32_t max_id = tok.max_token_id();
  for (int32_t id : ids) ODMOE_FUZZ_REQUIRE(id >= 0 && id <= max_id, "encode() gave an id outside the vocabulary");
  check_decoding(tok, ids, skip_special);

  // The input's bytes as sampled ids: pairs of bytes, spread over the vocabulary and a few
  // ids on either side of it.
  std::vector<int32_t> sampled;
  const int64_t span = int64_t{max_id} + 9;
  for (size_t i = 0; i + 1 < text.size(); i += 2) {
    const auto v = static_cast<int64_t>(static_cast<unsigned char>(text[i]) |
                                        (static_cast<unsigned char>(text[i + 1]) << 8));
    sampled.push_back(static_cast<int32_t>(v % span - 4));
  }
  check_decoding(tok, sampled, skip_special);
  return 0;
}
