// The normalizer, pre-tokenizer and post-processor of tokenizer.json: each parsed once into
// a small object and applied per encode call with the library's semantics.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "normalized_string.h"

namespace odmoe::tokenizer_detail {

// A piece of the input: text still to be tokenized, or an added token already found
// (id >= 0), which later stages pass through untouched.
struct Piece {
  NString s;
  int32_t id = -1;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(NString& s) const = 0;
  virtual std::string describe() const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
  virtual std::string describe() const = 0;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Adds the special tokens of a single sequence (when add_special_tokens).
  virtual void process(std::vector<int32_t>& ids, bool add_special_tokens) const = 0;
  virtual std::optional<int32_t> bos_id() const { return std::nullopt; }  // the token put before the text
  virtual std::optional<int32_t> eos_id() const { return std::nullopt; }  // the token put after it
  virtual std::string describe() const = 0;
};

// Each parser takes the JSON value (not null) and its path for error messages, and throws
// odmoe::Error (kTokenizer) on anything malformed or unsupported.
std::unique_ptr<Normalizer> parse_normalizer(const nlohmann::json& j, const std::string& where,
                                             int depth = 0);
std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const nlohmann::json& j, const std::string& where,
                                                  int depth = 0);
std::unique_ptr<PostProcessor> parse_post_processor(const nlohmann::json& j, const std::string& where,
                                                    int depth = 0);

}  // namespace odmoe::tokenizer_detail
