// Decode GEMV: y[t, r] = sum_c w[r, c] * x[t, c] for 1..8 tokens, weights in any stored dtype.
//
// Launch: blocks of kRowsPerBlock warps, one warp per output row, grid ceil(rows /
// kRowsPerBlock). Each lane streams 16-byte chunks of its row (chunk = lane, lane + 32, ...):
// 4 f32, 8 bf16/f16, 16 int8 or 32 int4 values (one int4 group: its f32 scale applies to the
// chunk), decodes them in registers once and multiplies them with every token's x (f32, read
// through the read-only cache), f32 accumulation, then a warp-shuffle sum. Rows whose chunks
// are not 16-byte aligned (cols not a multiple of the chunk, or unaligned pointers) take a
// per-element path. Instantiations: 5 dtypes x 4 token counts (1, 2, 4, 8; n is rounded up
// and the unused token slots are skipped).
#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace odmoe::cuda {
namespace {

constexpr int kRowsPerBlock = 4;
constexpr int kThreads = kRowsPerBlock * kWarp;

// The values of one 16-byte chunk of a stored row.
template <DType D>
struct Chunk;

template <>
struct Chunk<DType::kF32> {
  static constexpr int kValues = 4;
  __device__ static void decode(uint4 raw, float* v) {
    v[0] = __uint_as_float(raw.x);
    v[1] = __uint_as_float(raw.y);
    v[2] = __uint_as_float(raw.z);
    v[3] = __uint_as_float(raw.w);
  }
};

template <>
struct Chunk<DType::kBF16> {
  static constexpr int kValues = 8;
  __device__ static void decode(uint4 raw, float* v) {
    const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {  // little-endian: the low half is the even element
      v[2 * k] = __uint_as_float(w[k] << 16);
      v[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    }
  }
};

template <>
struct Chunk<DType::kF16> {
  static constexpr int kValues = 8;
  __device__ static void decode(uint4 raw, float* v) {
    const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      v[2 * k] = f16_bits_to_f32(w[k]);
      v[2 * k + 1] = f16_bits_to_f32(w[k] >> 16);
    }
  }
};

template <>
struct Chunk<DType::kInt8> {  // integer values; the row's scale is applied to the sum
  static constexpr int kValues = 16;
  __device__ static void decode(uint4 raw, float* v) {
    const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int k = 0; k < 4; ++k)
#pragma unroll
      for (int b = 0; b < 4; ++b) v[4 * k + b] = static_cast<float>(sbyte(w[k], b));
  }
};

template <>
struct Chunk<DType::kInt4> {  // one group of 32; its scale is applied to the chunk's sum
  static constexpr int kValues = 32;
  __device__ static void decode(uint4 raw, float* v) {
    const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
    // Byte j holds elements 2j (low nibble) and 2j + 1, so nibble m of word k is element 8k + m.
#pragma unroll
    for (int k = 0; k < 4; ++k)
#pragma unroll
      for (int m = 0; m < 8; ++m) v[8 * k + m] = static_cast<float>(static_cast<int>((w[k] >> (4 * m)) & 0xfu) - 8);
  }
};

// Bytes of one stored row (int4 rows are padded to whole groups).
__host__ __device__ inline size_t row_bytes(DType d, size_t cols) {
  switch (d) {
    case DType::kF32: return cols * 4;
    case DType::kBF16:
    case DType::kF16: return cols * 2;
    case DType::kInt8: return cols;
    case DType::kInt4: return (cols + kInt4Group - 1) / kInt4Group * (kInt4Group / 2);
  }
  return 0;
}

// w: stored [rows, cols]; x f32 [n, cols]; y f32 [n, rows]; n <= NT. vec: the 16-byte path
// is valid (cols a multiple of Chunk<D>::kValues, w and x 16-byte aligned).
template <DType D, int NT>
__global__ void __launch_bounds__(kThreads) gemv_kernel(const uint8_t* __restrict__ w, const float* __restrict__ scales,
                                                       size_t rows, size_t cols, const float* __restrict__ x, int n,
                                                       float* __restrict__ y, bool vec) {
  const int warp = static_cast<int>(threadIdx.x) / kWarp, lane = static_cast<int>(threadIdx.x) % kWarp;
  const size_t r = static_cast<size_t>(blockIdx.x) * kRowsPerBlock + static_cast<size_t>(warp);
  if (r >= rows) return;  // a whole warp leaves; nothing below synchronises the block
  const uint8_t* wr = w + r * row_bytes(D, cols);
  const size_t groups = (cols + kInt4Group - 1) / kInt4Group;
  float acc[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = 0.0f;

  if (vec) {
    constexpr int E = Chunk<D>::kValues;
    const size_t n_chunks = cols / E;
    const uint4* wc = reinterpret_cast<const uint4*>(wr);
#pragma unroll 2
    for (size_t ch = static_cast<size_t>(lane); ch < n_chunks; ch += kWarp) {
      float wv[E];
      Chunk<D>::decode(__ldcs(wc + ch), wv);  // weights are streamed once: evict first
      const float gs = D == DType::kInt4 ? __ldg(scales + r * groups + ch) : 1.0f;
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        if (t >= n) break;
        const float4* xv = reinterpret_cast<const float4*>(x + static_cast<size_t>(t) * cols + ch * E);
        float s = 0.0f;
#pragma unroll
        for (int q = 0; q < E / 4; ++q) {
          const float4 xq = __ldg(xv + q);
          s = fmaf(wv[4 * q], xq.x, s);
          s = fmaf(wv[4 * q + 1], xq.y, s);
          s = fmaf(wv[4 * q + 2], xq.z, s);
          s = fmaf(wv[4 * q + 3], xq.w, s);
        }
        acc[t] = fmaf(s, gs, acc[t]);
      }
    }
  } else {
    for (size_t c = static_cast<size_t>(lane); c < cols; c += kWarp) {
      float wv;
      if (D == DType::kInt8)
        wv = static_cast<float>(reinterpret_cast<const int8_t*>(wr)[c]);  // the row scale comes last
      else if (D == DType::kInt4)
        wv = load_element(D, w, scales, r, c, cols);
      else
        wv = load_element(D, wr, nullptr, 0, c, cols);
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        if (t >= n) break;
        acc[t] = fmaf(wv, __ldg(x + static_cast<size_t>(t) * cols + c), acc[t]);
      }
    }
  }
  const float row_scale = D == DType::kInt8 ? __ldg(scales + r) : 1.0f;
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    if (t >= n) break;
    const float s = warp_sum(acc[t]);
    if (lane == 0) y[static_cast<size_t>(t) * rows + r] = s * row_scale;
  }
}

template <DType D>
void launch_dtype(const DeviceMatrix& w, const float* x, size_t n, float* y, cudaStream_t stream) {
  const bool vec = w.cols % Chunk<D>::kValues == 0 && aligned16(w.data) && aligned16(x);
  const auto blocks = static_cast<unsigned>((w.rows + kRowsPerBlock - 1) / kRowsPerBlock);
  const auto* wd = static_cast<const uint8_t*>(w.data);
  const int ni = static_cast<int>(n);
  if (n <= 1)
    gemv_kernel<D, 1><<<blocks, kThreads, 0, stream>>>(wd, w.scales, w.rows, w.cols, x, ni, y, vec);
  else if (n <= 2)
    gemv_kernel<D, 2><<<blocks, kThreads, 0, stream>>>(wd, w.scales, w.rows, w.cols, x, ni, y, vec);
  else if (n <= 4)
    gemv_kernel<D, 4><<<blocks, kThreads, 0, stream>>>(wd, w.scales, w.rows, w.cols, x, ni, y, vec);
  else
    gemv_kernel<D, 8><<<blocks, kThreads, 0, stream>>>(wd, w.scales, w.rows, w.cols, x, ni, y, vec);
  ODMOE_CUDA_CHECK_LAUNCH();
}

}  // namespace

void gemv(const DeviceMatrix& w, const float* x, size_t n, float* y, cudaStream_t stream) {
  ODMOE_CHECK(n >= 1 && n <= kGemvMaxTokens, kCuda, "bad-argument",
              "gemv takes 1 to " << kGemvMaxTokens << " tokens, got " << n, "use gemm for more tokens");
  ODMOE_CHECK(!is_quantized(w.dtype) || w.scales != nullptr, kCuda, "bad-argument",
              "gemv on " << dtype_name(w.dtype) << " weights without scales", "");
  if (w.rows == 0) return;
  if (w.cols == 0) {
    ODMOE_CUDA_CHECK(cudaMemsetAsync(y, 0, n * w.rows * sizeof(float), stream));
    return;
  }
  ODMOE_CHECK((w.rows + kRowsPerBlock - 1) / kRowsPerBlock < (size_t{1} << 31), kCuda, "too-large",
              "gemv: " << w.rows << " rows exceed the grid", "");
  switch (w.dtype) {
    case DType::kF32: launch_dtype<DType::kF32>(w, x, n, y, stream); break;
    case DType::kBF16: launch_dtype<DType::kBF16>(w, x, n, y, stream); break;
    case DType::kF16: launch_dtype<DType::kF16>(w, x, n, y, stream); break;
    case DType::kInt8: launch_dtype<DType::kInt8>(w, x, n, y, stream); break;
    case DType::kInt4: launch_dtype<DType::kInt4>(w, x, n, y, stream); break;
  }
}

}  // namespace odmoe::cuda
