// Encoding f32 tensors into the stored dtypes and decoding them back.
//
//   f32, bf16, f16   element-wise (bf16/f16 round to nearest even; bit-exact round trips)
//   int8             symmetric per row:   w ~= q * scale[row],            q in [-127, 127]
//   int4             symmetric per group of 32 along a row: w ~= q * scale[row][group],
//                    q in [-7, 7], stored as the nibble q + 8, element 2j in the low nibble
//                    of byte j; a row's last group is padded with zeros.
// The worst-case error of a quantized element is scale / 2 (scale = absmax/127 or absmax/7).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "odmoe/core/dtype.h"

namespace odmoe {

struct EncodedTensor {
  DType dtype = DType::kF32;
  size_t rows = 0, cols = 0;
  std::vector<uint8_t> data;  // stored bytes: dtype_data_bytes(dtype, rows, cols)
  std::vector<float> scales;  // f32 [rows] (int8) or [rows, int4_groups(cols)] (int4); empty otherwise
};

// Encodes src [rows, cols]. Returns the number of non-finite input values (they are
// encoded as-is for float types, as 0 for quantized types); callers reject them.
size_t encode_tensor(const float* src, size_t rows, size_t cols, DType dtype, EncodedTensor* out);

// Decodes rows [row_begin, row_end) of a stored tensor into out[(row - row_begin) * cols + c].
void decode_rows(DType dtype, size_t cols, const void* data, const float* scales, size_t row_begin,
                 size_t row_end, float* out);

inline void decode_tensor(const EncodedTensor& t, float* out) {
  decode_rows(t.dtype, t.cols, t.data.data(), t.scales.data(), 0, t.rows, out);
}

}  // namespace odmoe
