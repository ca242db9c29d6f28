// The attention part kernel (cpu_attention_impl.inc) over AVX-512 vectors of 16 f32, with the
// vectorised exp of cpu_attention_avx2.cpp in 512-bit form. Compiled for any x86-64 with
// function target attributes; attention_f32 calls it only when the CPU has AVX-512F/BW/VL.
#if defined(__x86_64__)
// GCC 12's avx512fintrin.h trips -Wuninitialized on its own _mm512_undefined_* helpers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "cpu_kernels.h"

#define ATT_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#define ATT_PART_NAME attention_part_avx512

namespace odmoe::cpu {
namespace {

struct Vec {
  using T = __m512;
  static constexpr int kW = 16;
  static constexpr int kQkRows = 4, kQkKeys = 4;  // q·k tile: 16 accumulators + 4 k + 1 q of 32 registers
  static constexpr int kPvRows = 4, kPvCols = 4;  // P·V tile: 16 accumulators + 4 v + 1 weight
  ATT_TARGET static T zero() { return _mm512_setzero_ps(); }
  ATT_TARGET static T set1(float x) { return _mm512_set1_ps(x); }
  ATT_TARGET static T load(const float* p) { return _mm512_loadu_ps(p); }
  ATT_TARGET static T loadn(const float* p, int n) {  // lanes >= n are 0 and not read
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p);
  }
  ATT_TARGET static void store(float* p, T x) { _mm512_storeu_ps(p, x); }
  ATT_TARGET static T add(T a, T b) { return _mm512_add_ps(a, b); }
  ATT_TARGET static T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  ATT_TARGET static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  ATT_TARGET static T max(T a, T b) { return _mm512_max_ps(a, b); }
  ATT_TARGET static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  ATT_TARGET static float hsum(T v) { return _mm512_reduce_add_ps(v); }
  ATT_TARGET static float hmax(T v) { return _mm512_reduce_max_ps(v); }
  // As Vec::exp of cpu_attention_avx2.cpp (same range reduction, polynomial and limits).
  ATT_TARGET static T exp(T x) {
    const T lo = _mm512_set1_ps(-87.33654f);
    // min/max return their second operand when one is NaN: NaN stays NaN.
    const T xc = _mm512_min_ps(_mm512_set1_ps(88.0f), _mm512_max_ps(lo, x));
    const T n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    T r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    T p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    const T y = _mm512_mul_ps(p, _mm512_castsi512_ps(e));
    return _mm512_maskz_mov_ps(~_mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), y);  // below lo (and -inf): 0
  }
};

}  // namespace

#include "cpu_attention_impl.inc"

}  // namespace odmoe::cpu
#endif  // __x86_64__
