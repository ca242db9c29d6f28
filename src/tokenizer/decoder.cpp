#include "decoder.h"

#include <optional>
#include <utility>

#include "json_util.h"
#include "normalized_string.h"
#include "unicode.h"

namespace odmoe::tokenizer_detail {

void Emitter::operator()(std::string piece) const {
  state->deliver(next_step, std::move(piece));
}

namespace {

constexpr int kMaxDepth = 32;
const std::string kReplacement = utf8_encode(kReplacementChar);

// Rust's str::replace: non-overlapping, left to right; an empty pattern matches at every
// character boundary.
std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  std::string out;
  if (from.empty()) {
    out.reserve(s.size() * (1 + to.size()) + to.size());
    out += to;
    for (size_t i = 0; i < s.size();) {
      const size_t len = utf8_char_len(static_cast<unsigned char>(s[i]));
      out.append(s, i, len);
      out += to;
      i += len;
    }
    return out;
  }
  size_t last = 0;
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, last)) {
    out.append(s, last, pos - last);
    out += to;
    last = pos + from.size();
  }
  out.append(s, last, std::string::npos);
  return out;
}

// Collects the fragments of a fused string and applies the step's whole-string rule when
// the chain finishes.
class BufferAllState : public StepState {
 public:
  explicit BufferAllState(const DecoderStep& step) : step_(step) {}
  void push(std::string piece, const Emitter&) override { buf_ += piece; }
  void finish(const Emitter& emit) override { emit(step_.apply_single(std::exchange(buf_, std::string()))); }

 private:
  const DecoderStep& step_;
  std::string buf_;
};

// Maps each piece on its own (steps whose rule is per token and per character).
template <typename F>
class MapState : public StepState {
 public:
  explicit MapState(F f) : f_(std::move(f)) {}
  void push(std::string piece, const Emitter& emit) override { emit(f_(piece)); }
  void finish(const Emitter&) override {}

 private:
  F f_;
};
template <typename F>
std::unique_ptr<StepState> make_map_state(F f) {
  return std::make_unique<MapState<F>>(std::move(f));
}

// ---- Replace ---------------------------------------------------------------------------

class ReplaceStep : public DecoderStep {
 public:
  ReplaceStep(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string apply_single(const std::string& token) const override {
    std::string out;
    size_t last = 0;
    for (const auto& [b, e] : pattern_.find_all(token)) {
      out.append(token, last, b - last);
      out += content_;
      last = e;
    }
    out.append(token, last, std::string::npos);
    return out;
  }
  std::unique_ptr<StepState> start(bool fused_input) const override {
    // A one-character literal cannot straddle two fragments (each is whole UTF-8).
    const bool one_char = pattern_.is_literal() && utf8_count(pattern_.text()) == 1;
    if (fused_input && !one_char) return std::make_unique<BufferAllState>(*this);
    return make_map_state([this](const std::string& t) { return apply_single(t); });
  }
  std::string describe() const override { return "Replace"; }

 private:
  Pattern pattern_;
  std::string content_;
};

// ---- ByteFallback ----------------------------------------------------------------------

// The byte of a "<0xXX>" token (u8::from_str_radix on the two characters, which also takes
// "+X"), or -1.
int byte_token_value(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (t[3] == '+') return hex(t[4]);
  const int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

class ByteFallbackState : public StepState {
 public:
  void push(std::string piece, const Emitter& emit) override {
    const int b = byte_token_value(piece);
    if (b >= 0) {
      bytes_ += static_cast<char>(b);
      return;
    }
    flush(emit);
    emit(std::move(piece));
  }
  void finish(const Emitter& emit) override { flush(emit); }

 private:
  // A run of byte tokens becomes its text if the run is valid UTF-8 as a whole, else one
  // U+FFFD per byte: the whole run is undecided until a non-byte token closes it.
  void flush(const Emitter& emit) {
    if (bytes_.empty()) return;
    if (utf8_valid(bytes_, nullptr)) {
      emit(std::exchange(bytes_, std::string()));
      return;
    }
    for (size_t i = 0; i < bytes_.size(); ++i) emit(kReplacement);
    bytes_.clear();
  }
  std::string bytes_;
};

class ByteFallbackStep : public DecoderStep {
 public:
  std::string apply_single(const std::string& token) const override {
    const int b = byte_token_value(token);
    if (b < 0) return token;
    const std::string s(1, static_cast<char>(b));
    return utf8_valid(s, nullptr) ? s : kReplacement;
  }
  std::unique_ptr<StepState> start(bool fused_input) const override {
    if (fused_input) return std::make_unique<BufferAllState>(*this);
    return std::make_unique<ByteFallbackState>();
  }
  std::string describe() const override { return "ByteFallback"; }
};

// ---- Fuse ------------------------------------------------------------------------------

class FuseStep : public DecoderStep {
 public:
  std::string apply_single(const std::string& token) const override { return token; }
  std::unique_ptr<StepState> start(bool) const override {
    return make_map_state([](const std::string& t) { return t; });
  }
  bool fuses() const override { return true; }
  std::string describe() const override { return "Fuse"; }
};

// ---- Strip -----------------------------------------------------------------------------

class StripStep : public DecoderStep {
 public:
  StripStep(uint32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  std::string apply_single(const std::string& token) const override {
    std::vector<std::pair<size_t, size_t>> chars;  // byte offset, length
    for (size_t i = 0; i < token.size();) {
      const size_t len = utf8_char_len(static_cast<unsigned char>(token[i]));
      chars.emplace_back(i, len);
      i += len;
    }
    auto is_content = [&](size_t k) {
      size_t len = 0;
      return utf8_decode(token, chars[k].first, &len) == content_;
    };
    size_t start_cut = 0;
    for (size_t k = 0; k < chars.size() && k < start_; ++k) {
      if (!is_content(k)) break;
      start_cut = k + 1;
    }
    size_t stop_cut = chars.size();
    for (size_t k = 0; k < stop_ && k < chars.size(); ++k) {
      const size_t idx = chars.size() - k - 1;
      if (!is_content(idx)) break;
      stop_cut = idx;
    }
    if (stop_cut <= start_cut) return "";  // the library panics here; nothing is left anyway
    const size_t b = chars[start_cut].first;
    const size_t e = stop_cut == chars.size() ? token.size() : chars[stop_cut].first;
    return token.substr(b, e - b);
  }

  // The fused string in fragments: drop up to `start` leading content characters, and hold
  // back a trailing run of them (up to `stop`) until something else follows or the end.
  class FusedState : public StepState {
   public:
    explicit FusedState(const StripStep& s) : s_(s) {}
    void push(std::string piece, const Emitter& emit) override {
      std::string out;
      for (size_t i = 0; i < piece.size();) {
        size_t len = 0;
        const uint32_t c = utf8_decode(piece, i, &len);
        const bool is_content = c == s_.content_;
        if (!in_body_) {
          if (is_content && n_lead_ < s_.start_) {
            ++n_lead_;
            i += len;
            continue;
          }
          in_body_ = true;
        }
        if (is_content && s_.stop_ > 0) {
          if (++n_held_ > s_.stop_) {  // more than can ever be stripped: the first is safe
            utf8_append(out, s_.content_);
            --n_held_;
          }
        } else {
          for (; n_held_ > 0; --n_held_) utf8_append(out, s_.content_);
          out.append(piece, i, len);
        }
        i += len;
      }
      if (!out.empty()) emit(std::move(out));
    }
    void finish(const Emitter&) override { n_held_ = 0; }  // the held run is what gets stripped

   private:
    const StripStep& s_;
    size_t n_lead_ = 0;
    bool in_body_ = false;
    size_t n_held_ = 0;
  };

  std::unique_ptr<StepState> start(bool fused_input) const override {
    if (fused_input) return std::make_unique<FusedState>(*this);
    return make_map_state([this](const std::string& t) { return apply_single(t); });
  }
  std::string describe() const override { return "Strip"; }

 private:
  uint32_t content_;
  size_t start_, stop_;
};

// ---- Metaspace -------------------------------------------------------------------------

class MetaspaceStep : public DecoderStep {
 public:
  MetaspaceStep(uint32_t replacement, bool prepend) : replacement_(replacement), prepend_(prepend) {}
  // The first token loses every replacement character (when a prefix was prepended), the
  // others turn them into spaces.
  std::string map(const std::string& token, bool first) const {
    std::string out;
    out.reserve(token.size());
    for (size_t i = 0; i < token.size();) {
      size_t len = 0;
      const uint32_t c = utf8_decode(token, i, &len);
      if (c != replacement_)
        out.append(token, i, len);
      else if (!(first && prepend_))
        out += ' ';
      i += len;
    }
    return out;
  }
  std::string apply_single(const std::string& token) const override { return map(token, true); }
  std::unique_ptr<StepState> start(bool fused_input) const override {
    if (fused_input) return make_map_state([this](const std::string& t) { return map(t, true); });
    return make_map_state([this, first = true](const std::string& t) mutable {
      std::string out = map(t, first);
      first = false;
      return out;
    });
  }
  std::string describe() const override { return "Metaspace"; }

 private:
  uint32_t replacement_;
  bool prepend_;
};

// ---- ByteLevel -------------------------------------------------------------------------

// A token's bytes: its characters mapped back through the byte-level table, or its own UTF-8
// when some character is not in the table (an added token such as "<|im_end|>" written
// plainly).
std::string byte_level_bytes(const std::string& token) {
  std::string out;
  out.reserve(token.size());
  for (size_t i = 0; i < token.size();) {
    size_t len = 0;
    const int b = byte_level_byte(utf8_decode(token, i, &len));
    if (b < 0) return token;
    out += static_cast<char>(b);
    i += len;
  }
  return out;
}

class ByteLevelState : public StepState {
 public:
  void push(std::string piece, const Emitter& emit) override {
    std::string out;
    lossy_.feed(byte_level_bytes(piece), out);
    if (!out.empty()) emit(std::move(out));
  }
  void finish(const Emitter& emit) override {
    std::string out;
    lossy_.finish(out);
    if (!out.empty()) emit(std::move(out));
  }

 private:
  Utf8LossyDecoder lossy_;
};

class ByteLevelStep : public DecoderStep {
 public:
  std::string apply_single(const std::string& token) const override {
    return utf8_lossy(byte_level_bytes(token));
  }
  std::unique_ptr<StepState> start(bool fused_input) const override {
    if (fused_input) return std::make_unique<BufferAllState>(*this);
    return std::make_unique<ByteLevelState>();
  }
  bool fuses() const override { return true; }
  std::string describe() const override { return "ByteLevel"; }
};

// ---- BPEDecoder ------------------------------------------------------------------------

class BpeDecoderStep : public DecoderStep {
 public:
  explicit BpeDecoderStep(std::string suffix) : suffix_(std::move(suffix)) {}
  std::string apply_single(const std::string& token) const override {
    return replace_all(token, suffix_, "");
  }

  // The suffix ends a word (a space) except in the last token: hold one token back.
  class HoldLastState : public StepState {
   public:
    explicit HoldLastState(const BpeDecoderStep& s) : s_(s) {}
    void push(std::string piece, const Emitter& emit) override {
      if (held_) emit(replace_all(*held_, s_.suffix_, " "));
      held_ = std::move(piece);
    }
    void finish(const Emitter& emit) override {
      if (held_) emit(replace_all(*held_, s_.suffix_, ""));
      held_.reset();
    }

   private:
    const BpeDecoderStep& s_;
    std::optional<std::string> held_;
  };

  std::unique_ptr<StepState> start(bool fused_input) const override {
    if (fused_input) return std::make_unique<BufferAllState>(*this);
    return std::make_unique<HoldLastState>(*this);
  }
  std::string describe() const override { return "BPEDecoder"; }

 private:
  std::string suffix_;
};

// ---- no decoder: the library joins the tokens with spaces ------------------------------

class JoinSpaceStep : public DecoderStep {
 public:
  std::string apply_single(const std::string& token) const override { return token; }
  std::unique_ptr<StepState> start(bool) const override {
    return make_map_state([first = true](const std::string& t) mutable {
      std::string out = first ? t : " " + t;
      first = false;
      return out;
    });
  }
  std::string describe() const override { return "none"; }
};

// ---- parsing ---------------------------------------------------------------------------

void parse_steps(const json& d, const std::string& where, int depth,
                 std::vector<std::unique_ptr<DecoderStep>>& out) {
  ODMOE_CHECK(depth < kMaxDepth, kTokenizer, "too-deep",
              where << " nests Sequences more than " << kMaxDepth << " deep", "");
  ODMOE_CHECK(d.is_object(), kTokenizer, "field-type",
              where << " must be an object, not " << json_type_name(d), "");
  const std::string type = get_string(d, "type", where);
  const std::string at = where + " (" + type + ")";
  if (type == "Sequence") {
    const json& list = require_field(d, "decoders", at);
    ODMOE_CHECK(list.is_array(), kTokenizer, "field-type", at << ".decoders must be an array", "");
    for (size_t i = 0; i < list.size(); ++i)
      parse_steps(list[i], where + ".decoders[" + std::to_string(i) + "]", depth + 1, out);
  } else if (type == "ByteLevel") {
    out.push_back(std::make_unique<ByteLevelStep>());
  } else if (type == "Metaspace") {
    const uint32_t rep = get_char(d, "replacement", at);
    out.push_back(std::make_unique<MetaspaceStep>(rep, get_prepend_scheme(d, at) != PrependScheme::kNever));
  } else if (type == "Replace") {
    Pattern p = get_pattern(d, at);
    out.push_back(std::make_unique<ReplaceStep>(std::move(p), get_string(d, "content", at)));
  } else if (type == "ByteFallback") {
    out.push_back(std::make_unique<ByteFallbackStep>());
  } else if (type == "Fuse") {
    out.push_back(std::make_unique<FuseStep>());
  } else if (type == "Strip") {
    const uint32_t c = get_char(d, "content", at);
    const auto start = get_uint(require_field(d, "start", at), at + ".start", 1u << 20);
    const auto stop = get_uint(require_field(d, "stop", at), at + ".stop", 1u << 20);
    out.push_back(std::make_unique<StripStep>(c, start, stop));
  } else if (type == "BPEDecoder") {
    out.push_back(std::make_unique<BpeDecoderStep>(get_opt_string(d, "suffix", at).value_or("</w>")));
  } else {
    ODMOE_THROW(kTokenizer, "unsupported",
                "decoder '" << type << "' at " << where
                            << " is not supported (odmoe decodes ByteLevel, Metaspace, "
                            << "Replace, ByteFallback, Fuse, Strip, BPEDecoder and Sequence)",
                "WordPiece and CTC decoders belong to model types odmoe does not run");
  }
}

}  // namespace

DecoderChain DecoderChain::from_json(const json* decoder) {
  DecoderChain c;
  if (decoder)
    parse_steps(*decoder, "decoder", 0, c.steps_);
  else
    c.steps_.push_back(std::make_unique<JoinSpaceStep>());
  bool fused = false;
  for (const auto& s : c.steps_) {
    c.fused_in_.push_back(fused);
    fused = fused || s->fuses();
    if (!c.description_.empty()) c.description_ += ",";
    c.description_ += s->describe();
  }
  return c;
}

std::string DecoderChain::describe() const {
  return description_;
}

DecoderState::DecoderState(const DecoderChain& chain) {
  for (size_t k = 0; k < chain.n_steps(); ++k) states_.push_back(chain.step(k).start(chain.fused_input(k)));
}

void DecoderState::deliver(size_t step, std::string piece) {
  if (step == states_.size()) {
    out_ += piece;
    return;
  }
  states_[step]->push(std::move(piece), Emitter{this, step + 1});
}

void DecoderState::push(std::string token) {
  deliver(0, std::move(token));
}

void DecoderState::finish() {
  for (size_t k = 0; k < states_.size(); ++k) states_[k]->finish(Emitter{this, k + 1});
}

}  // namespace odmoe::tokenizer_detail
