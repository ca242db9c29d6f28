// AVX-512 VNNI integer row dot products: VPDPBUSD on 256-bit vectors (AVX512VL), which
// multiplies and sums 32 unsigned x signed byte pairs into 8 int32 lanes in one instruction.
// Compiled for any x86-64 with function target attributes; the backend calls them only when
// the CPU has AVX512-VNNI. The activations are quantised by quantize_x_avx2.
#if defined(__x86_64__)
#include <immintrin.h>

#include "cpu_kernels.h"

#define QDOT_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))

namespace odmoe::cpu {

#define QDOT_NAME qdot_avx512vnni
#define QDOT_I8(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (u), (s))
#define QDOT_I4(lo, hi, x0, x1) _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), (lo), (x0)), (hi), (x1))
#include "cpu_qdot_x86.inc"

}  // namespace odmoe::cpu
#endif  // __x86_64__
