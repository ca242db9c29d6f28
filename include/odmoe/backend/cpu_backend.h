// The CPU backend: vectorised (AVX2+FMA, AVX-512 where the CPU has it, chosen at run
// time; a portable scalar path otherwise) and threaded with OpenMP over output rows.
//
// Arithmetic: f32/bf16/f16 weights are computed in f32 throughout. For int8 and int4
// weights, decode (matmul with fewer than 4 tokens) quantises each token's activations to
// int8 per block of 32 values (one f32 scale = max|x| / 127 per block) and sums the block's
// products in exact integers (AVX2 VPMADDUBSW, AVX512-VNNI VPDPBUSD), then combines the blocks
// with f32 FMAs in a fixed order: every ISA and thread count gives the same bits. Prefill
// decodes the rows to f32 and stays in f32.
#pragma once

#include <string>

#include "odmoe/backend/backend.h"

namespace odmoe {

enum class CpuIsa { kScalar, kAvx2, kAvx512 };
const char* cpu_isa_name(CpuIsa isa);
CpuIsa detect_cpu_isa();

class CpuBackend final : public Backend {
 public:
  // isa: what to use (at most what the CPU supports); n_threads <= 0: all cores.
  explicit CpuBackend(CpuIsa isa = detect_cpu_isa(), int n_threads = 0);
  const char* name() const override { return "cpu"; }
  CpuIsa isa() const { return isa_; }
  int n_threads() const { return n_threads_; }
  std::string to_string() const;

  void matmul(const WeightView& w, const float* x, size_t n_tokens, float* y) override;
  void rms_norm(const float* x, const float* weight, size_t n_rows, size_t dim, float eps, float* y) override;
  void swiglu(const float* gate, const float* up, size_t n, float* out) override;

 private:
  void matmul_q8(const WeightView& w, const float* x, size_t n_tokens, float* y, bool parallel);

  CpuIsa isa_;
  int n_threads_;
};

// Dot product of one stored row with an f32 vector, with the given ISA (exposed for tests
// and benchmarks). `row` is the row index inside `w`.
float cpu_row_dot(CpuIsa isa, const WeightView& w, size_t row, const float* x);

// Whether decode quantises the activations for weights of this dtype (int8, int4).
bool cpu_quantizes_activations(DType dtype);
// The same row dot as decode computes it for int8/int4 weights: x quantised to int8 per block
// of 32, integer block sums (throws for other dtypes).
float cpu_row_dot_q8(CpuIsa isa, const WeightView& w, size_t row, const float* x);
// Which integer kernel an ISA runs: "scalar", "avx2" or "avx512vnni" (AVX-512 without VNNI
// runs the AVX2 one).
const char* cpu_qdot_name(CpuIsa isa);

}  // namespace odmoe
