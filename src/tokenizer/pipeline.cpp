#include "pipeline.h"

#include <map>
#include <utility>

#include "json_util.h"

namespace odmoe::tokenizer_detail {

namespace {

constexpr int kMaxDepth = 32;

void check_depth(int depth, const std::string& where) {
  ODMOE_CHECK(depth < kMaxDepth, kTokenizer, "too-deep",
              where << " nests Sequences more than " << kMaxDepth << " deep", "");
}

std::string type_of(const json& j, const std::string& where) {
  ODMOE_CHECK(j.is_object(), kTokenizer, "field-type",
              where << " must be an object, not " << json_type_name(j), "");
  return get_string(j, "type", where);
}

const json& get_array(const json& j, const char* key, const std::string& where) {
  const json& a = require_field(j, key, where);
  ODMOE_CHECK(a.is_array(), kTokenizer, "field-type", where << "." << key << " must be an array", "");
  return a;
}

std::string join_describe(const char* name, const std::vector<std::string>& parts) {
  std::string s = std::string(name) + "[";
  for (size_t i = 0; i < parts.size(); ++i) s += (i ? "," : "") + parts[i];
  return s + "]";
}

// ---- normalizers -----------------------------------------------------------------------

class UnicodeNormalizer : public Normalizer {
 public:
  UnicodeNormalizer(NormForm f, std::string name) : form_(f), name_(std::move(name)) {}
  void normalize(NString& s) const override { s.normalize(form_); }
  std::string describe() const override { return name_; }

 private:
  NormForm form_;
  std::string name_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  void normalize(NString& s) const override { s.lowercase(); }
  std::string describe() const override { return "Lowercase"; }
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(NString& s) const override { s.strip(left_, right_); }
  std::string describe() const override { return "Strip"; }

 private:
  bool left_, right_;
};

class StripAccentsNormalizer : public Normalizer {
 public:
  void normalize(NString& s) const override { s.strip_accents(); }
  std::string describe() const override { return "StripAccents"; }
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string p) : prepend_(std::move(p)) {}
  void normalize(NString& s) const override { s.prepend(prepend_); }
  std::string describe() const override { return "Prepend"; }

 private:
  std::string prepend_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(Pattern p, std::string content) : pattern_(std::move(p)), content_(std::move(content)) {}
  void normalize(NString& s) const override { s.replace(pattern_, content_); }
  std::string describe() const override { return "Replace"; }

 private:
  Pattern pattern_;
  std::string content_;
};

class ByteLevelNormalizer : public Normalizer {
 public:
  void normalize(NString& s) const override { s.byte_level_map(); }
  std::string describe() const override { return "ByteLevel"; }
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> n) : items_(std::move(n)) {}
  void normalize(NString& s) const override {
    for (const auto& n : items_) n->normalize(s);
  }
  std::string describe() const override {
    std::vector<std::string> parts;
    for (const auto& n : items_) parts.push_back(n->describe());
    return join_describe("Sequence", parts);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> items_;
};

// ---- pre-tokenizers --------------------------------------------------------------------

// Replaces every piece still to be tokenized by the pieces `f` cuts it into, dropping empty
// ones (the library's PreTokenizedString::split).
template <typename F>
void split_each(std::vector<Piece>& pieces, F&& f) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  for (Piece& p : pieces) {
    if (p.id >= 0) {
      out.push_back(std::move(p));
      continue;
    }
    for (NString& s : f(std::move(p.s)))
      if (!s.text.empty()) out.push_back(Piece{std::move(s), -1});
  }
  pieces = std::move(out);
}

const Regex& gpt2_regex() {
  static const Regex re(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)");
  return re;
}

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](NString s) {
      if (add_prefix_space_ && (s.text.empty() || s.text[0] != ' ')) s.prepend(" ");
      if (!use_regex_) return std::vector<NString>{std::move(s)};
      return split_spans(s, spans_from_matches(s.text, gpt2_regex().find_all(s.text)),
                         SplitBehavior::kIsolated);
    });
    for (Piece& p : pieces)
      if (p.id < 0) p.s.byte_level_map();
  }
  std::string describe() const override { return "ByteLevel"; }

 private:
  bool add_prefix_space_, use_regex_;
};

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(uint32_t replacement, PrependScheme scheme, bool split)
      : replacement_(utf8_encode(replacement)),
        space_(Pattern::literal(" ")),
        rep_pattern_(Pattern::literal(replacement_)),
        scheme_(scheme),
        split_(split) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](NString s) {
      s.replace(space_, replacement_);
      const bool starts = s.text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && s.at_origin)))
        s.prepend(replacement_);
      if (!split_) return std::vector<NString>{std::move(s)};
      return split_spans(s, spans_from_matches(s.text, rep_pattern_.find_all(s.text)),
                         SplitBehavior::kMergedWithNext);
    });
  }
  std::string describe() const override { return "Metaspace"; }

 private:
  std::string replacement_;
  Pattern space_, rep_pattern_;
  PrependScheme scheme_;
  bool split_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern p, SplitBehavior b, bool invert)
      : pattern_(std::move(p)), behavior_(b), invert_(invert) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](NString s) {
      auto spans = spans_from_matches(s.text, pattern_.find_all(s.text));
      if (invert_)
        for (Span& sp : spans) sp.is_match = !sp.is_match;
      return split_spans(s, spans, behavior_);
    });
  }
  std::string describe() const override { return "Split"; }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

class DigitsPreTokenizer : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](NString s) {
      return split_spans(s, spans_from_predicate(s.text, is_numeric),
                         individual_ ? SplitBehavior::kIsolated : SplitBehavior::kContiguous);
    });
  }
  std::string describe() const override { return "Digits"; }

 private:
  bool individual_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> p) : items_(std::move(p)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& p : items_) p->pre_tokenize(pieces);
  }
  std::string describe() const override {
    std::vector<std::string> parts;
    for (const auto& p : items_) parts.push_back(p->describe());
    return join_describe("Sequence", parts);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> items_;
};

SplitBehavior parse_behavior(const json& j, const std::string& where) {
  const std::string b = get_string(j, "behavior", where);
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  ODMOE_THROW(kTokenizer, "field-value",
              where << ".behavior is '" << b
                    << "', not Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous",
              "");
}

// ---- post-processors -------------------------------------------------------------------

class TemplatePostProcessor : public PostProcessor {
 public:
  // A piece of the single-sequence template: the sequence (ids empty) or a special token's ids.
  struct Item {
    bool is_sequence = false;
    std::vector<int32_t> ids;
  };
  explicit TemplatePostProcessor(std::vector<Item> items) : items_(std::move(items)) {}
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const Item& it : items_) {
      if (it.is_sequence)
        out.insert(out.end(), ids.begin(), ids.end());
      else if (add_special_tokens)
        out.insert(out.end(), it.ids.begin(), it.ids.end());
    }
    ids = std::move(out);
  }
  std::optional<int32_t> bos_id() const override {
    for (const Item& it : items_) {
      if (it.is_sequence) break;
      if (!it.ids.empty()) return it.ids.front();
    }
    return std::nullopt;
  }
  std::optional<int32_t> eos_id() const override {
    for (auto it = items_.rbegin(); it != items_.rend(); ++it) {
      if (it->is_sequence) break;
      if (!it->ids.empty()) return it->ids.back();
    }
    return std::nullopt;
  }
  std::string describe() const override { return "TemplateProcessing"; }

 private:
  std::vector<Item> items_;
};

// RobertaProcessing and BertProcessing: cls + text + sep.
class ClsSepPostProcessor : public PostProcessor {
 public:
  ClsSepPostProcessor(std::string name, int32_t cls, int32_t sep)
      : name_(std::move(name)), cls_(cls), sep_(sep) {}
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    if (!add_special_tokens) return;
    ids.insert(ids.begin(), cls_);
    ids.push_back(sep_);
  }
  std::optional<int32_t> bos_id() const override { return cls_; }
  std::optional<int32_t> eos_id() const override { return sep_; }
  std::string describe() const override { return name_; }

 private:
  std::string name_;
  int32_t cls_, sep_;
};

class NoopPostProcessor : public PostProcessor {
 public:
  void process(std::vector<int32_t>&, bool) const override {}
  std::string describe() const override { return "ByteLevel"; }
};

class SequencePostProcessor : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> p) : items_(std::move(p)) {}
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    for (const auto& p : items_) p->process(ids, add_special_tokens);
  }
  std::optional<int32_t> bos_id() const override {
    for (const auto& p : items_)
      if (auto b = p->bos_id()) return b;
    return std::nullopt;
  }
  std::optional<int32_t> eos_id() const override {
    for (const auto& p : items_)
      if (auto e = p->eos_id()) return e;
    return std::nullopt;
  }
  std::string describe() const override {
    std::vector<std::string> parts;
    for (const auto& p : items_) parts.push_back(p->describe());
    return join_describe("Sequence", parts);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> items_;
};

int32_t get_token_id(const json& v, const std::string& what) {
  return static_cast<int32_t>(get_uint(v, what, static_cast<uint64_t>(INT32_MAX)));
}

// ["<s>", 0] -> 0
int32_t parse_cls_sep(const json& j, const char* key, const std::string& where) {
  const json& v = require_field(j, key, where);
  ODMOE_CHECK(v.is_array() && v.size() == 2 && v[0].is_string(), kTokenizer, "field-type",
              where << "." << key << " must be [token, id], not " << v.dump(), "");
  return get_token_id(v[1], where + "." + key + "[1]");
}

std::unique_ptr<PostProcessor> parse_template(const json& j, const std::string& where) {
  const json& specials = require_field(j, "special_tokens", where);
  ODMOE_CHECK(specials.is_object(), kTokenizer, "field-type", where << ".special_tokens must be an object",
              "");
  std::map<std::string, std::vector<int32_t>> special_ids;
  for (auto it = specials.begin(); it != specials.end(); ++it) {
    const std::string at = where + ".special_tokens[\"" + it.key() + "\"]";
    ODMOE_CHECK(it.value().is_object(), kTokenizer, "field-type", at << " must be an object", "");
    const json& ids = get_array(it.value(), "ids", at);
    std::vector<int32_t> v;
    for (size_t k = 0; k < ids.size(); ++k)
      v.push_back(get_token_id(ids[k], at + ".ids[" + std::to_string(k) + "]"));
    special_ids[it.key()] = std::move(v);
  }
  const json& single = get_array(j, "single", where);
  std::vector<TemplatePostProcessor::Item> items;
  for (size_t k = 0; k < single.size(); ++k) {
    const std::string at = where + ".single[" + std::to_string(k) + "]";
    const json& piece = single[k];
    ODMOE_CHECK(piece.is_object() && piece.size() == 1, kTokenizer, "field-type",
                at << " must be {\"Sequence\": ...} or {\"SpecialToken\": ...}, not " << piece.dump(), "");
    if (const json* seq = find_field(piece, "Sequence")) {
      ODMOE_CHECK(seq->is_object(), kTokenizer, "field-type", at << ".Sequence must be an object", "");
      const std::string id = get_string(*seq, "id", at + ".Sequence");
      ODMOE_CHECK(id == "A", kTokenizer, "field-value",
                  at << " uses sequence '" << id << "' in the single-sequence template; only A exists there",
                  "");
      items.push_back({true, {}});
    } else if (const json* sp = find_field(piece, "SpecialToken")) {
      ODMOE_CHECK(sp->is_object(), kTokenizer, "field-type", at << ".SpecialToken must be an object", "");
      const std::string id = get_string(*sp, "id", at + ".SpecialToken");
      auto found = special_ids.find(id);
      ODMOE_CHECK(found != special_ids.end(), kTokenizer, "missing-special",
                  at << " uses special token '" << id << "', which special_tokens does not define",
                  "the tokenizer.json is malformed");
      items.push_back({false, found->second});
    } else {
      ODMOE_THROW(kTokenizer, "field-type",
                  at << " must be {\"Sequence\": ...} or {\"SpecialToken\": ...}, not " << piece.dump(), "");
    }
  }
  return std::make_unique<TemplatePostProcessor>(std::move(items));
}

}  // namespace

std::unique_ptr<Normalizer> parse_normalizer(const json& j, const std::string& where, int depth) {
  check_depth(depth, where);
  const std::string type = type_of(j, where);
  const std::string at = where + " (" + type + ")";
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormForm::kNFC, type);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormForm::kNFD, type);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormForm::kNFKC, type);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormForm::kNFKD, type);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  if (type == "Strip")
    return std::make_unique<StripNormalizer>(get_bool(j, "strip_left", at, std::nullopt),
                                             get_bool(j, "strip_right", at, std::nullopt));
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(get_string(j, "prepend", at));
  if (type == "Replace") {
    Pattern p = get_pattern(j, at);
    return std::make_unique<ReplaceNormalizer>(std::move(p), get_string(j, "content", at));
  }
  if (type == "Sequence") {
    const json& list = get_array(j, "normalizers", at);
    std::vector<std::unique_ptr<Normalizer>> items;
    for (size_t i = 0; i < list.size(); ++i)
      items.push_back(
          parse_normalizer(list[i], where + ".normalizers[" + std::to_string(i) + "]", depth + 1));
    return std::make_unique<SequenceNormalizer>(std::move(items));
  }
  ODMOE_THROW(kTokenizer, "unsupported",
              "normalizer '" << type << "' at " << where
                             << " is not supported (odmoe has NFC, NFD, NFKC, NFKD, "
                             << "Lowercase, Strip, StripAccents, Prepend, Replace, ByteLevel and Sequence)",
              "BertNormalizer, Precompiled and Nmt belong to WordPiece and Unigram tokenizers");
}

std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const json& j, const std::string& where, int depth) {
  check_depth(depth, where);
  const std::string type = type_of(j, where);
  const std::string at = where + " (" + type + ")";
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPreTokenizer>(get_bool(j, "add_prefix_space", at, true),
                                                   get_bool(j, "use_regex", at, true));
  if (type == "Metaspace")
    return std::make_unique<MetaspacePreTokenizer>(get_char(j, "replacement", at), get_prepend_scheme(j, at),
                                                   get_bool(j, "split", at, true));
  if (type == "Split") {
    Pattern p = get_pattern(j, at);
    const SplitBehavior b = parse_behavior(j, at);
    return std::make_unique<SplitPreTokenizer>(std::move(p), b, get_bool(j, "invert", at, false));
  }
  if (type == "Digits")
    return std::make_unique<DigitsPreTokenizer>(get_bool(j, "individual_digits", at, false));
  if (type == "Sequence") {
    const json& list = get_array(j, "pretokenizers", at);
    std::vector<std::unique_ptr<PreTokenizer>> items;
    for (size_t i = 0; i < list.size(); ++i)
      items.push_back(
          parse_pre_tokenizer(list[i], where + ".pretokenizers[" + std::to_string(i) + "]", depth + 1));
    return std::make_unique<SequencePreTokenizer>(std::move(items));
  }
  ODMOE_THROW(kTokenizer, "unsupported",
              "pre_tokenizer '" << type << "' at " << where
                                << " is not supported (odmoe has ByteLevel, Metaspace, "
                                << "Split, Digits and Sequence)",
              "");
}

std::unique_ptr<PostProcessor> parse_post_processor(const json& j, const std::string& where, int depth) {
  check_depth(depth, where);
  const std::string type = type_of(j, where);
  const std::string at = where + " (" + type + ")";
  if (type == "TemplateProcessing") return parse_template(j, at);
  if (type == "ByteLevel") return std::make_unique<NoopPostProcessor>();
  if (type == "RobertaProcessing" || type == "BertProcessing")
    return std::make_unique<ClsSepPostProcessor>(type, parse_cls_sep(j, "cls", at),
                                                 parse_cls_sep(j, "sep", at));
  if (type == "Sequence") {
    const json& list = get_array(j, "processors", at);
    std::vector<std::unique_ptr<PostProcessor>> items;
    for (size_t i = 0; i < list.size(); ++i)
      items.push_back(
          parse_post_processor(list[i], where + ".processors[" + std::to_string(i) + "]", depth + 1));
    return std::make_unique<SequencePostProcessor>(std::move(items));
  }
  ODMOE_THROW(kTokenizer, "unsupported",
              "post_processor '" << type << "' at " << where
                                 << " is not supported (odmoe has TemplateProcessing, "
                                 << "ByteLevel, RobertaProcessing, BertProcessing and Sequence)",
              "");
}

}  // namespace odmoe::tokenizer_detail
