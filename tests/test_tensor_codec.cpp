#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "odmoe/core/tensor_codec.h"

namespace odmoe {
namespace {

std::vector<float> random_values(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

struct Shape {
  size_t rows, cols;
};

class CodecRoundTrip : public ::testing::TestWithParam<Shape> {};

TEST_P(CodecRoundTrip, FloatTypesAreExactForRepresentableValues) {
  const auto [rows, cols] = GetParam();
  const auto src = random_values(rows * cols, 1, 0.5f);
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16}) {
    // Start from values the dtype can represent, so encode -> decode must be bit-exact.
    EncodedTensor e;
    encode_tensor(src.data(), rows, cols, t, &e);
    std::vector<float> once(rows * cols), twice(rows * cols);
    decode_tensor(e, once.data());
    EncodedTensor e2;
    encode_tensor(once.data(), rows, cols, t, &e2);
    EXPECT_EQ(e.data, e2.data) << dtype_name(t);
    decode_tensor(e2, twice.data());
    EXPECT_EQ(0, std::memcmp(once.data(), twice.data(), once.size() * 4)) << dtype_name(t);
    if (t == DType::kF32) {
      EXPECT_EQ(0, std::memcmp(src.data(), once.data(), once.size() * 4));
    }
  }
}

TEST_P(CodecRoundTrip, QuantizedErrorWithinHalfAStep) {
  const auto [rows, cols] = GetParam();
  auto src = random_values(rows * cols, 2, 0.05f);
  if (rows > 1) std::fill(src.begin(), src.begin() + static_cast<long>(cols), 0.0f);  // an all-zero row
  for (DType t : {DType::kInt8, DType::kInt4}) {
    EncodedTensor e;
    ASSERT_EQ(encode_tensor(src.data(), rows, cols, t, &e), 0u);
    ASSERT_EQ(e.data.size(), dtype_data_bytes(t, rows, cols));
    ASSERT_EQ(e.scales.size(), dtype_scale_count(t, rows, cols));
    std::vector<float> out(rows * cols);
    decode_tensor(e, out.data());
    // Symmetric rounding to the nearest step: |w - w'| <= scale/2 where scale = absmax/127
    // (int8, per row) or absmax/7 (int4, per group of 32). A 1e-6 relative slack covers the
    // float rounding of w/scale.
    const size_t group = t == DType::kInt8 ? cols : static_cast<size_t>(kInt4Group);
    const float qmax = t == DType::kInt8 ? 127.0f : 7.0f;
    double max_err = 0;
    for (size_t r = 0; r < rows; ++r) {
      for (size_t c0 = 0; c0 < cols; c0 += group) {
        const size_t c1 = std::min(cols, c0 + group);
        float amax = 0;
        for (size_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(src[r * cols + c]));
        const float bound = amax / qmax / 2 * (1 + 1e-6f) + 1e-12f;
        for (size_t c = c0; c < c1; ++c) {
          const float err = std::fabs(out[r * cols + c] - src[r * cols + c]);
          max_err = std::max<double>(max_err, err);
          ASSERT_LE(err, bound) << dtype_name(t) << " at (" << r << ", " << c << ")";
          ASSERT_TRUE(std::isfinite(out[r * cols + c]));
        }
      }
    }
    RecordProperty(std::string("max_err_") + dtype_name(t), std::to_string(max_err));
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CodecRoundTrip,
                         ::testing::Values(Shape{1, 1}, Shape{1, 31}, Shape{3, 32}, Shape{5, 33}, Shape{4, 40},
                                           Shape{7, 100}, Shape{16, 256}),
                         [](const auto& param_info) {
                           return std::to_string(param_info.param.rows) + "x" + std::to_string(param_info.param.cols);
                         });

TEST(Codec, Int4PackingIsLowNibbleFirst) {
  // Row of 4: amax = 7 -> scale 1, q = value; nibble = q + 8.
  const float src[4] = {-7, 7, 0, 1};
  EncodedTensor e;
  encode_tensor(src, 1, 4, DType::kInt4, &e);
  ASSERT_EQ(e.data.size(), 16u);  // one padded group of 32 values
  EXPECT_EQ(e.data[0], (15u << 4) | 1u);
  EXPECT_EQ(e.data[1], (9u << 4) | 8u);
  for (size_t i = 2; i < 16; ++i) EXPECT_EQ(e.data[i], 0x88) << "padding encodes zeros";
  EXPECT_FLOAT_EQ(e.scales[0], 1.0f);
}

TEST(Codec, CountsNonFiniteValues) {
  const float src[3] = {1.0f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()};
  EncodedTensor e;
  EXPECT_EQ(encode_tensor(src, 1, 3, DType::kInt8, &e), 2u);
  EXPECT_EQ(encode_tensor(src, 1, 3, DType::kBF16, &e), 2u);
}

TEST(Codec, DecodeRowsSubrange) {
  const auto src = random_values(6 * 50, 3, 1.0f);
  EncodedTensor e;
  encode_tensor(src.data(), 6, 50, DType::kInt4, &e);
  std::vector<float> all(300), part(100);
  decode_tensor(e, all.data());
  decode_rows(e.dtype, e.cols, e.data.data(), e.scales.data(), 2, 4, part.data());
  EXPECT_EQ(0, std::memcmp(all.data() + 100, part.data(), 400));
}

}  // namespace
}  // namespace odmoe
