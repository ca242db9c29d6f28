// Device helpers the CUDA op kernels share: warp reductions, decoding of the stored dtypes
// (the arithmetic of tensor_codec's decode_rows), launch sizes. Included by .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "odmoe/backend/cuda_check.h"
#include "odmoe/core/dtype.h"

namespace odmoe::cuda {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(kFullMask, v, o);
  return v;  // every lane holds the sum
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024); every thread gets
// the result. `red` is __shared__ float[32]; the call has __syncthreads inside, so every
// thread of the block must make it.
__device__ __forceinline__ float block_sum(float v, float* red) {
  const int lane = static_cast<int>(threadIdx.x) % kWarp, warp = static_cast<int>(threadIdx.x) / kWarp;
  const int n_warps = static_cast<int>(blockDim.x) / kWarp;
  v = warp_sum(v);
  __syncthreads();  // `red` may still be read by a previous call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < n_warps ? red[lane] : 0.0f;
  return warp_sum(v);
}

// Scalar decodes of one stored value, bit-exact with tensor_codec.
__device__ __forceinline__ float bf16_bits_to_f32(uint32_t h) { return __uint_as_float(h << 16); }
__device__ __forceinline__ float f16_bits_to_f32(uint32_t h) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(h & 0xffffu)));
}
// Sign-extends byte k (0..3) of a little-endian word.
__device__ __forceinline__ int sbyte(uint32_t w, int k) { return static_cast<int32_t>(w << (24 - 8 * k)) >> 24; }

// Element (r, c) of a stored [rows, cols] matrix as f32, scale applied.
__device__ __forceinline__ float load_element(DType dtype, const void* data, const float* scales, size_t r, size_t c,
                                              size_t cols) {
  switch (dtype) {
    case DType::kF32: return static_cast<const float*>(data)[r * cols + c];
    case DType::kBF16: return bf16_bits_to_f32(static_cast<const uint16_t*>(data)[r * cols + c]);
    case DType::kF16: return f16_bits_to_f32(static_cast<const uint16_t*>(data)[r * cols + c]);
    case DType::kInt8: return static_cast<float>(static_cast<const int8_t*>(data)[r * cols + c]) * scales[r];
    case DType::kInt4: {
      const size_t groups = (cols + kInt4Group - 1) / kInt4Group;
      const uint8_t b = static_cast<const uint8_t*>(data)[r * groups * (kInt4Group / 2) + c / 2];
      const int q = static_cast<int>((c % 2 == 0) ? (b & 0x0fu) : (b >> 4)) - 8;
      return static_cast<float>(q) * scales[r * groups + c / kInt4Group];
    }
  }
  return 0.0f;
}

// Blocks for a grid-stride loop over `count` items with `threads` per block (capped: each
// thread then loops).
inline unsigned grid_blocks(size_t count, int threads) {
  const size_t b = (count + static_cast<size_t>(threads) - 1) / static_cast<size_t>(threads);
  return static_cast<unsigned>(std::max<size_t>(1, std::min<size_t>(b, 1u << 16)));
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace odmoe::cuda

// After a kernel launch: a bad configuration is reported here, a fault in the kernel at the
// next synchronising call.
#define ODMOE_CUDA_CHECK_LAUNCH() ODMOE_CUDA_CHECK(cudaGetLastError())
