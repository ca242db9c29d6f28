// A tensor: a typed, shaped view of a device buffer. It owns nothing; the buffer outlives it.
//
// Every tensor the ops see is a row-major matrix [rows, cols] (a vector is [1, n]); weights
// keep Hugging Face Linear orientation [out, in]. Quantized weights (int8: one f32 scale per
// row; int4: one f32 scale per group of 32 columns, [rows, int4_groups(cols)]) carry their
// scales as a second range, in the same buffer or another.
#pragma once

#include <cstddef>
#include <cstdint>

#include "odmoe/backend/backend.h"
#include "odmoe/backend/buffer.h"
#include "odmoe/core/dtype.h"

namespace odmoe {

struct Tensor {
  Buffer* buffer = nullptr;
  size_t offset = 0;                   // bytes from buffer->base() to element [0, 0]
  DType dtype = DType::kF32;
  size_t rows = 0, cols = 0;           // [rows, cols], row-major
  Buffer* scale_buffer = nullptr;      // f32 scales of int8/int4 data; null otherwise
  size_t scale_offset = 0;             // bytes from scale_buffer->base()

  bool empty() const { return buffer == nullptr; }
  size_t count() const { return rows * cols; }
  size_t bytes() const { return dtype_data_bytes(dtype, rows, cols); }           // the data
  size_t scale_count() const { return dtype_scale_count(dtype, rows, cols); }    // f32 values

  // An f32 tensor [rows, cols] at `offset` of `buf`.
  static Tensor f32(Buffer* buf, size_t offset, size_t rows, size_t cols) {
    return {buf, offset, DType::kF32, rows, cols, nullptr, 0};
  }
  // Rows [first, first + n) of this tensor, with their scales.
  Tensor row_range(size_t first, size_t n) const;
  // The same bytes seen as another shape of the same element count (f32 only).
  Tensor reshape(size_t new_rows, size_t new_cols) const;

  // Where the host reads and writes the data: null where the buffer is not host-visible.
  void* host_data() const;
  const float* host_scales() const;
  float* host_f32() const { return static_cast<float*>(host_data()); }
  // The data as the device's kernels address it (the host address on the CPU device).
  void* device_data() const { return buffer ? static_cast<char*>(buffer->base()) + offset : nullptr; }
  const float* device_scales() const {
    return scale_buffer ? reinterpret_cast<const float*>(static_cast<char*>(scale_buffer->base()) + scale_offset)
                        : nullptr;
  }
  // The host kernels' view of a host-visible weight tensor (throws where it is not).
  WeightView host_view() const;
};

}  // namespace odmoe
