// attention_f32 (src/backend/cpu/cpu_attention*.cpp) on every ISA this CPU has, against a
// straightforward double-precision attention written here: head dims with and without a
// partial last vector, GQA ratios 1/4/8, decode and prefill after earlier positions, sliding
// window on and off, one thread and several (several split the keys of a long decode).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cpu_kernels.h"
#include "odmoe/backend/cpu_backend.h"
#include "odmoe/core/error.h"

namespace odmoe {
namespace {

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

struct Shape {
  size_t n;
  int pos0, n_head, n_head_kv, hd, window;
  size_t n_ctx;
  float q_amp;  // q values in [-q_amp, q_amp]: larger gives a sharper softmax
  std::string to_string() const {
    std::ostringstream os;
    os << "n=" << n << " pos0=" << pos0 << " heads=" << n_head << "/" << n_head_kv << " hd=" << hd
       << " window=" << window << " n_ctx=" << n_ctx << " q_amp=" << q_amp;
    return os.str();
  }
};

struct Inputs {
  std::vector<float> q, k, v;  // q [n][n_head][hd]; k, v [n_head_kv][n_ctx][hd]
  Inputs(const Shape& s, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    q.resize(s.n * static_cast<size_t>(s.n_head * s.hd));
    k.resize(static_cast<size_t>(s.n_head_kv) * s.n_ctx * static_cast<size_t>(s.hd));
    v.resize(k.size());
    for (float& x : q) x = s.q_amp * u(rng);
    // Rows past the valid positions hold NaN: reading one shows up as a NaN result.
    const size_t valid = static_cast<size_t>(s.pos0) + s.n;
    for (size_t i = 0; i < k.size(); ++i) {
      const bool ok = (i / static_cast<size_t>(s.hd)) % s.n_ctx < valid;
      k[i] = ok ? u(rng) : std::numeric_limits<float>::quiet_NaN();
      v[i] = ok ? u(rng) : std::numeric_limits<float>::quiet_NaN();
    }
  }
};

// Attention in double, one (token, head) at a time, exactly as the contract reads.
std::vector<double> reference(const Shape& s, const Inputs& in, float scale) {
  const size_t hd = static_cast<size_t>(s.hd), nh = static_cast<size_t>(s.n_head);
  const int group = s.n_head / s.n_head_kv;
  std::vector<double> out(s.n * nh * hd, 0.0);
  for (size_t t = 0; t < s.n; ++t) {
    const int pos = s.pos0 + static_cast<int>(t);
    const int start = s.window > 0 ? std::max(0, pos - s.window + 1) : 0;
    for (size_t h = 0; h < nh; ++h) {
      const float* q = &in.q[(t * nh + h) * hd];
      const size_t kvh = h / static_cast<size_t>(group);
      std::vector<double> w;
      double mx = -INFINITY;
      for (int j = start; j <= pos; ++j) {
        const float* kr = &in.k[(kvh * s.n_ctx + static_cast<size_t>(j)) * hd];
        double d = 0;
        for (size_t c = 0; c < hd; ++c) d += static_cast<double>(q[c]) * kr[c];
        w.push_back(d * scale);
        mx = std::max(mx, w.back());
      }
      double sum = 0;
      for (double& x : w) sum += (x = std::exp(x - mx));
      double* o = &out[(t * nh + h) * hd];
      for (int j = start; j <= pos; ++j) {
        const float* vr = &in.v[(kvh * s.n_ctx + static_cast<size_t>(j)) * hd];
        for (size_t c = 0; c < hd; ++c) o[c] += w[static_cast<size_t>(j - start)] / sum * vr[c];
      }
    }
  }
  return out;
}

// Tolerance of an f32 result against the double reference. The scores are f32 dot products
// of up to 128 terms of |q k| <= q_amp: an error of a few 1e-7 x q_amp x scale x sqrt(hd) in
// a score moves a softmax weight by that fraction, and the output (a weighted mean of values in
// [-1, 1]) by at most as much; the vector exp adds <= 2 ulp per weight, the f32 sums of
// weights and of values a few ulp each. atol 4e-6 at q_amp 2 leaves about 4x the largest error
// seen on these shapes (the scalar path with std::exp included); the score errors, and so atol,
// grow in proportion to |q| (q_amp 40: scores up to ~±40, errors up to 1.1e-5 seen, atol 8e-5).
// rtol 1e-5 covers outputs near 1.
constexpr double kAtol = 4e-6, kRtol = 1e-5;
double atol_for(const Shape& s) { return kAtol * std::max(1.0, static_cast<double>(s.q_amp) / 2); }

void expect_close(const Shape& s, CpuIsa isa, int threads, const std::vector<float>& got,
                  const std::vector<double>& want) {
  double max_err = 0;
  int shown = 0;
  size_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    const bool ok = std::isfinite(got[i]) && err <= atol_for(s) + kRtol * std::fabs(want[i]);
    if (std::isfinite(got[i])) max_err = std::max(max_err, err);
    if (!ok) {
      ++bad;
      if (shown++ < 5)
        ADD_FAILURE() << cpu_isa_name(isa) << " threads=" << threads << " " << s.to_string() << ": out[" << i
                      << "] = " << got[i] << ", reference " << want[i];
    }
  }
  EXPECT_EQ(bad, 0u) << cpu_isa_name(isa) << " threads=" << threads << " " << s.to_string()
                     << ": max |err| " << max_err;
}

void check(const Shape& s, uint32_t seed) {
  const Inputs in(s, seed);
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.hd));
  const std::vector<double> want = reference(s, in, scale);
  for (CpuIsa isa : isas_here()) {
    for (int threads : {1, 3, 8}) {
      std::vector<float> out(want.size(), -1.0f);
      cpu::attention_f32_isa(isa, in.q.data(), s.n, s.pos0, s.n_head, s.n_head_kv, s.hd, in.k.data(), in.v.data(),
                             s.n_ctx, s.window, scale, out.data(), threads);
      expect_close(s, isa, threads, out, want);
    }
  }
}

TEST(CpuAttention, ShapesIsasAndThreads) {
  uint32_t seed = 1;
  for (int hd : {64, 128, 80, 96, 72, 36}) {
    for (auto heads : {std::pair{4, 4}, std::pair{8, 2}, std::pair{16, 2}}) {
      for (int window : {0, 24}) {
        for (auto np : {std::pair<size_t, int>{1, 0}, std::pair<size_t, int>{1, 200}, std::pair<size_t, int>{37, 50}}) {
          const Shape s{np.first, np.second, heads.first, heads.second, hd, window, 300, 2.0f};
          check(s, seed++);
        }
      }
    }
  }
}

// Long decode (keys split across threads) and a sharp softmax (scores up to ~±40: the running
// max moves between key blocks and most weights underflow).
TEST(CpuAttention, LongDecodeAndSharpSoftmax) {
  uint32_t seed = 100;
  for (int window : {0, 700}) {
    for (auto heads : {std::pair{16, 16}, std::pair{32, 4}}) {
      check(Shape{1, 1500, heads.first, heads.second, 128, window, 1600, 2.0f}, seed++);
      check(Shape{3, 1000, heads.first, heads.second, 64, window, 1003, 40.0f}, seed++);
    }
  }
  check(Shape{100, 0, 8, 1, 128, 0, 100, 1.0f}, seed++);  // prefill from position 0, GQA 8
}

TEST(CpuAttention, NaNPropagates) {
  const Shape s{2, 10, 4, 2, 64, 0, 12, 1.0f};
  Inputs in(s, 7);
  in.v[static_cast<size_t>(3 * s.hd + 5)] = std::numeric_limits<float>::quiet_NaN();  // KV head 0, position 3
  for (CpuIsa isa : isas_here()) {
    std::vector<float> out(s.n * static_cast<size_t>(s.n_head * s.hd));
    cpu::attention_f32_isa(isa, in.q.data(), s.n, s.pos0, s.n_head, s.n_head_kv, s.hd, in.k.data(), in.v.data(),
                           s.n_ctx, s.window, 0.125f, out.data(), 1);
    EXPECT_TRUE(std::isnan(out[5])) << cpu_isa_name(isa);               // head 0 reads KV head 0
    EXPECT_FALSE(std::isnan(out[2 * static_cast<size_t>(s.hd) + 5])) << cpu_isa_name(isa);  // head 2: KV head 1
  }
}

TEST(CpuAttention, RejectsBadShapes) {
  std::vector<float> buf(4096, 0.0f);
  EXPECT_THROW(cpu::attention_f32(buf.data(), 1, 0, 6, 4, 16, buf.data(), buf.data(), 8, 0, 1.0f, buf.data(), 1),
               Error);  // 6 query heads over 4 KV heads
  EXPECT_THROW(cpu::attention_f32(buf.data(), 2, 7, 4, 4, 16, buf.data(), buf.data(), 8, 0, 1.0f, buf.data(), 1),
               Error);  // positions 7, 8 in a cache of 8
}

}  // namespace
}  // namespace odmoe
