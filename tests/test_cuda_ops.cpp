// The CUDA op layer (src/backend/cuda/cuda_ops.h) against host references: straightforward
// loops in double written here, and the library's CPU results where it has the op
// (tensor_codec's decode, CpuBackend::matmul / rms_norm / swiglu). Every comparison is
// |gpu - ref| <= atol + rtol * |ref| with the reason for the tolerance beside it; NaN or Inf in
// a GPU result fails. Without a GPU the kernel tests skip and say why; the argument checks and
// the error macro, which need no GPU, run everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cuda_ops.h"
#include "odmoe/backend/cpu_backend.h"
#include "odmoe/backend/cuda_check.h"
#include "odmoe/backend/cuda_dequant.h"
#include "odmoe/core/error.h"
#include "odmoe/core/tensor_codec.h"

namespace odmoe {
namespace {

constexpr double kEps32 = 1.0 / (1 << 24);  // unit roundoff of f32
constexpr double kEpsBf16 = 1.0 / (1 << 8);  // of bf16 (8 significant bits)
constexpr double kEpsF16 = 1.0 / (1 << 11);  // of f16 (11 significant bits)
const DType kAllDtypes[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kInt8, DType::kInt4};

// Device memory of T, owned.
template <typename T>
class DevBuf {
 public:
  explicit DevBuf(size_t n) : n_(n) { ODMOE_CUDA_CHECK(cudaMalloc(&p_, std::max<size_t>(1, n) * sizeof(T))); }
  explicit DevBuf(const std::vector<T>& v) : DevBuf(v.size()) { upload(v); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  ~DevBuf() { cudaFree(p_); }
  T* get() const { return static_cast<T*>(p_); }
  void upload(const std::vector<T>& v) {
    ODMOE_CUDA_CHECK(cudaMemcpy(p_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> v(n_);
    ODMOE_CUDA_CHECK(cudaDeviceSynchronize());
    ODMOE_CUDA_CHECK(cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }

 private:
  void* p_ = nullptr;
  size_t n_;
};

// A stored matrix on the device, with its host encoding and its exact f32 values.
struct DevMatrix {
  EncodedTensor enc;
  std::vector<float> values;  // decode_tensor(enc): what every kernel must multiply with
  DevBuf<uint8_t> data;
  DevBuf<float> scales;
  DevMatrix(const std::vector<float>& src, size_t rows, size_t cols, DType dtype)
      : enc(encoded(src, rows, cols, dtype)), values(rows * cols), data(enc.data), scales(enc.scales) {
    decode_tensor(enc, values.data());
  }
  cuda::DeviceMatrix view() const { return {enc.dtype, enc.rows, enc.cols, data.get(), scales.get()}; }
  static EncodedTensor encoded(const std::vector<float>& src, size_t rows, size_t cols, DType dtype) {
    EncodedTensor e;
    encode_tensor(src.data(), rows, cols, dtype, &e);
    return e;
  }
};

std::vector<float> randn(size_t n, float sd, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// |got - ref| <= atol[i] + rtol * |ref| everywhere, no NaN/Inf in got; otherwise the max error
// and the first mismatches. atol has one entry per value or a single entry for all.
testing::AssertionResult close(const std::string& what, const std::vector<float>& got, const std::vector<double>& ref,
                               const std::vector<double>& atol, double rtol) {
  if (got.size() != ref.size()) return testing::AssertionFailure() << what << ": size " << got.size() << " vs " << ref.size();
  size_t bad = 0;
  double max_err = 0;
  std::ostringstream first;
  for (size_t i = 0; i < got.size(); ++i) {
    const double a = atol.size() == 1 ? atol[0] : atol[i];
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    const bool ok = std::isfinite(got[i]) && err <= a + rtol * std::fabs(ref[i]);
    if (std::isfinite(err)) max_err = std::max(max_err, err);
    if (!ok && bad++ < 5) first << "\n  [" << i << "] gpu " << got[i] << " ref " << ref[i] << " tol " << a + rtol * std::fabs(ref[i]);
  }
  if (bad == 0) return testing::AssertionSuccess();
  return testing::AssertionFailure() << what << ": " << bad << " of " << got.size() << " values off (max |err| "
                                     << max_err << "), first:" << first.str();
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

class CudaOps : public testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda::device_available(&why)) GTEST_SKIP() << "skipping: " << why;
    ODMOE_CUDA_CHECK(cudaStreamCreate(&stream_));
  }
  void TearDown() override {
    if (stream_) cudaStreamDestroy(stream_);
  }
  cudaStream_t stream_ = nullptr;
};

// Products of a decoded matrix with x in double: ref [n, rows] and sum |w x| (the scale of
// every rounding bound below).
void reference_matmul(const std::vector<float>& w, size_t rows, size_t cols, const std::vector<float>& x, size_t n,
                      std::vector<double>* ref, std::vector<double>* abs_sum) {
  ref->assign(n * rows, 0.0);
  abs_sum->assign(n * rows, 0.0);
  for (size_t t = 0; t < n; ++t)
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; ++c) {
        const double p = static_cast<double>(w[r * cols + c]) * x[t * cols + c];
        (*ref)[t * rows + r] += p;
        (*abs_sum)[t * rows + r] += std::fabs(p);
      }
}

std::vector<double> scaled(const std::vector<double>& v, double k) {
  std::vector<double> o(v);
  for (auto& x : o) x *= k;
  return o;
}

// The CPU's decode of int8/int4 weights (fewer than 4 tokens) quantises x to int8 per block of
// 32 (scale amax / 127): |x - x_q| <= amax / 254 per value, so its result may differ from the
// exact product by sum |w| amax_block / 254.
std::vector<double> q8_bound(const std::vector<float>& w, size_t rows, size_t cols, const std::vector<float>& x, size_t n) {
  std::vector<double> b(n * rows, 0.0);
  for (size_t t = 0; t < n; ++t)
    for (size_t c0 = 0; c0 < cols; c0 += 32) {
      double amax = 0;
      for (size_t c = c0; c < std::min(cols, c0 + 32); ++c) amax = std::max(amax, std::fabs(static_cast<double>(x[t * cols + c])));
      for (size_t r = 0; r < rows; ++r)
        for (size_t c = c0; c < std::min(cols, c0 + 32); ++c) b[t * rows + r] += std::fabs(w[r * cols + c]) * amax / 254.0;
    }
  return b;
}

TEST_F(CudaOps, GemvMatchesReferenceAndCpuForEveryDtype) {
  CpuBackend cpu;
  struct Shape { size_t rows, cols; };
  // 75 columns: not a multiple of any chunk (per-element path), the int4 tail group partial.
  for (const Shape s : {Shape{37, 75}, Shape{64, 256}, Shape{130, 1024}})
    for (DType dt : kAllDtypes) {
      DevMatrix m(randn(s.rows * s.cols, 0.1f, 11), s.rows, s.cols, dt);
      for (size_t n : {1, 2, 3, 5, 8}) {
        const auto x = randn(n * s.cols, 1.0f, 12);
        DevBuf<float> dx(x), dy(n * s.rows);
        cuda::gemv(m.view(), dx.get(), n, dy.get(), stream_);
        const auto y = dy.download();
        std::vector<double> ref, abs_sum;
        reference_matmul(m.values, s.rows, s.cols, x, n, &ref, &abs_sum);
        // f32 sums: a lane adds <= cols/32 chunk sums of <= 32 products, then 5 shuffle levels and
        // 2 scale products: each rounding costs <= eps32 * sum|w x|; 64 + cols/16 of them bounds it.
        const double k32 = (64.0 + static_cast<double>(s.cols) / 16.0) * kEps32;
        const std::string what = std::string("gemv ") + dtype_name(dt) + " " + std::to_string(s.rows) + "x" +
                                 std::to_string(s.cols) + " n=" + std::to_string(n);
        EXPECT_TRUE(close(what + " vs double", y, ref, scaled(abs_sum, k32), 0.0));
        // The CPU library: f32 arithmetic of its own order (the same bound again), plus, for
        // int8/int4 with n < 4, its int8 activations.
        std::vector<float> yc(n * s.rows);
        cpu.matmul(WeightView::of(m.enc), x.data(), n, yc.data());
        auto tol = scaled(abs_sum, 2 * k32);
        if (cpu_quantizes_activations(dt) && n < 4) {
          const auto qb = q8_bound(m.values, s.rows, s.cols, x, n);
          for (size_t i = 0; i < tol.size(); ++i) tol[i] += qb[i];
        }
        EXPECT_TRUE(close(what + " vs CpuBackend", y, to_double(yc), tol, 0.0));
      }
    }
}

TEST_F(CudaOps, GemmMatchesReferenceAndCpuForEveryDtype) {
  CpuBackend cpu;
  struct Shape { size_t rows, cols; };
  for (const Shape s : {Shape{50, 75}, Shape{96, 256}})
    for (DType dt : kAllDtypes) {
      DevMatrix m(randn(s.rows * s.cols, 0.1f, 21), s.rows, s.cols, dt);
      // A tile of 16 rows: int8/int4 take several tiles, the last one partial (50, 96 rows).
      cuda::GemmContext ctx(16 * s.cols * 2);
      for (size_t n : {9, 33}) {
        const auto x = randn(n * s.cols, 1.0f, 22);
        DevBuf<float> dx(x), dy(n * s.rows);
        cuda::matmul(ctx, m.view(), dx.get(), n, dy.get(), stream_);  // n > 8: the cuBLAS path
        const auto y = dy.download();
        std::vector<double> ref, abs_sum;
        reference_matmul(m.values, s.rows, s.cols, x, n, &ref, &abs_sum);
        // Rounding x (and, for int8/int4, the dequantised weights) to 16 bits costs <= u (2u) of
        // sum|w x|; cuBLAS's f32 accumulation <= cols * eps32 of it (any summation order).
        double k = 2.0 * static_cast<double>(s.cols) * kEps32;
        if (dt == DType::kBF16) k += kEpsBf16;
        if (dt == DType::kF16) k += kEpsF16;
        if (is_quantized(dt)) k += 2.0 * kEpsBf16 + kEpsBf16 * kEpsBf16;
        const std::string what = std::string("gemm ") + dtype_name(dt) + " " + std::to_string(s.rows) + "x" +
                                 std::to_string(s.cols) + " n=" + std::to_string(n);
        EXPECT_TRUE(close(what + " vs double", y, ref, scaled(abs_sum, k), 0.0));
        std::vector<float> yc(n * s.rows);  // n >= 4: the CPU decodes to f32 and stays in f32
        cpu.matmul(WeightView::of(m.enc), x.data(), n, yc.data());
        EXPECT_TRUE(close(what + " vs CpuBackend", y, to_double(yc), scaled(abs_sum, k + 2.0 * s.cols * kEps32), 0.0));
      }
    }
}

TEST_F(CudaOps, DequantizeRowsToBf16IsRoundedDecode) {
  const size_t rows = 20, cols = 75;
  for (DType dt : {DType::kInt8, DType::kInt4}) {
    DevMatrix m(randn(rows * cols, 0.1f, 31), rows, cols, dt);
    DevBuf<uint16_t> out(7 * cols);
    cuda::dequantize_rows_bf16(m.view(), 5, 7, out.get(), stream_);
    const auto got = out.download();
    for (size_t i = 0; i < got.size(); ++i)  // round to nearest even of the exact f32 decode
      ASSERT_EQ(got[i], f32_to_bf16(m.values[5 * cols + i])) << dtype_name(dt) << " value " << i;
  }
}

TEST_F(CudaOps, RmsNormMatchesCpu) {
  CpuBackend cpu;
  for (size_t dim : {64, 75, 128, 512, 513, 2048, 5000})
    for (size_t n_rows : {1, 3, 17}) {
      const auto x = randn(n_rows * dim, 2.0f, 41), w = randn(dim, 1.0f, 42);
      std::vector<float> yc(x.size());
      cpu.rms_norm(x.data(), w.data(), n_rows, dim, 1e-6f, yc.data());
      DevBuf<float> dx(x), dw(w), dy(x.size());
      cuda::rms_norm(dx.get(), dw.get(), n_rows, dim, 1e-6f, dy.get(), stream_);
      cuda::rms_norm(dx.get(), dw.get(), n_rows, dim, 1e-6f, dx.get(), stream_);  // in place
      // f32 sum of squares (the CPU's is double): <= (dim/32 + 10) eps32 relative, halved by the
      // square root, plus 3 roundings of the products: 1e-5 covers dim <= 5000 with margin.
      const std::string what = "rms_norm dim=" + std::to_string(dim) + " rows=" + std::to_string(n_rows);
      EXPECT_TRUE(close(what, dy.download(), to_double(yc), {1e-30}, 1e-5));
      EXPECT_TRUE(close(what + " in place", dx.download(), to_double(yc), {1e-30}, 1e-5));
    }
}

TEST_F(CudaOps, RopeMatchesHostRotateHalf) {
  const size_t n = 3;
  const int n_heads = 4, head_dim = 128;
  for (double theta : {10000.0, 1e6})
    for (int pos0 : {0, 3000})
      for (float factor : {1.0f, 0.5f}) {
        std::vector<float> inv_freq;
        for (int i = 0; i < head_dim / 2; ++i)  // as the model builds it
          inv_freq.push_back(1.0f / static_cast<float>(std::pow(static_cast<float>(theta),
                                                                static_cast<float>(2 * i) / static_cast<float>(head_dim))));
        const auto x = randn(n * n_heads * head_dim, 1.0f, 51);
        std::vector<double> ref(x.size());
        for (size_t t = 0; t < n; ++t)
          for (int h = 0; h < n_heads; ++h)
            for (int i = 0; i < head_dim / 2; ++i) {
              const float angle = static_cast<float>(pos0 + static_cast<int>(t)) * inv_freq[static_cast<size_t>(i)];
              const double c = std::cos(static_cast<double>(angle)) * factor, s = std::sin(static_cast<double>(angle)) * factor;
              const size_t b = (t * n_heads + static_cast<size_t>(h)) * head_dim + static_cast<size_t>(i);
              const double a0 = x[b], b0 = x[b + head_dim / 2];
              ref[b] = a0 * c - b0 * s;
              ref[b + head_dim / 2] = b0 * c + a0 * s;
            }
        DevBuf<float> dx(x), df(inv_freq);
        cuda::rope(dx.get(), n, n_heads, head_dim, df.get(), pos0, factor, stream_);
        // The angle is the same f32 product on both sides; sincosf is within 2 ulp of the exact
        // cos/sin of it, and the rotation adds 3 roundings: <= ~1e-6 for values of N(0, 1).
        EXPECT_TRUE(close("rope theta=" + std::to_string(theta) + " pos0=" + std::to_string(pos0), dx.download(), ref,
                          {2e-6}, 2e-6));
      }
}

TEST_F(CudaOps, ElementwiseOpsMatchCpu) {
  CpuBackend cpu;
  const size_t rows = 5, dim = 300, count = rows * dim;
  const auto a = randn(count, 3.0f, 61), b = randn(count, 1.0f, 62), bias = randn(dim, 1.0f, 63),
             g = randn(rows, 2.0f, 64);
  DevBuf<float> da(a), db(b), dbias(bias), dg(g), dout(count);
  // Bias, residual add and clamp are one f32 operation per value: bit-identical.
  std::vector<double> ref(count);
  da.upload(a);
  cuda::add_bias(da.get(), dbias.get(), rows, dim, stream_);
  for (size_t i = 0; i < count; ++i) ref[i] = a[i] + bias[i % dim];
  EXPECT_TRUE(close("add_bias", da.download(), ref, {0.0}, 0.0));
  da.upload(a);
  cuda::add(da.get(), db.get(), count, stream_);
  for (size_t i = 0; i < count; ++i) ref[i] = a[i] + b[i];
  EXPECT_TRUE(close("add", da.download(), ref, {0.0}, 0.0));
  auto with_nan = a;
  with_nan[7] = NAN;
  da.upload(with_nan);
  cuda::clamp(da.get(), count, 2.5f, stream_);
  const auto clamped = da.download();
  EXPECT_TRUE(std::isnan(clamped[7])) << "clamp must keep NaN, as std::clamp does";
  for (size_t i = 0; i < count; ++i) {
    if (i == 7) continue;
    ASSERT_EQ(clamped[i], std::clamp(a[i], -2.5f, 2.5f)) << "clamp value " << i;
  }
  // SwiGLU: expf vs std::exp (each within 2 ulp) and 3 roundings on each side: <= ~10 ulp apart.
  std::vector<float> sc(count);
  cpu.swiglu(a.data(), b.data(), count, sc.data());
  DevBuf<float> dgate(a);
  cuda::swiglu(dgate.get(), db.get(), count, dout.get(), stream_);
  EXPECT_TRUE(close("swiglu", dout.download(), to_double(sc), {1e-30}, 2e-6));
  // The shared-expert gate: out += sigmoid(g) * shared, with and without the gate.
  for (bool gated : {true, false}) {
    DevBuf<float> dout2(a);
    cuda::add_gated(dout2.get(), gated ? dg.get() : nullptr, db.get(), rows, dim, stream_);
    for (size_t i = 0; i < count; ++i) {
      const double s = gated ? 1.0 / (1.0 + std::exp(-static_cast<double>(g[i / dim]))) : 1.0;
      ref[i] = a[i] + s * b[i];
    }
    // expf (<= 2 ulp), one division, the product and the sum (possibly fused): 4 eps32 of the terms.
    std::vector<double> tol(count);
    for (size_t i = 0; i < count; ++i) tol[i] = 8 * kEps32 * (std::fabs(a[i]) + std::fabs(b[i]));
    EXPECT_TRUE(close(gated ? "add_gated" : "add_gated (no gate)", dout2.download(), ref, tol, 0.0));
  }
}

TEST_F(CudaOps, EmbedRowsIsDecodeRows) {
  const size_t vocab = 40, cols = 75;
  const std::vector<int32_t> tokens = {3, 0, 39, 3, 17, 40};  // 40: out of range, NaN row
  DevBuf<int32_t> dt(tokens);
  for (DType d : kAllDtypes) {
    DevMatrix m(randn(vocab * cols, 0.5f, 71), vocab, cols, d);
    DevBuf<float> out(tokens.size() * cols);
    cuda::embed_rows(m.view(), dt.get(), tokens.size(), out.get(), stream_);
    const auto got = out.download();
    for (size_t t = 0; t + 1 < tokens.size(); ++t) {
      std::vector<float> row(cols);
      const auto r = static_cast<size_t>(tokens[t]);
      decode_rows(d, cols, m.enc.data.data(), m.enc.scales.data(), r, r + 1, row.data());
      ASSERT_EQ(0, std::memcmp(row.data(), &got[t * cols], cols * 4)) << dtype_name(d) << " token " << t;
    }
    for (size_t c = 0; c < cols; ++c) ASSERT_TRUE(std::isnan(got[(tokens.size() - 1) * cols + c]));
  }
}

TEST_F(CudaOps, KvAppendWritesHeadMajorRows) {
  const int n_kv = 3, hd = 40;
  const size_t n_ctx = 10;
  std::vector<float> kc(static_cast<size_t>(n_kv) * n_ctx * hd, -1.0f);
  DevBuf<float> dk(kc), dv(kc);
  std::vector<float> k_host = kc, v_host = kc;
  int pos = 0;
  for (size_t n : {4, 1, 3}) {
    const auto kn = randn(n * n_kv * hd, 1.0f, 81 + static_cast<uint32_t>(pos)),
               vn = randn(n * n_kv * hd, 1.0f, 91 + static_cast<uint32_t>(pos));
    DevBuf<float> dkn(kn), dvn(vn);
    cuda::kv_append(dkn.get(), dvn.get(), n, pos, n_kv, hd, dk.get(), dv.get(), n_ctx, stream_);
    for (size_t t = 0; t < n; ++t)
      for (int h = 0; h < n_kv; ++h)
        for (int d = 0; d < hd; ++d) {
          const size_t src = (t * n_kv + static_cast<size_t>(h)) * hd + static_cast<size_t>(d);
          const size_t dst = (static_cast<size_t>(h) * n_ctx + static_cast<size_t>(pos) + t) * hd + static_cast<size_t>(d);
          k_host[dst] = kn[src];
          v_host[dst] = vn[src];
        }
    pos += static_cast<int>(n);
  }
  EXPECT_EQ(dk.download(), k_host);  // rows 8 and 9 keep the sentinel -1
  EXPECT_EQ(dv.download(), v_host);
}

// Attention in double: q, out [n][n_head][hd], caches [n_kv][n_ctx][hd].
std::vector<double> reference_attention(const std::vector<float>& q, size_t n, int pos0, int n_head, int n_kv, int hd,
                                        const std::vector<float>& k, const std::vector<float>& v, size_t n_ctx,
                                        int window, double scale) {
  std::vector<double> out(n * static_cast<size_t>(n_head) * hd, 0.0);
  const int group = n_head / n_kv;
  for (size_t t = 0; t < n; ++t)
    for (int h = 0; h < n_head; ++h) {
      const int p = pos0 + static_cast<int>(t), start = window > 0 ? std::max(0, p - window + 1) : 0;
      const float* qh = &q[(t * n_head + static_cast<size_t>(h)) * hd];
      const size_t base = static_cast<size_t>(h / group) * n_ctx * hd;
      std::vector<double> s;
      double mx = -INFINITY, sum = 0;
      for (int j = start; j <= p; ++j) {
        double dot = 0;
        for (int d = 0; d < hd; ++d) dot += static_cast<double>(qh[d]) * k[base + static_cast<size_t>(j) * hd + d];
        s.push_back(dot * scale);
        mx = std::max(mx, s.back());
      }
      for (double& e : s) sum += (e = std::exp(e - mx));
      double* o = &out[(t * n_head + static_cast<size_t>(h)) * hd];
      for (int j = start; j <= p; ++j)
        for (int d = 0; d < hd; ++d) o[d] += s[static_cast<size_t>(j - start)] / sum * v[base + static_cast<size_t>(j) * hd + d];
    }
  return out;
}

// A cache whose rows outside [lo, hi] are NaN: a kernel that reads a key it must not see fails.
std::vector<float> cache_with_nan_outside(int n_kv, size_t n_ctx, int hd, int lo, int hi, uint32_t seed) {
  auto c = randn(static_cast<size_t>(n_kv) * n_ctx * hd, 1.0f, seed);
  for (int h = 0; h < n_kv; ++h)
    for (size_t j = 0; j < n_ctx; ++j)
      if (static_cast<int>(j) < lo || static_cast<int>(j) > hi)
        for (int d = 0; d < hd; ++d) c[(static_cast<size_t>(h) * n_ctx + j) * hd + d] = NAN;
  return c;
}

struct AttnShape { int n_head, n_kv, hd; };
const AttnShape kAttnShapes[] = {{8, 2, 128}, {4, 4, 64}, {16, 1, 80}, {6, 2, 256}};

// Softmax and sums in f32 over <= ~1000 keys: each weight carries a few ulps and the weighted
// sum of values of N(0, 1) stays within ~1e-6; 2e-5 leaves a margin and still catches one key
// dropped or counted twice (>= 1e-3 here).
constexpr double kAttnAtol = 2e-5, kAttnRtol = 1e-4;

TEST_F(CudaOps, AttentionDecodeMatchesReference) {
  for (const AttnShape& s : kAttnShapes)
    for (int pos : {0, 1, 31, 32, 200, 1000})
      for (int window : {0, 7, 100})
        for (int chunk : {0, 32}) {
          const size_t n_ctx = 1024;
          const int start = window > 0 ? std::max(0, pos - window + 1) : 0;
          const auto k = cache_with_nan_outside(s.n_kv, n_ctx, s.hd, start, pos, 101),
                     v = cache_with_nan_outside(s.n_kv, n_ctx, s.hd, start, pos, 102);
          const auto q = randn(static_cast<size_t>(s.n_head) * s.hd, 1.0f, 103);
          const float scale = 1.0f / std::sqrt(static_cast<float>(s.hd));
          DevBuf<float> dq(q), dk(k), dv(v), dout(q.size());
          const size_t ws = cuda::attention_workspace_bytes(s.n_head, s.hd, n_ctx);
          DevBuf<uint8_t> dws(ws);
          cuda::attention(dq.get(), 1, pos, s.n_head, s.n_kv, s.hd, dk.get(), dv.get(), n_ctx, window, scale,
                          dout.get(), dws.get(), ws, stream_, chunk);
          const auto ref = reference_attention(q, 1, pos, s.n_head, s.n_kv, s.hd, k, v, n_ctx, window, scale);
          EXPECT_TRUE(close("decode heads " + std::to_string(s.n_head) + "/" + std::to_string(s.n_kv) + " hd " +
                                std::to_string(s.hd) + " pos " + std::to_string(pos) + " window " +
                                std::to_string(window) + " chunk " + std::to_string(chunk),
                            dout.download(), ref, {kAttnAtol}, kAttnRtol));
        }
}

TEST_F(CudaOps, AttentionPrefillMatchesReferenceAndDecode) {
  for (const AttnShape& s : kAttnShapes)
    for (size_t n : {2, 9, 40})
      for (int pos0 : {0, 17})
        for (int window : {0, 5, 33}) {
          const size_t n_ctx = static_cast<size_t>(pos0) + n + 3;
          const int last = pos0 + static_cast<int>(n) - 1;
          const int lo = window > 0 ? std::max(0, pos0 - window + 1) : 0;
          const auto k = cache_with_nan_outside(s.n_kv, n_ctx, s.hd, lo, last, 111),
                     v = cache_with_nan_outside(s.n_kv, n_ctx, s.hd, lo, last, 112);
          const auto q = randn(n * static_cast<size_t>(s.n_head) * s.hd, 1.0f, 113);
          const float scale = 1.0f / std::sqrt(static_cast<float>(s.hd));
          DevBuf<float> dq(q), dk(k), dv(v), dout(q.size());
          cuda::attention(dq.get(), n, pos0, s.n_head, s.n_kv, s.hd, dk.get(), dv.get(), n_ctx, window, scale,
                          dout.get(), nullptr, 0, stream_);
          const auto got = dout.download();
          const auto ref = reference_attention(q, n, pos0, s.n_head, s.n_kv, s.hd, k, v, n_ctx, window, scale);
          const std::string what = "prefill heads " + std::to_string(s.n_head) + "/" + std::to_string(s.n_kv) + " hd " +
                                   std::to_string(s.hd) + " n " + std::to_string(n) + " pos0 " + std::to_string(pos0) +
                                   " window " + std::to_string(window);
          EXPECT_TRUE(close(what, got, ref, {kAttnAtol}, kAttnRtol));
          // The last token through the decode kernels: the same numbers within the same tolerance.
          const size_t per_tok = static_cast<size_t>(s.n_head) * s.hd;
          const size_t ws = cuda::attention_workspace_bytes(s.n_head, s.hd, n_ctx);
          DevBuf<uint8_t> dws(ws);
          DevBuf<float> dout1(per_tok);
          cuda::attention(dq.get() + (n - 1) * per_tok, 1, last, s.n_head, s.n_kv, s.hd, dk.get(), dv.get(), n_ctx,
                          window, scale, dout1.get(), dws.get(), ws, stream_);
          const std::vector<double> tail(ref.end() - static_cast<long>(per_tok), ref.end());
          EXPECT_TRUE(close(what + " last token by decode", dout1.download(), tail, {kAttnAtol}, kAttnRtol));
        }
}

TEST_F(CudaOps, RouterLogitsReachTheHost) {
  CpuBackend cpu;
  const size_t n_expert = 64, dim = 256;
  DevMatrix router(randn(n_expert * dim, 0.1f, 121), n_expert, dim, DType::kF32);
  cuda::GemmContext ctx;
  for (size_t n : {1, 12}) {  // GEMV and cuBLAS
    const auto x = randn(n * dim, 1.0f, 122);
    DevBuf<float> dx(x), dy(n * n_expert);
    std::vector<float> host(n * n_expert, NAN), yc(n * n_expert);
    cuda::router_logits_to_host(ctx, router.view(), dx.get(), n, dy.get(), host.data(), stream_);
    cpu.matmul(WeightView::of(router.enc), x.data(), n, yc.data());
    std::vector<double> ref, abs_sum;
    reference_matmul(router.values, n_expert, dim, x, n, &ref, &abs_sum);
    // Two f32 sums of 256 products in different orders: each within dim * eps32 of sum|w x|.
    EXPECT_TRUE(close("router n=" + std::to_string(n), host, to_double(yc), scaled(abs_sum, 2.0 * dim * kEps32), 0.0));
  }
}

// What needs no GPU: argument checks before any launch, and the one error macro.
TEST(CudaOpsHost, BadArgumentsAreRefusedBeforeAnyLaunch) {
  const cuda::DeviceMatrix w{DType::kBF16, 4, 8, nullptr, nullptr};
  EXPECT_THROW(cuda::gemv(w, nullptr, 0, nullptr, nullptr), Error);
  EXPECT_THROW(cuda::gemv(w, nullptr, cuda::kGemvMaxTokens + 1, nullptr, nullptr), Error);
  const cuda::DeviceMatrix q8{DType::kInt8, 4, 8, nullptr, nullptr};  // no scales
  EXPECT_THROW(cuda::gemv(q8, nullptr, 1, nullptr, nullptr), Error);
  EXPECT_THROW(cuda::attention(nullptr, 1, 0, 6, 4, 64, nullptr, nullptr, 16, 0, 1.0f, nullptr, nullptr, 0, nullptr),
               Error);  // 6 heads over 4 kv heads
  EXPECT_THROW(cuda::attention(nullptr, 1, 0, 8, 2, 320, nullptr, nullptr, 16, 0, 1.0f, nullptr, nullptr, 0, nullptr),
               Error);  // head_dim 320
  EXPECT_THROW(cuda::attention(nullptr, 4, 14, 8, 2, 64, nullptr, nullptr, 16, 0, 1.0f, nullptr, nullptr, 0, nullptr),
               Error);  // positions 14..17 in a context of 16
  EXPECT_THROW(cuda::attention(nullptr, 1, 5, 8, 2, 64, nullptr, nullptr, 16, 0, 1.0f, nullptr, nullptr, 8, nullptr),
               Error);  // workspace too small
  EXPECT_THROW(cuda::kv_append(nullptr, nullptr, 3, 14, 2, 64, nullptr, nullptr, 16, nullptr), Error);
  EXPECT_THROW(cuda::rope(nullptr, 1, 2, 63, nullptr, 0, 1.0f, nullptr), Error);  // odd head_dim
}

TEST(CudaOpsHost, OneCheckMacroForCudaAndCublas) {
  try {
    ODMOE_CUDA_CHECK(cudaErrorInvalidValue);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.subsystem(), Subsystem::kCuda);
    EXPECT_EQ(e.code(), "cudaErrorInvalidValue");
    EXPECT_NE(e.message().find("(CUDA)"), std::string::npos) << e.message();
  }
  try {
    ODMOE_CUDA_CHECK(CUBLAS_STATUS_INVALID_VALUE);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "CUBLAS_STATUS_INVALID_VALUE");
    EXPECT_NE(e.message().find("(cuBLAS)"), std::string::npos) << e.message();
  }
  EXPECT_NO_THROW(ODMOE_CUDA_CHECK(cudaSuccess));
  EXPECT_NO_THROW(ODMOE_CUDA_CHECK(CUBLAS_STATUS_SUCCESS));
#if defined(ODMOE_WITH_NCCL)
  EXPECT_THROW(ODMOE_CUDA_CHECK(ncclInvalidArgument), Error);
  EXPECT_NO_THROW(ODMOE_CUDA_CHECK(ncclSuccess));
#endif
}

}  // namespace
}  // namespace odmoe
