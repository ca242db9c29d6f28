// RoPE, transformers' rotate_half convention: pairs (i, i + head_dim/2) of each head.
//
// Launch: one thread per (token, head, pair), grid-stride over n_tokens * n_heads * half,
// 256 threads per block. cos/sin through sincosf (full-range reduction: positions in the
// thousands give angles of thousands of radians; the fast intrinsics would be wrong there).
#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace odmoe::cuda {
namespace {

constexpr int kThreads = 256;

// x f32 [n_tokens, n_heads, head_dim] in place; inv_freq f32 [head_dim / 2].
__global__ void rope_kernel(float* __restrict__ x, size_t n_tokens, int n_heads, int head_dim,
                            const float* __restrict__ inv_freq, int pos0, float attn_factor) {
  const size_t half = static_cast<size_t>(head_dim) / 2;
  const size_t count = n_tokens * static_cast<size_t>(n_heads) * half;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t pair = i % half, head_row = i / half;  // head_row = t * n_heads + h
    const size_t t = head_row / static_cast<size_t>(n_heads);
    const float angle = static_cast<float>(pos0 + static_cast<int>(t)) * inv_freq[pair];  // f32, as transformers
    float s, c;
    sincosf(angle, &s, &c);
    c *= attn_factor;
    s *= attn_factor;
    float* v = x + head_row * static_cast<size_t>(head_dim);
    const float a = v[pair], b = v[pair + half];
    v[pair] = a * c - b * s;
    v[pair + half] = b * c + a * s;
  }
}

}  // namespace

void rope(float* x, size_t n_tokens, int n_heads, int head_dim, const float* inv_freq, int pos0, float attn_factor,
          cudaStream_t stream) {
  ODMOE_CHECK(head_dim > 0 && head_dim % 2 == 0 && n_heads >= 0 && pos0 >= 0, kCuda, "bad-argument",
              "rope: head_dim " << head_dim << ", n_heads " << n_heads << ", pos0 " << pos0, "");
  const size_t count = n_tokens * static_cast<size_t>(n_heads) * static_cast<size_t>(head_dim / 2);
  if (count == 0) return;
  rope_kernel<<<grid_blocks(count, kThreads), kThreads, 0, stream>>>(x, n_tokens, n_heads, head_dim, inv_freq, pos0,
                                                                     attn_factor);
  ODMOE_CUDA_CHECK_LAUNCH();
}

}  // namespace odmoe::cuda
