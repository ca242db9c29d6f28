// The softmax of routing scores, written once: f32, the maximum subtracted, exp summed in
// index order, then each divided by the sum (transformers' order, so routing stays exact).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace odmoe {

// out[i] = exp(x[i] - max x) / sum_j exp(x[j] - max x); `out` may alias `x`. n >= 1.
inline void softmax(const float* x, size_t n, float* out) {
  float mx = x[0];
  for (size_t i = 1; i < n; ++i) mx = std::max(mx, x[i]);
  float sum = 0;
  for (size_t i = 0; i < n; ++i) sum += (out[i] = std::exp(x[i] - mx));
  for (size_t i = 0; i < n; ++i) out[i] /= sum;
}

}  // namespace odmoe
