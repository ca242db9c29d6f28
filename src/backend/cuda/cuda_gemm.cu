// Prefill GEMM through cuBLAS, and the matmul/router entry points.
//
// Row-major y [n, rows] = x [n, cols] . w^T with w row-major [rows, cols] is, in cuBLAS's
// column-major terms, C (rows x n, ldc = rows) = op_T(A) (A = w seen as cols x rows, lda = cols)
// . B (x seen as cols x n, ldb = cols). A tile of weight rows [r0, r0 + m) writes C at y + r0
// with the same ldc.
#include <climits>

#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace odmoe::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ void store_16bit(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store_16bit(__half* p, float v) { *p = __float2half_rn(v); }

// out [count] = x rounded to bf16 or f16 (round to nearest even). Grid-stride, 1 thread/value.
template <typename T>
__global__ void to_16bit_kernel(const float* __restrict__ x, size_t count, T* __restrict__ out) {
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    store_16bit(out + i, x[i]);
}

// out bf16 [n_rows, cols] = rows [row_begin, row_begin + n_rows) of a stored matrix, decoded to
// f32 (tensor_codec's arithmetic) and rounded to bf16. Grid-stride, 1 thread/value.
__global__ void dequant_bf16_kernel(DType dtype, const void* __restrict__ data, const float* __restrict__ scales,
                                    size_t cols, size_t row_begin, size_t n_rows, __nv_bfloat16* __restrict__ out) {
  const size_t count = n_rows * cols;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t r = row_begin + i / cols, c = i % cols;
    out[i] = __float2bfloat16_rn(load_element(dtype, data, scales, r, c, cols));
  }
}

void* device_alloc(size_t bytes) {
  void* p = nullptr;
  ODMOE_CUDA_CHECK(cudaMalloc(&p, bytes));
  return p;
}

int as_int(size_t v, const char* what) {
  ODMOE_CHECK(v <= static_cast<size_t>(INT_MAX), kCuda, "too-large", "gemm: " << what << " = " << v
              << " exceeds cuBLAS's int range", "split the matrix");
  return static_cast<int>(v);
}

// C (f32) = op_T(A) . B for A [k x m] (lda = k) and B [k x n] (ldb = k) of type `ab`,
// C with ldc: f32 arithmetic (CUBLAS_COMPUTE_32F: no TF32, tensor cores for 16-bit types).
void gemm_ex(cublasHandle_t h, cudaDataType_t ab, size_t m, size_t n, size_t k, const void* a, const void* b,
             float* c, size_t ldc) {
  const float alpha = 1.0f, beta = 0.0f;
  ODMOE_CUDA_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, as_int(m, "rows"), as_int(n, "tokens"),
                                as_int(k, "cols"), &alpha, a, ab, as_int(k, "lda"), b, ab, as_int(k, "ldb"), &beta, c,
                                CUDA_R_32F, as_int(ldc, "ldc"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace

GemmContext::GemmContext(size_t max_tile_bytes) : max_tile_bytes_(max_tile_bytes) {
  ODMOE_CHECK(max_tile_bytes > 0, kCuda, "bad-argument", "GemmContext: max_tile_bytes must be > 0", "");
  ODMOE_CUDA_CHECK(cublasCreate(&handle_));
  // Products exactly as requested: no TF32 for the f32 GEMMs (the CPU oracle is f32).
  ODMOE_CUDA_CHECK(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH));
}

GemmContext::~GemmContext() {
  for (void* p : scratch_)
    if (p) cudaFree(p);
  if (handle_) cublasDestroy(handle_);
}

void* GemmContext::scratch(int slot, size_t bytes) {
  ODMOE_CHECK(slot == 0 || slot == 1, kCuda, "bad-argument", "GemmContext: no scratch slot " << slot, "");
  const auto s = static_cast<size_t>(slot);
  if (scratch_bytes_[s] < bytes) {
    if (scratch_[s]) ODMOE_CUDA_CHECK(cudaFree(scratch_[s]));  // synchronises: no kernel still reads it
    scratch_[s] = nullptr;
    scratch_bytes_[s] = 0;
    scratch_[s] = device_alloc(bytes);
    scratch_bytes_[s] = bytes;
  }
  return scratch_[s];
}

void GemmContext::reserve(size_t n_tokens, size_t cols, size_t rows) {
  scratch(0, n_tokens * cols * 2);
  const size_t tile_rows = std::min(rows, std::max<size_t>(1, max_tile_bytes_ / std::max<size_t>(1, cols * 2)));
  scratch(1, tile_rows * cols * 2);
}

void dequantize_rows_bf16(const DeviceMatrix& w, size_t row_begin, size_t n_rows, void* out, cudaStream_t stream) {
  ODMOE_CHECK(row_begin + n_rows <= w.rows, kCuda, "bad-argument",
              "dequantize rows [" << row_begin << ", " << row_begin + n_rows << ") of " << w.rows, "");
  ODMOE_CHECK(!is_quantized(w.dtype) || w.scales != nullptr, kCuda, "bad-argument",
              "dequantize " << dtype_name(w.dtype) << " without scales", "");
  const size_t count = n_rows * w.cols;
  if (count == 0) return;
  dequant_bf16_kernel<<<grid_blocks(count, kThreads), kThreads, 0, stream>>>(
      w.dtype, w.data, w.scales, w.cols, row_begin, n_rows, static_cast<__nv_bfloat16*>(out));
  ODMOE_CUDA_CHECK_LAUNCH();
}

void gemm(GemmContext& ctx, const DeviceMatrix& w, const float* x, size_t n, float* y, cudaStream_t stream) {
  ODMOE_CHECK(!is_quantized(w.dtype) || w.scales != nullptr, kCuda, "bad-argument",
              "gemm on " << dtype_name(w.dtype) << " weights without scales", "");
  if (n == 0 || w.rows == 0) return;
  if (w.cols == 0) {
    ODMOE_CUDA_CHECK(cudaMemsetAsync(y, 0, n * w.rows * sizeof(float), stream));
    return;
  }
  cublasHandle_t h = ctx.handle();
  ODMOE_CUDA_CHECK(cublasSetStream(h, stream));
  const size_t xc = n * w.cols;
  switch (w.dtype) {
    case DType::kF32:
      gemm_ex(h, CUDA_R_32F, w.rows, n, w.cols, w.data, x, y, w.rows);
      return;
    case DType::kBF16: {
      auto* xb = static_cast<__nv_bfloat16*>(ctx.scratch(0, xc * 2));
      to_16bit_kernel<<<grid_blocks(xc, kThreads), kThreads, 0, stream>>>(x, xc, xb);
      ODMOE_CUDA_CHECK_LAUNCH();
      gemm_ex(h, CUDA_R_16BF, w.rows, n, w.cols, w.data, xb, y, w.rows);
      return;
    }
    case DType::kF16: {
      auto* xh = static_cast<__half*>(ctx.scratch(0, xc * 2));
      to_16bit_kernel<<<grid_blocks(xc, kThreads), kThreads, 0, stream>>>(x, xc, xh);
      ODMOE_CUDA_CHECK_LAUNCH();
      gemm_ex(h, CUDA_R_16F, w.rows, n, w.cols, w.data, xh, y, w.rows);
      return;
    }
    case DType::kInt8:
    case DType::kInt4: {
      // Both scratch buffers are taken before any launch: growing one frees memory, which
      // must not happen between a launch and the GEMM that reads its output.
      const size_t tile_rows = std::min(w.rows, std::max<size_t>(1, ctx.max_tile_bytes() / (w.cols * 2)));
      auto* xb = static_cast<__nv_bfloat16*>(ctx.scratch(0, xc * 2));
      void* tile = ctx.scratch(1, tile_rows * w.cols * 2);
      to_16bit_kernel<<<grid_blocks(xc, kThreads), kThreads, 0, stream>>>(x, xc, xb);
      ODMOE_CUDA_CHECK_LAUNCH();
      // Tiles reuse one buffer: the stream orders each dequantisation after the previous GEMM.
      for (size_t r0 = 0; r0 < w.rows; r0 += tile_rows) {
        const size_t m = std::min(tile_rows, w.rows - r0);
        dequantize_rows_bf16(w, r0, m, tile, stream);
        gemm_ex(h, CUDA_R_16BF, m, n, w.cols, tile, xb, y + r0, w.rows);
      }
      return;
    }
  }
}

void matmul(GemmContext& ctx, const DeviceMatrix& w, const float* x, size_t n, float* y, cudaStream_t stream) {
  if (n == 0) return;
  if (n <= kGemvMaxTokens)
    gemv(w, x, n, y, stream);
  else
    gemm(ctx, w, x, n, y, stream);
}

void router_logits_to_host(GemmContext& ctx, const DeviceMatrix& w, const float* x, size_t n, float* d_y,
                           float* host_y, cudaStream_t stream) {
  matmul(ctx, w, x, n, d_y, stream);
  ODMOE_CUDA_CHECK(cudaMemcpyAsync(host_y, d_y, n * w.rows * sizeof(float), cudaMemcpyDeviceToHost, stream));
  ODMOE_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace odmoe::cuda
