// The decoder: one implementation configured per architecture (ModelConfig), computed on a
// Device. It holds the dense weights (embeddings, attention, norms, routers, shared experts,
// LM head) in weights buffers, the KV cache in a KvCache and its activations in one compute
// buffer; routed experts are computed by an ExpertExecutor, so the same decoder runs
// single-process (LocalExpertExecutor: all experts in memory) or distributed (experts on
// expert ranks).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "odmoe/backend/backend.h"
#include "odmoe/backend/device.h"
#include "odmoe/backend/kv_cache.h"
#include "odmoe/arch/model_config.h"
#include "odmoe/weights/model_files.h"

namespace odmoe {

// Routed experts of one layer for a batch of tokens. The model calls begin_forward once per
// forward step, then submit/collect for every layer in order; between the two it computes
// the layer's shared expert, so a distributed executor overlaps its experts with it.
class ExpertExecutor {
 public:
  virtual ~ExpertExecutor() = default;
  // The input tokens of the next forward step (the prompt, then one token per step), at
  // positions [pos, pos + n).
  virtual void begin_forward(const int32_t* tokens, size_t n, int pos) { (void)tokens, (void)n, (void)pos; }
  // May change a layer's routing before it is used (cache mode's expert substitution): ids
  // and weights [n, k] as route() made them from router_logits [n, n_expert].
  virtual void adjust_routing(int layer_idx, const float* router_logits, size_t n, size_t k, int32_t* ids,
                              float* weights) {
    (void)layer_idx, (void)router_logits, (void)n, (void)k, (void)ids, (void)weights;
  }
  // h: [n, n_embd] (the post-attention-normed hidden states); ids, weights: [n, k] routing.
  // The pointers stay valid until collect().
  virtual void submit(int layer_idx, const float* h, size_t n, size_t k, const int32_t* ids, const float* weights) = 0;
  // out[t] = sum over j in 0..k-1, in that order, of weights[t, j] * expert_{ids[t, j]}(h[t]).
  virtual void collect(float* out) = 0;
};

// The combination every executor uses: out[t] += weights[t, j] * y[t*k + j] for j in order.
// pair_out: [n * k, d].
void combine_expert_outputs(const float* pair_out, const float* weights, size_t n, size_t k, size_t d, float* out);

// How many tokens of one expert go in each batch: `count` split into nearly equal chunks of
// at most `max_chunk` (>= 8), so a chunk has fewer than 4 tokens only when `count` has.
// Batches of 4+ tokens take the prefill matmul path, so every executor that splits this way
// computes the same floats for the same token.
std::vector<size_t> expert_chunks(size_t count, size_t max_chunk);
inline constexpr size_t kDefaultExpertBatch = 64;

// SwiGLU expert: down(silu(gate x) * up x) for n tokens (x: [n, n_embd], out: [n, n_embd]).
void expert_forward(Backend& be, const WeightView& gate, const WeightView& up, const WeightView& down, const float* x,
                    size_t n, float* out, std::vector<float>* scratch);

// Where a model's tensors come from: the model's files (ModelFiles::read_tensor), its
// shadow.h5, or a re-encoding of either in memory (the shadow predictor).
using TensorReader = std::function<EncodedTensor(const layout::TensorSpec&)>;
TensorReader model_tensor_reader(const ModelFiles& files);

// All routed experts resident in memory, read from the model's expert shards (or `reader`).
class LocalExpertExecutor final : public ExpertExecutor {
 public:
  LocalExpertExecutor(const ModelFiles& files, Backend& be, const TensorReader& reader = {});
  size_t weight_bytes() const;
  void submit(int layer_idx, const float* h, size_t n, size_t k, const int32_t* ids, const float* weights) override;
  void collect(float* out) override;

 private:
  Backend& be_;
  int n_expert_, n_embd_;
  std::vector<std::array<EncodedTensor, 3>> experts_;  // [layer * n_expert + e] = {gate, up, down}
  std::vector<float> xs_, ys_, scratch_, pair_out_;
  size_t n_ = 0, k_ = 0;
  const float* weights_ = nullptr;
};

// Routing exactly as transformers computes it: softmax over all experts (f32), top-k
// (ties to the lower index), renormalised to sum 1 when norm_topk_prob.
void route(const ModelConfig& cfg, const float* router_logits, size_t n, int32_t* ids, float* weights);

// KV-cache rows another decoder can align to (the shadow predictor's KV alignment): the
// model itself, or a mirror of it filled from messages on another rank.
class KvRows {
 public:
  virtual ~KvRows() = default;
  // Rows [0, kv_filled(l)) of layer l hold this sequence's entries; it grows with release
  // order as they are written, so another thread may read the rows below it meanwhile.
  virtual int kv_filled(int layer) const = 0;
  // Rows [pos0, pos0 + n) of `layer`, token-major: k, v [n, kv_dim] (KV heads in order).
  virtual void read_kv_rows(int layer, int pos0, size_t n, float* k, float* v) const = 0;
};

// A copy of another rank's KV rows, written as its messages arrive (one writer thread).
class KvMirror final : public KvRows {
 public:
  KvMirror(int n_layer, int n_ctx, size_t kv_dim);
  void reset();  // a new sequence
  // Rows [pos, pos + n) of `layer`: k and v are [n, kv_dim] each.
  void write(int layer, int pos, size_t n, const float* k, const float* v);
  int kv_filled(int layer) const override { return filled_[static_cast<size_t>(layer)].load(std::memory_order_acquire); }
  void read_kv_rows(int layer, int pos0, size_t n, float* k, float* v) const override;
  size_t kv_dim() const { return kv_dim_; }

 private:
  size_t index(int layer, int pos) const { return (static_cast<size_t>(layer) * n_ctx_ + static_cast<size_t>(pos)) * kv_dim_; }
  int n_layer_, n_ctx_;
  size_t kv_dim_;
  std::vector<float> k_, v_;  // f32 [n_layer][n_ctx][kv_dim] each (token-major, as messages carry them)
  std::unique_ptr<std::atomic<int>[]> filled_;
};

struct LayerWeights {
  EncodedTensor attn_norm, ffn_norm;        // f32 [n_embd]
  EncodedTensor wq, wk, wv, wo;             // [q_dim, n_embd], [kv_dim, n_embd] x2, [n_embd, q_dim]
  EncodedTensor bq, bk, bv, bo;             // f32 biases, empty if the model has none
  EncodedTensor q_norm, k_norm;             // f32 [head_dim] (per head) or [q_dim]/[kv_dim] (full); empty if none
  EncodedTensor router;                     // f32 [n_expert, n_embd]
  EncodedTensor shared_gate, shared_up, shared_down;  // [n_ff_shared, n_embd] x2, [n_embd, n_ff_shared]
  EncodedTensor shared_expert_gate;         // f32 [1, n_embd]
};

// The same tensors as the device computes from them (views of the model's weights buffers).
struct LayerTensors {
  Tensor attn_norm, ffn_norm, wq, wk, wv, wo, bq, bk, bv, bo, q_norm, k_norm, router;
  Tensor shared_gate, shared_up, shared_down, shared_expert_gate;
};

class Model final : public KvRows {
 public:
  // Loads the dense weights of `files` (or what `reader` gives for them) onto `device` (wrapped
  // without a copy where the device computes from host memory); `n_ctx` <= 0 means the
  // model's max_position_embeddings.
  Model(const ModelFiles& files, Device& device, ExpertExecutor& experts, int n_ctx = 0, const TensorReader& reader = {});
  ~Model() override;

  const ModelConfig& config() const { return cfg_; }
  int n_ctx() const { return n_ctx_; }
  int position() const { return pos_; }
  // Starts a new sequence: the KV cache is empty again.
  void reset();
  // Moves to position `pos`: the next forward writes its KV entries from there. Backwards:
  // a speculative step being redone. Forwards: the rows in between are left as they are,
  // for the caller to fill (KV alignment).
  void seek(int pos);
  // Runs `n` tokens at positions [position(), position() + n) and advances. Writes the
  // logits of the last token ([vocab]) or, with all_logits, of every token ([n, vocab]).
  // Throws odmoe::Error on a token id outside the vocabulary or a full context.
  void forward(const int32_t* tokens, size_t n, bool all_logits, std::vector<float>* logits);

  // Router logits of `layer` for hidden states h [n, n_embd] (the layer's normed MoE input):
  // what look-ahead predictors apply to another layer's hidden state. out: [n, n_expert].
  // Host arrays; uses the model's stream (the thread that runs forward()).
  void router_logits(int layer, const float* h, size_t n, float* out) const;

  // Router decisions of the last forward for layer l, token t: k expert ids.
  const std::vector<int32_t>& last_routing(int layer_idx) const { return routing_[static_cast<size_t>(layer_idx)]; }
  // The router logits [n, n_expert] of the layer being computed: valid inside
  // ExpertExecutor::submit (look-ahead predictors rank candidates beyond the top-k).
  const float* current_router_logits() const { return router_logits_.data(); }

  // Called at the start of every layer of forward(), before its attention, with the layer,
  // the first position and the token count. A hook may throw to abandon the forward step
  // (position() is then unchanged). The shadow predictor aligns its KV cache here.
  using LayerHook = std::function<void(int layer, int pos, size_t n)>;
  void set_layer_hook(LayerHook hook) { layer_hook_ = std::move(hook); }

  // KV alignment. kv_filled(l): how many positions of layer l's KV cache hold this sequence's
  // entries; it grows as forward() writes them, with release order, so another thread may
  // read rows below it while this model runs (rows below it are not written again until
  // reset()). copy_kv_rows copies rows [begin, end) of layer l from `src` (same shape).
  int kv_filled(int layer) const override { return kv_->filled(layer); }
  // Reads through the device's stream; safe beside forward() on the CPU device.
  void read_kv_rows(int layer, int pos0, size_t n, float* k, float* v) const override;
  size_t kv_dim() const { return static_cast<size_t>(cfg_.n_head_kv) * cfg_.head_dim; }
  void copy_kv_rows(const KvRows& src, int layer, int begin, int end);

  size_t dense_weight_bytes() const;  // the weights this object holds (not the routed experts)
  size_t kv_cache_bytes() const { return kv_->bytes(); }
  Device& device() const { return dev_; }

 private:
  // Activations of one forward step, views of compute_ (f32, [tokens, dim] each).
  struct Scratch {
    Tensor x, h, o, q, k, v, att, router, sh_gate, sh_up, sh_out, sh_logit, logits;
  };
  void place_weights(const TensorReader& reader);
  void reserve_tokens(size_t n);  // the compute buffer holds n tokens' activations
  void attention(int l, size_t n);  // s_.h -> s_.o
  void moe(int l, size_t n);        // s_.h -> s_.o
  const float* host_rows(const Tensor& t, size_t count, float* staging);

  ModelConfig cfg_;
  Device& dev_;
  ExpertExecutor& experts_;
  int n_ctx_, pos_ = 0;
  EncodedTensor embed_, final_norm_, lm_head_;  // host copies, as read
  std::vector<LayerWeights> layers_;
  std::vector<std::unique_ptr<Buffer>> weight_bufs_;  // the weights on the device (wraps of the above on the CPU)
  Tensor embed_t_, final_norm_t_, lm_head_t_, rope_inv_freq_;  // rope_inv_freq_: f32 [head_dim / 2]
  std::vector<LayerTensors> layer_t_;
  std::unique_ptr<KvCache> kv_;
  std::vector<std::vector<int32_t>> routing_;
  LayerHook layer_hook_;
  // The compute buffer, sized for the longest forward step so far, and a host staging buffer
  // for the hidden states the expert executor reads (only where the device is not host-visible).
  std::unique_ptr<Buffer> compute_, staging_;
  size_t n_tokens_cap_ = 0;
  Scratch s_;
  float* stage_h_ = nullptr;    // f32 [cap, n_embd] in staging_, or null
  float* stage_out_ = nullptr;  // f32 [cap, n_embd] in staging_, or null
  std::vector<float> router_logits_, route_w_;  // host f32 [n, n_expert], [n, k]
  std::vector<int32_t> route_ids_;              // [n, k]
  mutable std::unique_ptr<Buffer> lookahead_;   // router_logits(): f32 h [n, n_embd] then out [n, n_expert]
};

}  // namespace odmoe
