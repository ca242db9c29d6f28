#include "odmoe/core/tensor_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace odmoe {
namespace {

int clamp_round(float v, int lo, int hi) {
  const float r = std::nearbyint(v);
  return static_cast<int>(std::min(std::max(r, static_cast<float>(lo)), static_cast<float>(hi)));
}

}  // namespace

size_t encode_tensor(const float* src, size_t rows, size_t cols, DType dtype, EncodedTensor* out) {
  out->dtype = dtype;
  out->rows = rows;
  out->cols = cols;
  out->data.assign(dtype_data_bytes(dtype, rows, cols), 0);
  out->scales.assign(dtype_scale_count(dtype, rows, cols), 0.0f);
  const size_t n = rows * cols;
  size_t non_finite = 0;
  for (size_t i = 0; i < n; ++i) non_finite += std::isfinite(src[i]) ? 0 : 1;

  switch (dtype) {
    case DType::kF32:
      std::memcpy(out->data.data(), src, n * 4);
      break;
    case DType::kBF16: {
      auto* dst = reinterpret_cast<uint16_t*>(out->data.data());
      for (size_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
      break;
    }
    case DType::kF16: {
      auto* dst = reinterpret_cast<uint16_t*>(out->data.data());
      for (size_t i = 0; i < n; ++i) dst[i] = f32_to_f16(src[i]);
      break;
    }
    case DType::kInt8: {
      auto* dst = reinterpret_cast<int8_t*>(out->data.data());
      for (size_t r = 0; r < rows; ++r) {
        const float* row = src + r * cols;
        float amax = 0.0f;
        for (size_t c = 0; c < cols; ++c)
          if (std::isfinite(row[c])) amax = std::max(amax, std::fabs(row[c]));
        const float scale = amax / 127.0f;
        const float inv = scale > 0 ? 1.0f / scale : 0.0f;
        out->scales[r] = scale;
        for (size_t c = 0; c < cols; ++c)
          dst[r * cols + c] = static_cast<int8_t>(std::isfinite(row[c]) ? clamp_round(row[c] * inv, -127, 127) : 0);
      }
      break;
    }
    case DType::kInt4: {
      const size_t groups = int4_groups(cols);
      const size_t row_bytes = groups * (kInt4Group / 2);
      for (size_t r = 0; r < rows; ++r) {
        const float* row = src + r * cols;
        uint8_t* dst = out->data.data() + r * row_bytes;
        for (size_t g = 0; g < groups; ++g) {
          const size_t c0 = g * kInt4Group, c1 = std::min(cols, c0 + kInt4Group);
          float amax = 0.0f;
          for (size_t c = c0; c < c1; ++c)
            if (std::isfinite(row[c])) amax = std::max(amax, std::fabs(row[c]));
          const float scale = amax / 7.0f;
          const float inv = scale > 0 ? 1.0f / scale : 0.0f;
          out->scales[r * groups + g] = scale;
          for (size_t j = 0; j < kInt4Group; ++j) {
            const size_t c = c0 + j;
            const int q = (c < c1 && std::isfinite(row[c])) ? clamp_round(row[c] * inv, -7, 7) : 0;
            const auto nib = static_cast<uint8_t>(q + 8);
            uint8_t& b = dst[g * (kInt4Group / 2) + j / 2];
            b = static_cast<uint8_t>((j % 2 == 0) ? ((b & 0xf0u) | nib) : ((b & 0x0fu) | (nib << 4)));
          }
        }
      }
      break;
    }
  }
  return non_finite;
}

void decode_rows(DType dtype, size_t cols, const void* data, const float* scales, size_t row_begin, size_t row_end,
                 float* out) {
  for (size_t r = row_begin; r < row_end; ++r) {
    float* o = out + (r - row_begin) * cols;
    switch (dtype) {
      case DType::kF32:
        std::memcpy(o, static_cast<const float*>(data) + r * cols, cols * 4);
        break;
      case DType::kBF16: {
        const auto* s = static_cast<const uint16_t*>(data) + r * cols;
        for (size_t c = 0; c < cols; ++c) o[c] = bf16_to_f32(s[c]);
        break;
      }
      case DType::kF16: {
        const auto* s = static_cast<const uint16_t*>(data) + r * cols;
        for (size_t c = 0; c < cols; ++c) o[c] = f16_to_f32(s[c]);
        break;
      }
      case DType::kInt8: {
        const auto* s = static_cast<const int8_t*>(data) + r * cols;
        const float scale = scales[r];
        for (size_t c = 0; c < cols; ++c) o[c] = static_cast<float>(s[c]) * scale;
        break;
      }
      case DType::kInt4: {
        const size_t groups = int4_groups(cols);
        const auto* s = static_cast<const uint8_t*>(data) + r * groups * (kInt4Group / 2);
        for (size_t c = 0; c < cols; ++c) {
          const uint8_t b = s[c / 2];
          const int q = static_cast<int>((c % 2 == 0) ? (b & 0x0fu) : (b >> 4)) - 8;
          o[c] = static_cast<float>(q) * scales[r * groups + c / kInt4Group];
        }
        break;
      }
    }
  }
}

}  // namespace odmoe
