// The CPU backend: vectorised (AVX2+FMA, AVX-512 where the CPU has it, chosen at run
// time; a portable scalar path otherwise) and threaded with OpenMP over output rows.
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
  CpuIsa isa_;
  int n_threads_;
};

// Dot product of one stored row with an f32 vector, with the given ISA (exposed for tests
// and benchmarks). `row` is the row index inside `w`.
float cpu_row_dot(CpuIsa isa, const WeightView& w, size_t row, const float* x);

}  // namespace odmoe
