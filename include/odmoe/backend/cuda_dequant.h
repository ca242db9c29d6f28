// CUDA decoding of stored weights (bf16, f16, int8, int4 -> f32), the same arithmetic as
// tensor_codec's decode_rows, which is the oracle the GPU is tested against.
// This header needs no CUDA headers; the implementation exists when ODMOE_WITH_CUDA is defined.
#pragma once

#include <string>

#include "odmoe/core/tensor_codec.h"

namespace odmoe::cuda {

// True if a usable GPU is present; otherwise `why` says why not (no driver, no device, ...).
bool device_available(std::string* why);

// Decodes [rows, cols] stored at device pointers into d_out (f32, device), on `stream`
// (a cudaStream_t, nullptr for the default stream).
void decode_rows_device(DType dtype, size_t rows, size_t cols, const void* d_data, const float* d_scales, float* d_out,
                        void* stream);

// Copies `t` to the device, decodes it there and copies the result to host_out (rows*cols floats).
void decode_tensor_on_device(const EncodedTensor& t, float* host_out);

}  // namespace odmoe::cuda
