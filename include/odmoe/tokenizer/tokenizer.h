// Tokenizer for Hugging Face `tokenizer.json` files: gives exactly the ids of the `tokenizers`
// library (developed against 0.23.3) for the tokenizers of the supported architectures.
//
// Supported (anything else is rejected at load time with an odmoe::Error naming it):
//   model           BPE (vocab + merges as "a b" strings or [a, b] pairs, unk_token, fuse_unk,
//                   byte_fallback, ignore_merges, continuing_subword_prefix, end_of_word_suffix;
//                   dropout must be null or 0: it makes encoding random)
//   normalizer      NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Prepend, Replace,
//                   ByteLevel, Sequence
//   pre_tokenizer   ByteLevel, Metaspace, Split, Digits, Sequence
//   post_processor  TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence
//   decoder         ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, BPEDecoder, Sequence
//   added tokens    special or not, with their single_word / lstrip / rstrip / normalized flags
// Not supported: WordPiece, WordLevel and Unigram models, Bert/Precompiled/Nmt normalizers,
// the Whitespace/Punctuation/... pre-tokenizers, truncation and padding (ignored: the engine
// never pads or truncates a prompt).
//
// Text is UTF-8. A Python str cannot hold invalid UTF-8, so the library never sees it; odmoe
// rejects a prompt that is not valid UTF-8 with an error naming the first bad byte instead of
// guessing (see is_valid_utf8). Regexes run on PCRE2, rewritten where Oniguruma (what the
// library uses) differs (\s, \w, \h).
//
// Unicode versions, part by part (tokenizers 0.23.3; Debian 12 has PCRE2 10.42, ICU 72):
//   NFC, NFD, NFKC, NFKD   Unicode 9.0, the library's own (its unicode-normalization-alignments
//   StripAccents           crate), read back from the library into tables compiled into odmoe
//                          (tests/fixtures/make_normalizer_tables.py): the same output for every
//                          code point whatever ICU is installed. Code points Unicode 9.0 did not
//                          assign pass through unchanged as starters (class 0, no mapping), as
//                          in the library.
//   Lowercase              the library's Rust char::to_lowercase (Unicode 16.0), read back the
//                          same way.
//   Split regexes          PCRE2's tables (10.42: Unicode 14.0) where the library's Oniguruma
//                          has Unicode 16.0: characters assigned in Unicode 15.0-16.0 fall
//                          outside \p{L}, \p{N}, ... and may split differently.
//   Digits, \s \w \h,      ICU's tables (72: Unicode 15.0) where the library has Rust's std
//   Strip                  (Unicode 16.0): digits and letters assigned in 16.0 differ.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace odmoe {

namespace tokenizer_detail {
struct TokenizerImpl;
class DecoderState;
}  // namespace tokenizer_detail

// A token from the `added_tokens` list of tokenizer.json, with the id the library gives it.
struct AddedTokenInfo {
  int32_t id = 0;
  std::string content;
  bool special = false;
};

class Tokenizer {
 public:
  // Parses a tokenizer.json document. Throws odmoe::Error (kTokenizer) with a message naming
  // the offending part on malformed input or on a component odmoe does not implement.
  static Tokenizer from_json(const std::string& tokenizer_json_text);
  // Reads and parses a file; errors name the path.
  static Tokenizer from_file(const std::string& path);

  // Like tokenizers' Tokenizer.encode(text, add_special_tokens=...).ids. Throws odmoe::Error
  // (kTokenizer, "invalid-utf8") naming the byte offset when `text` is not valid UTF-8.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;

  // Like tokenizers' Tokenizer.decode(ids, skip_special_tokens=...). Ids the vocabulary does
  // not know are skipped, as the library does.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = true) const;

  // get_vocab_size(with_added_tokens=True): the model's vocabulary plus the added tokens it
  // does not already contain. The largest id may be larger (see max_token_id).
  int32_t vocab_size() const;
  int32_t max_token_id() const;  // the largest id any token has; -1 for an empty vocabulary
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::string id_to_token(int32_t id) const;  // "" for an unknown id
  bool is_special(int32_t id) const;          // an added token marked special

  const std::vector<AddedTokenInfo>& added_tokens() const;
  // The token the post-processor puts before the text (Llama/Mixtral "<s>"), if any.
  std::optional<int32_t> bos_id() const;
  // The token the post-processor puts after the text, else the first special added token
  // among "</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>". A model's
  // generation_config.json eos_token_id takes precedence over this guess.
  std::optional<int32_t> eos_id() const;

  // Checks UTF-8 as Rust's str does (no overlongs, surrogates or code points above U+10FFFF).
  // On failure stores the offset of the first byte of the first bad sequence in *bad_offset.
  static bool is_valid_utf8(std::string_view text, size_t* bad_offset = nullptr);

  // One line for logs: model type, vocabulary size and the pipeline's components.
  std::string to_string() const;

 private:
  friend class StreamDecoder;
  explicit Tokenizer(std::shared_ptr<const tokenizer_detail::TokenizerImpl> impl);
  std::shared_ptr<const tokenizer_detail::TokenizerImpl> impl_;
};

// Turns generated ids into text as they come. push() returns the text that the new id
// completes; text that later ids may still change (an incomplete UTF-8 sequence, an open run
// of <0xXX> byte-fallback tokens, trailing characters a Strip decoder may remove) is held
// back. The concatenation of every push() and the final flush() equals
// Tokenizer::decode(all ids, skip_special_tokens), and every returned piece is valid UTF-8.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = true);
  StreamDecoder(StreamDecoder&&) noexcept;
  StreamDecoder& operator=(StreamDecoder&&) noexcept;
  StreamDecoder(const StreamDecoder&) = delete;
  StreamDecoder& operator=(const StreamDecoder&) = delete;
  ~StreamDecoder();

  std::string push(int32_t id);
  // Emits what was held back; the decoder then starts over as for a new sequence.
  std::string flush();

 private:
  std::shared_ptr<const tokenizer_detail::TokenizerImpl> impl_;
  bool skip_special_tokens_;
  std::unique_ptr<tokenizer_detail::DecoderState> state_;
};

}  // namespace odmoe
