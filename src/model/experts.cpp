// The routed experts of one process (LocalExpertExecutor), their combination, routing, and
// the KV mirror the predictor rank aligns its shadow to.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "odmoe/core/error.h"
#include "odmoe/core/softmax.h"
#include "odmoe/model/model.h"

namespace odmoe {
using layout::TensorSpec;

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
// KvMirror

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

void KvMirror::read_kv_rows(int layer, int pos0, size_t n, float* k, float* v) const {
  ODMOE_CHECK(layer >= 0 && layer < n_layer_ && pos0 >= 0 && static_cast<size_t>(pos0) + n <= static_cast<size_t>(n_ctx_),
              kModel, "range", "KV rows [" << pos0 << ", " << pos0 + static_cast<long>(n) << ") of layer " << layer
                                           << " out of range", "");
  std::memcpy(k, &k_[index(layer, pos0)], n * kv_dim_ * sizeof(float));
  std::memcpy(v, &v_[index(layer, pos0)], n * kv_dim_ * sizeof(float));
}

}  // namespace odmoe
