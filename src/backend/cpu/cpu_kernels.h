// Row dot products per ISA (internal to the CPU backend).
#pragma once

#include <cstddef>

#include "odmoe/backend/backend.h"

namespace odmoe::cpu {

float dot_scalar(const WeightView& w, size_t row, const float* x);
float dot_f32_scalar(const float* a, const float* b, size_t n);
#if defined(__x86_64__)
float dot_avx2(const WeightView& w, size_t row, const float* x);
float dot_f32_avx2(const float* a, const float* b, size_t n);
float dot_avx512(const WeightView& w, size_t row, const float* x);
float dot_f32_avx512(const float* a, const float* b, size_t n);
#endif

// Pointer to the start of row `row` of the stored data.
inline const unsigned char* row_data(const WeightView& w, size_t row) {
  return static_cast<const unsigned char*>(w.data) + row * (dtype_data_bytes(w.dtype, 1, w.cols));
}

}  // namespace odmoe::cpu
