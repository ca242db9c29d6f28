#include "odmoe/model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "odmoe/core/error.h"
#include "odmoe/core/softmax.h"

namespace odmoe {
using layout::TensorKind;
using layout::TensorSpec;

namespace {

const float* f32(const EncodedTensor& t) { return reinterpret_cast<const float*>(t.data.data()); }
bool present(const EncodedTensor& t) { return !t.data.empty(); }

void add_bias(float* y, const EncodedTensor& b, size_t n, size_t dim) {
  if (!present(b)) return;
  const float* bb = f32(b);
  for (size_t t = 0; t < n; ++t)
    for (size_t i = 0; i < dim; ++i) y[t * dim + i] += bb[i];
}

// Rotates pairs (i, i + half) of each head, as transformers' rotate_half does.
void apply_rope(float* x, size_t n_heads, size_t head_dim, const std::vector<float>& inv_freq, int pos) {
  const size_t half = head_dim / 2;
  for (size_t i = 0; i < half; ++i) {
    const float angle = static_cast<float>(pos) * inv_freq[i];  // f32 product, as transformers computes it
    const float c = std::cos(angle), s = std::sin(angle);
    for (size_t h = 0; h < n_heads; ++h) {
      float* v = x + h * head_dim;
      const float a = v[i], b = v[i + half];
      v[i] = a * c - b * s;
      v[i + half] = b * c + a * s;
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Experts

void expert_forward(Backend& be, const WeightView& gate, const WeightView& up, const WeightView& down, const float* x,
                    size_t n, float* out, std::vector<float>* scratch) {
  const size_t ff = gate.rows;
  scratch->resize(2 * n * ff);
  float* g = scratch->data();
  float* u = g + n * ff;
  be.matmul(gate, x, n, g);
  be.matmul(up, x, n, u);
  be.swiglu(g, u, n * ff, g);
  be.matmul(down, g, n, out);
}

TensorReader model_tensor_reader(const ModelFiles& files) {
  return [&files](const TensorSpec& s) { return files.read_tensor(s); };
}

namespace {
size_t tensor_bytes(const EncodedTensor& t) { return t.data.size() + t.scales.size() * sizeof(float); }
}  // namespace

LocalExpertExecutor::LocalExpertExecutor(const ModelFiles& files, Backend& be, const TensorReader& reader_in)
    : be_(be), n_expert_(files.config().n_expert), n_embd_(files.config().n_embd) {
  const TensorReader reader = reader_in ? reader_in : model_tensor_reader(files);
  const ModelConfig& c = files.config();
  experts_.resize(static_cast<size_t>(c.n_layer) * c.n_expert);
  for (int l = 0; l < c.n_layer; ++l)
    for (int e = 0; e < c.n_expert; ++e) {
      const auto specs = layout::expert_tensor_specs(c, l, e);
      for (int t = 0; t < 3; ++t)
        experts_[static_cast<size_t>(l * c.n_expert + e)][static_cast<size_t>(t)] = reader(specs[static_cast<size_t>(t)]);
    }
}

size_t LocalExpertExecutor::weight_bytes() const {
  size_t b = 0;
  for (const auto& ex : experts_)
    for (const EncodedTensor& t : ex) b += tensor_bytes(t);
  return b;
}

void combine_expert_outputs(const float* pair_out, const float* weights, size_t n, size_t k, size_t d, float* out) {
  for (size_t t = 0; t < n; ++t) {
    float* o = out + t * d;
    for (size_t j = 0; j < k; ++j) {
      const float w = weights[t * k + j];
      const float* y = &pair_out[(t * k + j) * d];
      for (size_t i = 0; i < d; ++i) o[i] += w * y[i];
    }
  }
}

std::vector<size_t> expert_chunks(size_t count, size_t max_chunk) {
  max_chunk = std::max<size_t>(max_chunk, 8);
  std::vector<size_t> chunks;
  if (count == 0) return chunks;
  const size_t n_chunks = (count + max_chunk - 1) / max_chunk;
  for (size_t c = 0; c < n_chunks; ++c) chunks.push_back(count / n_chunks + (c < count % n_chunks ? 1 : 0));
  return chunks;
}

void LocalExpertExecutor::submit(int l, const float* h, size_t n, size_t k, const int32_t* ids, const float* weights) {
  const size_t d = static_cast<size_t>(n_embd_);
  n_ = n;
  k_ = k;
  weights_ = weights;
  pair_out_.assign(n * k * d, 0.0f);  // output of the j-th choice of token t at [(t*k + j) * d]
  std::vector<size_t> pairs;
  for (int e = 0; e < n_expert_; ++e) {
    pairs.clear();
    for (size_t i = 0; i < n * k; ++i)
      if (ids[i] == e) pairs.push_back(i);
    const auto& ex = experts_[static_cast<size_t>(l * n_expert_ + e)];
    size_t at = 0;
    for (size_t m : expert_chunks(pairs.size(), kDefaultExpertBatch)) {
      xs_.resize(m * d);
      ys_.resize(m * d);
      for (size_t p = 0; p < m; ++p) std::memcpy(&xs_[p * d], h + (pairs[at + p] / k) * d, d * 4);
      expert_forward(be_, WeightView::of(ex[0]), WeightView::of(ex[1]), WeightView::of(ex[2]), xs_.data(), m,
                     ys_.data(), &scratch_);
      for (size_t p = 0; p < m; ++p) std::memcpy(&pair_out_[pairs[at + p] * d], &ys_[p * d], d * 4);
      at += m;
    }
  }
}

void LocalExpertExecutor::collect(float* out) {
  combine_expert_outputs(pair_out_.data(), weights_, n_, k_, static_cast<size_t>(n_embd_), out);
}

void route(const ModelConfig& cfg, const float* router_logits, size_t n, int32_t* ids, float* weights) {
  const size_t E = static_cast<size_t>(cfg.n_expert), k = static_cast<size_t>(cfg.n_expert_used);
  std::vector<float> p(E);
  std::vector<int32_t> order(E);
  for (size_t t = 0; t < n; ++t) {
    const float* lg = router_logits + t * E;
    softmax(lg, E, p.data());
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + static_cast<long>(k), order.end(),
                      [&](int32_t a, int32_t b) { return p[static_cast<size_t>(a)] > p[static_cast<size_t>(b)] ||
                                                         (p[static_cast<size_t>(a)] == p[static_cast<size_t>(b)] && a < b); });
    float top_sum = 0;
    for (size_t j = 0; j < k; ++j) top_sum += p[static_cast<size_t>(order[j])];
    for (size_t j = 0; j < k; ++j) {
      ids[t * k + j] = order[j];
      weights[t * k + j] = p[static_cast<size_t>(order[j])] / (cfg.norm_topk_prob ? top_sum : 1.0f);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Model

Model::Model(const ModelFiles& files, Backend& be, ExpertExecutor& experts, int n_ctx, const TensorReader& reader_in)
    : cfg_(files.config()), be_(be), experts_(experts) {
  const TensorReader reader = reader_in ? reader_in : model_tensor_reader(files);
  n_ctx_ = n_ctx > 0 ? std::min(n_ctx, cfg_.max_position_embeddings) : cfg_.max_position_embeddings;
  ODMOE_CHECK(cfg_.rope_scaling.is_null(), kModel, "unsupported",
              "rope_scaling " << cfg_.rope_scaling.dump() << " is not supported yet", "only plain RoPE is implemented");
  layers_.resize(static_cast<size_t>(cfg_.n_layer));
  for (const TensorSpec& s : layout::dense_tensor_specs(cfg_)) {
    EncodedTensor t = reader(s);
    if (s.layer_idx < 0) {
      if (s.kind == TensorKind::kEmbed) embed_ = std::move(t);
      else if (s.kind == TensorKind::kFinalNorm) final_norm_ = std::move(t);
      else if (s.kind == TensorKind::kLmHead) lm_head_ = std::move(t);
      continue;
    }
    LayerWeights& L = layers_[static_cast<size_t>(s.layer_idx)];
    switch (s.kind) {
      case TensorKind::kAttnNorm: L.attn_norm = std::move(t); break;
      case TensorKind::kFfnNorm: L.ffn_norm = std::move(t); break;
      case TensorKind::kWq: L.wq = std::move(t); break;
      case TensorKind::kWk: L.wk = std::move(t); break;
      case TensorKind::kWv: L.wv = std::move(t); break;
      case TensorKind::kWo: L.wo = std::move(t); break;
      case TensorKind::kBq: L.bq = std::move(t); break;
      case TensorKind::kBk: L.bk = std::move(t); break;
      case TensorKind::kBv: L.bv = std::move(t); break;
      case TensorKind::kBo: L.bo = std::move(t); break;
      case TensorKind::kQNorm: L.q_norm = std::move(t); break;
      case TensorKind::kKNorm: L.k_norm = std::move(t); break;
      case TensorKind::kRouter: L.router = std::move(t); break;
      case TensorKind::kSharedGate: L.shared_gate = std::move(t); break;
      case TensorKind::kSharedUp: L.shared_up = std::move(t); break;
      case TensorKind::kSharedDown: L.shared_down = std::move(t); break;
      case TensorKind::kSharedExpertGate: L.shared_expert_gate = std::move(t); break;
      default: break;
    }
  }
  const size_t kv_dim = this->kv_dim();
  k_cache_.assign(static_cast<size_t>(cfg_.n_layer) * n_ctx_ * kv_dim, 0.0f);
  v_cache_.assign(k_cache_.size(), 0.0f);
  // inv_freq[i] = 1 / theta^(2i / head_dim), in f32 as transformers computes it.
  for (int i = 0; i < cfg_.head_dim / 2; ++i)
    rope_inv_freq_.push_back(
        1.0f / static_cast<float>(std::pow(static_cast<float>(cfg_.rope_theta),
                                           static_cast<float>(2 * i) / static_cast<float>(cfg_.head_dim))));
  routing_.resize(static_cast<size_t>(cfg_.n_layer));
  kv_filled_ = std::make_unique<std::atomic<int>[]>(static_cast<size_t>(cfg_.n_layer));
  reset();
}

void Model::reset() {
  pos_ = 0;
  for (int l = 0; l < cfg_.n_layer; ++l) kv_filled_[static_cast<size_t>(l)].store(0, std::memory_order_release);
}

void Model::seek(int pos) {
  ODMOE_CHECK(pos >= 0 && pos < n_ctx_, kModel, "range", "cannot seek to position " << pos << " (context " << n_ctx_ << ")", "");
  pos_ = pos;
  for (int l = 0; l < cfg_.n_layer; ++l) {
    auto& f = kv_filled_[static_cast<size_t>(l)];
    f.store(std::min(f.load(std::memory_order_relaxed), pos), std::memory_order_release);
  }
}

void Model::copy_kv_rows(const KvRows& src, int layer, int begin, int end) {
  ODMOE_CHECK(layer >= 0 && layer < cfg_.n_layer && begin >= 0 && end <= n_ctx_ && begin <= end, kModel, "range",
              "copy_kv_rows: rows [" << begin << ", " << end << ") of layer " << layer << " out of range", "");
  const size_t kv = kv_dim();
  for (int p = begin; p < end; ++p) {
    std::memcpy(&k_cache_[kv_index(layer, p)], src.k_row(layer, p), kv * sizeof(float));
    std::memcpy(&v_cache_[kv_index(layer, p)], src.v_row(layer, p), kv * sizeof(float));
  }
}

KvMirror::KvMirror(int n_layer, int n_ctx, size_t kv_dim)
    : n_layer_(n_layer), n_ctx_(n_ctx), kv_dim_(kv_dim),
      k_(static_cast<size_t>(n_layer) * static_cast<size_t>(n_ctx) * kv_dim),
      v_(k_.size()),
      filled_(std::make_unique<std::atomic<int>[]>(static_cast<size_t>(n_layer))) {
  reset();
}

void KvMirror::reset() {
  for (int l = 0; l < n_layer_; ++l) filled_[static_cast<size_t>(l)].store(0, std::memory_order_release);
}

void KvMirror::write(int layer, int pos, size_t n, const float* k, const float* v) {
  ODMOE_CHECK(layer >= 0 && layer < n_layer_ && pos >= 0 && static_cast<size_t>(pos) + n <= static_cast<size_t>(n_ctx_),
              kMpi, "protocol", "KV rows [" << pos << ", " << pos + static_cast<int>(n) << ") of layer " << layer
                                             << " do not fit a context of " << n_ctx_, "");
  auto& f = filled_[static_cast<size_t>(layer)];
  // Rows at or past `pos` are rewritten: readers must not take them as filled meanwhile.
  f.store(std::min(f.load(std::memory_order_relaxed), pos), std::memory_order_release);
  std::memcpy(&k_[index(layer, pos)], k, n * kv_dim_ * sizeof(float));
  std::memcpy(&v_[index(layer, pos)], v, n * kv_dim_ * sizeof(float));
  f.store(pos + static_cast<int>(n), std::memory_order_release);
}

size_t Model::dense_weight_bytes() const {
  size_t b = tensor_bytes(embed_) + tensor_bytes(final_norm_) + tensor_bytes(lm_head_);
  for (const LayerWeights& L : layers_)
    for (const EncodedTensor* t : {&L.attn_norm, &L.ffn_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.bq, &L.bk, &L.bv, &L.bo,
                                   &L.q_norm, &L.k_norm, &L.router, &L.shared_gate, &L.shared_up, &L.shared_down,
                                   &L.shared_expert_gate})
      b += tensor_bytes(*t);
  return b;
}

void Model::forward(const int32_t* tokens, size_t n, bool all_logits, std::vector<float>* logits) {
  ODMOE_CHECK(n > 0, kModel, "empty", "forward() needs at least one token", "");
  ODMOE_CHECK(static_cast<size_t>(pos_) + n <= static_cast<size_t>(n_ctx_), kModel, "context-full",
              "the context holds " << n_ctx_ << " positions; " << pos_ << " are used and " << n << " more were given",
              "use a shorter prompt or fewer new tokens");
  const size_t d = static_cast<size_t>(cfg_.n_embd), V = static_cast<size_t>(cfg_.vocab_size);
  for (size_t t = 0; t < n; ++t)
    ODMOE_CHECK(tokens[t] >= 0 && static_cast<size_t>(tokens[t]) < V, kModel, "bad-token",
                "token id " << tokens[t] << " is outside the vocabulary [0, " << V << ")", "");
  experts_.begin_forward(tokens, n, pos_);
  x_.resize(n * d);
  for (size_t t = 0; t < n; ++t) {
    ODMOE_CHECK(tokens[t] >= 0 && static_cast<size_t>(tokens[t]) < V, kModel, "bad-token",
                "token id " << tokens[t] << " is outside the vocabulary [0, " << V << ")", "");
    const auto r = static_cast<size_t>(tokens[t]);
    decode_rows(embed_.dtype, d, embed_.data.data(), embed_.scales.data(), r, r + 1, &x_[t * d]);
  }
  h_.resize(n * d);
  o_.resize(n * d);
  const auto eps = static_cast<float>(cfg_.rms_norm_eps);
  for (int l = 0; l < cfg_.n_layer; ++l) {
    if (layer_hook_) layer_hook_(l, pos_, n);
    const LayerWeights& L = layers_[static_cast<size_t>(l)];
    be_.rms_norm(x_.data(), f32(L.attn_norm), n, d, eps, h_.data());
    attention(l, h_.data(), n, o_.data());
    for (size_t i = 0; i < n * d; ++i) x_[i] += o_[i];
    be_.rms_norm(x_.data(), f32(L.ffn_norm), n, d, eps, h_.data());
    moe(l, h_.data(), n, o_.data());
    for (size_t i = 0; i < n * d; ++i) x_[i] += o_[i];
  }
  pos_ += static_cast<int>(n);
  const size_t first = all_logits ? 0 : n - 1, m = n - first;
  be_.rms_norm(x_.data() + first * d, f32(final_norm_), m, d, eps, h_.data());
  logits->resize(m * V);
  const EncodedTensor& head = cfg_.tie_word_embeddings ? embed_ : lm_head_;
  be_.matmul(WeightView::of(head), h_.data(), m, logits->data());
}

void Model::attention(int l, const float* h, size_t n, float* out) {
  const LayerWeights& L = layers_[static_cast<size_t>(l)];
  const size_t hd = static_cast<size_t>(cfg_.head_dim), nh = static_cast<size_t>(cfg_.n_head),
               nkv = static_cast<size_t>(cfg_.n_head_kv);
  const size_t q_dim = nh * hd, kv_dim = nkv * hd;
  const auto eps = static_cast<float>(cfg_.rms_norm_eps);
  q_.resize(n * q_dim);
  k_.resize(n * kv_dim);
  v_.resize(n * kv_dim);
  be_.matmul(WeightView::of(L.wq), h, n, q_.data());
  be_.matmul(WeightView::of(L.wk), h, n, k_.data());
  be_.matmul(WeightView::of(L.wv), h, n, v_.data());
  add_bias(q_.data(), L.bq, n, q_dim);
  add_bias(k_.data(), L.bk, n, kv_dim);
  add_bias(v_.data(), L.bv, n, kv_dim);
  if (cfg_.qk_norm == QkNorm::kPerHead) {
    be_.rms_norm(q_.data(), f32(L.q_norm), n * nh, hd, eps, q_.data());
    be_.rms_norm(k_.data(), f32(L.k_norm), n * nkv, hd, eps, k_.data());
  } else if (cfg_.qk_norm == QkNorm::kFull) {
    be_.rms_norm(q_.data(), f32(L.q_norm), n, q_dim, eps, q_.data());
    be_.rms_norm(k_.data(), f32(L.k_norm), n, kv_dim, eps, k_.data());
  }
  if (cfg_.clip_qkv > 0) {
    const auto c = static_cast<float>(cfg_.clip_qkv);
    for (auto* buf : {&q_, &k_, &v_})
      for (float& x : *buf) x = std::clamp(x, -c, c);
  }
  float* kc = &k_cache_[static_cast<size_t>(l) * n_ctx_ * kv_dim];
  float* vc = &v_cache_[static_cast<size_t>(l) * n_ctx_ * kv_dim];
  for (size_t t = 0; t < n; ++t) {
    const int pos = pos_ + static_cast<int>(t);
    apply_rope(&q_[t * q_dim], nh, hd, rope_inv_freq_, pos);
    apply_rope(&k_[t * kv_dim], nkv, hd, rope_inv_freq_, pos);
    std::memcpy(kc + static_cast<size_t>(pos) * kv_dim, &k_[t * kv_dim], kv_dim * 4);
    std::memcpy(vc + static_cast<size_t>(pos) * kv_dim, &v_[t * kv_dim], kv_dim * 4);
  }
  kv_filled_[static_cast<size_t>(l)].store(pos_ + static_cast<int>(n), std::memory_order_release);
  att_.assign(n * q_dim, 0.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const size_t group = nh / nkv;
  const long n_jobs = static_cast<long>(n * nh);
#pragma omp parallel for schedule(dynamic, 1) if (n_jobs * (pos_ + static_cast<long>(n)) * static_cast<long>(hd) >= (1L << 15))
  for (long job = 0; job < n_jobs; ++job) {
    const size_t t = static_cast<size_t>(job) / nh, hh = static_cast<size_t>(job) % nh;
    const int pos = pos_ + static_cast<int>(t);
    const int start = cfg_.sliding_window > 0 ? std::max(0, pos - cfg_.sliding_window + 1) : 0;
    const float* q = &q_[t * q_dim + hh * hd];
    const size_t kvh = hh / group;
    std::vector<float> sc(static_cast<size_t>(pos - start + 1));
    float mx = -INFINITY;
    for (int j = start; j <= pos; ++j) {
      const float* kr = kc + static_cast<size_t>(j) * kv_dim + kvh * hd;
      float s = 0;
#pragma omp simd reduction(+ : s)
      for (size_t i = 0; i < hd; ++i) s += q[i] * kr[i];
      s *= scale;
      sc[static_cast<size_t>(j - start)] = s;
      mx = std::max(mx, s);
    }
    float sum = 0;
    for (float& s : sc) sum += (s = std::exp(s - mx));
    float* o = &att_[t * q_dim + hh * hd];
    for (int j = start; j <= pos; ++j) {
      const float w = sc[static_cast<size_t>(j - start)] / sum;
      const float* vr = vc + static_cast<size_t>(j) * kv_dim + kvh * hd;
#pragma omp simd
      for (size_t i = 0; i < hd; ++i) o[i] += w * vr[i];
    }
  }
  be_.matmul(WeightView::of(L.wo), att_.data(), n, out);
  add_bias(out, L.bo, n, static_cast<size_t>(cfg_.n_embd));
}

void Model::router_logits(int layer, const float* h, size_t n, float* out) const {
  ODMOE_CHECK(layer >= 0 && layer < cfg_.n_layer, kModel, "range", "layer " << layer << " out of range", "");
  be_.matmul(WeightView::of(layers_[static_cast<size_t>(layer)].router), h, n, out);
}

void Model::moe(int l, const float* h, size_t n, float* out) {
  const LayerWeights& L = layers_[static_cast<size_t>(l)];
  const size_t d = static_cast<size_t>(cfg_.n_embd), E = static_cast<size_t>(cfg_.n_expert),
               k = static_cast<size_t>(cfg_.n_expert_used);
  router_logits_.resize(n * E);
  be_.matmul(WeightView::of(L.router), h, n, router_logits_.data());
  route_ids_.resize(n * k);
  route_w_.resize(n * k);
  route(cfg_, router_logits_.data(), n, route_ids_.data(), route_w_.data());
  experts_.adjust_routing(l, router_logits_.data(), n, k, route_ids_.data(), route_w_.data());
  routing_[static_cast<size_t>(l)] = route_ids_;
  experts_.submit(l, h, n, k, route_ids_.data(), route_w_.data());
  if (cfg_.n_ff_shared > 0) {
    sh_out_.resize(n * d);
    expert_forward(be_, WeightView::of(L.shared_gate), WeightView::of(L.shared_up), WeightView::of(L.shared_down), h, n,
                   sh_out_.data(), &sh_scratch_);
    std::vector<float> gate(n, 1.0f);
    if (cfg_.shared_expert_gate) {
      be_.matmul(WeightView::of(L.shared_expert_gate), h, n, gate.data());
      for (float& g : gate) g = 1.0f / (1.0f + std::exp(-g));
    }
    shared_gate_ = std::move(gate);
  }
  std::fill(out, out + n * d, 0.0f);
  experts_.collect(out);
  if (cfg_.n_ff_shared > 0)
    for (size_t t = 0; t < n; ++t)
      for (size_t i = 0; i < d; ++i) out[t * d + i] += shared_gate_[t] * sh_out_[t * d + i];
}

}  // namespace odmoe
