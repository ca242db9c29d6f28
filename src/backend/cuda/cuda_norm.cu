// RMSNorm over rows: y[r] = x[r] * (1 / sqrt(mean(x[r]^2) + eps)) * weight, in the CPU
// backend's order of operations (sum of squares in f32 here, in double there).
//
// Launch: rows of up to kWarpRowMax values (per-head q/k norm, head_dim 64..256) take one warp
// per row, kRowsPerBlock rows per block of 128 threads; longer rows (n_embd, the full q/k
// norm) one block of kBlockThreads per row. y may alias x: every value is read and written by
// the same thread, and the writes come after the row's reduction.
#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace odmoe::cuda {
namespace {

constexpr size_t kWarpRowMax = 512;
constexpr int kRowsPerBlock = 4;
constexpr int kBlockThreads = 256;

// x, y f32 [n_rows, dim]; weight f32 [dim]. Grid ceil(n_rows / kRowsPerBlock), 128 threads.
__global__ void __launch_bounds__(kRowsPerBlock * kWarp)
    rms_norm_warp_kernel(const float* x, const float* __restrict__ weight, size_t n_rows, size_t dim, float eps,
                         float* y) {
  const int warp = static_cast<int>(threadIdx.x) / kWarp, lane = static_cast<int>(threadIdx.x) % kWarp;
  const size_t row = static_cast<size_t>(blockIdx.x) * kRowsPerBlock + static_cast<size_t>(warp);
  if (row >= n_rows) return;
  const float* xr = x + row * dim;
  float* yr = y + row * dim;
  float ss = 0.0f;
  for (size_t c = static_cast<size_t>(lane); c < dim; c += kWarp) ss = fmaf(xr[c], xr[c], ss);
  ss = warp_sum(ss);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(dim) + eps);
  for (size_t c = static_cast<size_t>(lane); c < dim; c += kWarp) yr[c] = xr[c] * inv * weight[c];
}

// Grid n_rows, kBlockThreads threads: one block per row.
__global__ void __launch_bounds__(kBlockThreads)
    rms_norm_block_kernel(const float* x, const float* __restrict__ weight, size_t dim, float eps, float* y) {
  __shared__ float red[kWarp];
  const float* xr = x + static_cast<size_t>(blockIdx.x) * dim;
  float* yr = y + static_cast<size_t>(blockIdx.x) * dim;
  float ss = 0.0f;
  for (size_t c = threadIdx.x; c < dim; c += blockDim.x) ss = fmaf(xr[c], xr[c], ss);
  ss = block_sum(ss, red);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(dim) + eps);
  for (size_t c = threadIdx.x; c < dim; c += blockDim.x) yr[c] = xr[c] * inv * weight[c];
}

}  // namespace

void rms_norm(const float* x, const float* weight, size_t n_rows, size_t dim, float eps, float* y,
              cudaStream_t stream) {
  if (n_rows == 0 || dim == 0) return;
  if (dim <= kWarpRowMax) {
    const size_t blocks = (n_rows + kRowsPerBlock - 1) / kRowsPerBlock;
    ODMOE_CHECK(blocks < (size_t{1} << 31), kCuda, "too-large", "rms_norm: " << n_rows << " rows", "");
    rms_norm_warp_kernel<<<static_cast<unsigned>(blocks), kRowsPerBlock * kWarp, 0, stream>>>(x, weight, n_rows, dim,
                                                                                              eps, y);
  } else {
    ODMOE_CHECK(n_rows < (size_t{1} << 31), kCuda, "too-large", "rms_norm: " << n_rows << " rows", "");
    rms_norm_block_kernel<<<static_cast<unsigned>(n_rows), kBlockThreads, 0, stream>>>(x, weight, dim, eps, y);
  }
  ODMOE_CUDA_CHECK_LAUNCH();
}

}  // namespace odmoe::cuda
