// The CPU backend's ops against plain double-precision loops over the decoded weights, and
// the integer decode kernels of int8/int4 weights against their specification.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "odmoe/backend/cpu_backend.h"
#include "odmoe/core/softmax.h"

namespace odmoe {
namespace {

struct Case {
  DType dtype;
  size_t rows, cols, n_tokens;
};

std::vector<float> randn(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

class CpuMatmul : public ::testing::TestWithParam<Case> {};

TEST_P(CpuMatmul, MatchesDoublePrecisionReferenceOnEveryIsa) {
  const Case c = GetParam();
  const auto wf = randn(c.rows * c.cols, 1);
  const auto x = randn(c.n_tokens * c.cols, 2);
  EncodedTensor enc;
  encode_tensor(wf.data(), c.rows, c.cols, c.dtype, &enc);
  std::vector<float> wd(c.rows * c.cols);
  decode_tensor(enc, wd.data());  // the weights the kernels must see
  for (CpuIsa isa : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (isa > detect_cpu_isa()) {
      std::printf("[   INFO   ] %s not supported by this CPU: not tested here\n", cpu_isa_name(isa));
      continue;
    }
    CpuBackend be(isa, 2);
    std::vector<float> y(c.n_tokens * c.rows, NAN);
    be.matmul(WeightView::of(enc), x.data(), c.n_tokens, y.data());
    // Decode (< 4 tokens) of int8/int4 weights quantises x to int8 per block of 32.
    const bool qx = c.n_tokens < 4 && cpu_quantizes_activations(c.dtype);
    for (size_t t = 0; t < c.n_tokens; ++t) {
      for (size_t r = 0; r < c.rows; ++r) {
        double ref = 0, mag = 0, qbound = 0;
        for (size_t b = 0; b * 32 < c.cols; ++b) {
          double amax = 0, wsum = 0;
          for (size_t k = b * 32; k < std::min(c.cols, b * 32 + 32); ++k) {
            const double wk = wd[r * c.cols + k], xk = x[t * c.cols + k];
            ref += wk * xk;
            mag += std::fabs(wk * xk);
            amax = std::max(amax, std::fabs(xk));
            wsum += std::fabs(wk);
          }
          // Rounding x to a multiple of d = amax/127 moves it by at most d/2 (1% for the
          // rounding of x * (127/amax) itself).
          qbound += 1.01 * amax / 254 * wsum;
        }
        const float got = y[t * c.rows + r];
        ASSERT_TRUE(std::isfinite(got)) << cpu_isa_name(isa);
        // f32 accumulation of `cols` products in a different order than the reference:
        // error <= ~cols * 2^-24 * sum|w x|; 4e-7 * sqrt-ish growth is what is seen, 1e-5 is safe.
        // Quantised activations add at most sum over blocks of d/2 * sum|w|.
        ASSERT_NEAR(got, ref, 1e-5 * mag + 1e-6 + (qx ? qbound : 0))
            << cpu_isa_name(isa) << " " << dtype_name(c.dtype) << " token " << t << " row " << r;
      }
    }
  }
}

std::vector<Case> cases() {
  std::vector<Case> v;
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16, DType::kInt8, DType::kInt4})
    for (size_t cols : {1u, 31u, 33u, 40u, 64u, 100u, 257u, 2048u})
      for (size_t n : {1u, 2u, 5u}) v.push_back({d, 7, cols, n});
  return v;
}

INSTANTIATE_TEST_SUITE_P(All, CpuMatmul, ::testing::ValuesIn(cases()), [](const auto& p) {
  return std::string(dtype_name(p.param.dtype)) + "_" + std::to_string(p.param.cols) + "cols_" +
         std::to_string(p.param.n_tokens) + "tok";
});

TEST(CpuOps, RmsNormSwigluSoftmax) {
  CpuBackend be;
  const std::vector<float> x = {1, -2, 3, 4, 0, 0.5f};
  const std::vector<float> w = {1, 2, 0.5f};
  std::vector<float> y(6);
  be.rms_norm(x.data(), w.data(), 2, 3, 1e-6f, y.data());
  const double r0 = std::sqrt((1 + 4 + 9) / 3.0 + 1e-6);
  EXPECT_NEAR(y[1], -2 / r0 * 2, 1e-6);
  const double r1 = std::sqrt((16 + 0 + 0.25) / 3.0 + 1e-6);
  EXPECT_NEAR(y[5], 0.5 / r1 * 0.5, 1e-6);

  const std::vector<float> g = {-1, 0, 2}, u = {3, 4, 5};
  std::vector<float> o(3);
  be.swiglu(g.data(), u.data(), 3, o.data());
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(o[i], g[i] / (1 + std::exp(-g[i])) * u[i], 1e-6);

  std::vector<float> s = {1000, 1001, 1002, -1, -1, -1};
  softmax(s.data(), 3, s.data());  // the routers' softmax (core/softmax.h)
  softmax(s.data() + 3, 3, s.data() + 3);
  const double e0 = std::exp(-2.0), e1 = std::exp(-1.0), den = e0 + e1 + 1;
  EXPECT_NEAR(s[0], e0 / den, 1e-6);
  EXPECT_NEAR(s[2], 1 / den, 1e-6);
  EXPECT_NEAR(s[4], 1 / 3.0, 1e-6);
}

}  // namespace
}  // namespace odmoe
