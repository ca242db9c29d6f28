// The CUDA op layer: free functions on device pointers and a stream, one .cu file per op
// family. A CUDA device class wraps them; the CPU backend is the oracle they are tested
// against (tests/test_cuda_ops.cpp). Internal to src/backend/cuda: it needs the CUDA headers.
//
// Conventions: every pointer is device memory unless named host_*; activations are f32
// row-major; weights are stored tensors [rows, cols] = [out, in] (Hugging Face Linear) in any
// DType, with tensor_codec's layout and scales; every function only enqueues work on `stream`
// (router_logits_to_host also waits for it) and throws odmoe::Error on a bad argument or a
// failed launch. A fault inside a kernel shows at the next synchronising call.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "odmoe/core/dtype.h"

namespace odmoe::cuda {

// A stored weight matrix in device memory.
struct DeviceMatrix {
  DType dtype = DType::kF32;
  size_t rows = 0, cols = 0;
  const void* data = nullptr;     // dtype_data_bytes(dtype, rows, cols)
  const float* scales = nullptr;  // f32 int8: [rows]; int4: [rows, int4_groups(cols)]; else unused
};

// ---------------------------------------------------------------------------------------
// Matrix products (cuda_gemv.cu, cuda_gemm.cu): y[t, r] = sum_c w[r, c] * x[t, c],
// x f32 [n, cols], y f32 [n, rows].

// The most tokens the GEMV kernels take in one call (each weight load serves all of them).
constexpr size_t kGemvMaxTokens = 8;

// Decode GEMV, 1 <= n <= kGemvMaxTokens: f32 activations, f32 accumulation, int8/int4
// dequantised in registers.
void gemv(const DeviceMatrix& w, const float* x, size_t n, float* y, cudaStream_t stream);

// What prefill GEMMs need: a cuBLAS handle and scratch (activations in 16 bits, a dequantised
// weight tile). Not thread-safe; one per stream that runs GEMMs. Scratch grows on demand
// (cudaMalloc, which synchronises the device); reserve() sizes it once up front.
class GemmContext {
 public:
  // max_tile_bytes: the most bytes of bf16 weights one dequantised tile may take.
  explicit GemmContext(size_t max_tile_bytes = size_t{64} << 20);
  ~GemmContext();
  GemmContext(const GemmContext&) = delete;
  GemmContext& operator=(const GemmContext&) = delete;

  cublasHandle_t handle() const { return handle_; }
  size_t max_tile_bytes() const { return max_tile_bytes_; }
  // Scratch enough for gemm() of up to n_tokens tokens on weights of up to `cols` columns.
  void reserve(size_t n_tokens, size_t cols, size_t rows);
  // Device scratch `slot` (0: activations, 1: weight tile) of at least `bytes`.
  void* scratch(int slot, size_t bytes);

 private:
  cublasHandle_t handle_ = nullptr;
  void* scratch_[2] = {nullptr, nullptr};
  size_t scratch_bytes_[2] = {0, 0};
  size_t max_tile_bytes_;
};

// Prefill GEMM through cuBLAS, any n >= 1. f32 weights: f32 GEMM (no TF32). bf16/f16: x is
// rounded to the weights' type, products summed in f32 (tensor cores). int8/int4: x rounded to
// bf16, weights dequantised to bf16 tile by tile (at most ctx.max_tile_bytes() per tile).
void gemm(GemmContext& ctx, const DeviceMatrix& w, const float* x, size_t n, float* y, cudaStream_t stream);

// gemv for n <= kGemvMaxTokens, gemm otherwise.
void matmul(GemmContext& ctx, const DeviceMatrix& w, const float* x, size_t n, float* y, cudaStream_t stream);

// Rows [row_begin, row_begin + n_rows) of w decoded to bf16 (out: [n_rows, w.cols]).
void dequantize_rows_bf16(const DeviceMatrix& w, size_t row_begin, size_t n_rows, void* out, cudaStream_t stream);

// Router logits for host routing: matmul into d_y [n, w.rows], copied to host_y (pinned
// memory makes the copy asynchronous), then waits for `stream`.
void router_logits_to_host(GemmContext& ctx, const DeviceMatrix& w, const float* x, size_t n, float* d_y,
                           float* host_y, cudaStream_t stream);

// ---------------------------------------------------------------------------------------
// Normalisation and element-wise ops (cuda_norm.cu, cuda_elementwise.cu, cuda_rope.cu).
// `count` is a number of f32 values.

// y[r] = x[r] / rms(x[r]) * weight for n_rows rows of `dim` (weight f32 [dim]); y may alias x.
// q/k norm per head is this with rows of head_dim; the full q/k norm with rows of q_dim.
void rms_norm(const float* x, const float* weight, size_t n_rows, size_t dim, float eps, float* y,
              cudaStream_t stream);

// Rotates pairs (i, i + head_dim/2) of every head of x [n_tokens, n_heads, head_dim] in place,
// as transformers' rotate_half: token t is at position pos0 + t, angle = pos * inv_freq[i]
// (inv_freq f32 [head_dim/2] in device memory, so any frequency scaling is the caller's
// table); cos and sin are multiplied by attn_factor (1 for plain RoPE; YaRN's mscale).
void rope(float* x, size_t n_tokens, int n_heads, int head_dim, const float* inv_freq, int pos0, float attn_factor,
          cudaStream_t stream);

void add_bias(float* y, const float* bias, size_t n_rows, size_t dim, cudaStream_t stream);  // y[r] += bias [dim]
void add(float* y, const float* x, size_t count, cudaStream_t stream);                        // y += x (residual)
void clamp(float* x, size_t count, float limit, cudaStream_t stream);  // x = clamp(x, -limit, limit); NaN stays
// out = silu(gate) * up; out may alias gate or up.
void swiglu(const float* gate, const float* up, size_t count, float* out, cudaStream_t stream);
// The shared expert's contribution: out[t] += sigmoid(gate_logit[t]) * shared[t] for rows of
// `dim`; gate_logit null means a gate of 1 (no shared-expert gate).
void add_gated(float* out, const float* gate_logit, const float* shared, size_t n_rows, size_t dim,
               cudaStream_t stream);
// out[t] = row tokens[t] of `table` decoded to f32 (tokens int32 [n] in device memory, already
// checked against table.rows by the caller; an id out of range gives a row of NaN).
void embed_rows(const DeviceMatrix& table, const int32_t* tokens, size_t n, float* out, cudaStream_t stream);

// ---------------------------------------------------------------------------------------
// Attention over a KV cache (cuda_attention.cu). Per layer the cache is f32
// [n_head_kv][n_ctx][head_dim] (head-major: a head's rows are contiguous).

// Writes n new rows at positions pos0.. from k_new, v_new f32 [n][n_head_kv][head_dim].
void kv_append(const float* k_new, const float* v_new, size_t n, int pos0, int n_head_kv, int head_dim,
               float* k_cache, float* v_cache, size_t n_ctx, cudaStream_t stream);

// Device workspace attention() needs for one token (split-K partial results); 0 for n > 1.
size_t attention_workspace_bytes(int n_head, int head_dim, size_t n_ctx);

// out f32 [n][n_head][head_dim] for queries q f32 [n][n_head][head_dim] at positions
// pos0..pos0+n-1: query head h uses kv head h / (n_head / n_head_kv); the query at p sees keys
// start..p with start = window > 0 ? max(0, p - window + 1) : 0; scores are scaled by `scale`
// before the softmax. n == 1 runs the split-K decode kernels (workspace of
// attention_workspace_bytes; decode_chunk > 0 forces the keys per split, a multiple of 32),
// n > 1 the tiled prefill kernel. head_dim <= 256.
void attention(const float* q, size_t n, int pos0, int n_head, int n_head_kv, int head_dim, const float* k,
               const float* v, size_t n_ctx, int window, float scale, float* out, void* workspace,
               size_t workspace_bytes, cudaStream_t stream, int decode_chunk = 0);

// The two paths on their own (attention() picks by n).
void attention_decode(const float* q, int pos, int n_head, int n_head_kv, int head_dim, const float* k,
                      const float* v, size_t n_ctx, int window, float scale, float* out, void* workspace,
                      size_t workspace_bytes, cudaStream_t stream, int decode_chunk = 0);
void attention_prefill(const float* q, size_t n, int pos0, int n_head, int n_head_kv, int head_dim, const float* k,
                       const float* v, size_t n_ctx, int window, float scale, float* out, cudaStream_t stream);

}  // namespace odmoe::cuda
