// ODMOE_CUDA_CHECK: turns a failed CUDA runtime call into odmoe::Error naming the call.
// Only included by .cu files and CUDA-aware .cpp files.
#pragma once

#include <cuda_runtime.h>

#include "odmoe/core/error.h"

#define ODMOE_CUDA_CHECK(CALL)                                                                      \
  do {                                                                                              \
    const cudaError_t odmoe_cuda_err_ = (CALL);                                                     \
    if (odmoe_cuda_err_ != cudaSuccess)                                                             \
      ODMOE_THROW(kCuda, cudaGetErrorName(odmoe_cuda_err_),                                         \
                  #CALL << " failed: " << cudaGetErrorString(odmoe_cuda_err_),                      \
                  "check the GPU with nvidia-smi; odmoe needs a CUDA driver for this toolkit");     \
  } while (0)
