// Row dot products per ISA (internal to the CPU backend).
//
// Two families:
//   dot_*   one stored row (any dtype) with an f32 vector, computed in f32. The decode path of
//           f32/bf16/f16 weights, and cpu_row_dot.
//   qdot_*  one int8 or int4 row with activations quantised to int8 per block of 32 values
//           (QuantizedX, made once per matmul and token by quantize_x_*): integer products
//           summed exactly, then combined by f32 FMAs in one fixed order, so every ISA
//           returns the same bits. int4: one exact sum per block (group), times d x the
//           group scale, into accumulator b % 8. int8: exact sums of 4 products (lane k of a
//           block: elements 4k..4k+3), times d, into lane k of accumulator set b % 4 (no
//           horizontal sum per block). Both end with the same fixed tree over 8 lanes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "odmoe/backend/backend.h"
#include "odmoe/backend/cpu_backend.h"

namespace odmoe::cpu {

float dot_scalar(const WeightView& w, size_t row, const float* x);
float dot_f32_scalar(const float* a, const float* b, size_t n);
#if defined(__x86_64__)
float dot_avx2(const WeightView& w, size_t row, const float* x);
float dot_f32_avx2(const float* a, const float* b, size_t n);
float dot_avx512(const WeightView& w, size_t row, const float* x);
float dot_f32_avx512(const float* a, const float* b, size_t n);
#endif

// Pointer to the start of row `row` of the stored data.
inline const unsigned char* row_data(const WeightView& w, size_t row) {
  return static_cast<const unsigned char*>(w.data) + row * (dtype_data_bytes(w.dtype, 1, w.cols));
}

// ---- Activations quantised to int8 ----------------------------------------------------

inline constexpr size_t kQBlock = 32;  // values per block: one int4 weight group
inline constexpr size_t kQLanes = 8;   // float accumulators of the qdot kernels
// A block whose largest |x| is below this is stored as zeros (127 / amax would overflow).
inline constexpr float kQTiny = 1e-30f;

// x [cols] as int8 blocks of 32: x[c] ~= q[c] * d[c / 32], q in [-127, 127], d = amax / 127 of
// the block (round to nearest even). A block holding a NaN or an infinity gets d = NaN and
// q = 0, so the dot product is NaN. Arrays are padded with zeros to a multiple of 8 blocks.
struct QuantizedX {
  // kInt8: q in element order. kInt4: per pair of blocks (g, g+1), 64 values laid out as
  // [even elements of g, even of g+1, odd of g, odd of g+1] (16 each): the order of the low
  // and high nibbles of the pair's 32 weight bytes.
  DType layout = DType::kInt8;
  size_t cols = 0, n_blocks = 0, padded_blocks = 0;  // n_blocks = ceil(cols / 32)
  int8_t* q = nullptr;     // [padded_blocks * 32]
  float* d = nullptr;      // [padded_blocks]
  int32_t* s8 = nullptr;   // [padded_blocks]: 8 x the block's sum of q (int4's nibble offset)
};

// Bytes of the buffer a QuantizedX of `cols` values needs, and the view of such a buffer
// (64-byte aligned by the caller).
size_t quantized_x_bytes(size_t cols);
QuantizedX quantized_x_view(DType layout, size_t cols, void* buffer);
// Position of element j (< 32) of block b in QuantizedX::q for a layout.
inline size_t qx_pos(DType layout, size_t b, size_t j) {
  if (layout == DType::kInt8) return b * kQBlock + j;
  return (b / 2) * 64 + (j % 2) * 32 + (b % 2) * 16 + j / 2;
}

// Quantises x into *out (made by quantized_x_view). Every ISA gives the same bytes.
void quantize_x_scalar(const float* x, QuantizedX* out);
// One block of n <= 32 values in element order, as every quantize_x_* does it.
void quantize_block_scalar(const float* x, size_t n, int8_t* q, float* d, int32_t* sum);
// Dot product of row `row` of an int8 or int4 matrix with quantised activations.
float qdot_scalar(const WeightView& w, size_t row, const QuantizedX& x);
#if defined(__x86_64__)
void quantize_x_avx2(const float* x, QuantizedX* out);
float qdot_avx2(const WeightView& w, size_t row, const QuantizedX& x);
float qdot_avx512vnni(const WeightView& w, size_t row, const QuantizedX& x);  // 256-bit VPDPBUSD
#endif

// ---- Attention ------------------------------------------------------------------------

// Causal attention of n query tokens at positions pos0 .. pos0+n-1 over one layer's KV cache.
// q:   [n][n_head][head_dim] f32 (RoPE applied)
// k,v: [n_head_kv][n_ctx][head_dim] f32, rows 0 .. pos0+n-1 valid (head-major: each head's rows contiguous)
// out: [n][n_head][head_dim] f32
// Query head h reads KV head h / (n_head / n_head_kv). window > 0: token at position p sees
// positions max(0, p-window+1) .. p; window <= 0: 0 .. p. scale multiplies q·k before the softmax.
// threads: OpenMP threads to use (1 = no parallel region).
void attention_f32(const float* q, size_t n, int pos0, int n_head, int n_head_kv, int head_dim,
                   const float* k, const float* v, size_t n_ctx, int window, float scale, float* out, int threads);
// attention_f32 with the kernels of `isa` (at most what the CPU has): for tests and benchmarks.
// Arithmetic (every ISA): scale folded into q (f32), q·k as f32 FMA dot products, a one-pass
// softmax per block of kAttnKeyBlock keys (running max and sum, earlier partial sums rescaled
// when the max grows), exp: std::exp (scalar) or a vectorised exp within 2 ulp of it (AVX2,
// AVX-512), V summed with f32 FMAs, divided by the sum at the end.
void attention_f32_isa(CpuIsa isa, const float* q, size_t n, int pos0, int n_head, int n_head_kv, int head_dim,
                       const float* k, const float* v, size_t n_ctx, int window, float scale, float* out,
                       int threads);

inline constexpr int kAttnKeyBlock = 64;  // keys whose scores are held at once
inline constexpr int kAttnPad = 16;       // head_dim of the q/o scratch rows, rounded up to this

// One piece of attention work: n_rows query rows that read the same KV head, over the keys
// [k_begin, k_end). Rows are any (token, query head) pairs of one KV group; each sees the keys
// first[r] .. last[r] (inclusive) of the part's range. Unnormalised result: o = sum_j p_j v_j
// with p_j = exp(s_j - m), l = sum_j p_j, m = max_j s_j (-inf and o = l = 0: no visible key).
struct AttentionPart {
  const float* q = nullptr;  // f32 [n_rows][hd_pad]: scale applied, zeros after hd
  const float* k = nullptr;  // f32 [n_ctx][hd]: the KV head's rows
  const float* v = nullptr;  // f32 [n_ctx][hd]
  const int* first = nullptr;  // [n_rows]
  const int* last = nullptr;   // [n_rows]
  int n_rows = 0, hd = 0, hd_pad = 0;
  int k_begin = 0, k_end = 0;
  float* scores = nullptr;  // scratch f32 [n_rows][kAttnKeyBlock]
  float* o = nullptr;       // out f32 [n_rows][hd_pad]
  float* m = nullptr;       // out [n_rows]
  float* l = nullptr;       // out [n_rows]
};
void attention_part_scalar(const AttentionPart& p);
#if defined(__x86_64__)
void attention_part_avx2(const AttentionPart& p);
void attention_part_avx512(const AttentionPart& p);
#endif

}  // namespace odmoe::cpu
