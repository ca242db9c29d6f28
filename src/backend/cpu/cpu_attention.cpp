// Causal attention over a head-major KV cache (attention_f32, cpu_kernels.h): the plan of the
// work and the scalar kernel. The work is split into jobs of (KV head, block of query tokens,
// range of keys): one job's query rows are every query head of the KV group for each token of
// the block, so each K and V row it reads serves all of them (GQA and prefill reuse). Decode of
// a model with few KV heads also splits the keys, so that every thread has a job; the pieces'
// running maxima and sums are merged at the end (as flash-decoding does). The per-ISA kernels
// (cpu_attention_avx2.cpp, cpu_attention_avx512.cpp) are the same algorithm over wider vectors
// (cpu_attention_impl.inc).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu_kernels.h"
#include "odmoe/core/error.h"

#define ATT_TARGET
#define ATT_PART_NAME attention_part_scalar

namespace odmoe::cpu {
namespace {

// One f32 lane: the arithmetic of the vector kernels with std::exp.
struct Vec {
  using T = float;
  static constexpr int kW = 1;
  static constexpr int kQkRows = 2, kQkKeys = 4;  // q·k tile: 8 accumulators
  static constexpr int kPvRows = 4, kPvCols = 4;  // P·V tile: 16 accumulators
  static T zero() { return 0; }
  static T set1(float x) { return x; }
  static T load(const float* p) { return *p; }
  static T loadn(const float* p, int n) { return n > 0 ? *p : 0.0f; }
  static void store(float* p, T x) { *p = x; }
  static T add(T a, T b) { return a + b; }
  static T sub(T a, T b) { return a - b; }
  static T mul(T a, T b) { return a * b; }
  static T max(T a, T b) { return std::max(a, b); }
  static T fma(T a, T b, T c) { return std::fma(a, b, c); }
  static float hsum(T x) { return x; }
  static float hmax(T x) { return x; }
  static T exp(T x) { return std::exp(x); }
};

}  // namespace

#include "cpu_attention_impl.inc"
#undef ATT_PART_NAME
#undef ATT_TARGET

namespace {

using PartFn = void (*)(const AttentionPart&);

PartFn part_for(CpuIsa isa) {
#if defined(__x86_64__)
  if (isa == CpuIsa::kAvx512) return attention_part_avx512;
  if (isa == CpuIsa::kAvx2) return attention_part_avx2;
#endif
  (void)isa;
  return attention_part_scalar;
}

constexpr int kRowsPerJob = 16;      // query rows (tokens x heads of a group) that share K/V reads
constexpr int kMinSplitKeys = 256;   // fewest keys of one piece when decode splits the keys

// The work of one call, and where job `job` reads and writes.
struct Plan {
  const float* q;
  const float* k;
  const float* v;
  float* out;
  size_t n, n_ctx;
  int pos0, n_head, n_head_kv, hd, hd_pad, window, group;
  float scale;
  int tokens_per_job = 1, n_token_blocks = 1, n_split = 1, split_keys = 0;
  int rows_per_job() const { return tokens_per_job * group; }
  int n_jobs() const { return n_head_kv * n_token_blocks * n_split; }
  int first_key(int pos) const { return window > 0 ? std::max(0, pos - window + 1) : 0; }
};

// Scratch of one thread, sized for the largest job.
struct Scratch {
  std::vector<float> q, o, m, l, scores;
  std::vector<int> first, last;
  explicit Scratch(const Plan& p) {
    const size_t rows = static_cast<size_t>(p.rows_per_job());
    q.assign(rows * static_cast<size_t>(p.hd_pad), 0.0f);
    o.resize(rows * static_cast<size_t>(p.hd_pad));
    m.resize(rows);
    l.resize(rows);
    scores.resize(rows * kAttnKeyBlock);
    first.resize(rows);
    last.resize(rows);
  }
};

// Runs job `job`; with one piece per (KV head, token block) writes `out`, else the piece's
// o [rows][hd_pad], m, l into the partial arrays at the job's index.
void run_job(const Plan& p, PartFn part, int job, Scratch* s, float* part_o, float* part_ml) {
  const int split = job % p.n_split, tb = (job / p.n_split) % p.n_token_blocks;
  const int kvh = job / (p.n_split * p.n_token_blocks);
  const size_t t0 = static_cast<size_t>(tb) * static_cast<size_t>(p.tokens_per_job);
  const size_t t1 = std::min(p.n, t0 + static_cast<size_t>(p.tokens_per_job));
  const int n_rows = static_cast<int>(t1 - t0) * p.group;
  const size_t hd = static_cast<size_t>(p.hd), hd_pad = static_cast<size_t>(p.hd_pad);
  for (size_t t = t0; t < t1; ++t) {
    const int pos = p.pos0 + static_cast<int>(t);
    for (int g = 0; g < p.group; ++g) {
      const size_t r = (t - t0) * static_cast<size_t>(p.group) + static_cast<size_t>(g);
      const float* src = p.q + (t * static_cast<size_t>(p.n_head) + static_cast<size_t>(kvh * p.group + g)) * hd;
      for (size_t c = 0; c < hd; ++c) s->q[r * hd_pad + c] = src[c] * p.scale;
      s->first[r] = p.first_key(pos);
      s->last[r] = pos;
    }
  }
  AttentionPart a;
  a.q = s->q.data();
  a.k = p.k + static_cast<size_t>(kvh) * p.n_ctx * hd;
  a.v = p.v + static_cast<size_t>(kvh) * p.n_ctx * hd;
  a.first = s->first.data();
  a.last = s->last.data();
  a.n_rows = n_rows;
  a.hd = p.hd;
  a.hd_pad = p.hd_pad;
  a.k_begin = p.first_key(p.pos0 + static_cast<int>(t0));
  a.k_end = p.pos0 + static_cast<int>(t1);
  if (p.n_split > 1) {
    a.k_begin = std::max(a.k_begin, split * p.split_keys);
    a.k_end = std::min(a.k_end, (split + 1) * p.split_keys);
  }
  a.scores = s->scores.data();
  const size_t rows_max = static_cast<size_t>(p.rows_per_job());
  a.o = p.n_split > 1 ? part_o + static_cast<size_t>(job) * rows_max * hd_pad : s->o.data();
  a.m = p.n_split > 1 ? part_ml + static_cast<size_t>(job) * 2 * rows_max : s->m.data();
  a.l = p.n_split > 1 ? a.m + rows_max : s->l.data();
  a.k_end = std::max(a.k_end, a.k_begin);
  part(a);
  if (p.n_split > 1) return;
  for (size_t t = t0; t < t1; ++t) {
    for (int g = 0; g < p.group; ++g) {
      const size_t r = (t - t0) * static_cast<size_t>(p.group) + static_cast<size_t>(g);
      float* dst = p.out + (t * static_cast<size_t>(p.n_head) + static_cast<size_t>(kvh * p.group + g)) * hd;
      const float inv = 1.0f / a.l[r];  // l >= 1: the row's largest score contributes exp(0)
      for (size_t c = 0; c < hd; ++c) dst[c] = a.o[r * hd_pad + c] * inv;
    }
  }
}

// Merges the key pieces of (KV head, token block) `kb` (n_split == 1 pieces): the pieces' sums
// rescaled to the largest maximum, then normalised into `out`.
void merge_pieces(const Plan& p, int kb, const float* part_o, const float* part_ml) {
  const int tb = kb % p.n_token_blocks, kvh = kb / p.n_token_blocks;
  const size_t rows_max = static_cast<size_t>(p.rows_per_job()), hd = static_cast<size_t>(p.hd);
  const size_t hd_pad = static_cast<size_t>(p.hd_pad);
  const size_t t0 = static_cast<size_t>(tb) * static_cast<size_t>(p.tokens_per_job);
  const size_t t1 = std::min(p.n, t0 + static_cast<size_t>(p.tokens_per_job));
  for (size_t t = t0; t < t1; ++t) {
    for (int g = 0; g < p.group; ++g) {
      const size_t r = (t - t0) * static_cast<size_t>(p.group) + static_cast<size_t>(g);
      float m = -std::numeric_limits<float>::infinity();
      for (int sp = 0; sp < p.n_split; ++sp) m = std::max(m, part_ml[static_cast<size_t>(kb * p.n_split + sp) * 2 * rows_max + r]);
      float* dst = p.out + (t * static_cast<size_t>(p.n_head) + static_cast<size_t>(kvh * p.group + g)) * hd;
      std::fill(dst, dst + hd, 0.0f);
      float l = 0;
      for (int sp = 0; sp < p.n_split; ++sp) {
        const size_t job = static_cast<size_t>(kb * p.n_split + sp);
        const float m_s = part_ml[job * 2 * rows_max + r];
        if (m_s == -std::numeric_limits<float>::infinity()) continue;  // no visible key in the piece
        const float f = std::exp(m_s - m);
        l += part_ml[job * 2 * rows_max + rows_max + r] * f;
        const float* o = part_o + (job * rows_max + r) * hd_pad;
        for (size_t c = 0; c < hd; ++c) dst[c] += o[c] * f;
      }
      const float inv = 1.0f / l;
      for (size_t c = 0; c < hd; ++c) dst[c] *= inv;
    }
  }
}

}  // namespace

void attention_f32_isa(CpuIsa isa, const float* q, size_t n, int pos0, int n_head, int n_head_kv, int head_dim,
                       const float* k, const float* v, size_t n_ctx, int window, float scale, float* out,
                       int threads) {
  ODMOE_CHECK(n_head > 0 && n_head_kv > 0 && n_head % n_head_kv == 0 && head_dim > 0 && pos0 >= 0, kCore,
              "shape", "attention: n_head " << n_head << ", n_head_kv " << n_head_kv << ", head_dim " << head_dim
                                            << ", pos0 " << pos0,
              "n_head must be a positive multiple of n_head_kv");
  ODMOE_CHECK(static_cast<size_t>(pos0) + n <= n_ctx, kCore, "range",
              "attention: positions up to " << static_cast<size_t>(pos0) + n << " in a cache of " << n_ctx, "");
  if (n == 0) return;
  if (threads <= 0) threads = omp_get_max_threads();
  Plan p{q, k, v, out, n, n_ctx, pos0, n_head, n_head_kv, head_dim, 0, window, n_head / n_head_kv, scale};
  p.hd_pad = (head_dim + kAttnPad - 1) / kAttnPad * kAttnPad;
  p.tokens_per_job = std::max(1, kRowsPerJob / p.group);
  p.n_token_blocks = static_cast<int>((n + static_cast<size_t>(p.tokens_per_job) - 1) / static_cast<size_t>(p.tokens_per_job));
  const int n_keys = pos0 + static_cast<int>(n);
  const int jobs = n_head_kv * p.n_token_blocks;
  if (threads > 1 && jobs < threads && n_keys >= 2 * kMinSplitKeys) {
    // Fewer jobs than threads: cut the keys into pieces, each a whole number of key blocks.
    const int want = std::min((threads + jobs - 1) / jobs, n_keys / kMinSplitKeys);
    const int blocks = (n_keys + kAttnKeyBlock - 1) / kAttnKeyBlock;
    p.split_keys = (blocks + want - 1) / want * kAttnKeyBlock;
    p.n_split = (n_keys + p.split_keys - 1) / p.split_keys;
  }
  const PartFn part = part_for(std::min(isa, detect_cpu_isa()));
  const int n_jobs = p.n_jobs();
  std::vector<float> part_o, part_ml;
  if (p.n_split > 1) {
    part_o.resize(static_cast<size_t>(n_jobs) * static_cast<size_t>(p.rows_per_job()) * static_cast<size_t>(p.hd_pad));
    part_ml.resize(static_cast<size_t>(n_jobs) * 2 * static_cast<size_t>(p.rows_per_job()));
  }
#pragma omp parallel num_threads(threads) if (threads > 1 && n_jobs > 1)
  {
    Scratch s(p);
#pragma omp for schedule(dynamic, 1)
    for (int job = 0; job < n_jobs; ++job) run_job(p, part, job, &s, part_o.data(), part_ml.data());
    if (p.n_split > 1) {
#pragma omp for schedule(static)
      for (int kb = 0; kb < jobs; ++kb) merge_pieces(p, kb, part_o.data(), part_ml.data());
    }
  }
}

void attention_f32(const float* q, size_t n, int pos0, int n_head, int n_head_kv, int head_dim, const float* k,
                   const float* v, size_t n_ctx, int window, float scale, float* out, int threads) {
  attention_f32_isa(detect_cpu_isa(), q, n, pos0, n_head, n_head_kv, head_dim, k, v, n_ctx, window, scale, out,
                    threads);
}

}  // namespace odmoe::cpu
