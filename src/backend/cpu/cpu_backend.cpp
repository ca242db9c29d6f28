#include "odmoe/backend/cpu_backend.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <sstream>
#include <vector>

#include "cpu_kernels.h"
#include "odmoe/core/error.h"

namespace odmoe {
namespace {

using DotFn = float (*)(const WeightView&, size_t, const float*);
using DotF32Fn = float (*)(const float*, const float*, size_t);
using QDotFn = float (*)(const WeightView&, size_t, const cpu::QuantizedX&);
using QuantizeFn = void (*)(const float*, cpu::QuantizedX*);

DotFn dot_for(CpuIsa isa) {
#if defined(__x86_64__)
  if (isa == CpuIsa::kAvx512) return cpu::dot_avx512;
  if (isa == CpuIsa::kAvx2) return cpu::dot_avx2;
#endif
  (void)isa;
  return cpu::dot_scalar;
}

bool cpu_has_vnni() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

QDotFn qdot_for(CpuIsa isa) {
#if defined(__x86_64__)
  static const bool vnni = cpu_has_vnni();
  if (isa == CpuIsa::kAvx512 && vnni) return cpu::qdot_avx512vnni;
  if (isa >= CpuIsa::kAvx2) return cpu::qdot_avx2;
#endif
  (void)isa;
  return cpu::qdot_scalar;
}

QuantizeFn quantize_for(CpuIsa isa) {
#if defined(__x86_64__)
  if (isa >= CpuIsa::kAvx2) return cpu::quantize_x_avx2;
#endif
  (void)isa;
  return cpu::quantize_x_scalar;
}

// Per-thread scratch for quantised activations (64-byte aligned), reused across matmuls.
unsigned char* qx_scratch(size_t bytes) {
  thread_local std::vector<unsigned char> buf;
  if (buf.size() < bytes + 64) buf.resize(bytes + 64);
  const auto a = reinterpret_cast<uintptr_t>(buf.data());
  return buf.data() + ((64 - a % 64) % 64);
}

DotF32Fn dot_f32_for(CpuIsa isa) {
#if defined(__x86_64__)
  if (isa == CpuIsa::kAvx512) return cpu::dot_f32_avx512;
  if (isa == CpuIsa::kAvx2) return cpu::dot_f32_avx2;
#endif
  (void)isa;
  return cpu::dot_f32_scalar;
}

}  // namespace

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kScalar: return "scalar";
    case CpuIsa::kAvx2: return "avx2";
    case CpuIsa::kAvx512: return "avx512";
  }
  return "?";
}

CpuIsa detect_cpu_isa() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    return CpuIsa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::kAvx2;
#endif
  return CpuIsa::kScalar;
}

CpuBackend::CpuBackend(CpuIsa isa, int n_threads)
    : isa_(std::min(isa, detect_cpu_isa())), n_threads_(n_threads > 0 ? n_threads : omp_get_num_procs()) {}

std::string CpuBackend::to_string() const {
  std::ostringstream os;
  os << "cpu isa=" << cpu_isa_name(isa_) << " threads=" << n_threads_;
  return os.str();
}

float cpu_row_dot(CpuIsa isa, const WeightView& w, size_t row, const float* x) {
  return dot_for(std::min(isa, detect_cpu_isa()))(w, row, x);
}

bool cpu_quantizes_activations(DType dtype) { return dtype == DType::kInt8 || dtype == DType::kInt4; }

const char* cpu_qdot_name(CpuIsa isa) {
  const QDotFn f = qdot_for(std::min(isa, detect_cpu_isa()));
#if defined(__x86_64__)
  if (f == cpu::qdot_avx512vnni) return "avx512vnni";
  if (f == cpu::qdot_avx2) return "avx2";
#endif
  (void)f;
  return "scalar";
}

float cpu_row_dot_q8(CpuIsa isa, const WeightView& w, size_t row, const float* x) {
  ODMOE_CHECK(cpu_quantizes_activations(w.dtype), kCore, "bad-dtype",
              "cpu_row_dot_q8 takes int8 or int4 weights, not " << dtype_name(w.dtype), "");
  isa = std::min(isa, detect_cpu_isa());
  std::vector<unsigned char> buf(cpu::quantized_x_bytes(w.cols) + 64);
  const auto a = reinterpret_cast<uintptr_t>(buf.data());
  cpu::QuantizedX q = cpu::quantized_x_view(w.dtype, w.cols, buf.data() + ((64 - a % 64) % 64));
  quantize_for(isa)(x, &q);
  return qdot_for(isa)(w, row, q);
}

void CpuBackend::matmul_q8(const WeightView& w, const float* x, size_t n_tokens, float* y, bool parallel) {
  const QDotFn qdot = qdot_for(isa_);
  const size_t bytes = cpu::quantized_x_bytes(w.cols);
  unsigned char* buf = qx_scratch(bytes * n_tokens);
  cpu::QuantizedX q[4];
  for (size_t t = 0; t < n_tokens; ++t) {
    q[t] = cpu::quantized_x_view(w.dtype, w.cols, buf + t * bytes);
    quantize_for(isa_)(x + t * w.cols, &q[t]);
  }
  const auto rows = static_cast<long>(w.rows);
#pragma omp parallel for num_threads(n_threads_) schedule(static) if (parallel)
  for (long r = 0; r < rows; ++r)
    for (size_t t = 0; t < n_tokens; ++t) y[t * w.rows + static_cast<size_t>(r)] = qdot(w, static_cast<size_t>(r), q[t]);
}

void CpuBackend::matmul(const WeightView& w, const float* x, size_t n_tokens, float* y) {
  const DotFn dot = dot_for(isa_);
  const auto rows = static_cast<long>(w.rows);
  // Threads only pay off above a few tens of thousands of multiply-adds.
  const bool parallel = w.rows * w.cols * n_tokens >= (1u << 15) && n_threads_ > 1;
  if (n_tokens < 4 && cpu_quantizes_activations(w.dtype)) {
    // Decode with int8/int4 weights: x quantised to int8 per block of 32 once, integer dots.
    matmul_q8(w, x, n_tokens, y, parallel);
    return;
  }
  if (n_tokens < 4) {
    // Decode: memory-bound; each weight row is read once per token straight from its dtype.
#pragma omp parallel for num_threads(n_threads_) schedule(static) if (parallel)
    for (long r = 0; r < rows; ++r)
      for (size_t t = 0; t < n_tokens; ++t)
        y[t * w.rows + static_cast<size_t>(r)] = dot(w, static_cast<size_t>(r), x + t * w.cols);
    return;
  }
  // Prefill: decode each row once to f32 and reuse it for every token.
  const DotF32Fn dot32 = dot_f32_for(isa_);
#pragma omp parallel num_threads(n_threads_) if (parallel)
  {
    std::vector<float> row(w.cols);
#pragma omp for schedule(static)
    for (long r = 0; r < rows; ++r) {
      decode_rows(w.dtype, w.cols, w.data, w.scales, static_cast<size_t>(r), static_cast<size_t>(r) + 1, row.data());
      for (size_t t = 0; t < n_tokens; ++t)
        y[t * w.rows + static_cast<size_t>(r)] = dot32(row.data(), x + t * w.cols, w.cols);
    }
  }
}

void CpuBackend::rms_norm(const float* x, const float* weight, size_t n_rows, size_t dim, float eps, float* y) {
  for (size_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * dim;
    double ss = 0;  // the sum of squares in double: dim can be 8192 and values large
    for (size_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(dim)) + eps);
    float* yr = y + r * dim;
    for (size_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv * weight[i];
  }
}

void CpuBackend::swiglu(const float* gate, const float* up, size_t n, float* out) {
  for (size_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

}  // namespace odmoe
