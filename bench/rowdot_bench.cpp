// odmoe-bench-rowdot: the CPU backend's decode matmul (one token: one row dot product per
// output row, src/backend/cpu) for each ISA, next to candidate kernels written here, and next
// to the memory bandwidth. It answers "is decode at dtype X memory-bound or compute-bound, and
// what would a better kernel reach". In the style of nccl-tests: warm-up, timed iterations,
// min/avg/max, a table on stdout and --json FILE.
//
//   odmoe-bench-rowdot [--cols 2048] [--mem-mib 256] [--dtypes bf16,int8,int4] [--threads 0]
//                      [--iters 5] [--warmup 1] [--seed 1234] [--json FILE]
//
// For every kernel and dtype:
//   L2      one thread, repeated matmuls over a ~256 KiB matrix: the kernel's compute ceiling
//           per core (GB/s of stored weight bytes), and that ceiling x the cores used; the
//           kernels of a dtype take turns within each timed iteration
//   memory  one matmul over a --mem-mib matrix with --threads threads (OpenMP over rows, static
//           schedule, as CpuBackend::matmul), each followed by a read-only sum over the same
//           bytes with the same threads (the paired read bandwidth at that moment)
//   error   max |y - y_library| / max |y_library| against the library's best ISA
//
// Candidate kernels (not in the library; proposals, see bench/README.md):
//   avx512-4acc   the library's AVX-512 loop with 4 independent accumulators (the library's
//                 int4/int8/bf16 loops carry one or two FMA dependency chains)
//   avx512-lut    int4: each byte zero-extended to int32 (vpmovzxbd), both nibbles mapped
//                 straight to float with one vpermps each over a 16-entry table {-8..7}; x is
//                 de-interleaved once per matmul (even elements, then odd, per group of 32) so
//                 no byte unpacking is needed; 4 accumulators
//   avx2-4acc     the library's AVX2 loop with 4 independent accumulators
//   lib avx512 dyn64  the library's own AVX-512 row dot (cpu_row_dot) with OpenMP
//                 schedule(dynamic, 64) instead of CpuBackend's schedule(static): on a shared
//                 machine one slow vCPU holds a static matmul back
//   vnni-q8x      int4 with x quantised to int8 per group of 32 (one f32 scale per group, as
//                 llama.cpp's Q8_0 activations) and vpdpbusd (AVX512-VNNI): 64 nibble x int8
//                 products per instruction. Changes the numerics (the err column shows by how
//                 much); the others only reorder f32 additions
// Exit status: 0 success, 1 error, 2 bad command line.
// GCC 12's AVX-512 headers pass _mm512_undefined_*() values to masked builtins, which
// -Wuninitialized reports once the intrinsics are inlined (GCC PR 105593, fixed in GCC 13 by
// the same pragma inside the headers).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#include <omp.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "bench_common.h"
#include "odmoe/backend/cpu_backend.h"
#include "odmoe/core/dtype.h"
#include "odmoe/core/error.h"

namespace po = boost::program_options;
using namespace odmoe;
using namespace odmoe::bench;

#define BENCH_AVX2 __attribute__((target("avx2,fma,f16c")))
#define BENCH_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

namespace {

constexpr const char* kName = "odmoe-bench-rowdot";

const uint8_t* row_ptr(const WeightView& w, size_t row) {
  return static_cast<const uint8_t*>(w.data) + row * dtype_data_bytes(w.dtype, 1, w.cols);
}

// Scalar tails, as the library computes them.
float int4_tail(const uint8_t* p, const float* x, size_t from, size_t to) {
  float s = 0;
  for (size_t c = from; c < to; ++c) {
    const unsigned b = p[c / 2];
    s += static_cast<float>(static_cast<int>((c % 2 == 0) ? (b & 0x0fu) : (b >> 4)) - 8) * x[c];
  }
  return s;
}

// ---------------------------------------------------------------------------------------
// Candidate kernels. Each computes the dot product of one stored row with x; `xd` is x
// de-interleaved per group of 32 (only the LUT kernel uses it).

BENCH_AVX512 float hsum512(__m512 v) {
  const __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
  return _mm_cvtss_f32(s);
}

BENCH_AVX2 float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
  return _mm_cvtss_f32(s);
}

// The library's int4 unpack: 16 bytes -> two vectors of 16 signed bytes in element order.
BENCH_AVX2 void unpack_int4(const uint8_t* p, __m128i* first16, __m128i* last16) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i mask = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
  const __m128i lo = _mm_and_si128(b, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
  *first16 = _mm_sub_epi8(_mm_unpacklo_epi8(lo, hi), eight);
  *last16 = _mm_sub_epi8(_mm_unpackhi_epi8(lo, hi), eight);
}

// The 4-accumulator kernels spell out their four chains: with `__m512 s[4]` and a loop over
// it, GCC 12 -O2 keeps the accumulators on the stack (a store-to-load round trip per FMA).

BENCH_AVX512 __m512 bf16x16(const uint16_t* h) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h))), 16));
}

BENCH_AVX512 float bf16_avx512_4acc(const WeightView& w, size_t row, const float* x, const float*) {
  const auto* h = reinterpret_cast<const uint16_t*>(row_ptr(w, row));
  const size_t n = w.cols;
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_fmadd_ps(bf16x16(h + i), _mm512_loadu_ps(x + i), s0);
    s1 = _mm512_fmadd_ps(bf16x16(h + i + 16), _mm512_loadu_ps(x + i + 16), s1);
    s2 = _mm512_fmadd_ps(bf16x16(h + i + 32), _mm512_loadu_ps(x + i + 32), s2);
    s3 = _mm512_fmadd_ps(bf16x16(h + i + 48), _mm512_loadu_ps(x + i + 48), s3);
  }
  float r = hsum512(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  for (; i < n; ++i) r += bf16_to_f32(h[i]) * x[i];
  return r;
}

BENCH_AVX512 __m512 i8x16(const int8_t* q) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q))));
}

BENCH_AVX512 float int8_avx512_4acc(const WeightView& w, size_t row, const float* x, const float*) {
  const auto* q = reinterpret_cast<const int8_t*>(row_ptr(w, row));
  const size_t n = w.cols;
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_fmadd_ps(i8x16(q + i), _mm512_loadu_ps(x + i), s0);
    s1 = _mm512_fmadd_ps(i8x16(q + i + 16), _mm512_loadu_ps(x + i + 16), s1);
    s2 = _mm512_fmadd_ps(i8x16(q + i + 32), _mm512_loadu_ps(x + i + 32), s2);
    s3 = _mm512_fmadd_ps(i8x16(q + i + 48), _mm512_loadu_ps(x + i + 48), s3);
  }
  float r = hsum512(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  for (; i < n; ++i) r += static_cast<float>(q[i]) * x[i];
  return r * w.scales[row];
}

// One int4 group (32 values) times its scale, added to acc: the library's arithmetic.
BENCH_AVX512 __m512 int4_group_avx512(const uint8_t* p, const float* xg, float scale, __m512 acc) {
  __m128i a16, b16;
  unpack_int4(p, &a16, &b16);
  __m512 gs = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(a16)), _mm512_loadu_ps(xg));
  gs = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b16)), _mm512_loadu_ps(xg + 16), gs);
  return _mm512_fmadd_ps(gs, _mm512_set1_ps(scale), acc);
}

BENCH_AVX512 float int4_avx512_4acc(const WeightView& w, size_t row, const float* x, const float*) {
  const uint8_t* p = row_ptr(w, row);
  const size_t n = w.cols, groups = int4_groups(n), full = n / kInt4Group;
  const float* sc = w.scales + row * groups;
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
  size_t g = 0;
  for (; g + 4 <= full; g += 4) {
    a0 = int4_group_avx512(p + g * 16, x + g * 32, sc[g], a0);
    a1 = int4_group_avx512(p + g * 16 + 16, x + g * 32 + 32, sc[g + 1], a1);
    a2 = int4_group_avx512(p + g * 16 + 32, x + g * 32 + 64, sc[g + 2], a2);
    a3 = int4_group_avx512(p + g * 16 + 48, x + g * 32 + 96, sc[g + 3], a3);
  }
  for (; g < full; ++g) a0 = int4_group_avx512(p + g * 16, x + g * 32, sc[g], a0);
  float s = hsum512(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  if (full < groups) s += int4_tail(p, x, full * kInt4Group, n) * sc[full];
  return s;
}

// One int4 group through the 16-entry table; xg is the group's x de-interleaved.
BENCH_AVX512 __m512 int4_group_lut(const uint8_t* p, const float* xg, float scale, __m512 lut, __m512 acc) {
  // Byte j of the group holds element 2j (low nibble) and 2j + 1 (high nibble); vpermps looks
  // at the low 4 bits of each index only.
  const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m512 even = _mm512_permutexvar_ps(b, lut);
  const __m512 odd = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), lut);
  const __m512 gs = _mm512_fmadd_ps(odd, _mm512_loadu_ps(xg + 16), _mm512_mul_ps(even, _mm512_loadu_ps(xg)));
  return _mm512_fmadd_ps(gs, _mm512_set1_ps(scale), acc);
}

BENCH_AVX512 float int4_avx512_lut(const WeightView& w, size_t row, const float* x, const float* xd) {
  const uint8_t* p = row_ptr(w, row);
  const size_t n = w.cols, groups = int4_groups(n), full = n / kInt4Group;
  const float* sc = w.scales + row * groups;
  const __m512 lut = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
  size_t g = 0;
  for (; g + 4 <= full; g += 4) {
    a0 = int4_group_lut(p + g * 16, xd + g * 32, sc[g], lut, a0);
    a1 = int4_group_lut(p + g * 16 + 16, xd + g * 32 + 32, sc[g + 1], lut, a1);
    a2 = int4_group_lut(p + g * 16 + 32, xd + g * 32 + 64, sc[g + 2], lut, a2);
    a3 = int4_group_lut(p + g * 16 + 48, xd + g * 32 + 96, sc[g + 3], lut, a3);
  }
  for (; g < full; ++g) a0 = int4_group_lut(p + g * 16, xd + g * 32, sc[g], lut, a0);
  float s = hsum512(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  if (full < groups) s += int4_tail(p, x, full * kInt4Group, n) * sc[full];
  return s;
}

BENCH_AVX2 __m256 bf16x8(const uint16_t* h) {
  return _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h))), 16));
}

BENCH_AVX2 float bf16_avx2_4acc(const WeightView& w, size_t row, const float* x, const float*) {
  const auto* h = reinterpret_cast<const uint16_t*>(row_ptr(w, row));
  const size_t n = w.cols;
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(bf16x8(h + i), _mm256_loadu_ps(x + i), s0);
    s1 = _mm256_fmadd_ps(bf16x8(h + i + 8), _mm256_loadu_ps(x + i + 8), s1);
    s2 = _mm256_fmadd_ps(bf16x8(h + i + 16), _mm256_loadu_ps(x + i + 16), s2);
    s3 = _mm256_fmadd_ps(bf16x8(h + i + 24), _mm256_loadu_ps(x + i + 24), s3);
  }
  float r = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; ++i) r += bf16_to_f32(h[i]) * x[i];
  return r;
}

BENCH_AVX2 __m256 i8x8(const int8_t* q) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q))));
}

BENCH_AVX2 float int8_avx2_4acc(const WeightView& w, size_t row, const float* x, const float*) {
  const auto* q = reinterpret_cast<const int8_t*>(row_ptr(w, row));
  const size_t n = w.cols;
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(i8x8(q + i), _mm256_loadu_ps(x + i), s0);
    s1 = _mm256_fmadd_ps(i8x8(q + i + 8), _mm256_loadu_ps(x + i + 8), s1);
    s2 = _mm256_fmadd_ps(i8x8(q + i + 16), _mm256_loadu_ps(x + i + 16), s2);
    s3 = _mm256_fmadd_ps(i8x8(q + i + 24), _mm256_loadu_ps(x + i + 24), s3);
  }
  float r = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; ++i) r += static_cast<float>(q[i]) * x[i];
  return r * w.scales[row];
}

BENCH_AVX2 __m256 int4_group_avx2(const uint8_t* p, const float* xg, float scale, __m256 acc) {
  __m128i a16, b16;
  unpack_int4(p, &a16, &b16);
  __m256 gs = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(a16)), _mm256_loadu_ps(xg));
  gs = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(a16, 8))), _mm256_loadu_ps(xg + 8), gs);
  gs = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b16)), _mm256_loadu_ps(xg + 16), gs);
  gs = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b16, 8))), _mm256_loadu_ps(xg + 24), gs);
  return _mm256_fmadd_ps(gs, _mm256_set1_ps(scale), acc);
}

BENCH_AVX2 float int4_avx2_4acc(const WeightView& w, size_t row, const float* x, const float*) {
  const uint8_t* p = row_ptr(w, row);
  const size_t n = w.cols, groups = int4_groups(n), full = n / kInt4Group;
  const float* sc = w.scales + row * groups;
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  size_t g = 0;
  for (; g + 4 <= full; g += 4) {
    a0 = int4_group_avx2(p + g * 16, x + g * 32, sc[g], a0);
    a1 = int4_group_avx2(p + g * 16 + 16, x + g * 32 + 32, sc[g + 1], a1);
    a2 = int4_group_avx2(p + g * 16 + 32, x + g * 32 + 64, sc[g + 2], a2);
    a3 = int4_group_avx2(p + g * 16 + 48, x + g * 32 + 96, sc[g + 3], a3);
  }
  for (; g < full; ++g) a0 = int4_group_avx2(p + g * 16, x + g * 32, sc[g], a0);
  float s = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  if (full < groups) s += int4_tail(p, x, full * kInt4Group, n) * sc[full];
  return s;
}

// x quantised for the VNNI kernel: per group of 32 values, int8 with one f32 scale (as
// llama.cpp's Q8_0 activations), laid out per block of 4 groups as the 64 even-index values
// then the 64 odd-index values (the low and high nibbles of the block's 64 weight bytes), and
// per 32-bit lane of a block (4 lanes per group): the x scale and 2 x the group's sum of
// quantised values (the weights' +8 nibble offset, spread over the group's 4 lanes).
struct Q8x {
  std::vector<int8_t> q;    // [blocks * 128]
  std::vector<float> lane_scale, lane_offset;  // [blocks * 16]
  size_t blocks = 0;        // full blocks of 4 groups
};

void quantize_x_q8(const float* x, size_t n, Q8x* out) {
  const size_t full = n / kInt4Group;
  out->blocks = full / 4;
  out->q.assign(out->blocks * 128, 0);
  out->lane_scale.assign(out->blocks * 16, 0.0f);
  out->lane_offset.assign(out->blocks * 16, 0.0f);
  for (size_t g = 0; g < out->blocks * 4; ++g) {
    const float* xg = x + g * kInt4Group;
    float amax = 0;
    for (size_t i = 0; i < 32; ++i) amax = std::max(amax, std::abs(xg[i]));
    const float scale = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
    const size_t blk = g / 4, j = g % 4;
    int sum = 0;
    for (size_t i = 0; i < 16; ++i) {
      const auto e = static_cast<int8_t>(std::lrintf(xg[2 * i] * inv));
      const auto o = static_cast<int8_t>(std::lrintf(xg[2 * i + 1] * inv));
      out->q[blk * 128 + j * 16 + i] = e;
      out->q[blk * 128 + 64 + j * 16 + i] = o;
      sum += e + o;
    }
    for (size_t l = 0; l < 4; ++l) {
      out->lane_scale[blk * 16 + j * 4 + l] = scale;
      out->lane_offset[blk * 16 + j * 4 + l] = 2.0f * static_cast<float>(sum);
    }
  }
}

#define BENCH_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

// Four int4 groups (64 bytes) against the quantised x with vpdpbusd: nibbles (0..15) x int8,
// 4 products summed per 32-bit lane, 4 lanes per group; then per lane (sum - offset) x
// weight scale x x scale into the float accumulator.
BENCH_VNNI __m512 int4_block_vnni(const uint8_t* p, const float* sc, const Q8x& xq, size_t blk, __m512 acc) {
  const __m512i mask = _mm512_set1_epi8(0x0f);
  const __m512i lane_group = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  const __m512i b = _mm512_loadu_si512(p);
  const __m512i lo = _mm512_and_si512(b, mask), hi = _mm512_and_si512(_mm512_srli_epi16(b, 4), mask);
  __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(xq.q.data() + blk * 128));
  d = _mm512_dpbusd_epi32(d, hi, _mm512_loadu_si512(xq.q.data() + blk * 128 + 64));
  const __m512 ws = _mm512_permutexvar_ps(lane_group, _mm512_castps128_ps512(_mm_loadu_ps(sc)));
  const __m512 s = _mm512_mul_ps(ws, _mm512_loadu_ps(xq.lane_scale.data() + blk * 16));
  return _mm512_fmadd_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(d), _mm512_loadu_ps(xq.lane_offset.data() + blk * 16)), s,
                         acc);
}

BENCH_VNNI float int4_vnni_q8(const WeightView& w, size_t row, const float* x, const Q8x& xq) {
  const uint8_t* p = row_ptr(w, row);
  const size_t n = w.cols, groups = int4_groups(n);
  const float* sc = w.scales + row * groups;
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  size_t blk = 0;
  for (; blk + 2 <= xq.blocks; blk += 2) {
    a0 = int4_block_vnni(p + blk * 64, sc + blk * 4, xq, blk, a0);
    a1 = int4_block_vnni(p + blk * 64 + 64, sc + blk * 4 + 4, xq, blk + 1, a1);
  }
  for (; blk < xq.blocks; ++blk) a0 = int4_block_vnni(p + blk * 64, sc + blk * 4, xq, blk, a0);
  float s = hsum512(_mm512_add_ps(a0, a1));
  for (size_t g = xq.blocks * 4; g < groups; ++g)  // the rest in f32, as the library does
    s += int4_tail(p, x, g * kInt4Group, std::min(n, (g + 1) * kInt4Group)) * sc[g];
  return s;
}

// The library's own row dot product (cpu_row_dot), for running it under another schedule.
float library_avx512_dot(const WeightView& w, size_t row, const float* x, const float*) {
  return cpu_row_dot(CpuIsa::kAvx512, w, row, x);
}

// ---------------------------------------------------------------------------------------
// Kernels under test: a decode matmul y = W x.

using RowDot = float (*)(const WeightView&, size_t, const float*, const float*);

struct Kernel {
  std::string name;
  std::string kind;  // "library" | "candidate"
  CpuIsa isa = CpuIsa::kScalar;
  RowDot dot = nullptr;        // candidates
  bool deinterleave = false;   // candidates that take x de-interleaved per int4 group
  bool q8 = false;             // the VNNI candidate: x quantised to int8 per group (int4_vnni_q8)
  bool dynamic = false;        // OpenMP schedule(dynamic, 64) over rows instead of static
  std::vector<DType> dtypes;   // candidates: the dtypes they implement
};

// x de-interleaved per group of 32: [x0, x2, ..., x30, x1, x3, ..., x31], then the next group;
// a partial last group is copied as is (the kernels do it with the scalar tail on x).
void deinterleave_x(const float* x, size_t n, std::vector<float>* xd) {
  xd->assign(x, x + n);
  const size_t full = n / kInt4Group;
  for (size_t g = 0; g < full; ++g)
    for (size_t i = 0; i < 16; ++i) {
      (*xd)[g * 32 + i] = x[g * 32 + 2 * i];
      (*xd)[g * 32 + 16 + i] = x[g * 32 + 2 * i + 1];
    }
}

// One matmul with one token, `threads` threads; the library through CpuBackend::matmul.
class Runner {
 public:
  Runner(const Kernel& k, int threads) : k_(k), threads_(threads), be_(k.isa, threads) {}
  // One matmul: prepare x (candidates that transform it), then the rows.
  void operator()(const WeightView& w, const float* x, float* y) {
    prepare(x, w.cols);
    rows(w, x, y);
  }
  // The per-matmul transformation of x (de-interleave, int8 quantisation); nothing for the
  // library and most candidates. It depends on x only, so a real decode would do it once per
  // activation vector and share it between the matmuls that read it (q/k/v, gate/up).
  void prepare(const float* x, size_t cols) {
    if (k_.q8) quantize_x_q8(x, cols, &xq_);
    if (k_.deinterleave) deinterleave_x(x, cols, &xd_);
  }
  void rows(const WeightView& w, const float* x, float* y) {
    if (k_.kind == "library") {
      be_.matmul(w, x, 1, y);
      return;
    }
    const auto n_rows = static_cast<long>(w.rows);
    if (k_.q8) {
#pragma omp parallel for num_threads(threads_) schedule(static) if (threads_ > 1)
      for (long r = 0; r < n_rows; ++r) y[r] = int4_vnni_q8(w, static_cast<size_t>(r), x, xq_);
      return;
    }
    const float* xd = k_.deinterleave ? xd_.data() : x;
    const RowDot dot = k_.dot;
    if (k_.dynamic) {
#pragma omp parallel for num_threads(threads_) schedule(dynamic, 64) if (threads_ > 1)
      for (long r = 0; r < n_rows; ++r) y[r] = dot(w, static_cast<size_t>(r), x, xd);
      return;
    }
#pragma omp parallel for num_threads(threads_) schedule(static) if (threads_ > 1)
    for (long r = 0; r < n_rows; ++r) y[r] = dot(w, static_cast<size_t>(r), x, xd);
  }

 private:
  const Kernel& k_;
  int threads_;
  CpuBackend be_;
  std::vector<float> xd_;
  Q8x xq_;
};

struct Row {
  std::string kernel, kind;
  DType dtype = DType::kBF16;
  size_t cols = 0;
  double l2_bytes = 0, mem_bytes = 0;
  size_t mem_rows = 0;
  int threads = 1;
  Stats l2, mem;
  Paired paired;
  double rel_err = 0;
  double l2_GBps() const { return bandwidth(l2, l2_bytes).best; }
  double mem_GBps() const { return bandwidth(mem, mem_bytes).best; }
};

struct Options {
  size_t cols = 2048;
  uint64_t mem_mib = 256;
  std::vector<DType> dtypes{DType::kBF16, DType::kInt8, DType::kInt4};
  std::string dtypes_s = "bf16,int8,int4";
  int threads = 1, iters = 5, warmup = 1;
  uint64_t seed = 1234;
  std::string json_path;
};

std::vector<Kernel> kernels() {
  std::vector<Kernel> v;
  const CpuIsa best = detect_cpu_isa();
  v.push_back({"library scalar", "library", CpuIsa::kScalar, nullptr, false, false, false, {}});
  if (best >= CpuIsa::kAvx2) {
    v.push_back({"library avx2", "library", CpuIsa::kAvx2, nullptr, false, false, false, {}});
    v.push_back({"avx2-4acc", "candidate", CpuIsa::kAvx2, bf16_avx2_4acc, false, false, false, {DType::kBF16}});
    v.push_back({"avx2-4acc", "candidate", CpuIsa::kAvx2, int8_avx2_4acc, false, false, false, {DType::kInt8}});
    v.push_back({"avx2-4acc", "candidate", CpuIsa::kAvx2, int4_avx2_4acc, false, false, false, {DType::kInt4}});
  }
  if (best >= CpuIsa::kAvx512) {
    v.push_back({"library avx512", "library", CpuIsa::kAvx512, nullptr, false, false, false, {}});
    v.push_back({"lib avx512 dyn64", "candidate", CpuIsa::kAvx512, library_avx512_dot, false, false, true,
                 {DType::kF32, DType::kBF16, DType::kF16, DType::kInt8, DType::kInt4}});
    v.push_back({"avx512-4acc", "candidate", CpuIsa::kAvx512, bf16_avx512_4acc, false, false, false, {DType::kBF16}});
    v.push_back({"avx512-4acc", "candidate", CpuIsa::kAvx512, int8_avx512_4acc, false, false, false, {DType::kInt8}});
    v.push_back({"avx512-4acc", "candidate", CpuIsa::kAvx512, int4_avx512_4acc, false, false, false, {DType::kInt4}});
    v.push_back({"avx512-lut", "candidate", CpuIsa::kAvx512, int4_avx512_lut, true, false, false, {DType::kInt4}});
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512vnni"))
      v.push_back({"vnni-q8x", "candidate", CpuIsa::kAvx512, nullptr, false, true, false, {DType::kInt4}});
  }
  return v;
}

std::vector<Row> run_all(const Options& o) {
  std::vector<Row> out;
  const std::vector<Kernel> ks = kernels();
  for (const DType d : o.dtypes) {
    const double row_bytes = static_cast<double>(WeightView{d, 1, o.cols, nullptr, nullptr}.bytes());
    const auto mem_rows = static_cast<size_t>(static_cast<double>(o.mem_mib * kMiB) / row_bytes);
    const auto l2_rows = std::max<size_t>(1, static_cast<size_t>(256.0 * 1024 / row_bytes));
    const TestMatrix big(d, mem_rows, o.cols, o.seed), small(d, l2_rows, o.cols, o.seed);
    std::vector<float> x(o.cols);
    for (size_t i = 0; i < o.cols; ++i) x[i] = std::sin(static_cast<float>(i) * 0.37f);
    // The reference: the library's best ISA.
    std::vector<float> ref(mem_rows), y(mem_rows);
    CpuBackend(detect_cpu_isa(), o.threads).matmul(big.view, x.data(), 1, ref.data());
    float ref_max = 0;
    for (float v : ref) ref_max = std::max(ref_max, std::abs(v));
    std::vector<const Kernel*> active;
    for (const Kernel& k : ks)
      if (k.kind == "library" || std::find(k.dtypes.begin(), k.dtypes.end(), d) != k.dtypes.end()) active.push_back(&k);
    // L2, one thread: each timed iteration runs as many matmuls as fill ~20 ms. The kernels take
    // turns within every iteration (A, B, C, A, B, C, ...), so a slow phase of the machine
    // (a busy SMT sibling on the host) hits all of them alike. x is prepared once: the rows are
    // what is measured here; the memory test below includes the preparation.
    std::vector<std::unique_ptr<Runner>> l2_runs;
    std::vector<int> reps;
    std::vector<std::vector<double>> l2_t(active.size());
    std::vector<float> ys(l2_rows);
    for (const Kernel* k : active) {
      l2_runs.push_back(std::make_unique<Runner>(*k, 1));
      Runner& run1 = *l2_runs.back();
      run1.prepare(x.data(), o.cols);
      const auto t0 = Clock::now();
      int n = 0;
      while (since(t0) < 0.005 || n < 4) {
        run1.rows(small.view, x.data(), ys.data());
        ++n;
      }
      reps.push_back(std::max(4, static_cast<int>(n * 0.020 / since(t0))));
    }
    for (int it = 0; it < o.warmup + o.iters; ++it)
      for (size_t i = 0; i < active.size(); ++i) {
        const auto t1 = Clock::now();
        for (int r = 0; r < reps[i]; ++r) l2_runs[i]->rows(small.view, x.data(), ys.data());
        if (it >= o.warmup) l2_t[i].push_back(since(t1));
      }
    for (size_t ki = 0; ki < active.size(); ++ki) {
      const Kernel& k = *active[ki];
      Row row;
      row.kernel = k.name;
      row.kind = k.kind;
      row.dtype = d;
      row.cols = o.cols;
      row.threads = o.threads;
      row.mem_rows = mem_rows;
      row.l2_bytes = static_cast<double>(small.view.bytes()) * reps[ki];
      row.l2 = summarize(l2_t[ki]);
      // From memory, N threads, each matmul followed by read probes over the same bytes.
      {
        Runner run(k, o.threads);
        row.mem_bytes = static_cast<double>(big.view.bytes());
        int calls = 0;
        row.mem = repeat(o.warmup, o.iters, [&] {
          const bool timed = calls++ >= o.warmup;
          const auto t0 = Clock::now();
          run(big.view, x.data(), y.data());
          const double t = since(t0);
          const double db = static_cast<double>(big.data_bytes());
          const double ts = read_probe(big.data->data(), big.data_bytes(), o.threads, false);
          const double tw = read_probe(big.data->data(), big.data_bytes(), o.threads, true);
          if (timed) row.paired.add(row.mem_bytes / t / kGB, db / ts / kGB, db / tw / kGB);
          return t;
        });
      }
      float err = 0;
      for (size_t i = 0; i < mem_rows; ++i) err = std::max(err, std::abs(y[i] - ref[i]));
      row.rel_err = ref_max > 0 ? err / ref_max : 0;
      out.push_back(row);
      std::fprintf(stderr, ".");
    }
  }
  std::fprintf(stderr, "\n");
  return out;
}

bool parse_options(int argc, char** argv, Options* o) {
  int threads = 0;
  po::options_description d("options");
  d.add_options()("help,h", "show this help")("cols", po::value(&o->cols)->default_value(o->cols),
                                               "row length (the model's hidden size: olmoe/qwen3 2048, mixtral 4096)")(
      "mem-mib", po::value(&o->mem_mib)->default_value(o->mem_mib), "size of the matrix read from memory (MiB)")(
      "dtypes", po::value(&o->dtypes_s)->default_value(o->dtypes_s), "comma-separated: f32|bf16|f16|int8|int4")(
      "threads", po::value(&threads)->default_value(0), "threads of the matmul from memory (0: all cores)")(
      "iters", po::value(&o->iters)->default_value(o->iters), "timed iterations")(
      "warmup", po::value(&o->warmup)->default_value(o->warmup), "untimed iterations before them")(
      "seed", po::value(&o->seed)->default_value(o->seed), "seed of the test matrices")(
      "json", po::value(&o->json_path), "also write the results to this JSON file");
  if (!parse_bench_options(argc, argv, d, kName, "[options]",
                           "Times the CPU backend's one-token matmul per ISA and candidate kernels, in L2 (compute ceiling)\n"
                           "and from memory next to a paired read-only sum over the same bytes."))
    return false;
  o->dtypes = parse_dtype_list(o->dtypes_s);
  if (o->cols < 32) throw UsageError("--cols must be >= 32");
  if (o->mem_mib < 16) throw UsageError("--mem-mib must be >= 16");
  if (threads < 0) throw UsageError("--threads must be >= 0");
  o->threads = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (o->iters < 1) throw UsageError("--iters must be >= 1");
  if (o->warmup < 0) throw UsageError("--warmup must be >= 0");
  return true;
}

int run(const Options& o, const std::string& command_line) {
  const auto t_start = Clock::now();
  const CpuSnapshot cpu_start = cpu_snapshot();
  const Machine m = probe_machine(".");
  std::printf("# %s %s: one-token matmul over rows of %zu, dtypes %s; %d threads from memory; %d timed iterations "
              "after %d warm-up\n",
              kName, ODMOE_VERSION, o.cols, o.dtypes_s.c_str(), o.threads, o.iters, o.warmup);
  std::printf("# command: %s\n", command_line.c_str());
  std::printf("# machine: %s\n", describe_machine(m).c_str());
  std::fflush(stdout);
  const std::vector<Row> rows = run_all(o);

  std::printf("#\n# L2: 1 thread over a ~256 KiB matrix (compute ceiling per core); memory: %d threads over a %s matrix,\n"
              "#   each matmul followed by read-only sums over the same bytes with the same threads (paired; median).\n"
              "#   GB/s = stored weight bytes (data + scales) / time. err = max |y - y_library| / max |y_library| "
              "against library %s\n",
              o.threads, human_bytes(static_cast<double>(o.mem_mib * kMiB)).c_str(), cpu_isa_name(detect_cpu_isa()));
  std::printf("#  %-5s %-16s %9s %9s %10s %10s %10s %10s %9s %9s %9s\n", "dtype", "kernel", "L2 GB/s", "x cores",
              "mem best", "mem avg", "mem worst", "read GB/s", "% read", "% wide", "err");
  for (const Row& r : rows) {
    const Bandwidth b = bandwidth(r.mem, r.mem_bytes);
    std::printf("   %-5s %-16s %9.2f %9.2f %10.2f %10.2f %10.2f %10.2f %9s %9s %9.1e\n", dtype_name(r.dtype),
                r.kernel.c_str(), r.l2_GBps(), r.l2_GBps() * r.threads, b.best, b.avg, b.worst, r.paired.sum_p50(),
                pct(r.paired.ratio_sum(), 1).c_str(), pct(r.paired.ratio_wide(), 1).c_str(), r.rel_err);
  }
  std::printf("#  x cores: the L2 figure x %d: above the read GB/s, the kernel can keep up with memory; below, it is "
              "compute-bound\n#  read GB/s: the paired read-only sum (SSE2 loads); %% read, %% wide: median over the "
              "iterations of matmul GB/s / paired read GB/s,\n#  with the read-only sum and with the %s one\n",
              o.threads, sum_words_wide_isa());
  json out = finish_run(kName, command_line, t_start, &cpu_start, m);
  if (!o.json_path.empty()) {
    json dts = json::array();
    for (const DType dt : o.dtypes) dts.push_back(dtype_name(dt));
    out["options"] = {{"cols", o.cols},       {"mem_mib", o.mem_mib}, {"dtypes", dts},     {"threads", o.threads},
                      {"iters", o.iters},     {"warmup", o.warmup},   {"seed", o.seed}};
    json jr = json::array();
    for (const Row& r : rows)
      jr.push_back({{"dtype", dtype_name(r.dtype)},
                    {"kernel", r.kernel},
                    {"kind", r.kind},
                    {"cols", r.cols},
                    {"l2_1_thread", bandwidth_json(r.l2, r.l2_bytes)},
                    {"memory", bandwidth_json(r.mem, r.mem_bytes)},
                    {"memory_rows", r.mem_rows},
                    {"threads", r.threads},
                    {"paired_read", r.paired.to_json()},
                    {"max_rel_error_vs_library", r.rel_err}});
    out["rows"] = jr;
    write_json(o.json_path, out);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return bench_main<Options>(kName, argc, argv, parse_options, run); }
