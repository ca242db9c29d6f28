// Every op of a decoder step on every device this build has, against plain scalar loops
// written here; and the allocator's accounting. A device plugs in by adding a factory to
// devices() below (the CUDA device: where a GPU is present).
//
// Comparison: bit-identical where the device must add in the reference's order (element-wise
// ops, norms, RoPE, copies); `atol + rtol * |ref|` where the order of additions is the
// kernel's own (matmul, attention), with the reason beside each tolerance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "odmoe/backend/cpu_device.h"
#include "odmoe/backend/kv_cache.h"
#include "odmoe/backend/open_device.h"
#include "odmoe/core/error.h"
#include "odmoe/core/tensor_codec.h"

namespace odmoe {
namespace {

struct DeviceCase {
  std::string name;
  std::function<std::unique_ptr<Device>()> make;
};

std::vector<DeviceCase> devices() {
  std::vector<DeviceCase> d;
  d.push_back({"cpu", [] { return std::make_unique<CpuDevice>(detect_cpu_isa(), 2); }});
  d.push_back({"cpu_scalar_1thread", [] { return std::make_unique<CpuDevice>(CpuIsa::kScalar, 1); }});
  return d;
}

std::vector<float> randn(size_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

class DeviceOps : public ::testing::TestWithParam<DeviceCase> {
 protected:
  void SetUp() override { dev = GetParam().make(); }

  // An f32 [rows, cols] tensor of a compute buffer of its own holding `v`.
  Tensor upload(const std::vector<float>& v, size_t rows, size_t cols) {
    bufs.push_back(dev->allocate(BufferUsage::kCompute, std::max<size_t>(1, v.size()) * 4, "test tensor"));
    Tensor t = Tensor::f32(bufs.back().get(), 0, rows, cols);
    dev->stream().set(t, 0, v.data(), v.size() * 4);
    return t;
  }
  Tensor zeros(size_t rows, size_t cols) { return upload(std::vector<float>(rows * cols, 0.0f), rows, cols); }
  // A stored weight tensor (any dtype) in a weights buffer of its own.
  Tensor upload_weight(const EncodedTensor& e) {
    bufs.push_back(dev->allocate(BufferUsage::kWeights, e.data.size() + e.scales.size() * 4 + 4, "test weight"));
    Tensor t{bufs.back().get(), 0, e.dtype, e.rows, e.cols, nullptr, 0};
    Stream& s = dev->stream();
    s.set(Tensor::f32(t.buffer, 0, 1, bufs.back()->bytes() / 4), 0, e.data.data(), e.data.size());
    if (!e.scales.empty()) {
      t.scale_buffer = t.buffer;
      t.scale_offset = (e.data.size() + 3) / 4 * 4;
      s.set(Tensor::f32(t.buffer, 0, 1, bufs.back()->bytes() / 4), t.scale_offset, e.scales.data(), e.scales.size() * 4);
    }
    return t;
  }
  std::vector<float> download(const Tensor& t, size_t count) {
    std::vector<float> v(count);
    dev->stream().get(t, 0, v.data(), count * 4);
    dev->stream().synchronize();
    return v;
  }

  std::unique_ptr<Device> dev;
  std::vector<std::unique_ptr<Buffer>> bufs;
};

void expect_bits(const std::vector<float>& got, const std::vector<float>& ref, const char* what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  size_t bad = 0;
  for (size_t i = 0; i < ref.size(); ++i)
    if (std::memcmp(&got[i], &ref[i], 4) != 0 && bad++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", reference " << ref[i];
  EXPECT_EQ(bad, 0u) << what << ": values differing from the reference";
}

void expect_close(const std::vector<float>& got, const std::vector<double>& ref, double atol, double rtol,
                  const char* what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  size_t bad = 0;
  double max_err = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double err = std::fabs(got[i] - ref[i]);
    max_err = std::max(max_err, err);
    if ((!std::isfinite(got[i]) || err > atol + rtol * std::fabs(ref[i])) && bad++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", reference " << ref[i];
  }
  EXPECT_EQ(bad, 0u) << what << ": max error " << max_err;
}

TEST_P(DeviceOps, EmbedRowsDecodeEveryDtype) {
  const size_t vocab = 9, dim = 70;  // 70: int4's last group is partial
  const auto table = randn(vocab * dim, 1);
  const int32_t ids[] = {3, 0, 8, 3};
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16, DType::kInt8, DType::kInt4}) {
    SCOPED_TRACE(dtype_name(dt));
    if (!dev->supports(DeviceOp::kEmbedRows, dt)) continue;
    EncodedTensor e;
    encode_tensor(table.data(), vocab, dim, dt, &e);
    std::vector<float> decoded(vocab * dim), ref;
    decode_tensor(e, decoded.data());  // the dtype's definition (core/tensor_codec)
    for (int32_t id : ids) ref.insert(ref.end(), &decoded[id * dim], &decoded[id * dim] + dim);
    const Tensor out = zeros(4, dim);
    dev->stream().embed_rows(upload_weight(e), ids, 4, out);
    expect_bits(download(out, 4 * dim), ref, "embed_rows");
  }
}

TEST_P(DeviceOps, MatmulOneTokenAndMany) {
  const size_t rows = 37, cols = 96;
  const auto w = randn(rows * cols, 2);
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    EncodedTensor e;
    encode_tensor(w.data(), rows, cols, dt, &e);
    std::vector<float> wd(rows * cols);
    decode_tensor(e, wd.data());
    const Tensor wt = upload_weight(e);
    for (size_t n : {1u, 2u, 7u}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " n=" + std::to_string(n));
      const auto x = randn(n * cols, 3);
      std::vector<double> ref(n * rows, 0.0);
      for (size_t t = 0; t < n; ++t)
        for (size_t r = 0; r < rows; ++r)
          for (size_t c = 0; c < cols; ++c) ref[t * rows + r] += static_cast<double>(wd[r * cols + c]) * x[t * cols + c];
      const Tensor y = zeros(n, rows);
      dev->stream().matmul(wt, upload(x, n, cols), n, y);
      // The kernels sum 96 f32 products in their own order (vector lanes): f32 rounding of a
      // sum of ~|10| over 96 terms, well under 1e-4 absolute.
      expect_close(download(y, n * rows), ref, 1e-4, 1e-5, "matmul");
    }
  }
}

TEST_P(DeviceOps, RmsNormPerRowPerHeadAndFull) {
  const size_t n = 3, dim = 64, hd = 16;
  const auto x = randn(n * dim, 4, 3.0f), wfull = randn(dim, 5), whead = randn(hd, 6);
  const float eps = 1e-6f;
  auto ref_norm = [&](size_t rows, size_t d, const std::vector<float>& w) {
    std::vector<float> y(rows * d);
    for (size_t r = 0; r < rows; ++r) {
      double ss = 0;  // the reference's sum of squares in double, in order
      for (size_t i = 0; i < d; ++i) ss += static_cast<double>(x[r * d + i]) * x[r * d + i];
      const float inv = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(d)) + eps);
      for (size_t i = 0; i < d; ++i) y[r * d + i] = x[r * d + i] * inv * w[i];
    }
    return y;
  };
  const Tensor xt = upload(x, n, dim);
  const Tensor y = zeros(n, dim);
  dev->stream().rms_norm(xt, upload(wfull, 1, dim), n, dim, eps, y);
  expect_bits(download(y, n * dim), ref_norm(n, dim, wfull), "rms_norm full");
  dev->stream().rms_norm(xt, upload(whead, 1, hd), n * dim / hd, hd, eps, xt);  // in place, per head
  expect_bits(download(xt, n * dim), ref_norm(n * dim / hd, hd, whead), "rms_norm per head");
}

TEST_P(DeviceOps, RopeRotatesHalvesAtEachPosition) {
  const size_t n = 4, nh = 3, hd = 8;
  const int pos0 = 5;
  const auto x = randn(n * nh * hd, 7);
  std::vector<float> inv(hd / 2);
  for (size_t i = 0; i < hd / 2; ++i)
    inv[i] = 1.0f / static_cast<float>(std::pow(10000.0f, static_cast<float>(2 * i) / static_cast<float>(hd)));
  std::vector<float> ref = x;
  for (size_t t = 0; t < n; ++t)
    for (size_t h = 0; h < nh; ++h)
      for (size_t i = 0; i < hd / 2; ++i) {
        const float angle = static_cast<float>(pos0 + static_cast<int>(t)) * inv[i];
        const float c = std::cos(angle), s = std::sin(angle);
        float* v = &ref[(t * nh + h) * hd];
        const float a = v[i], b = v[i + hd / 2];
        v[i] = a * c - b * s;
        v[i + hd / 2] = b * c + a * s;
      }
  const Tensor xt = upload(x, n, nh * hd);
  dev->stream().rope(xt, n, nh, hd, pos0, upload(inv, 1, hd / 2));
  expect_bits(download(xt, x.size()), ref, "rope");
}

TEST_P(DeviceOps, ElementwiseOps) {
  const size_t n = 3, d = 40;
  const auto y0 = randn(n * d, 8), x = randn(n * d, 9), b = randn(d, 10), g = randn(n, 11, 2.0f);
  Stream& s = dev->stream();
  {
    std::vector<float> ref = y0;
    for (size_t t = 0; t < n; ++t)
      for (size_t i = 0; i < d; ++i) ref[t * d + i] += b[i];
    const Tensor y = upload(y0, n, d);
    s.add_bias(y, upload(b, 1, d), n, d);
    expect_bits(download(y, n * d), ref, "add_bias");
  }
  {
    std::vector<float> ref = y0;
    for (size_t i = 0; i < n * d; ++i) ref[i] += x[i];
    const Tensor y = upload(y0, n, d);
    s.add(y, upload(x, n, d), n * d);
    expect_bits(download(y, n * d), ref, "add");
  }
  {
    std::vector<float> ref = y0;
    for (float& v : ref) v = std::min(0.5f, std::max(-0.5f, v));
    const Tensor y = upload(y0, n, d);
    s.clamp(y, n * d, 0.5f);
    expect_bits(download(y, n * d), ref, "clamp");
  }
  {
    std::vector<float> ref = y0;
    for (size_t t = 0; t < n; ++t) {
      const float gate = 1.0f / (1.0f + std::exp(-g[t]));
      for (size_t i = 0; i < d; ++i) ref[t * d + i] += gate * x[t * d + i];
    }
    const Tensor y = upload(y0, n, d);
    s.sigmoid_gate_add(y, upload(x, n, d), upload(g, 1, n), n, d);
    expect_bits(download(y, n * d), ref, "sigmoid_gate_add");
  }
  {
    std::vector<float> ref(n * d);
    for (size_t i = 0; i < n * d; ++i) ref[i] = y0[i] / (1.0f + std::exp(-y0[i])) * x[i];
    const Tensor gt = upload(y0, n, d);
    s.swiglu(gt, upload(x, n, d), n * d, gt);  // out aliases gate
    expect_bits(download(gt, n * d), ref, "swiglu");
  }
}

// Attention over the KV cache: prefill then decode, GQA, with and without a window.
TEST_P(DeviceOps, KvStoreLayoutAndAttention) {
  const int nh = 4, nkv = 2, hd = 8, n_ctx = 12, n_layer = 2;
  const size_t kv_dim = static_cast<size_t>(nkv) * hd, q_dim = static_cast<size_t>(nh) * hd;
  for (int window : {0, 3}) {
    SCOPED_TRACE("window " + std::to_string(window));
    KvCache cache(*dev, n_layer, nkv, hd, n_ctx);
    const int layer = 1;
    const auto k_all = randn(n_ctx * kv_dim, 12), v_all = randn(n_ctx * kv_dim, 13), q_all = randn(n_ctx * q_dim, 14);
    AttentionParams p;
    p.n_head = nh, p.n_head_kv = nkv, p.head_dim = hd, p.window = window, p.scale = 1.0f / std::sqrt(8.0f);
    int pos = 0;
    for (size_t n : {5u, 1u, 1u, 3u}) {  // a prompt, two decode steps, a chunk
      std::vector<float> k(k_all.begin() + pos * kv_dim, k_all.begin() + (pos + n) * kv_dim);
      std::vector<float> v(v_all.begin() + pos * kv_dim, v_all.begin() + (pos + n) * kv_dim);
      std::vector<float> q(q_all.begin() + pos * q_dim, q_all.begin() + (pos + n) * q_dim);
      dev->stream().kv_store(cache, layer, pos, n, upload(k, n, kv_dim), upload(v, n, kv_dim));
      const Tensor out = zeros(n, q_dim);
      dev->stream().attention(upload(q, n, q_dim), cache, layer, pos, n, p, out);
      std::vector<double> ref(n * q_dim, 0.0);
      for (size_t t = 0; t < n; ++t)
        for (int h = 0; h < nh; ++h) {
          const int at = pos + static_cast<int>(t), start = window > 0 ? std::max(0, at - window + 1) : 0;
          const size_t kvh = static_cast<size_t>(h / (nh / nkv));
          std::vector<double> sc;
          double mx = -INFINITY, sum = 0;
          for (int j = start; j <= at; ++j) {
            double s = 0;
            for (int i = 0; i < hd; ++i) s += static_cast<double>(q[t * q_dim + h * hd + i]) * k_all[j * kv_dim + kvh * hd + i];
            sc.push_back(s * p.scale);
            mx = std::max(mx, sc.back());
          }
          for (double& s : sc) sum += (s = std::exp(s - mx));
          for (int j = start; j <= at; ++j)
            for (int i = 0; i < hd; ++i)
              ref[t * q_dim + h * hd + i] += sc[j - start] / sum * v_all[j * kv_dim + kvh * hd + i];
        }
      // f32 scores, exp and sums of at most 12 terms of |v| ~ 1 against double: 1e-5.
      expect_close(download(out, n * q_dim), ref, 1e-5, 1e-5, "attention");
      pos += static_cast<int>(n);
    }
    // The layout: K of layer 1, head h, position j at row h * n_ctx + j.
    const auto kc = download(cache.k(layer), static_cast<size_t>(nkv) * n_ctx * hd);
    std::vector<float> ref_k(kc.size(), 0.0f);
    for (int h = 0; h < nkv; ++h)
      for (int j = 0; j < pos; ++j)
        for (int i = 0; i < hd; ++i) ref_k[(h * n_ctx + j) * hd + i] = k_all[j * kv_dim + h * hd + i];
    expect_bits(kc, ref_k, "KV cache layout");
    // Rows back in token-major order, and written again elsewhere.
    std::vector<float> kr(3 * kv_dim), vr(3 * kv_dim);
    cache.read_rows(dev->stream(), layer, 2, 3, kr.data(), vr.data());
    expect_bits(kr, std::vector<float>(k_all.begin() + 2 * kv_dim, k_all.begin() + 5 * kv_dim), "read_rows k");
    expect_bits(vr, std::vector<float>(v_all.begin() + 2 * kv_dim, v_all.begin() + 5 * kv_dim), "read_rows v");
    cache.write_rows(dev->stream(), 0, 7, 3, kr.data(), vr.data());
    std::vector<float> kr2(3 * kv_dim), vr2(3 * kv_dim);
    cache.read_rows(dev->stream(), 0, 7, 3, kr2.data(), vr2.data());
    expect_bits(kr2, kr, "write_rows then read_rows k");
    expect_bits(vr2, vr, "write_rows then read_rows v");
  }
}

TEST_P(DeviceOps, CopiesAndEvents) {
  const auto a = randn(32, 15);
  const Tensor src = upload(a, 4, 8), dst = zeros(4, 8);
  std::unique_ptr<Stream> copy_stream = dev->new_stream();
  copy_stream->copy(src, 8 * 4, dst, 0, 16 * 4);  // rows 1..2 to rows 0..1
  std::shared_ptr<Event> done = copy_stream->record();
  dev->stream().wait(*done);
  done->synchronize();
  EXPECT_TRUE(done->complete());
  const auto got = download(dst, 32);
  expect_bits(std::vector<float>(got.begin(), got.begin() + 16), std::vector<float>(a.begin() + 8, a.begin() + 24), "copy");
  EXPECT_THROW(dev->stream().get(src, 30 * 4, std::vector<float>(8).data(), 8 * 4), Error);  // past the tensor
}

TEST_P(DeviceOps, SupportsWhatTheDecoderUses) {
  for (DeviceOp op : {DeviceOp::kRmsNorm, DeviceOp::kRope, DeviceOp::kAddBias, DeviceOp::kAdd, DeviceOp::kClamp,
                      DeviceOp::kSigmoidGateAdd, DeviceOp::kSwiglu, DeviceOp::kKvStore, DeviceOp::kAttention})
    EXPECT_TRUE(dev->supports(op, DType::kF32)) << op_name(op);
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16, DType::kInt8, DType::kInt4}) {
    EXPECT_TRUE(dev->supports(DeviceOp::kMatmul, dt)) << dtype_name(dt);
    EXPECT_TRUE(dev->supports(DeviceOp::kEmbedRows, dt)) << dtype_name(dt);
  }
}

INSTANTIATE_TEST_SUITE_P(AllDevices, DeviceOps, ::testing::ValuesIn(devices()),
                         [](const ::testing::TestParamInfo<DeviceCase>& i) { return i.param.name; });

// ---- the allocator's accounting ----

TEST(DeviceMemory, PeakIsTheSumOfLiveBuffersAtThePeak) {
  CpuDevice dev(detect_cpu_isa(), 1);
  MemoryAccount& m = dev.memory();
  auto a = dev.allocate(BufferUsage::kWeights, 1000, "a");
  auto b = dev.allocate(BufferUsage::kKvCache, 3000, "b");
  EXPECT_EQ(m.live_bytes(), 4000u);
  EXPECT_EQ(m.live_bytes(BufferUsage::kKvCache), 3000u);
  a.reset();
  auto c = dev.allocate(BufferUsage::kCompute, 500, "c");
  EXPECT_EQ(m.live_bytes(), 3500u);
  EXPECT_EQ(m.peak_bytes(), 4000u);  // a + b, before a went
  auto d = dev.allocate(BufferUsage::kHostStaging, 1500, "d");
  EXPECT_EQ(m.peak_bytes(), 5000u);  // b + c + d
  std::vector<float> host(64);
  auto w = dev.wrap_host(BufferUsage::kWeights, host.data(), host.size() * 4, "wrapped");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->host(), host.data());  // zero-copy
  EXPECT_EQ(m.live_bytes(), 5000u);   // a wrapped host range is not device memory
  EXPECT_EQ(m.wrapped_bytes(), 256u);
  w.reset();
  EXPECT_EQ(m.wrapped_bytes(), 0u);
  b.reset(), c.reset(), d.reset();
  EXPECT_EQ(m.live_bytes(), 0u);
  EXPECT_EQ(m.peak_bytes(), 5000u);
}

TEST(DeviceMemory, PastTheLimitFailsNamingTheDeviceAndTheSizes) {
  CpuDevice dev(detect_cpu_isa(), 1, 10000);
  auto a = dev.allocate(BufferUsage::kKvCache, 6000, "the KV cache");
  try {
    auto b = dev.allocate(BufferUsage::kCompute, 5000, "activations");
    FAIL() << "allocated past the limit";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "device-memory");
    const std::string msg = e.message();
    for (const char* part : {"cpu device", "activations", "5000", "6000", "10000", "1000 bytes over"})
      EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' missing from: " << msg;
  }
  EXPECT_EQ(dev.memory().live_bytes(), 6000u);  // the failed allocation counts nothing
  EXPECT_EQ(dev.memory().peak_bytes(), 6000u);
  auto c = dev.allocate(BufferUsage::kCompute, 4000, "fits exactly");
  EXPECT_EQ(dev.memory().live_bytes(), 10000u);
  // A KV cache too big for the limit fails at construction, naming itself.
  CpuDevice small(detect_cpu_isa(), 1, 1 << 10);
  EXPECT_THROW(KvCache(small, 2, 2, 8, 64), Error);
}

}  // namespace
}  // namespace odmoe

namespace odmoe {
namespace {
// --device values: what parses, what is refused with the accepted forms named, and what a
// build or machine without a GPU says when asked for one.
TEST(OpenDevice, SpecsAndErrors) {
  EXPECT_EQ(parse_device_spec("cpu").to_string(), "cpu");
  EXPECT_EQ(parse_device_spec("cuda").to_string(), "cuda");
  EXPECT_EQ(parse_device_spec("cuda:3").ordinal, 3);
  for (const char* bad : {"", "gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", "cuda:123456"}) {
    try {
      parse_device_spec(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const ArgumentError& e) {
      EXPECT_NE(std::string(e.what()).find("cpu, cuda"), std::string::npos) << e.what();
    }
  }
  DeviceOptions o;
  o.limit_bytes = 1 << 20;
  const std::unique_ptr<Device> cpu = open_device(parse_device_spec("cpu"), o);
  EXPECT_STREQ(cpu->name(), "cpu");
  EXPECT_EQ(cpu->memory().limit_bytes(), size_t{1} << 20);
  if (cuda_device_count() == 0) {
    try {
      open_device(parse_device_spec("cuda"), o);
      ADD_FAILURE() << "a CUDA device opened where none is visible";
    } catch (const Error& e) {
      EXPECT_EQ(e.subsystem(), Subsystem::kCuda);
      EXPECT_NE(e.message().find("--device cuda"), std::string::npos) << e.message();
    }
  }
}
}  // namespace
}  // namespace odmoe
