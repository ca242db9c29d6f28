#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "odmoe/core/checksum.h"
#include "odmoe/core/dtype.h"
#include "odmoe/core/error.h"

namespace odmoe {
namespace {

float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(DType, Bf16RoundTripsEveryBitPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(f))));
      continue;
    }
    ASSERT_EQ(f32_to_bf16(f), h) << "pattern " << h;
  }
}

TEST(DType, F16RoundTripsEveryBitPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    ASSERT_EQ(f32_to_f16(f), h) << "pattern " << h << " value " << f;
  }
}

TEST(DType, F16KnownValues) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);               // rounds up to inf
  EXPECT_EQ(f32_to_f16(1e-9f), 0x0000);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -24)), 0x0002);  // tie between 1 and 2 ulps: even
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // exactly half the smallest subnormal: even (0)
}

TEST(DType, RoundingIsNearestEven) {
  // Values exactly between two bf16 neighbours go to the even one.
  EXPECT_EQ(f32_to_bf16(bits_to_f32(0x3f808000u)), 0x3f80);  // 1 + 2^-8: tie, even is 0x3f80
  EXPECT_EQ(f32_to_bf16(bits_to_f32(0x3f818000u)), 0x3f82);  // tie, even is 0x3f82
  EXPECT_EQ(f32_to_bf16(bits_to_f32(0x3f808001u)), 0x3f81);  // just above the tie
  // f16: 1 + 2^-11 is a tie between 1 and 1 + 2^-10.
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
}

TEST(DType, Names) {
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16, DType::kInt8, DType::kInt4})
    EXPECT_EQ(parse_dtype(dtype_name(t)), t);
  EXPECT_FALSE(parse_dtype("fp8").has_value());
  EXPECT_EQ(dtype_data_bytes(DType::kInt4, 3, 40), 3u * 2 * 16);  // 40 columns: two groups of 32
  EXPECT_EQ(dtype_scale_count(DType::kInt4, 3, 40), 6u);
}

TEST(Checksum, Crc32cKnownVector) {
  // The check value of CRC-32C (RFC 3720 appendix B.4 test vectors).
  const char* s = "123456789";
  EXPECT_EQ(crc32c(0, s, 9), 0xe3069283u);
  std::vector<uint8_t> zeros(32, 0);
  EXPECT_EQ(crc32c(0, zeros.data(), zeros.size()), 0x8a9136aau);
}

TEST(Checksum, IncrementalEqualsWhole) {
  std::vector<uint8_t> v(1000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(i * 7 + 3);
  const uint32_t whole = crc32c(0, v.data(), v.size());
  for (size_t cut : {0u, 1u, 7u, 8u, 9u, 500u, 999u}) {
    const uint32_t a = crc32c(0, v.data(), cut);
    EXPECT_EQ(crc32c(a, v.data() + cut, v.size() - cut), whole) << "cut at " << cut;
  }
}

TEST(Error, CarriesSubsystemCodeAndHint) {
  try {
    ODMOE_THROW(kConfig, "bad-config", "top-k " << 9 << " > experts", "fix config.json");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.subsystem(), Subsystem::kConfig);
    EXPECT_EQ(e.code(), "bad-config");
    EXPECT_EQ(e.message(), "top-k 9 > experts");
    const std::string s = e.to_string();
    EXPECT_NE(s.find("[config/bad-config]"), std::string::npos) << s;
    EXPECT_NE(s.find("HINT: fix config.json"), std::string::npos) << s;
    EXPECT_NE(s.find("test_core.cpp:"), std::string::npos) << s;
  }
}

}  // namespace
}  // namespace odmoe
