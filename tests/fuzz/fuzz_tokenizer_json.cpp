// Fuzz target: a tokenizer.json file, as `odmoe-weights convert` copies it from a checkpoint
// and the engine loads it from model.h5.
//
// Input: the JSON text. Tokenizer::from_json parses it; a tokenizer it accepts must then
// work: it encodes a few fixed texts (short, so a fuzzed split regex cannot backtrack for
// long) and its own added tokens, decodes what it encoded and a range of ids around its
// vocabulary, and streams the same ids through a StreamDecoder, which must give the same
// text as decode(). Expected failures: odmoe::Error only (loading, and an encode that
// meets an unknown character whose unk_token is missing, or a regex that gives up).
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "odmoe/core/error.h"
#include "odmoe/tokenizer/tokenizer.h"

namespace {

const char* const kSamples[] = {
    "",
    "Hello, world! It's 2024.",
    "  leading and trailing spaces \t\n",
    "caf\xc3\xa9 na\xc3\xafve e\xcc\x81 \xef\xac\x81 \xe2\x84\xa2",             // accents, NFC/NFKC material
    "\xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd \xd8\xb9\xd8\xb1",  // CJK, emoji, Arabic
    "<s> </s> <unk> <|endoftext|> <|im_start|>user",
    "ROMEO:\nBut soft, what light through yonder window breaks?",
    "12345 678.9 0x1F ___ ---",
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::optional<odmoe::Tokenizer> tok;
  try {
    tok.emplace(odmoe::Tokenizer::from_json(text));
  } catch (const odmoe::Error&) {
    return 0;
  }
  const int32_t max_id = tok->max_token_id();
  ODMOE_FUZZ_REQUIRE(max_id >= -1, "max_token_id() below -1");
  (void)tok->to_string();
  (void)tok->vocab_size();
  (void)tok->bos_id();
  (void)tok->eos_id();

  std::vector<std::string> texts(std::begin(kSamples), std::end(kSamples));
  for (size_t i = 0; i < tok->added_tokens().size() && i < 8; ++i)
    texts.push_back("x " + tok->added_tokens()[i].content + " y");
  for (const std::string& t : texts) {
    for (bool add_special : {true, false}) {
      std::vector<int32_t> ids;
      try {
        ids = tok->encode(t, add_special);
      } catch (const odmoe::Error&) {
        continue;
      }
      for (int32_t id : ids) ODMOE_FUZZ_REQUIRE(id >= 0 && id <= max_id, "encode() gave an id outside the vocabulary");
      for (bool skip : {true, false}) check_decoding(*tok, ids, skip);
    }
  }
  // Ids the model may sample, and some it cannot (decode skips unknown ids).
  std::vector<int32_t> ids;
  for (int64_t id = -2; id <= int64_t{max_id} + 2 && id < 300; ++id) ids.push_back(static_cast<int32_t>(id));
  for (int64_t id = int64_t{max_id} - 16; id <= max_id; ++id)
    if (id >= 300) ids.push_back(static_cast<int32_t>(id));
  for (bool skip : {true, false}) check_decoding(*tok, ids, skip);
  for (size_t i = 0; i < ids.size() && i < 64; ++i) {
    (void)tok->id_to_token(ids[i]);
    (void)tok->is_special(ids[i]);
  }
  return 0;
}
