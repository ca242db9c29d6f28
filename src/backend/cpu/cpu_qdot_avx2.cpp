// AVX2 activation quantisation and integer row dot products (VPMADDUBSW + VPMADDWD).
// Compiled for any x86-64 with function target attributes; the backend calls them only when
// the CPU has AVX2.
#if defined(__x86_64__)
#include <immintrin.h>

#include <cstring>

#include "cpu_kernels.h"

#define QDOT_TARGET __attribute__((target("avx2,fma")))

namespace odmoe::cpu {
namespace {

// 32 activations -> 32 int8 in element order (or in even/odd halves), as quantize_block_scalar.
QDOT_TARGET void quantize_block_avx2(const float* x, bool deinterleave, __m128i* first16, __m128i* last16, float* d,
                                     int32_t* sum) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  __m256 v[4];
  __m256i mx = _mm256_setzero_si256();
  for (int k = 0; k < 4; ++k) {
    v[k] = _mm256_loadu_ps(x + 8 * k);
    mx = _mm256_max_epu32(mx, _mm256_and_si256(_mm256_castps_si256(v[k]), abs_mask));
  }
  __m128i m = _mm_max_epu32(_mm256_castsi256_si128(mx), _mm256_extracti128_si256(mx, 1));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4e));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xb1));
  const auto amax_bits = static_cast<uint32_t>(_mm_cvtsi128_si32(m));
  float amax;
  std::memcpy(&amax, &amax_bits, 4);
  if (amax_bits >= 0x7f800000u || amax < kQTiny) {  // the scalar function's special cases
    int8_t q[kQBlock];
    quantize_block_scalar(x, kQBlock, q, d, sum);
    *first16 = *last16 = _mm_setzero_si128();
    return;
  }
  const __m256 inv = _mm256_set1_ps(127.0f / amax);
  *d = amax / 127.0f;
  const __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v[0], inv)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v[1], inv));
  const __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v[2], inv)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v[3], inv));
  // packs work per 128-bit lane: dwords come out as i0[0..3] i1 i2 i3 | i0[4..7] i1 i2 i3.
  const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
  __m256i q = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  const __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);
  __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  *sum = _mm_cvtsi128_si32(s);
  if (deinterleave) {
    // Per 128-bit lane: even bytes, then odd bytes; then the lanes' halves regrouped.
    const __m256i even_odd = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,  //
                                              0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    q = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(q, even_odd), _MM_SHUFFLE(3, 1, 2, 0));
  }
  *first16 = _mm256_castsi256_si128(q);
  *last16 = _mm256_extracti128_si256(q, 1);
}

}  // namespace

QDOT_TARGET void quantize_x_avx2(const float* x, QuantizedX* out) {
  const size_t full = out->cols / kQBlock;
  const bool int4 = out->layout == DType::kInt4;
  for (size_t b = 0; b < full; ++b) {
    __m128i a, c;
    int32_t sum = 0;
    quantize_block_avx2(x + b * kQBlock, int4, &a, &c, &out->d[b], &sum);
    out->s8[b] = 8 * sum;
    // int8: elements 0-15 and 16-31; int4: even elements (at 0 or 16 of the pair's 64), odd ones 32 later.
    int8_t* dst = out->q + (int4 ? (b / 2) * 64 + (b % 2) * 16 : b * kQBlock);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), a);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (int4 ? 32 : 16)), c);
  }
  // The partial last block and the padding, as the scalar path does them.
  for (size_t b = full; b < out->padded_blocks; ++b) {
    int8_t blk[kQBlock];
    int32_t sum = 0;
    out->d[b] = 0;
    if (b < out->n_blocks) quantize_block_scalar(x + b * kQBlock, out->cols - b * kQBlock, blk, &out->d[b], &sum);
    else std::memset(blk, 0, kQBlock);
    out->s8[b] = 8 * sum;
    for (size_t j = 0; j < kQBlock; ++j) out->q[qx_pos(out->layout, b, j)] = blk[j];
  }
}

#define QDOT_NAME qdot_avx2
#define QDOT_I8(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1))
#define QDOT_I4(lo, hi, x0, x1) \
  _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16((lo), (x0)), _mm256_maddubs_epi16((hi), (x1))), _mm256_set1_epi16(1))
#include "cpu_qdot_x86.inc"

}  // namespace odmoe::cpu
#endif  // __x86_64__
