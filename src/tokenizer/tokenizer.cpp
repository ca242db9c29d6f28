#include "odmoe/tokenizer/tokenizer.h"

#include <array>
#include <fstream>
#include <map>
#include <new>
#include <sstream>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "bpe.h"
#include "decoder.h"
#include "json_util.h"
#include "pipeline.h"

namespace odmoe {
namespace tokenizer_detail {

namespace {

struct AddedToken {
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
  bool operator==(const AddedToken&) const = default;
};

// Byte trie of added tokens, searched leftmost-longest (the library's daachorse
// MatchKind::LeftmostLongest): the match that starts first, the longest of those.
class TokenTrie {
 public:
  struct Match {
    size_t begin, end;
    int32_t id;
  };
  bool empty() const { return n_patterns_ == 0; }
  void add(std::string_view pattern, int32_t id) {
    if (pattern.empty()) return;
    if (value_.empty()) value_.push_back(-1);
    int32_t node = 0;
    for (char ch : pattern) {
      const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(ch);
      auto it = edges_.find(key);
      if (it == edges_.end()) {
        const auto child = static_cast<int32_t>(value_.size());
        value_.push_back(-1);
        it = edges_.emplace(key, child).first;
      }
      node = it->second;
    }
    value_[static_cast<size_t>(node)] = id;
    first_[static_cast<unsigned char>(pattern[0])] = true;
    ++n_patterns_;
  }
  std::vector<Match> find_all(std::string_view s) const {
    std::vector<Match> out;
    if (empty()) return out;
    size_t pos = 0;
    while (pos < s.size()) {
      if (!first_[static_cast<unsigned char>(s[pos])]) {
        ++pos;
        continue;
      }
      int32_t node = 0, best_id = -1;
      size_t best_end = 0;
      for (size_t k = pos; k < s.size(); ++k) {
        auto it = edges_.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(s[k]));
        if (it == edges_.end()) break;
        node = it->second;
        if (value_[static_cast<size_t>(node)] >= 0) {
          best_id = value_[static_cast<size_t>(node)];
          best_end = k + 1;
        }
      }
      if (best_id < 0) {
        ++pos;
        continue;
      }
      out.push_back({pos, best_end, best_id});
      pos = best_end;
    }
    return out;
  }

 private:
  std::vector<int32_t> value_;                   // per node: the id of the token ending here, or -1
  std::unordered_map<uint64_t, int32_t> edges_;  // (node << 8 | byte) -> child
  std::array<bool, 256> first_{};
  size_t n_patterns_ = 0;
};

// The character before `end` / at `begin` of a string, for the single_word test.
bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t b = s.size() - 1;
  while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
  size_t len = 0;
  return is_word_char(utf8_decode(s, b, &len));
}
bool starts_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t len = 0;
  return is_word_char(utf8_decode(s, 0, &len));
}
// Start of the run of whitespace that ends `s` (the library's `\s*$` match).
size_t trailing_space_start(std::string_view s) {
  size_t e = s.size();
  while (e > 0) {
    size_t b = e - 1;
    while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
    size_t len = 0;
    if (!is_white_space(utf8_decode(s, b, &len))) break;
    e = b;
  }
  return e;
}
// Length of the run of whitespace that starts `s` (the library's `^\s*` match).
size_t leading_space_len(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t len = 0;
    if (!is_white_space(utf8_decode(s, i, &len))) break;
    i += len;
  }
  return i;
}

}  // namespace

struct TokenizerImpl {
  explicit TokenizerImpl(BpeModel m) : model(std::move(m)) {}

  BpeModel model;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<PostProcessor> post_processor;
  DecoderChain decoder;

  // The added vocabulary, as the library's AddedVocabulary builds it.
  Vocab added_ids;                             // content -> id
  std::map<int32_t, AddedToken> added_tokens;  // id -> token
  std::unordered_map<int32_t, std::string>
      normalized_form;  // id -> content after the normalizer, if different
  std::unordered_set<std::string> special_contents;
  TokenTrie raw_trie;         // tokens matched before normalization (normalized: false)
  TokenTrie normalized_trie;  // tokens matched in normalized text (normalized: true)

  std::vector<AddedTokenInfo> added_info;
  int32_t vocab_size = 0;
  int32_t max_id = -1;
  std::optional<int32_t> bos, eos;

  void load_added_tokens(const json* list);
  // Cuts the pieces still to be tokenized along the added tokens `trie` finds (the library's
  // AddedVocabulary::find_matches and split_with_indices).
  void extract_added(std::vector<Piece>& pieces, const TokenTrie& trie, bool normalize_first) const;
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;
  const std::string* token_string(int32_t id) const;
  bool skip(const std::string& token, bool skip_special) const {
    return skip_special && special_contents.count(token) > 0;
  }
};

void TokenizerImpl::load_added_tokens(const json* list) {
  std::vector<AddedToken> tokens;
  if (list) {
    ODMOE_CHECK(list->is_array(), kTokenizer, "field-type", "added_tokens must be an array", "");
    for (size_t i = 0; i < list->size(); ++i) {
      const std::string at = "added_tokens[" + std::to_string(i) + "]";
      const json& t = (*list)[i];
      ODMOE_CHECK(t.is_object(), kTokenizer, "field-type", at << " must be an object", "");
      get_uint(require_field(t, "id", at), at + ".id", static_cast<uint64_t>(INT32_MAX));
      AddedToken a;
      a.content = get_string(t, "content", at);
      a.special = get_bool(t, "special", at, false);
      a.single_word = get_bool(t, "single_word", at, false);
      a.lstrip = get_bool(t, "lstrip", at, false);
      a.rstrip = get_bool(t, "rstrip", at, false);
      a.normalized = get_bool(t, "normalized", at, !a.special);
      tokens.push_back(std::move(a));
    }
  }
  // The library ignores the ids written in the file: a token the vocabulary has takes that
  // id, the others take the next ids after the model's vocabulary.
  auto next_id = static_cast<int64_t>(model.n_vocab());
  for (AddedToken& t : tokens) {
    if (t.content.empty()) continue;
    if (auto it = added_ids.find(t.content); it != added_ids.end()) {
      auto same = added_tokens.find(it->second);
      if (same != added_tokens.end() && same->second == t) continue;
    }
    int64_t id;
    if (auto it = added_ids.find(t.content); it != added_ids.end())
      id = it->second;
    else if (auto m = model.token_to_id(t.content))
      id = *m;
    else
      id = next_id++;
    ODMOE_CHECK(id <= INT32_MAX, kTokenizer, "field-range",
                "added token '" << t.content << "' would get id " << id, "");
    const auto id32 = static_cast<int32_t>(id);
    if (t.normalized && normalizer) {
      NString s = NString::root(t.content);
      normalizer->normalize(s);
      if (s.text != t.content) normalized_form[id32] = s.text;
    }
    added_ids[t.content] = id32;
    if (t.special) special_contents.insert(t.content);
    added_tokens[id32] = std::move(t);
  }
  for (const auto& [id, t] : added_tokens) {
    if (t.normalized) {
      auto nf = normalized_form.find(id);
      normalized_trie.add(nf == normalized_form.end() ? t.content : nf->second, id);
    } else {
      raw_trie.add(t.content, id);
    }
    added_info.push_back(AddedTokenInfo{id, t.content, t.special});
  }
}

void TokenizerImpl::extract_added(std::vector<Piece>& pieces, const TokenTrie& trie,
                                  bool normalize_first) const {
  std::vector<Piece> out;
  out.reserve(pieces.size() + 4);
  for (Piece& p : pieces) {
    if (p.id >= 0) {
      out.push_back(std::move(p));
      continue;
    }
    if (normalize_first && normalizer) normalizer->normalize(p.s);
    const std::string& text = p.s.text;
    size_t start_offset = 0;
    auto emit = [&](size_t b, size_t e, int32_t id) {
      if (e > b) out.push_back(Piece{p.s.slice(b, e), id});
    };
    for (const TokenTrie::Match& m : trie.find_all(text)) {
      size_t start = m.begin, stop = m.end;
      const AddedToken& tok = added_tokens.at(m.id);
      if (tok.single_word) {
        const bool start_space = start == 0 || !ends_with_word(std::string_view(text).substr(0, start));
        const bool stop_space = stop == text.size() || !starts_with_word(std::string_view(text).substr(stop));
        if (!start_space || !stop_space) continue;
      }
      if (tok.lstrip)
        start = std::max(trailing_space_start(std::string_view(text).substr(0, start)), start_offset);
      if (tok.rstrip) stop += leading_space_len(std::string_view(text).substr(stop));
      if (start_offset < start) emit(start_offset, start, -1);
      emit(start, stop, m.id);
      start_offset = stop;
    }
    // Always a fresh slice, even of the whole piece: slicing is what re-anchors a piece's
    // original offset after normalization (Metaspace "first" reads it).
    if (start_offset < text.size()) emit(start_offset, text.size(), -1);
  }
  pieces = std::move(out);
}

std::vector<int32_t> TokenizerImpl::encode(std::string_view text, bool add_special_tokens) const {
  size_t bad = 0;
  if (!utf8_valid(text, &bad)) {
    ODMOE_THROW(kTokenizer, "invalid-utf8",
                "the text is not valid UTF-8: byte 0x"
                    << std::hex << static_cast<int>(static_cast<unsigned char>(text[bad])) << std::dec
                    << " at offset " << bad << " of " << text.size()
                    << " does not start a well-formed character",
                "give the prompt as UTF-8 (decode it with the right codec first)");
  }
  std::vector<Piece> pieces;
  if (!text.empty()) pieces.push_back(Piece{NString::root(text), -1});
  extract_added(pieces, raw_trie, false);
  extract_added(pieces, normalized_trie, true);
  if (pre_tokenizer) pre_tokenizer->pre_tokenize(pieces);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  for (const Piece& p : pieces) {
    if (p.id >= 0)
      ids.push_back(p.id);
    else
      model.tokenize(p.s.text, ids);
  }
  if (post_processor) post_processor->process(ids, add_special_tokens);
  return ids;
}

const std::string* TokenizerImpl::token_string(int32_t id) const {
  // An added token decodes as the form it was matched in (its normalized form, if any).
  if (auto nf = normalized_form.find(id); nf != normalized_form.end()) return &nf->second;
  if (auto at = added_tokens.find(id); at != added_tokens.end()) return &at->second.content;
  return model.id_to_token(id);
}

namespace {

std::shared_ptr<const TokenizerImpl> build(const std::string& text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  ODMOE_CHECK(!j.is_discarded(), kTokenizer, "json", "the tokenizer.json text is not valid JSON",
              "the file is truncated or not a tokenizer.json");
  ODMOE_CHECK(j.is_object(), kTokenizer, "json",
              "tokenizer.json must be a JSON object, not " << json_type_name(j), "");
  if (const json* v = find_field(j, "version")) {
    ODMOE_CHECK(v->is_string() && v->get<std::string>() == "1.0", kTokenizer, "version",
                "tokenizer.json has version " << v->dump() << "; the format odmoe reads is \"1.0\"",
                "re-save the tokenizer with a current `tokenizers` library");
  }
  const json* m = find_field(j, "model");
  ODMOE_CHECK(m != nullptr, kTokenizer, "missing-field", "tokenizer.json has no 'model'",
              "the file is not a tokenizer.json");
  ODMOE_CHECK(m->is_object(), kTokenizer, "field-type", "model must be an object, not " << json_type_name(*m),
              "");
  const std::string type = get_opt_string(*m, "type", "model").value_or(m->contains("merges") ? "BPE" : "");
  ODMOE_CHECK(type == "BPE", kTokenizer, "unsupported",
              "model type '" << type << "' is not supported; odmoe implements BPE only",
              "the Mixtral, Qwen2/3-MoE and OLMoE tokenizers are BPE; WordPiece, WordLevel and Unigram "
              "models are not "
              "used by the supported architectures");

  auto impl = std::make_shared<TokenizerImpl>(BpeModel::from_json(*m));
  if (const json* n = find_field(j, "normalizer")) impl->normalizer = parse_normalizer(*n, "normalizer");
  if (const json* p = find_field(j, "pre_tokenizer"))
    impl->pre_tokenizer = parse_pre_tokenizer(*p, "pre_tokenizer");
  if (const json* p = find_field(j, "post_processor"))
    impl->post_processor = parse_post_processor(*p, "post_processor");
  impl->decoder = DecoderChain::from_json(find_field(j, "decoder"));
  impl->load_added_tokens(find_field(j, "added_tokens"));
  if (impl->post_processor) {
    // What the post-processor adds (all it ever adds to a single sequence) must be tokens:
    // decode would drop an id no token has, and the model has no embedding row for it.
    std::vector<int32_t> special;
    impl->post_processor->process(special, true);
    for (int32_t id : special)
      ODMOE_CHECK(impl->token_string(id) != nullptr, kTokenizer, "missing-special",
                  "post_processor adds id " << id << ", which no token of the vocabulary or added_tokens has",
                  "the tokenizer.json is malformed");
  }

  size_t overlapping = 0;
  int32_t max_id = impl->model.max_id();
  for (const auto& [content, id] : impl->added_ids) {
    overlapping += impl->model.token_to_id(content).has_value();
    max_id = std::max(max_id, id);
  }
  const size_t vocab = impl->model.n_vocab() + impl->added_ids.size() - overlapping;
  ODMOE_CHECK(vocab <= static_cast<size_t>(INT32_MAX), kTokenizer, "field-range",
              "the vocabulary is too large", "");
  impl->vocab_size = static_cast<int32_t>(vocab);
  impl->max_id = max_id;
  if (impl->post_processor) {
    impl->bos = impl->post_processor->bos_id();
    impl->eos = impl->post_processor->eos_id();
  }
  if (!impl->eos) {
    for (const char* name : {"</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"}) {
      auto it = impl->added_ids.find(std::string_view(name));
      if (it != impl->added_ids.end() && impl->special_contents.count(it->first)) {
        impl->eos = it->second;
        break;
      }
    }
  }
  return impl;
}

}  // namespace
}  // namespace tokenizer_detail

using tokenizer_detail::TokenizerImpl;

Tokenizer::Tokenizer(std::shared_ptr<const TokenizerImpl> impl) : impl_(std::move(impl)) {}

Tokenizer Tokenizer::from_json(const std::string& tokenizer_json_text) {
  try {
    return Tokenizer(tokenizer_detail::build(tokenizer_json_text));
  } catch (const Error&) {
    throw;
  } catch (const nlohmann::json::exception& e) {
    ODMOE_THROW(kTokenizer, "json", "tokenizer.json is malformed: " << e.what(), "");
  } catch (const std::bad_alloc&) {
    ODMOE_THROW(kTokenizer, "too-large", "tokenizer.json asks for more memory than there is", "");
  } catch (const std::length_error& e) {
    ODMOE_THROW(kTokenizer, "too-large", "tokenizer.json asks for an impossible size: " << e.what(), "");
  }
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  ODMOE_CHECK(in.good(), kTokenizer, "open", "cannot open " << path, "check the model directory");
  std::ostringstream ss;
  ss << in.rdbuf();
  try {
    return from_json(ss.str());
  } catch (const Error& e) {
    ODMOE_THROW(kTokenizer, e.code().c_str(), path << ": " << e.message(), e.hint());
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  return impl_->encode(text, add_special_tokens);
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  tokenizer_detail::DecoderState state(impl_->decoder);
  for (int32_t id : ids) {
    const std::string* t = impl_->token_string(id);
    if (t && !impl_->skip(*t, skip_special_tokens)) state.push(*t);
  }
  state.finish();
  return state.take_output();
}

int32_t Tokenizer::vocab_size() const {
  return impl_->vocab_size;
}
int32_t Tokenizer::max_token_id() const {
  return impl_->max_id;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_ids.find(token); it != impl_->added_ids.end()) return it->second;
  return impl_->model.token_to_id(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  const std::string* t = impl_->token_string(id);
  return t ? *t : std::string();
}

bool Tokenizer::is_special(int32_t id) const {
  const std::string* t = impl_->token_string(id);
  return t && impl_->special_contents.count(*t) > 0;
}

const std::vector<AddedTokenInfo>& Tokenizer::added_tokens() const {
  return impl_->added_info;
}
std::optional<int32_t> Tokenizer::bos_id() const {
  return impl_->bos;
}
std::optional<int32_t> Tokenizer::eos_id() const {
  return impl_->eos;
}

bool Tokenizer::is_valid_utf8(std::string_view text, size_t* bad_offset) {
  return tokenizer_detail::utf8_valid(text, bad_offset);
}

std::string Tokenizer::to_string() const {
  std::ostringstream os;
  os << "BPE vocab " << impl_->vocab_size << " (" << impl_->model.n_vocab() << " model, "
     << impl_->added_info.size() << " added), " << impl_->model.n_merges() << " merges, normalizer "
     << (impl_->normalizer ? impl_->normalizer->describe() : "none") << ", pre_tokenizer "
     << (impl_->pre_tokenizer ? impl_->pre_tokenizer->describe() : "none") << ", post_processor "
     << (impl_->post_processor ? impl_->post_processor->describe() : "none") << ", decoder "
     << impl_->decoder.describe();
  return os.str();
}

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : impl_(tokenizer.impl_),
      skip_special_tokens_(skip_special_tokens),
      state_(std::make_unique<tokenizer_detail::DecoderState>(impl_->decoder)) {}

StreamDecoder::StreamDecoder(StreamDecoder&&) noexcept = default;
StreamDecoder& StreamDecoder::operator=(StreamDecoder&&) noexcept = default;
StreamDecoder::~StreamDecoder() = default;

std::string StreamDecoder::push(int32_t id) {
  const std::string* t = impl_->token_string(id);
  if (!t || impl_->skip(*t, skip_special_tokens_)) return "";
  state_->push(*t);
  return state_->take_output();
}

std::string StreamDecoder::flush() {
  state_->finish();
  std::string out = state_->take_output();
  state_ = std::make_unique<tokenizer_detail::DecoderState>(impl_->decoder);
  return out;
}

}  // namespace odmoe
