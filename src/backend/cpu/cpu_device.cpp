#include "odmoe/backend/cpu_device.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "cpu_kernels.h"
#include "odmoe/backend/kv_cache.h"
#include "odmoe/core/error.h"
#include "odmoe/core/tensor_codec.h"

namespace odmoe {
namespace {

constexpr size_t kCpuAlign = 64;  // a cache line: the vector kernels' loads never split one

// Host memory the CPU device allocated (counted) or wraps (not counted).
class CpuBuffer final : public Buffer {
 public:
  CpuBuffer(BufferUsage usage, size_t bytes, std::string name, void* data, bool wrapped, MemoryAccount& account)
      : Buffer(usage, bytes, std::move(name), wrapped, data, data), account_(account) {
    if (wrapped) account_.add_wrapped(static_cast<ptrdiff_t>(bytes));
  }
  ~CpuBuffer() override {
    if (wrapped()) {
      account_.add_wrapped(-static_cast<ptrdiff_t>(bytes()));
      return;
    }
    std::free(base());
    account_.release(bytes(), usage());
  }

 private:
  MemoryAccount& account_;
};

// Work on the CPU runs when it is called: every event is complete when recorded.
class CpuEvent final : public Event {
 public:
  bool complete() const override { return true; }
  void synchronize() const override {}
};

float* f32_out(const Tensor& t, const char* op) {
  ODMOE_CHECK(t.dtype == DType::kF32 && t.host_data(), kCore, "bad-tensor",
              op << ": needs a host-visible f32 tensor, got " << dtype_name(t.dtype), "");
  return t.host_f32();
}
const float* f32_in(const Tensor& t, const char* op) { return f32_out(t, op); }

void check_fits(const Tensor& t, size_t count, const char* op) {
  ODMOE_CHECK(count <= t.count(), kCore, "shape",
              op << ": " << count << " values do not fit a tensor of " << t.rows << " x " << t.cols, "");
}

void check_bytes(const Tensor& t, size_t offset, size_t bytes, const char* op) {
  ODMOE_CHECK(t.host_data() && offset + bytes <= t.bytes(), kCore, "range",
              op << ": bytes [" << offset << ", " << offset + bytes << ") of a tensor of " << t.bytes() << " bytes", "");
}

class CpuStream final : public Stream {
 public:
  CpuStream(Backend& kernels, int n_threads) : k_(kernels), n_threads_(n_threads) {}

  void set(const Tensor& dst, size_t dst_offset, const void* src, size_t bytes) override {
    check_bytes(dst, dst_offset, bytes, "set");
    std::memcpy(static_cast<char*>(dst.host_data()) + dst_offset, src, bytes);
  }
  void get(const Tensor& src, size_t src_offset, void* dst, size_t bytes) override {
    check_bytes(src, src_offset, bytes, "get");
    std::memcpy(dst, static_cast<const char*>(src.host_data()) + src_offset, bytes);
  }
  void copy(const Tensor& src, size_t src_offset, const Tensor& dst, size_t dst_offset, size_t bytes) override {
    check_bytes(src, src_offset, bytes, "copy");
    check_bytes(dst, dst_offset, bytes, "copy");
    std::memmove(static_cast<char*>(dst.host_data()) + dst_offset,
                 static_cast<const char*>(src.host_data()) + src_offset, bytes);
  }
  std::shared_ptr<Event> record() override { return std::make_shared<CpuEvent>(); }
  void wait(const Event& event) override { event.synchronize(); }
  void synchronize() override {}

  void embed_rows(const Tensor& table, const int32_t* ids, size_t n, const Tensor& out) override {
    float* o = f32_out(out, "embed_rows");
    check_fits(out, n * table.cols, "embed_rows");
    const WeightView w = table.host_view();
    for (size_t t = 0; t < n; ++t) {
      ODMOE_CHECK(ids[t] >= 0 && static_cast<size_t>(ids[t]) < table.rows, kModel, "bad-token",
                  "token id " << ids[t] << " is outside the vocabulary [0, " << table.rows << ")", "");
      const auto r = static_cast<size_t>(ids[t]);
      decode_rows(w.dtype, w.cols, w.data, w.scales, r, r + 1, o + t * w.cols);
    }
  }

  void matmul(const Tensor& w, const Tensor& x, size_t n, const Tensor& y) override {
    check_fits(x, n * w.cols, "matmul");
    check_fits(y, n * w.rows, "matmul");
    k_.matmul(w.host_view(), f32_in(x, "matmul"), n, f32_out(y, "matmul"));
  }

  void rms_norm(const Tensor& x, const Tensor& weight, size_t n_rows, size_t dim, float eps, const Tensor& y) override {
    check_fits(x, n_rows * dim, "rms_norm");
    check_fits(y, n_rows * dim, "rms_norm");
    k_.rms_norm(f32_in(x, "rms_norm"), f32_in(weight, "rms_norm"), n_rows, dim, eps, f32_out(y, "rms_norm"));
  }

  void rope(const Tensor& x, size_t n, size_t n_head, size_t head_dim, int pos0, const Tensor& inv_freq) override {
    check_fits(x, n * n_head * head_dim, "rope");
    float* xs = f32_out(x, "rope");
    const float* inv = f32_in(inv_freq, "rope");
    const size_t half = head_dim / 2;
    for (size_t t = 0; t < n; ++t) {
      const int pos = pos0 + static_cast<int>(t);
      float* xt = xs + t * n_head * head_dim;
      for (size_t i = 0; i < half; ++i) {
        const float angle = static_cast<float>(pos) * inv[i];  // f32 product, as transformers computes it
        const float c = std::cos(angle), s = std::sin(angle);
        for (size_t h = 0; h < n_head; ++h) {
          float* v = xt + h * head_dim;
          const float a = v[i], b = v[i + half];
          v[i] = a * c - b * s;
          v[i + half] = b * c + a * s;
        }
      }
    }
  }

  void add_bias(const Tensor& y, const Tensor& bias, size_t n, size_t dim) override {
    check_fits(y, n * dim, "add_bias");
    float* ys = f32_out(y, "add_bias");
    const float* b = f32_in(bias, "add_bias");
    for (size_t t = 0; t < n; ++t)
      for (size_t i = 0; i < dim; ++i) ys[t * dim + i] += b[i];
  }

  void add(const Tensor& y, const Tensor& x, size_t count) override {
    check_fits(y, count, "add");
    check_fits(x, count, "add");
    float* ys = f32_out(y, "add");
    const float* xs = f32_in(x, "add");
    for (size_t i = 0; i < count; ++i) ys[i] += xs[i];
  }

  void clamp(const Tensor& x, size_t count, float limit) override {
    check_fits(x, count, "clamp");
    float* xs = f32_out(x, "clamp");
    for (size_t i = 0; i < count; ++i) xs[i] = std::clamp(xs[i], -limit, limit);
  }

  void sigmoid_gate_add(const Tensor& y, const Tensor& x, const Tensor& gate_logit, size_t n, size_t dim) override {
    check_fits(y, n * dim, "sigmoid_gate_add");
    check_fits(x, n * dim, "sigmoid_gate_add");
    float* ys = f32_out(y, "sigmoid_gate_add");
    const float* xs = f32_in(x, "sigmoid_gate_add");
    const float* g = f32_in(gate_logit, "sigmoid_gate_add");
    for (size_t t = 0; t < n; ++t) {
      const float gate = 1.0f / (1.0f + std::exp(-g[t]));
      for (size_t i = 0; i < dim; ++i) ys[t * dim + i] += gate * xs[t * dim + i];
    }
  }

  void swiglu(const Tensor& gate, const Tensor& up, size_t count, const Tensor& out) override {
    check_fits(gate, count, "swiglu");
    check_fits(up, count, "swiglu");
    check_fits(out, count, "swiglu");
    k_.swiglu(f32_in(gate, "swiglu"), f32_in(up, "swiglu"), count, f32_out(out, "swiglu"));
  }

  void kv_store(KvCache& cache, int layer, int pos0, size_t n, const Tensor& k, const Tensor& v) override {
    const size_t hd = static_cast<size_t>(cache.head_dim()), kv = cache.kv_dim(), n_ctx = static_cast<size_t>(cache.n_ctx());
    ODMOE_CHECK(pos0 >= 0 && static_cast<size_t>(pos0) + n <= n_ctx, kModel, "range",
                "kv_store: positions [" << pos0 << ", " << pos0 + static_cast<long>(n) << ") past a context of " << n_ctx, "");
    check_fits(k, n * kv, "kv_store");
    check_fits(v, n * kv, "kv_store");
    const float* src[2] = {f32_in(k, "kv_store"), f32_in(v, "kv_store")};
    float* dst[2] = {f32_out(cache.k(layer), "kv_store"), f32_out(cache.v(layer), "kv_store")};
    for (int p = 0; p < 2; ++p)
      for (size_t t = 0; t < n; ++t)
        for (size_t h = 0; h < static_cast<size_t>(cache.n_head_kv()); ++h)
          std::memcpy(dst[p] + (h * n_ctx + static_cast<size_t>(pos0) + t) * hd, src[p] + t * kv + h * hd, hd * 4);
  }

  void attention(const Tensor& q, const KvCache& cache, int layer, int pos0, size_t n, const AttentionParams& p,
                 const Tensor& out) override {
    const size_t q_dim = static_cast<size_t>(p.n_head) * p.head_dim;
    ODMOE_CHECK(p.n_head_kv == cache.n_head_kv() && p.head_dim == cache.head_dim() && p.n_head % p.n_head_kv == 0 &&
                    pos0 >= 0 && static_cast<size_t>(pos0) + n <= static_cast<size_t>(cache.n_ctx()),
                kModel, "shape", "attention: " << p.n_head << " heads over " << cache.n_head_kv() << " KV heads of "
                                               << cache.head_dim() << " at positions [" << pos0 << ", "
                                               << pos0 + static_cast<long>(n) << ")",
                "");
    check_fits(q, n * q_dim, "attention");
    check_fits(out, n * q_dim, "attention");
    // Enough work for threads: about as much as a matmul needs (see CpuBackend::matmul).
    const size_t work = n * static_cast<size_t>(p.n_head) * (static_cast<size_t>(pos0) + n) * p.head_dim;
    const int threads = work >= (1u << 15) ? n_threads_ : 1;
    cpu::attention_f32(f32_in(q, "attention"), n, pos0, p.n_head, p.n_head_kv, p.head_dim,
                       f32_in(cache.k(layer), "attention"), f32_in(cache.v(layer), "attention"),
                       static_cast<size_t>(cache.n_ctx()), p.window, p.scale, f32_out(out, "attention"), threads);
  }

 private:
  Backend& k_;
  int n_threads_;
};

}  // namespace

CpuDevice::CpuDevice(CpuIsa isa, int n_threads, size_t limit_bytes)
    : Device("cpu device", limit_bytes), own_(std::make_unique<CpuBackend>(isa, n_threads)), kernels_(own_.get()),
      n_threads_(own_->n_threads()), stream_(std::make_unique<CpuStream>(*kernels_, n_threads_)) {}

CpuDevice::CpuDevice(Backend& kernels, int n_threads, size_t limit_bytes)
    : Device("cpu device", limit_bytes), kernels_(&kernels), n_threads_(n_threads > 0 ? n_threads : omp_get_num_procs()),
      stream_(std::make_unique<CpuStream>(*kernels_, n_threads_)) {}

CpuDevice::~CpuDevice() = default;

std::string CpuDevice::to_string() const {
  if (own_) return own_->to_string();
  std::ostringstream os;
  os << "cpu kernels=" << kernels_->name() << " threads=" << n_threads_;
  return os.str();
}

bool CpuDevice::supports(DeviceOp op, DType dtype) const {
  // Weights of every stored dtype for the ops that read weights; activations are f32.
  if (op == DeviceOp::kMatmul || op == DeviceOp::kEmbedRows) return true;
  return dtype == DType::kF32;
}

std::unique_ptr<Buffer> CpuDevice::allocate(BufferUsage usage, size_t bytes, const std::string& what) {
  memory().reserve(bytes, usage, what);
  const size_t padded = std::max(kCpuAlign, (bytes + kCpuAlign - 1) / kCpuAlign * kCpuAlign);
  void* p = std::aligned_alloc(kCpuAlign, padded);
  if (!p) {
    memory().release(bytes, usage);
    ODMOE_THROW(kCore, "oom", "cpu device: cannot allocate " << bytes << " bytes for " << what, "");
  }
  std::memset(p, 0, padded);
  return std::make_unique<CpuBuffer>(usage, bytes, what, p, false, memory());
}

std::unique_ptr<Buffer> CpuDevice::wrap_host(BufferUsage usage, void* data, size_t bytes, const std::string& what) {
  return std::make_unique<CpuBuffer>(usage, bytes, what, data, true, memory());
}

std::unique_ptr<Stream> CpuDevice::new_stream() { return std::make_unique<CpuStream>(*kernels_, n_threads_); }

}  // namespace odmoe
