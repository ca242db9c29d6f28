// The compute backend interface. Every op exists on the CPU first (cpu_backend.h), which is
// the numerical oracle the CUDA backend is tested against. Activations are f32 and
// row-major; weights are stored tensors (any DType) seen through a WeightView; all
// accumulation is in f32.
#pragma once

#include <cstddef>
#include <cstdint>

#include "odmoe/core/dtype.h"
#include "odmoe/core/tensor_codec.h"

namespace odmoe {

// A stored weight matrix [rows, cols] (Hugging Face Linear orientation: [out, in]).
struct WeightView {
  DType dtype = DType::kF32;
  size_t rows = 0, cols = 0;
  const void* data = nullptr;      // dtype_data_bytes(dtype, rows, cols)
  const float* scales = nullptr;   // int8: [rows]; int4: [rows, int4_groups(cols)]; else null

  static WeightView of(const EncodedTensor& t) { return {t.dtype, t.rows, t.cols, t.data.data(), t.scales.data()}; }
  size_t bytes() const { return dtype_data_bytes(dtype, rows, cols) + dtype_scale_count(dtype, rows, cols) * 4; }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // y[t, r] = sum_c w[r, c] * x[t, c] for t < n_tokens  (x: [n_tokens, cols], y: [n_tokens, rows]).
  virtual void matmul(const WeightView& w, const float* x, size_t n_tokens, float* y) = 0;
  // y[t] = x[t] / rms(x[t]) * weight, rows of `dim`; y may alias x.
  virtual void rms_norm(const float* x, const float* weight, size_t n_rows, size_t dim, float eps, float* y) = 0;
  // out[i] = silu(gate[i]) * up[i]; out may alias gate.
  virtual void swiglu(const float* gate, const float* up, size_t n, float* out) = 0;
};

}  // namespace odmoe
