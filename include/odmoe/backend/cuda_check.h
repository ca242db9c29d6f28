// ODMOE_CUDA_CHECK: one check for every GPU library the engine calls. It takes the status of
// a CUDA runtime call (cudaError_t), a cuBLAS call (cublasStatus_t) or, where the build has
// NCCL (ODMOE_WITH_NCCL), an NCCL call (ncclResult_t), and turns a failure into odmoe::Error
// naming the call, the library, the status and a hint. The status type picks the overload of
// gpu_status() below, as ggml's CUDA_CHECK_GEN does with its error-string function.
// Only included by .cu files and CUDA-aware .cpp files (it needs the CUDA headers).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#if defined(ODMOE_WITH_NCCL)
#include <nccl.h>
#endif

#include "odmoe/core/error.h"

namespace odmoe::cuda_detail {

// A library call's outcome, in the words the error message uses.
struct GpuStatus {
  bool ok = true;
  const char* library = "";  // "CUDA", "cuBLAS", "NCCL"
  const char* name = "";     // the status as a short code: "cudaErrorMemoryAllocation"
  const char* text = "";     // the library's sentence for it
  const char* hint = "";
};

inline GpuStatus gpu_status(cudaError_t e) {
  return {e == cudaSuccess, "CUDA", cudaGetErrorName(e), cudaGetErrorString(e),
          "check the GPU with nvidia-smi; odmoe needs a CUDA driver for this toolkit"};
}

inline GpuStatus gpu_status(cublasStatus_t s) {
  return {s == CUBLAS_STATUS_SUCCESS, "cuBLAS", cublasGetStatusName(s), cublasGetStatusString(s),
          "cuBLAS failed: out of device memory, or a shape or type this cuBLAS does not support"};
}

#if defined(ODMOE_WITH_NCCL)
inline GpuStatus gpu_status(ncclResult_t r) {
  return {r == ncclSuccess, "NCCL", r == ncclSuccess ? "ncclSuccess" : "ncclError", ncclGetErrorString(r),
          "run with NCCL_DEBUG=WARN for NCCL's own explanation; two ranks on one GPU cannot share a communicator"};
}
#endif

}  // namespace odmoe::cuda_detail

#define ODMOE_CUDA_CHECK(CALL)                                                                      \
  do {                                                                                              \
    const ::odmoe::cuda_detail::GpuStatus odmoe_gpu_st_ = ::odmoe::cuda_detail::gpu_status(CALL);   \
    if (!odmoe_gpu_st_.ok)                                                                          \
      ODMOE_THROW(kCuda, odmoe_gpu_st_.name,                                                        \
                  #CALL << " failed (" << odmoe_gpu_st_.library << "): " << odmoe_gpu_st_.text,     \
                  odmoe_gpu_st_.hint);                                                              \
  } while (0)
