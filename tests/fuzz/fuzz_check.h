// Shared by the fuzz targets: what counts as a finding besides a crash or a sanitizer report.
//
// Each target catches exactly the exception types its parser documents (odmoe::Error); any
// other exception escapes LLVMFuzzerTestOneInput, which libFuzzer (and the replay main)
// reports as a crash. ODMOE_FUZZ_REQUIRE turns a broken promise of the API (an invariant the
// header documents) into an abort, which is a finding too.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "odmoe/tokenizer/tokenizer.h"

#define ODMOE_FUZZ_REQUIRE(COND, WHAT)                                                           \
  do {                                                                                            \
    if (!(COND)) {                                                                                \
      std::fprintf(stderr, "fuzz finding: %s (%s:%d: %s)\n", WHAT, __FILE__, __LINE__, #COND);   \
      std::abort();                                                                               \
    }                                                                                             \
  } while (0)

// decode() and StreamDecoder must agree on `ids` and give valid UTF-8 (the tokenizer
// header's promises), whatever the ids.
inline void check_decoding(const odmoe::Tokenizer& tok, const std::vector<int32_t>& ids, bool skip) {
  const std::string text = tok.decode(ids, skip);
  ODMOE_FUZZ_REQUIRE(odmoe::Tokenizer::is_valid_utf8(text), "decode() gave invalid UTF-8");
  odmoe::StreamDecoder stream(tok, skip);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string piece = stream.push(id);
    ODMOE_FUZZ_REQUIRE(odmoe::Tokenizer::is_valid_utf8(piece), "StreamDecoder::push gave invalid UTF-8");
    streamed += piece;
  }
  streamed += stream.flush();
  ODMOE_FUZZ_REQUIRE(streamed == text, "StreamDecoder's pieces differ from decode()");
}
