#include <memory>

#include "cuda_common.cuh"
#include "odmoe/backend/cuda_dequant.h"

namespace odmoe::cuda {
namespace {

// One thread per output element; weights are read once, so this is bandwidth-bound. The
// arithmetic is load_element's (cuda_common.cuh), shared with the op kernels.
__global__ void decode_kernel(DType dtype, size_t rows, size_t cols, const void* __restrict__ data,
                              const float* __restrict__ scales, float* __restrict__ out) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  out[i] = load_element(dtype, data, scales, i / cols, i % cols, cols);
}

struct DeviceFree {
  void operator()(void* p) const { cudaFree(p); }
};
using DeviceBuffer = std::unique_ptr<void, DeviceFree>;

DeviceBuffer device_alloc(size_t bytes) {
  void* p = nullptr;
  ODMOE_CUDA_CHECK(cudaMalloc(&p, bytes > 0 ? bytes : 1));
  return DeviceBuffer(p);
}

}  // namespace

bool device_available(std::string* why) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (why) *why = std::string("no usable GPU: cudaGetDeviceCount: ") + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error
    return false;
  }
  if (n <= 0) {
    if (why) *why = "no GPU found";
    return false;
  }
  return true;
}

void decode_rows_device(DType dtype, size_t rows, size_t cols, const void* d_data, const float* d_scales, float* d_out,
                        void* stream) {
  const size_t n = rows * cols;
  if (n == 0) return;
  constexpr int kThreads = 256;
  const auto blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  decode_kernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(dtype, rows, cols, d_data, d_scales,
                                                                           d_out);
  ODMOE_CUDA_CHECK(cudaGetLastError());
}

void decode_tensor_on_device(const EncodedTensor& t, float* host_out) {
  DeviceBuffer data = device_alloc(t.data.size());
  DeviceBuffer scales = device_alloc(t.scales.size() * sizeof(float));
  DeviceBuffer out = device_alloc(t.rows * t.cols * sizeof(float));
  ODMOE_CUDA_CHECK(cudaMemcpy(data.get(), t.data.data(), t.data.size(), cudaMemcpyHostToDevice));
  if (!t.scales.empty())
    ODMOE_CUDA_CHECK(
        cudaMemcpy(scales.get(), t.scales.data(), t.scales.size() * sizeof(float), cudaMemcpyHostToDevice));
  decode_rows_device(t.dtype, t.rows, t.cols, data.get(), static_cast<const float*>(scales.get()),
                     static_cast<float*>(out.get()), nullptr);
  ODMOE_CUDA_CHECK(cudaDeviceSynchronize());
  ODMOE_CUDA_CHECK(cudaMemcpy(host_out, out.get(), t.rows * t.cols * sizeof(float), cudaMemcpyDeviceToHost));
}

}  // namespace odmoe::cuda
