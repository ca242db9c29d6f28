#include "bpe.h"

#include <cstdio>
#include <limits>
#include <queue>

#include "json_util.h"

namespace odmoe::tokenizer_detail {

namespace {

constexpr uint64_t kMaxId = std::numeric_limits<int32_t>::max();

// A symbol of the word being merged; `len` 0 marks one merged into its left neighbour.
struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  uint32_t len;
};

// A candidate merge in the heap: lowest rank first, then leftmost (the library's Ord).
struct Candidate {
  uint32_t rank;
  uint32_t pos;
  int32_t new_id;
  bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

BpeModel::BpeModel(BpeModel&& o) noexcept
    : vocab_(std::move(o.vocab_)),
      vocab_r_(std::move(o.vocab_r_)),
      has_id_(std::move(o.has_id_)),
      merges_(std::move(o.merges_)),
      n_merges_(o.n_merges_),
      unk_token_(std::move(o.unk_token_)),
      continuing_subword_prefix_(std::move(o.continuing_subword_prefix_)),
      end_of_word_suffix_(std::move(o.end_of_word_suffix_)),
      fuse_unk_(o.fuse_unk_),
      byte_fallback_(o.byte_fallback_),
      ignore_merges_(o.ignore_merges_),
      cache_() {
  std::copy(std::begin(o.byte_ids_), std::end(o.byte_ids_), std::begin(byte_ids_));
}

BpeModel BpeModel::from_json(const json& m) {
  const std::string where = "model";
  BpeModel b;
  if (const json* d = find_field(m, "dropout")) {
    ODMOE_CHECK(d->is_number(), kTokenizer, "field-type", "model.dropout must be a number or null", "");
    const double p = d->get<double>();
    ODMOE_CHECK(p >= 0.0 && p <= 1.0, kTokenizer, "bpe-dropout",
                "model.dropout is " << p << ", outside [0, 1]", "");
    ODMOE_CHECK(p == 0.0, kTokenizer, "unsupported",
                "BPE dropout " << p << " makes encoding random; odmoe encodes deterministically",
                "set \"dropout\": null in tokenizer.json (dropout is a training-time augmentation)");
  }
  b.unk_token_ = get_opt_string(m, "unk_token", where);
  b.continuing_subword_prefix_ = get_opt_string(m, "continuing_subword_prefix", where).value_or("");
  b.end_of_word_suffix_ = get_opt_string(m, "end_of_word_suffix", where).value_or("");
  b.fuse_unk_ = get_bool(m, "fuse_unk", where, false);
  b.byte_fallback_ = get_bool(m, "byte_fallback", where, false);
  b.ignore_merges_ = get_bool(m, "ignore_merges", where, false);

  const json* vocab = find_field(m, "vocab");
  const json* merges = find_field(m, "merges");
  ODMOE_CHECK(vocab && merges, kTokenizer, "missing-field", "the BPE model needs both 'vocab' and 'merges'",
              "the tokenizer.json is malformed");
  ODMOE_CHECK(vocab->is_object(), kTokenizer, "field-type",
              "model.vocab must be an object {token: id}, not " << json_type_name(*vocab), "");
  ODMOE_CHECK(merges->is_array(), kTokenizer, "field-type",
              "model.merges must be an array, not " << json_type_name(*merges), "");

  // Vocabulary. Ids are u32 in the library and int32 here.
  b.vocab_.reserve(vocab->size());
  uint64_t max_id = 0;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    const uint64_t id = get_uint(it.value(), "the id of token '" + it.key() + "' in model.vocab", kMaxId);
    b.vocab_.emplace(it.key(), static_cast<int32_t>(id));
    max_id = std::max(max_id, id);
  }
  if (!b.vocab_.empty()) {
    // A dense table from id to token; refuse ids so sparse that it would be mostly holes.
    ODMOE_CHECK(max_id < 4 * b.vocab_.size() + (1u << 20), kTokenizer, "sparse-vocab",
                "model.vocab has " << b.vocab_.size() << " tokens but ids up to " << max_id,
                "the vocabulary's ids should be (nearly) contiguous from 0");
    b.vocab_r_.resize(max_id + 1);
    b.has_id_.assign(max_id + 1, false);
    // The map iterates in key order, so where two tokens share an id (a malformed vocabulary)
    // the first in key order names it.
    for (auto it = vocab->begin(); it != vocab->end(); ++it) {
      const auto id = static_cast<size_t>(b.vocab_.at(it.key()));
      if (b.has_id_[id]) continue;
      b.vocab_r_[id] = it.key();
      b.has_id_[id] = true;
    }
  }

  for (int v = 0; v < 256; ++v) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", v);
    auto it = b.vocab_.find(std::string_view(name));
    b.byte_ids_[v] = it == b.vocab_.end() ? -1 : it->second;
  }

  // Merges: all "a b" strings (the legacy form, '#version' lines skipped) or all [a, b] pairs.
  std::vector<std::pair<std::string, std::string>> pairs;
  pairs.reserve(merges->size());
  bool any_string = false, any_pair = false;
  for (const json& e : *merges) {
    if (e.is_string()) {
      any_string = true;
      const std::string line = e.get<std::string>();
      if (line.rfind("#version", 0) == 0) continue;
      const size_t sp = line.find(' ');
      ODMOE_CHECK(
          sp != std::string::npos && line.find(' ', sp + 1) == std::string::npos, kTokenizer, "bad-merges",
          "merge " << pairs.size() + 1 << " '" << line << "' is not two tokens separated by one space", "");
      pairs.emplace_back(line.substr(0, sp), line.substr(sp + 1));
    } else {
      any_pair = true;
      ODMOE_CHECK(e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string(), kTokenizer,
                  "bad-merges",
                  "merge " << pairs.size() + 1 << " is neither \"a b\" nor [\"a\", \"b\"]: " << e.dump(), "");
      pairs.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
    }
    ODMOE_CHECK(!(any_string && any_pair), kTokenizer, "bad-merges",
                "model.merges mixes \"a b\" strings and [a, b] pairs", "");
  }
  const std::string& prefix = b.continuing_subword_prefix_;
  b.merges_.reserve(pairs.size());
  for (size_t rank = 0; rank < pairs.size(); ++rank) {
    const auto& [a, c] = pairs[rank];
    auto ia = b.vocab_.find(a);
    auto ic = b.vocab_.find(c);
    ODMOE_CHECK(ia != b.vocab_.end(), kTokenizer, "merge-oov",
                "merge " << rank + 1 << " ('" << a << "', '" << c << "') uses '" << a
                         << "', which is not in the vocabulary",
                "the tokenizer.json is corrupted");
    ODMOE_CHECK(ic != b.vocab_.end(), kTokenizer, "merge-oov",
                "merge " << rank + 1 << " ('" << a << "', '" << c << "') uses '" << c
                         << "', which is not in the vocabulary",
                "the tokenizer.json is corrupted");
    ODMOE_CHECK(c.size() >= prefix.size(), kTokenizer, "merge-oov",
                "merge " << rank + 1 << ": '" << c << "' is shorter than the continuing_subword_prefix", "");
    const std::string merged = a + c.substr(prefix.size());
    auto im = b.vocab_.find(merged);
    ODMOE_CHECK(im != b.vocab_.end(), kTokenizer, "merge-oov",
                "merge " << rank + 1 << " ('" << a << "', '" << c << "') makes '" << merged
                         << "', which is not in the vocabulary",
                "the tokenizer.json is corrupted");
    // A repeated pair takes its last rank, as the library's HashMap collect does.
    b.merges_[pair_key(ia->second, ic->second)] = Merge{static_cast<uint32_t>(rank), im->second};
  }
  b.n_merges_ = pairs.size();
  return b;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= vocab_r_.size() || !has_id_[static_cast<size_t>(id)])
    return nullptr;
  return &vocab_r_[static_cast<size_t>(id)];
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() < kCacheMaxWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() < kCacheCapacity)
      cache_.emplace(std::string(word),
                     std::vector<int32_t>(out.begin() + static_cast<std::ptrdiff_t>(first), out.end()));
  }
}

void BpeModel::merge_word(std::string_view w, std::vector<int32_t>& out) const {
  std::vector<Symbol> sym;
  sym.reserve(w.size());
  auto add = [&](int32_t id, size_t len) {
    const auto n = static_cast<int32_t>(sym.size());
    if (!sym.empty()) sym.back().next = n;
    sym.push_back(Symbol{id, n - 1, -1, static_cast<uint32_t>(len)});
  };
  // An unknown character waiting to be added (fused with following unknown ones if fuse_unk).
  bool has_unk = false;
  int32_t unk_tok = -1;
  size_t unk_len = 0;
  auto unk_id = [&]() -> int32_t {
    auto it = vocab_.find(*unk_token_);
    ODMOE_CHECK(it != vocab_.end(), kTokenizer, "unk-oov",
                "the text has a character outside the vocabulary and the unk_token '"
                    << *unk_token_ << "' is not in the vocabulary either",
                "the tokenizer.json is corrupted");
    return it->second;
  };
  std::string buf;
  for (size_t i = 0; i < w.size();) {
    const size_t len = utf8_char_len(static_cast<unsigned char>(w[i]));
    const bool is_first = i == 0, is_last = i + len >= w.size();
    std::string_view s = w.substr(i, len);
    if ((!is_first && !continuing_subword_prefix_.empty()) || (is_last && !end_of_word_suffix_.empty())) {
      buf.clear();
      if (!is_first) buf += continuing_subword_prefix_;
      buf += s;
      if (is_last) buf += end_of_word_suffix_;
      s = buf;
    }
    i += len;
    if (auto it = vocab_.find(s); it != vocab_.end()) {
      if (has_unk) add(unk_tok, unk_len);
      has_unk = false;
      add(it->second, len);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : s) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        // As in the library, a pending unknown is not flushed first: it lands after these.
        for (char c : s) add(byte_ids_[static_cast<unsigned char>(c)], 1);
        continue;
      }
    }
    if (unk_token_) {
      if (has_unk && fuse_unk_) {
        unk_len += len;
      } else {
        if (has_unk) add(unk_tok, unk_len);
        has_unk = true;
        unk_tok = unk_id();
        unk_len = len;
      }
    }
    // Without an unk_token the character is dropped, as the library does.
  }
  if (has_unk) add(unk_tok, unk_len);

  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  for (size_t k = 0; k + 1 < sym.size(); ++k)
    if (const Merge* m = find_merge(sym[k].id, sym[k + 1].id))
      queue.push(Candidate{m->rank, static_cast<uint32_t>(k), m->new_id});
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& cur = sym[top.pos];
    if (cur.len == 0 || cur.next == -1) continue;
    const auto next_pos = static_cast<size_t>(cur.next);
    const Symbol right = sym[next_pos];
    // A stale entry: the pair at this position changed since it was queued.
    const Merge* now = find_merge(cur.id, right.id);
    if (!now || now->new_id != top.new_id) continue;
    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    sym[next_pos].len = 0;
    if (right.next >= 0) sym[static_cast<size_t>(right.next)].prev = static_cast<int32_t>(top.pos);
    if (cur.prev >= 0) {
      if (const Merge* m = find_merge(sym[static_cast<size_t>(cur.prev)].id, cur.id))
        queue.push(Candidate{m->rank, static_cast<uint32_t>(cur.prev), m->new_id});
    }
    if (cur.next >= 0) {
      if (const Merge* m = find_merge(cur.id, sym[static_cast<size_t>(cur.next)].id))
        queue.push(Candidate{m->rank, top.pos, m->new_id});
    }
  }
  for (const Symbol& s : sym)
    if (s.len != 0) out.push_back(s.id);
}

}  // namespace odmoe::tokenizer_detail
