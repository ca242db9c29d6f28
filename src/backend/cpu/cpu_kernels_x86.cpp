// AVX2+FMA(+F16C) and AVX-512 row dot products in f32 (f32/bf16/f16 weights with four FMA
// chains; int8/int4 with f32 activations: cpu_row_dot, the exact reference; decode of
// int8/int4 runs the integer kernels of cpu_qdot_*.cpp). Compiled for any x86-64 with function
// target attributes; the backend calls them only when the CPU has the instructions.
#if defined(__x86_64__)
#include <immintrin.h>

#include <cstdint>

#include "cpu_kernels.h"

#define ODMOE_AVX2 __attribute__((target("avx2,fma,f16c")))
#define ODMOE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

namespace odmoe::cpu {
namespace {

ODMOE_AVX2 inline float hsum256(__m256 v) {
  const __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
  return _mm_cvtss_f32(s);
}

// 32 int4 values of one group (16 bytes, element 2j in the low nibble of byte j) as two
// vectors of 16 signed bytes, in element order.
ODMOE_AVX2 inline void unpack_int4(const unsigned char* p, __m128i* first16, __m128i* last16) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i mask = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
  const __m128i lo = _mm_and_si128(b, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
  *first16 = _mm_sub_epi8(_mm_unpacklo_epi8(lo, hi), eight);
  *last16 = _mm_sub_epi8(_mm_unpackhi_epi8(lo, hi), eight);
}

// 8 bf16 / f16 values as f32.
ODMOE_AVX2 inline __m256 bf16x8(const uint16_t* h) {
  return _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h))), 16));
}
ODMOE_AVX2 inline __m256 f16x8(const uint16_t* h) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
}

// Dot product of n 16-bit floats (bf16 or f16, converted by Load) with x: four FMA chains of
// 8 lanes (32 values per iteration) so that loads and conversions overlap.
template <__m256 (*Load)(const uint16_t*), float (*Scalar)(uint16_t)>
ODMOE_AVX2 inline float dot_h16_avx2(const uint16_t* h, const float* x, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(Load(h + i), _mm256_loadu_ps(x + i), s0);
    s1 = _mm256_fmadd_ps(Load(h + i + 8), _mm256_loadu_ps(x + i + 8), s1);
    s2 = _mm256_fmadd_ps(Load(h + i + 16), _mm256_loadu_ps(x + i + 16), s2);
    s3 = _mm256_fmadd_ps(Load(h + i + 24), _mm256_loadu_ps(x + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(Load(h + i), _mm256_loadu_ps(x + i), s0);
  float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; ++i) s += Scalar(h[i]) * x[i];
  return s;
}

// Elements [from, to) of an int4 row, scalar (the partial last group).
inline float int4_tail(const unsigned char* p, const float* x, size_t from, size_t to) {
  float s = 0;
  for (size_t c = from; c < to; ++c) {
    const unsigned b = p[c / 2];
    s += static_cast<float>(static_cast<int>((c % 2 == 0) ? (b & 0x0fu) : (b >> 4)) - 8) * x[c];
  }
  return s;
}

}  // namespace

// ---- AVX2 ---------------------------------------------------------------------------

ODMOE_AVX2 float dot_f32_avx2(const float* a, const float* b, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

ODMOE_AVX2 float dot_avx2(const WeightView& w, size_t row, const float* x) {
  const unsigned char* p = row_data(w, row);
  const size_t n = w.cols;
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  size_t i = 0;
  switch (w.dtype) {
    case DType::kF32: return dot_f32_avx2(reinterpret_cast<const float*>(p), x, n);
    case DType::kBF16: return dot_h16_avx2<bf16x8, bf16_to_f32>(reinterpret_cast<const uint16_t*>(p), x, n);
    case DType::kF16: return dot_h16_avx2<f16x8, f16_to_f32>(reinterpret_cast<const uint16_t*>(p), x, n);
    case DType::kInt8: {
      const auto* q = reinterpret_cast<const int8_t*>(p);
      for (; i + 16 <= n; i += 16) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i));
        const __m256 a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
        const __m256 b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8)));
        s0 = _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(b, _mm256_loadu_ps(x + i + 8), s1);
      }
      float s = hsum256(_mm256_add_ps(s0, s1));
      for (; i < n; ++i) s += static_cast<float>(q[i]) * x[i];
      return s * w.scales[row];
    }
    case DType::kInt4: {
      const size_t groups = int4_groups(n), full = n / kInt4Group;
      const float* sc = w.scales + row * groups;
      __m256 acc = _mm256_setzero_ps();
      for (size_t g = 0; g < full; ++g) {
        __m128i a16, b16;
        unpack_int4(p + g * 16, &a16, &b16);
        const float* xg = x + g * kInt4Group;
        __m256 gs = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(a16)), _mm256_loadu_ps(xg));
        gs = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(a16, 8))), _mm256_loadu_ps(xg + 8), gs);
        gs = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b16)), _mm256_loadu_ps(xg + 16), gs);
        gs = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b16, 8))), _mm256_loadu_ps(xg + 24), gs);
        acc = _mm256_fmadd_ps(gs, _mm256_set1_ps(sc[g]), acc);
      }
      float s = hsum256(acc);
      if (full < groups) s += int4_tail(p, x, full * kInt4Group, n) * sc[full];
      return s;
    }
  }
  return 0;
}

// ---- AVX-512 ------------------------------------------------------------------------

ODMOE_AVX512 float dot_f32_avx512(const float* a, const float* b, size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
    s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
  }
  for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
  float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

ODMOE_AVX512 inline __m512 bf16x16(const uint16_t* h) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h))), 16));
}
ODMOE_AVX512 inline __m512 f16x16(const uint16_t* h) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h)));
}

// As dot_h16_avx2, 16 lanes: four FMA chains, 64 values per iteration.
template <__m512 (*Load)(const uint16_t*), float (*Scalar)(uint16_t)>
ODMOE_AVX512 inline float dot_h16_avx512(const uint16_t* h, const float* x, size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_fmadd_ps(Load(h + i), _mm512_loadu_ps(x + i), s0);
    s1 = _mm512_fmadd_ps(Load(h + i + 16), _mm512_loadu_ps(x + i + 16), s1);
    s2 = _mm512_fmadd_ps(Load(h + i + 32), _mm512_loadu_ps(x + i + 32), s2);
    s3 = _mm512_fmadd_ps(Load(h + i + 48), _mm512_loadu_ps(x + i + 48), s3);
  }
  for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(Load(h + i), _mm512_loadu_ps(x + i), s0);
  float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  for (; i < n; ++i) s += Scalar(h[i]) * x[i];
  return s;
}

ODMOE_AVX512 float dot_avx512(const WeightView& w, size_t row, const float* x) {
  const unsigned char* p = row_data(w, row);
  const size_t n = w.cols;
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  size_t i = 0;
  switch (w.dtype) {
    case DType::kF32: return dot_f32_avx512(reinterpret_cast<const float*>(p), x, n);
    case DType::kBF16: return dot_h16_avx512<bf16x16, bf16_to_f32>(reinterpret_cast<const uint16_t*>(p), x, n);
    case DType::kF16: return dot_h16_avx512<f16x16, f16_to_f32>(reinterpret_cast<const uint16_t*>(p), x, n);
    case DType::kInt8: {
      const auto* q = reinterpret_cast<const int8_t*>(p);
      for (; i + 32 <= n; i += 32) {
        const __m512 a = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i))));
        const __m512 b =
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i + 16))));
        s0 = _mm512_fmadd_ps(a, _mm512_loadu_ps(x + i), s0);
        s1 = _mm512_fmadd_ps(b, _mm512_loadu_ps(x + i + 16), s1);
      }
      float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
      for (; i < n; ++i) s += static_cast<float>(q[i]) * x[i];
      return s * w.scales[row];
    }
    case DType::kInt4: {
      const size_t groups = int4_groups(n), full = n / kInt4Group;
      const float* sc = w.scales + row * groups;
      __m512 acc = _mm512_setzero_ps();
      for (size_t g = 0; g < full; ++g) {
        __m128i a16, b16;
        unpack_int4(p + g * 16, &a16, &b16);
        const float* xg = x + g * kInt4Group;
        __m512 gs = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(a16)), _mm512_loadu_ps(xg));
        gs = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b16)), _mm512_loadu_ps(xg + 16), gs);
        acc = _mm512_fmadd_ps(gs, _mm512_set1_ps(sc[g]), acc);
      }
      float s = _mm512_reduce_add_ps(acc);
      if (full < groups) s += int4_tail(p, x, full * kInt4Group, n) * sc[full];
      return s;
    }
  }
  return 0;
}

}  // namespace odmoe::cpu
#endif  // __x86_64__
