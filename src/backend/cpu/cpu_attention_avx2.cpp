// The attention part kernel (cpu_attention_impl.inc) over AVX2+FMA vectors of 8 f32, with a
// vectorised exp. Compiled for any x86-64 with function target attributes; attention_f32 calls
// it only when the CPU has the instructions.
#if defined(__x86_64__)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "cpu_kernels.h"

#define ATT_TARGET __attribute__((target("avx2,fma")))
#define ATT_PART_NAME attention_part_avx2

namespace odmoe::cpu {
namespace {

struct Vec {
  using T = __m256;
  static constexpr int kW = 8;
  static constexpr int kQkRows = 2, kQkKeys = 4;  // q·k tile: 8 accumulators + 4 k + 1 q registers
  static constexpr int kPvRows = 4, kPvCols = 2;  // P·V tile: 8 accumulators + 2 v + 1 weight
  ATT_TARGET static T zero() { return _mm256_setzero_ps(); }
  ATT_TARGET static T set1(float x) { return _mm256_set1_ps(x); }
  ATT_TARGET static T load(const float* p) { return _mm256_loadu_ps(p); }
  ATT_TARGET static T loadn(const float* p, int n) {  // lanes >= n are 0 and not read
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_maskload_ps(p, mask);
  }
  ATT_TARGET static void store(float* p, T x) { _mm256_storeu_ps(p, x); }
  ATT_TARGET static T add(T a, T b) { return _mm256_add_ps(a, b); }
  ATT_TARGET static T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  ATT_TARGET static T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  ATT_TARGET static T max(T a, T b) { return _mm256_max_ps(a, b); }
  ATT_TARGET static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  ATT_TARGET static float hsum(T v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
    return _mm_cvtss_f32(s);
  }
  ATT_TARGET static float hmax(T v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 0x55));
    return _mm_cvtss_f32(s);
  }
  // exp(x) within 2 ulp of std::exp (1 ulp seen over a sweep of [-87.3, 0.5]) for
  // -87.33 <= x <= 88 (-87.33: ln of the smallest normal float); 0 below (std::exp gives
  // subnormals down to -103.9) and for -inf; exp(88) above (the softmax's arguments are <= 0);
  // NaN stays NaN. x = n ln2 + r with |r| <= ln2/2 (ln2 in two parts, so n ln2 is exact), exp(r) by a degree-7 polynomial
  // (1 + r + r^2 P(r), P of degree 5, Cephes' expf coefficients), times 2^n built in the exponent.
  ATT_TARGET static T exp(T x) {
    const T lo = _mm256_set1_ps(-87.33654f);
    // min/max return their second operand when one is NaN: NaN stays NaN.
    const T xc = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(lo, x));
    const T n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    T r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    T p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    // 2^n for n in [-126, 127]: the biased exponent n + 127 in bits 23..30.
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    const T y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), y);  // below lo (and -inf): 0
  }
};

}  // namespace

#include "cpu_attention_impl.inc"

}  // namespace odmoe::cpu
#endif  // __x86_64__
