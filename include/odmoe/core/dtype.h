// Weight data types and the scalar conversions between them.
//
// bf16 and f16 travel as raw uint16 bit patterns everywhere outside compute kernels: the
// HDF5 files store them as H5T_STD_U16LE plus a `dtype` attribute (DESIGN.md: reading bf16
// through a native conversion corrupts it), and every conversion here is bit-exact where
// the target can represent the value (bf16/f16 -> f32 -> bf16/f16 round-trips exactly).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace odmoe {

enum class DType : uint8_t {
  kF32,
  kBF16,
  kF16,
  kInt8,  // symmetric, one f32 scale per row
  kInt4,  // symmetric, one f32 scale per group of kInt4Group along a row, two values per byte
};

inline constexpr int kInt4Group = 32;

const char* dtype_name(DType t);                        // "f32", "bf16", ...
std::optional<DType> parse_dtype(std::string_view s);   // inverse of dtype_name
bool is_quantized(DType t);                             // int8, int4: data + scales

// Bytes of the stored data (not the scales) of a [rows, cols] tensor.
size_t dtype_data_bytes(DType t, size_t rows, size_t cols);
// Number of f32 scales of a [rows, cols] tensor (0 for float types).
size_t dtype_scale_count(DType t, size_t rows, size_t cols);
// Groups per row of an int4 row of `cols` values (the last group is zero-padded).
inline size_t int4_groups(size_t cols) { return (cols + kInt4Group - 1) / kInt4Group; }

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even; NaN stays a (quiet) NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);  // round to nearest even, overflow to inf

}  // namespace odmoe
