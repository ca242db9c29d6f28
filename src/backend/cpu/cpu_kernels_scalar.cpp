#include <cstdint>

#include "cpu_kernels.h"

namespace odmoe::cpu {

float dot_f32_scalar(const float* a, const float* b, size_t n) {
  float s[4] = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) s[k] += a[i + k] * b[i + k];
  for (; i < n; ++i) s[0] += a[i] * b[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

float dot_scalar(const WeightView& w, size_t row, const float* x) {
  const unsigned char* p = row_data(w, row);
  const size_t n = w.cols;
  float acc = 0;
  switch (w.dtype) {
    case DType::kF32: return dot_f32_scalar(reinterpret_cast<const float*>(p), x, n);
    case DType::kBF16: {
      const auto* h = reinterpret_cast<const uint16_t*>(p);
      for (size_t i = 0; i < n; ++i) acc += bf16_to_f32(h[i]) * x[i];
      return acc;
    }
    case DType::kF16: {
      const auto* h = reinterpret_cast<const uint16_t*>(p);
      for (size_t i = 0; i < n; ++i) acc += f16_to_f32(h[i]) * x[i];
      return acc;
    }
    case DType::kInt8: {
      const auto* q = reinterpret_cast<const int8_t*>(p);
      for (size_t i = 0; i < n; ++i) acc += static_cast<float>(q[i]) * x[i];
      return acc * w.scales[row];
    }
    case DType::kInt4: {
      const size_t groups = int4_groups(n);
      const float* sc = w.scales + row * groups;
      for (size_t g = 0; g < groups; ++g) {
        float gs = 0;
        const size_t c0 = g * kInt4Group, c1 = c0 + kInt4Group < n ? c0 + kInt4Group : n;
        for (size_t c = c0; c < c1; ++c) {
          const unsigned b = p[c / 2];
          const int q = static_cast<int>((c % 2 == 0) ? (b & 0x0fu) : (b >> 4)) - 8;
          gs += static_cast<float>(q) * x[c];
        }
        acc += gs * sc[g];
      }
      return acc;
    }
  }
  return 0;
}

}  // namespace odmoe::cpu
