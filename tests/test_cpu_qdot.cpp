// The integer decode kernels of int8/int4 weights (activations quantised to int8 per block of
// 32): every ISA against this file's own implementation of the arithmetic the backend
// documents (bit for bit), against the f32 product (within the quantisation bound), and
// CpuBackend::matmul's decode path against the row dot.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "odmoe/backend/cpu_backend.h"

namespace odmoe {
namespace {

constexpr size_t kBlock = 32;

std::vector<CpuIsa> isas_here() {
  static bool told = false;
  std::vector<CpuIsa> v;
  for (CpuIsa isa : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (isa <= detect_cpu_isa()) v.push_back(isa);
    else if (!told) std::printf("[   INFO   ] %s not supported by this CPU: not tested here\n", cpu_isa_name(isa));
  }
  told = true;
  return v;
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Random stored bytes (every int8 value, -128 included; every nibble, 0 = -8 included) and
// positive scales: what a file may hold, not only what the encoder writes.
struct RawMatrix {
  DType dtype;
  size_t rows, cols;
  std::vector<uint8_t> data;
  std::vector<float> scales;
  RawMatrix(DType d, size_t r, size_t c, uint32_t seed) : dtype(d), rows(r), cols(c) {
    std::mt19937 rng(seed);
    data.resize(dtype_data_bytes(d, r, c));
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    scales.resize(dtype_scale_count(d, r, c));
    std::uniform_real_distribution<float> u(0.001f, 0.1f);
    for (auto& s : scales) s = u(rng);
  }
  WeightView view() const { return {dtype, rows, cols, data.data(), scales.data()}; }
  // Integer weight value of (row, c) (int4: nibble - 8).
  int q(size_t r, size_t c) const {
    if (dtype == DType::kInt8) return static_cast<int8_t>(data[r * cols + c]);
    const uint8_t b = data[r * int4_groups(cols) * 16 + c / 2];
    return static_cast<int>(c % 2 == 0 ? (b & 0x0f) : (b >> 4)) - 8;
  }
  float scale(size_t r, size_t c) const {
    return dtype == DType::kInt8 ? scales[r] : scales[r * int4_groups(cols) + c / kBlock];
  }
};

// The documented arithmetic, written from the element values: per block, q = round-half-even
// (x * (127 / amax)), d = amax / 127.
//   int4: the block's integer sum times d * group scale, added by one f32 FMA into accumulator
//         b % 8 (blocks padded to a multiple of 8 add fma(0, 0, acc)); the 8 accumulators
//         summed as ((0+4)+(2+6))+((1+5)+(3+7)).
//   int8: lane k of a block (elements 4k..4k+3) summed exactly, times d, added by one FMA into
//         lane k of accumulator set b % 4; the sets summed (A0+A1)+(A2+A3) lane by lane, the
//         lanes as above, then times the row scale.
float hsum8(const float* a) { return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])); }

// Per block: d, and q of each element (0 for a zero, tiny or non-finite block).
float quantize_block(const std::vector<float>& x, size_t c0, size_t c1, long long* q) {
  float amax = 0;
  bool finite = true;
  for (size_t c = c0; c < c1; ++c) {
    finite = finite && std::isfinite(x[c]);
    amax = std::max(amax, std::fabs(x[c]));
  }
  for (size_t c = c0; c < c1; ++c) q[c - c0] = 0;
  if (!finite) return NAN;
  if (amax < 1e-30f) return 0;
  const float inv = 127.0f / amax;
  for (size_t c = c0; c < c1; ++c) q[c - c0] = std::lrint(x[c] * inv);
  return amax / 127.0f;
}

float spec_qdot_int8(const RawMatrix& m, size_t r, const std::vector<float>& x) {
  float acc[4][8] = {};
  for (size_t b = 0; b * kBlock < m.cols; ++b) {
    const size_t c0 = b * kBlock, c1 = std::min(m.cols, c0 + kBlock);
    long long q[kBlock];
    const float d = quantize_block(x, c0, c1, q);
    long long lane[8] = {};
    for (size_t c = c0; c < c1; ++c) lane[(c - c0) / 4] += static_cast<long long>(m.q(r, c)) * q[c - c0];
    for (size_t k = 0; k < 8; ++k) acc[b % 4][k] = std::fma(static_cast<float>(lane[k]), d, acc[b % 4][k]);
  }
  float v[8];
  for (size_t k = 0; k < 8; ++k) v[k] = (acc[0][k] + acc[1][k]) + (acc[2][k] + acc[3][k]);
  return hsum8(v) * m.scales[r];
}

float spec_qdot(const RawMatrix& m, size_t r, const std::vector<float>& x) {
  if (m.dtype == DType::kInt8) return spec_qdot_int8(m, r, x);
  const size_t nb = (m.cols + kBlock - 1) / kBlock, padded = (nb + 7) / 8 * 8;
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (size_t b = 0; b < padded; ++b) {
    long long isum = 0;
    float scale = 0;
    if (b < nb) {
      const size_t c0 = b * kBlock, c1 = std::min(m.cols, c0 + kBlock);
      long long q[kBlock];
      const float d = quantize_block(x, c0, c1, q);
      for (size_t c = c0; c < c1; ++c) isum += static_cast<long long>(m.q(r, c)) * q[c - c0];
      scale = d * m.scale(r, c0);
    }
    acc[b % 8] = std::fma(static_cast<float>(isum), scale, acc[b % 8]);
  }
  return hsum8(acc);
}

std::vector<float> activations(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0, 1);
  std::vector<float> x(n);
  for (auto& v : x) v = d(rng);
  for (size_t i = 0; i < n; ++i) {
    if ((i / kBlock) % 5 == 3) x[i] *= 1e-3f;      // blocks of very different magnitude
    if ((i / kBlock) % 7 == 5) x[i] = 0;           // all-zero blocks
  }
  return x;
}

const size_t kCols[] = {1, 7, 31, 32, 33, 63, 64, 65, 100, 255, 256, 257, 288, 1000, 2048, 2049, 5000};

TEST(CpuQdot, EveryIsaMatchesTheSpecBitForBit) {
  for (DType d : {DType::kInt8, DType::kInt4})
    for (size_t cols : kCols) {
      const RawMatrix m(d, 9, cols, static_cast<uint32_t>(cols));
      const auto x = activations(cols, static_cast<uint32_t>(cols) + 1);
      for (size_t r = 0; r < m.rows; ++r) {
        const float want = spec_qdot(m, r, x);
        ASSERT_TRUE(std::isfinite(want));
        for (CpuIsa isa : isas_here()) {
          const float got = cpu_row_dot_q8(isa, m.view(), r, x.data());
          ASSERT_EQ(bits(got), bits(want)) << cpu_isa_name(isa) << " (" << cpu_qdot_name(isa) << ") " << dtype_name(d)
                                           << " cols " << cols << " row " << r << ": " << got << " vs " << want;
        }
      }
    }
}

TEST(CpuQdot, WithinTheActivationQuantisationBoundOfTheF32Product) {
  // Encoded weights, so that decode_rows gives the values the f32 product sees.
  for (DType d : {DType::kInt8, DType::kInt4})
    for (size_t cols : {33u, 257u, 2048u}) {
      std::mt19937 rng(7);
      std::normal_distribution<float> nd(0, 1);
      std::vector<float> wf(4 * cols);
      for (auto& v : wf) v = nd(rng);
      EncodedTensor enc;
      encode_tensor(wf.data(), 4, cols, d, &enc);
      std::vector<float> wd(4 * cols);
      decode_tensor(enc, wd.data());
      const auto x = activations(cols, 3);
      for (size_t r = 0; r < 4; ++r) {
        double ref = 0, mag = 0, qbound = 0;
        for (size_t b = 0; b * kBlock < cols; ++b) {
          double amax = 0, wsum = 0;
          for (size_t c = b * kBlock; c < std::min(cols, (b + 1) * kBlock); ++c) {
            ref += static_cast<double>(wd[r * cols + c]) * x[c];
            mag += std::fabs(static_cast<double>(wd[r * cols + c]) * x[c]);
            amax = std::max(amax, std::fabs(static_cast<double>(x[c])));
            wsum += std::fabs(wd[r * cols + c]);
          }
          qbound += 1.01 * amax / 254 * wsum;  // |x - q d| <= d / 2 per element
        }
        for (CpuIsa isa : isas_here()) {
          const double got = cpu_row_dot_q8(isa, WeightView::of(enc), r, x.data());
          // f32 rounding of the block combination: far below 1e-5 of sum |w x|.
          EXPECT_NEAR(got, ref, qbound + 1e-5 * mag) << cpu_isa_name(isa) << " " << dtype_name(d) << " " << cols;
          // ...and the bound is not vacuous: the f32 row dot is much closer than it.
          EXPECT_LT(qbound, 0.1 * mag);
          EXPECT_NEAR(cpu_row_dot(isa, WeightView::of(enc), r, x.data()), ref, 1e-5 * mag + 1e-6);
        }
      }
    }
}

TEST(CpuQdot, NonFiniteActivationsGiveNaNAndZeroGivesZero) {
  for (DType d : {DType::kInt8, DType::kInt4}) {
    const RawMatrix m(d, 2, 300, 5);
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      auto x = activations(300, 6);
      x[290] = bad;  // in the partial last block
      auto y = activations(300, 6);
      y[40] = bad;   // in a full block
      for (CpuIsa isa : isas_here()) {
        EXPECT_TRUE(std::isnan(cpu_row_dot_q8(isa, m.view(), 1, x.data()))) << cpu_isa_name(isa) << " " << bad;
        EXPECT_TRUE(std::isnan(cpu_row_dot_q8(isa, m.view(), 1, y.data()))) << cpu_isa_name(isa) << " " << bad;
      }
    }
    const std::vector<float> zero(300, 0.0f), tiny(300, 1e-31f);
    for (CpuIsa isa : isas_here()) {
      EXPECT_EQ(cpu_row_dot_q8(isa, m.view(), 0, zero.data()), 0.0f);
      EXPECT_EQ(cpu_row_dot_q8(isa, m.view(), 0, tiny.data()), 0.0f) << "blocks below 1e-30 count as zero";
    }
  }
  const RawMatrix bf(DType::kBF16, 1, 8, 1);
  const std::vector<float> x(8, 1.0f);
  EXPECT_ANY_THROW(cpu_row_dot_q8(CpuIsa::kScalar, bf.view(), 0, x.data()));
}

TEST(CpuQdot, DecodeMatmulIsTheRowDotOnEveryIsaAndThreadCount) {
  for (DType d : {DType::kInt8, DType::kInt4})
    for (size_t cols : {100u, 2048u}) {
      const RawMatrix m(d, 301, cols, 11);  // enough rows for the threaded path
      const auto x = activations(3 * cols, 12);
      for (CpuIsa isa : isas_here())
        for (int threads : {1, 2, 3})
          for (size_t n_tokens : {1u, 2u, 3u}) {
            CpuBackend be(isa, threads);
            std::vector<float> y(n_tokens * m.rows, NAN);
            be.matmul(m.view(), x.data(), n_tokens, y.data());
            for (size_t t = 0; t < n_tokens; ++t)
              for (size_t r = 0; r < m.rows; ++r)
                ASSERT_EQ(bits(y[t * m.rows + r]), bits(cpu_row_dot_q8(CpuIsa::kScalar, m.view(), r, x.data() + t * cols)))
                    << cpu_isa_name(isa) << " threads " << threads << " token " << t << " row " << r;
          }
    }
}

}  // namespace
}  // namespace odmoe
