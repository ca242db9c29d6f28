// Element-wise ops of a decoder step: bias and residual add, clamp, SwiGLU, the shared
// expert's sigmoid gate, and the embedding lookup with dequantisation.
//
// Launch: all are grid-stride loops, one thread per value, 256 threads per block, at most
// 65536 blocks (grid_blocks). Arithmetic follows the CPU code it replaces: expf (not the
// __expf intrinsic), the same order of operations, clamp by comparisons so that NaN stays NaN.
#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace odmoe::cuda {
namespace {

constexpr int kThreads = 256;

#define ODMOE_GRID_STRIDE(I, COUNT)                                                                  \
  for (size_t I = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; I < (COUNT);          \
       I += static_cast<size_t>(gridDim.x) * blockDim.x)

// y f32 [n_rows, dim] += bias f32 [dim] per row.
__global__ void add_bias_kernel(float* __restrict__ y, const float* __restrict__ bias, size_t count, size_t dim) {
  ODMOE_GRID_STRIDE(i, count) y[i] += bias[i % dim];
}

// y += x, both f32 [count]; x may alias y.
__global__ void add_kernel(float* y, const float* x, size_t count) {
  ODMOE_GRID_STRIDE(i, count) y[i] += x[i];
}

// std::clamp(v, -limit, limit): comparisons, so NaN passes through as the CPU's does.
__global__ void clamp_kernel(float* __restrict__ x, size_t count, float limit) {
  ODMOE_GRID_STRIDE(i, count) {
    const float v = x[i];
    x[i] = v < -limit ? -limit : (limit < v ? limit : v);
  }
}

// out = gate / (1 + exp(-gate)) * up, f32 [count]; out may alias gate or up (no __restrict__).
__global__ void swiglu_kernel(const float* gate, const float* up, size_t count, float* out) {
  ODMOE_GRID_STRIDE(i, count) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

// out f32 [n_rows, dim] += sigmoid(gate_logit[row]) * shared f32 [n_rows, dim];
// gate_logit f32 [n_rows] or null (gate 1).
__global__ void add_gated_kernel(float* __restrict__ out, const float* __restrict__ gate_logit,
                                 const float* __restrict__ shared, size_t count, size_t dim) {
  ODMOE_GRID_STRIDE(i, count) {
    const float g = gate_logit ? 1.0f / (1.0f + expf(-gate_logit[i / dim])) : 1.0f;
    out[i] += g * shared[i];
  }
}

// out f32 [n, cols] = rows tokens[t] of a stored [rows, cols] table, decoded (bit-exact with
// tensor_codec's decode_rows); an id outside [0, rows) gives NaN.
__global__ void embed_rows_kernel(DType dtype, const void* __restrict__ data, const float* __restrict__ scales,
                                  size_t rows, size_t cols, const int32_t* __restrict__ tokens, size_t n,
                                  float* __restrict__ out) {
  ODMOE_GRID_STRIDE(i, n * cols) {
    const int32_t id = tokens[i / cols];
    const size_t c = i % cols;
    out[i] = (id >= 0 && static_cast<size_t>(id) < rows) ? load_element(dtype, data, scales, static_cast<size_t>(id), c, cols)
                                                         : __int_as_float(0x7fc00000);
  }
}

#undef ODMOE_GRID_STRIDE

}  // namespace

void add_bias(float* y, const float* bias, size_t n_rows, size_t dim, cudaStream_t stream) {
  const size_t count = n_rows * dim;
  if (count == 0) return;
  add_bias_kernel<<<grid_blocks(count, kThreads), kThreads, 0, stream>>>(y, bias, count, dim);
  ODMOE_CUDA_CHECK_LAUNCH();
}

void add(float* y, const float* x, size_t count, cudaStream_t stream) {
  if (count == 0) return;
  add_kernel<<<grid_blocks(count, kThreads), kThreads, 0, stream>>>(y, x, count);
  ODMOE_CUDA_CHECK_LAUNCH();
}

void clamp(float* x, size_t count, float limit, cudaStream_t stream) {
  if (count == 0) return;
  clamp_kernel<<<grid_blocks(count, kThreads), kThreads, 0, stream>>>(x, count, limit);
  ODMOE_CUDA_CHECK_LAUNCH();
}

void swiglu(const float* gate, const float* up, size_t count, float* out, cudaStream_t stream) {
  if (count == 0) return;
  swiglu_kernel<<<grid_blocks(count, kThreads), kThreads, 0, stream>>>(gate, up, count, out);
  ODMOE_CUDA_CHECK_LAUNCH();
}

void add_gated(float* out, const float* gate_logit, const float* shared, size_t n_rows, size_t dim,
               cudaStream_t stream) {
  const size_t count = n_rows * dim;
  if (count == 0) return;
  add_gated_kernel<<<grid_blocks(count, kThreads), kThreads, 0, stream>>>(out, gate_logit, shared, count, dim);
  ODMOE_CUDA_CHECK_LAUNCH();
}

void embed_rows(const DeviceMatrix& table, const int32_t* tokens, size_t n, float* out, cudaStream_t stream) {
  ODMOE_CHECK(!is_quantized(table.dtype) || table.scales != nullptr, kCuda, "bad-argument",
              "embed_rows on a " << dtype_name(table.dtype) << " table without scales", "");
  if (n * table.cols == 0) return;
  embed_rows_kernel<<<grid_blocks(n * table.cols, kThreads), kThreads, 0, stream>>>(
      table.dtype, table.data, table.scales, table.rows, table.cols, tokens, n, out);
  ODMOE_CUDA_CHECK_LAUNCH();
}

}  // namespace odmoe::cuda
