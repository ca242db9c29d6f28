// The BPE model of tokenizer.json: a vocabulary and ranked merges, applied to one pre-token
// at a time exactly as the library's Word::merge_all does (lowest rank first, leftmost among
// equal ranks, through a heap with lazily discarded stale entries).
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace odmoe::tokenizer_detail {

// Hash and equality that let unordered_map<std::string, ...> be searched with a string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
struct StringEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const { return a == b; }
};
using Vocab = std::unordered_map<std::string, int32_t, StringHash, StringEq>;

class BpeModel {
 public:
  // Builds the model from the "model" object of tokenizer.json; throws odmoe::Error.
  static BpeModel from_json(const nlohmann::json& model);

  BpeModel() = default;
  BpeModel(BpeModel&& o) noexcept;
  BpeModel& operator=(BpeModel&&) = delete;
  BpeModel(const BpeModel&) = delete;

  // Appends the ids of one pre-token (the library's BPE::tokenize).
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;  // nullptr for an id the vocabulary lacks
  size_t n_vocab() const { return vocab_.size(); }
  int32_t max_id() const { return static_cast<int32_t>(vocab_r_.size()) - 1; }
  size_t n_merges() const { return n_merges_; }

 private:
  struct Merge {
    uint32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const Merge* find_merge(int32_t a, int32_t b) const {
    auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  Vocab vocab_;
  std::vector<std::string> vocab_r_;  // id -> token; "" and !has_id_ for holes
  std::vector<bool> has_id_;
  std::unordered_map<uint64_t, Merge> merges_;  // (left id, right id) -> rank and merged id
  size_t n_merges_ = 0;
  std::optional<std::string> unk_token_;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  int32_t byte_ids_[256];  // id of "<0xXX>" or -1, for byte_fallback

  // Results per pre-token, as the library's cache (words under 256 bytes, bounded count).
  static constexpr size_t kCacheMaxWordBytes = 256;
  static constexpr size_t kCacheCapacity = 1 << 16;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, StringEq> cache_;
};

}  // namespace odmoe::tokenizer_detail
