#include "odmoe/model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>

#include "odmoe/core/error.h"

namespace odmoe {
using layout::TensorKind;
using layout::TensorSpec;

namespace {

bool present(const EncodedTensor& t) { return !t.data.empty(); }
size_t tensor_bytes(const EncodedTensor& t) { return t.data.size() + t.scales.size() * sizeof(float); }

// SwiGLU expert on a stream: down(silu(gate x) * up x). x [n, n_embd], g and u [n, n_ff]
// scratch, out [n, n_embd].
void expert_forward(Stream& s, const Tensor& gate, const Tensor& up, const Tensor& down, const Tensor& x, size_t n,
                    const Tensor& g, const Tensor& u, const Tensor& out) {
  s.matmul(gate, x, n, g);
  s.matmul(up, x, n, u);
  s.swiglu(g, u, n * gate.rows, g);
  s.matmul(down, g, n, out);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Weights on the device

void Model::place_weights(const TensorReader& reader) {
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
  // Each tensor as the device sees it: its host bytes wrapped where the device computes from
  // host memory, else a weights buffer of its own, uploaded once.
  Stream& st = dev_.stream();
  auto place = [&](EncodedTensor& e, const char* what) -> Tensor {
    if (!present(e)) return {};
    auto one = [&](void* data, size_t bytes, const std::string& name) -> Buffer* {
      std::unique_ptr<Buffer> b = dev_.wrap_host(BufferUsage::kWeights, data, bytes, name);
      if (!b) {
        b = dev_.allocate(BufferUsage::kWeights, bytes, name);
        st.set(Tensor::f32(b.get(), 0, 1, (bytes + 3) / 4), 0, data, bytes);  // the bytes as they are
      }
      weight_bufs_.push_back(std::move(b));
      return weight_bufs_.back().get();
    };
    Tensor t;
    t.dtype = e.dtype;
    t.rows = e.rows;
    t.cols = e.cols;
    t.buffer = one(e.data.data(), e.data.size(), what);
    if (!e.scales.empty()) t.scale_buffer = one(e.scales.data(), e.scales.size() * sizeof(float), std::string(what) + " scales");
    return t;
  };
  embed_t_ = place(embed_, "token embeddings");
  final_norm_t_ = place(final_norm_, "final norm");
  lm_head_t_ = place(lm_head_, "lm head");
  layer_t_.resize(layers_.size());
  for (size_t l = 0; l < layers_.size(); ++l) {
    LayerWeights& L = layers_[l];
    LayerTensors& T = layer_t_[l];
    T.attn_norm = place(L.attn_norm, "attn_norm");
    T.ffn_norm = place(L.ffn_norm, "ffn_norm");
    T.wq = place(L.wq, "wq");
    T.wk = place(L.wk, "wk");
    T.wv = place(L.wv, "wv");
    T.wo = place(L.wo, "wo");
    T.bq = place(L.bq, "bq");
    T.bk = place(L.bk, "bk");
    T.bv = place(L.bv, "bv");
    T.bo = place(L.bo, "bo");
    T.q_norm = place(L.q_norm, "q_norm");
    T.k_norm = place(L.k_norm, "k_norm");
    T.router = place(L.router, "router");
    T.shared_gate = place(L.shared_gate, "shared_gate");
    T.shared_up = place(L.shared_up, "shared_up");
    T.shared_down = place(L.shared_down, "shared_down");
    T.shared_expert_gate = place(L.shared_expert_gate, "shared_expert_gate");
  }
  // inv_freq[i] = 1 / theta^(2i / head_dim), in f32 as transformers computes it.
  std::vector<float> inv_freq;
  for (int i = 0; i < cfg_.head_dim / 2; ++i)
    inv_freq.push_back(1.0f / static_cast<float>(std::pow(static_cast<float>(cfg_.rope_theta),
                                                          static_cast<float>(2 * i) / static_cast<float>(cfg_.head_dim))));
  weight_bufs_.push_back(dev_.allocate(BufferUsage::kWeights, std::max<size_t>(1, inv_freq.size()) * sizeof(float),
                                       "RoPE frequencies"));
  rope_inv_freq_ = Tensor::f32(weight_bufs_.back().get(), 0, 1, inv_freq.size());
  st.set(rope_inv_freq_, 0, inv_freq.data(), inv_freq.size() * sizeof(float));
  st.synchronize();
}

// ---------------------------------------------------------------------------------------
// Model

Model::Model(const ModelFiles& files, Device& device, ExpertExecutor& experts, int n_ctx, const TensorReader& reader_in)
    : cfg_(files.config()), dev_(device), experts_(experts) {
  const TensorReader reader = reader_in ? reader_in : model_tensor_reader(files);
  n_ctx_ = n_ctx > 0 ? std::min(n_ctx, cfg_.max_position_embeddings) : cfg_.max_position_embeddings;
  ODMOE_CHECK(cfg_.rope_scaling.is_null(), kModel, "unsupported",
              "rope_scaling " << cfg_.rope_scaling.dump() << " is not supported yet", "only plain RoPE is implemented");
  place_weights(reader);
  kv_ = std::make_unique<KvCache>(dev_, cfg_.n_layer, cfg_.n_head_kv, cfg_.head_dim, n_ctx_);
  routing_.resize(static_cast<size_t>(cfg_.n_layer));
  reserve_tokens(1);
  reset();
}

Model::~Model() = default;

void Model::reserve_tokens(size_t n) {
  if (n <= n_tokens_cap_) return;
  const size_t d = static_cast<size_t>(cfg_.n_embd), hd = static_cast<size_t>(cfg_.head_dim);
  const size_t q_dim = static_cast<size_t>(cfg_.n_head) * hd, kv_dim = this->kv_dim();
  const size_t E = static_cast<size_t>(cfg_.n_expert), ff_sh = static_cast<size_t>(std::max(0, cfg_.n_ff_shared));
  const size_t V = static_cast<size_t>(cfg_.vocab_size);
  // Per token: x, h, o [n_embd]; q, att [q_dim]; k, v [kv_dim]; router [n_expert]; shared
  // gate, up [n_ff_shared], out [n_embd], gate logit [1]; logits [vocab].
  const size_t widths[] = {d, d, d, q_dim, kv_dim, kv_dim, q_dim, E, ff_sh, ff_sh, d, 1, V};
  size_t per_token = 0;
  for (size_t w : widths) per_token += (w + 15) / 16 * 16;  // 64-byte aligned rows of every tensor
  s_ = {};
  compute_.reset();
  compute_ = dev_.allocate(BufferUsage::kCompute, per_token * n * sizeof(float),
                           "activations of " + std::to_string(n) + " tokens");
  size_t at = 0;
  Tensor* views[] = {&s_.x, &s_.h, &s_.o, &s_.q, &s_.k, &s_.v, &s_.att, &s_.router, &s_.sh_gate, &s_.sh_up,
                     &s_.sh_out, &s_.sh_logit, &s_.logits};
  for (size_t i = 0; i < std::size(widths); ++i) {
    *views[i] = Tensor::f32(compute_.get(), at, n, widths[i]);
    at += (widths[i] + 15) / 16 * 16 * n * sizeof(float);
  }
  staging_.reset();
  stage_h_ = stage_out_ = nullptr;
  if (!compute_->host()) {
    staging_ = dev_.allocate(BufferUsage::kHostStaging, 2 * n * d * sizeof(float), "hidden states to and from the experts");
    stage_h_ = static_cast<float*>(staging_->host());
    stage_out_ = stage_h_ + n * d;
  }
  n_tokens_cap_ = n;
}

void Model::reset() {
  pos_ = 0;
  kv_->clear();
}

void Model::seek(int pos) {
  ODMOE_CHECK(pos >= 0 && pos < n_ctx_, kModel, "range", "cannot seek to position " << pos << " (context " << n_ctx_ << ")", "");
  pos_ = pos;
  kv_->truncate(pos);
}

void Model::read_kv_rows(int layer, int pos0, size_t n, float* k, float* v) const {
  kv_->read_rows(dev_.stream(), layer, pos0, n, k, v);
}

void Model::copy_kv_rows(const KvRows& src, int layer, int begin, int end) {
  ODMOE_CHECK(layer >= 0 && layer < cfg_.n_layer && begin >= 0 && end <= n_ctx_ && begin <= end, kModel, "range",
              "copy_kv_rows: rows [" << begin << ", " << end << ") of layer " << layer << " out of range", "");
  const auto n = static_cast<size_t>(end - begin);
  std::vector<float> k(n * kv_dim()), v(n * kv_dim());  // f32 [n, kv_dim] each
  src.read_kv_rows(layer, begin, n, k.data(), v.data());
  kv_->write_rows(dev_.stream(), layer, begin, n, k.data(), v.data());
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

const float* Model::host_rows(const Tensor& t, size_t count, float* staging) {
  if (const float* p = t.host_f32()) return p;
  Stream& st = dev_.stream();
  st.get(t, 0, staging, count * sizeof(float));
  st.synchronize();
  return staging;
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
  reserve_tokens(n);
  Stream& st = dev_.stream();
  st.embed_rows(embed_t_, tokens, n, s_.x);
  const auto eps = static_cast<float>(cfg_.rms_norm_eps);
  for (int l = 0; l < cfg_.n_layer; ++l) {
    if (layer_hook_) layer_hook_(l, pos_, n);
    const LayerTensors& L = layer_t_[static_cast<size_t>(l)];
    st.rms_norm(s_.x, L.attn_norm, n, d, eps, s_.h);
    attention(l, n);
    st.add(s_.x, s_.o, n * d);
    st.rms_norm(s_.x, L.ffn_norm, n, d, eps, s_.h);
    moe(l, n);
    st.add(s_.x, s_.o, n * d);
  }
  pos_ += static_cast<int>(n);
  const size_t first = all_logits ? 0 : n - 1, m = n - first;
  st.rms_norm(s_.x.row_range(first, m), final_norm_t_, m, d, eps, s_.h);
  const Tensor& head = cfg_.tie_word_embeddings ? embed_t_ : lm_head_t_;
  st.matmul(head, s_.h, m, s_.logits);
  logits->resize(m * V);
  st.get(s_.logits, 0, logits->data(), m * V * sizeof(float));
  st.synchronize();
}

void Model::attention(int l, size_t n) {
  const LayerTensors& L = layer_t_[static_cast<size_t>(l)];
  const size_t hd = static_cast<size_t>(cfg_.head_dim), nh = static_cast<size_t>(cfg_.n_head),
               nkv = static_cast<size_t>(cfg_.n_head_kv);
  const size_t q_dim = nh * hd, kv_dim = nkv * hd;
  const auto eps = static_cast<float>(cfg_.rms_norm_eps);
  Stream& st = dev_.stream();
  st.matmul(L.wq, s_.h, n, s_.q);
  st.matmul(L.wk, s_.h, n, s_.k);
  st.matmul(L.wv, s_.h, n, s_.v);
  if (!L.bq.empty()) st.add_bias(s_.q, L.bq, n, q_dim);
  if (!L.bk.empty()) st.add_bias(s_.k, L.bk, n, kv_dim);
  if (!L.bv.empty()) st.add_bias(s_.v, L.bv, n, kv_dim);
  if (cfg_.qk_norm == QkNorm::kPerHead) {
    st.rms_norm(s_.q, L.q_norm, n * nh, hd, eps, s_.q);
    st.rms_norm(s_.k, L.k_norm, n * nkv, hd, eps, s_.k);
  } else if (cfg_.qk_norm == QkNorm::kFull) {
    st.rms_norm(s_.q, L.q_norm, n, q_dim, eps, s_.q);
    st.rms_norm(s_.k, L.k_norm, n, kv_dim, eps, s_.k);
  }
  if (cfg_.clip_qkv > 0) {
    const auto c = static_cast<float>(cfg_.clip_qkv);
    st.clamp(s_.q, n * q_dim, c);
    st.clamp(s_.k, n * kv_dim, c);
    st.clamp(s_.v, n * kv_dim, c);
  }
  st.rope(s_.q, n, nh, hd, pos_, rope_inv_freq_);
  st.rope(s_.k, n, nkv, hd, pos_, rope_inv_freq_);
  st.kv_store(*kv_, l, pos_, n, s_.k, s_.v);
  st.synchronize();  // the rows are in the cache before they count as filled
  kv_->set_filled(l, pos_ + static_cast<int>(n));
  AttentionParams p;
  p.n_head = cfg_.n_head;
  p.n_head_kv = cfg_.n_head_kv;
  p.head_dim = cfg_.head_dim;
  p.window = cfg_.sliding_window;
  p.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  st.attention(s_.q, *kv_, l, pos_, n, p, s_.att);
  st.matmul(L.wo, s_.att, n, s_.o);
  if (!L.bo.empty()) st.add_bias(s_.o, L.bo, n, static_cast<size_t>(cfg_.n_embd));
}

void Model::router_logits(int layer, const float* h, size_t n, float* out) const {
  ODMOE_CHECK(layer >= 0 && layer < cfg_.n_layer, kModel, "range", "layer " << layer << " out of range", "");
  const size_t d = static_cast<size_t>(cfg_.n_embd), E = static_cast<size_t>(cfg_.n_expert);
  const size_t need = n * (d + E) * sizeof(float);
  if (!lookahead_ || lookahead_->bytes() < need)
    lookahead_ = dev_.allocate(BufferUsage::kCompute, need, "look-ahead router input");
  const Tensor x = Tensor::f32(lookahead_.get(), 0, n, d), y = Tensor::f32(lookahead_.get(), n * d * sizeof(float), n, E);
  Stream& st = dev_.stream();
  st.set(x, 0, h, n * d * sizeof(float));
  st.matmul(layer_t_[static_cast<size_t>(layer)].router, x, n, y);
  st.get(y, 0, out, n * E * sizeof(float));
  st.synchronize();
}

void Model::moe(int l, size_t n) {
  const LayerTensors& L = layer_t_[static_cast<size_t>(l)];
  const size_t d = static_cast<size_t>(cfg_.n_embd), E = static_cast<size_t>(cfg_.n_expert),
               k = static_cast<size_t>(cfg_.n_expert_used);
  Stream& st = dev_.stream();
  st.matmul(L.router, s_.h, n, s_.router);
  router_logits_.resize(n * E);
  st.get(s_.router, 0, router_logits_.data(), n * E * sizeof(float));
  st.synchronize();
  route_ids_.resize(n * k);
  route_w_.resize(n * k);
  route(cfg_, router_logits_.data(), n, route_ids_.data(), route_w_.data());
  experts_.adjust_routing(l, router_logits_.data(), n, k, route_ids_.data(), route_w_.data());
  routing_[static_cast<size_t>(l)] = route_ids_;
  experts_.submit(l, host_rows(s_.h, n * d, stage_h_), n, k, route_ids_.data(), route_w_.data());
  if (cfg_.n_ff_shared > 0) {
    expert_forward(st, L.shared_gate, L.shared_up, L.shared_down, s_.h, n, s_.sh_gate, s_.sh_up, s_.sh_out);
    if (cfg_.shared_expert_gate) st.matmul(L.shared_expert_gate, s_.h, n, s_.sh_logit);
  }
  // The routed experts' sum, written on the host (the executor's output) and then on the device.
  float* out = s_.o.host_f32() ? s_.o.host_f32() : stage_out_;
  st.synchronize();
  std::fill(out, out + n * d, 0.0f);
  experts_.collect(out);
  if (out == stage_out_) st.set(s_.o, 0, out, n * d * sizeof(float));
  if (cfg_.n_ff_shared > 0) {
    if (cfg_.shared_expert_gate) st.sigmoid_gate_add(s_.o, s_.sh_out, s_.sh_logit, n, d);
    else st.add(s_.o, s_.sh_out, n * d);  // a gate of 1: out + 1 * y is out + y exactly
  }
}

}  // namespace odmoe
