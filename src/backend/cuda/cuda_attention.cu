// Attention over the head-major f32 KV cache [n_head_kv][n_ctx][head_dim], and the append
// that fills it. Semantics are the CPU attention's: GQA (query head h reads kv head
// h / (n_head / n_head_kv)), causal, optional sliding window, scores scaled before the
// softmax, f32 throughout.
//
// Decode (one token), "flash-decoding": the visible keys [start, pos] are cut into n_split
// chunks of `chunk` keys.
//   partial: grid (n_split, n_head_kv), 128 threads. A block takes one chunk for all `group`
//            query heads of its kv head (K/V rows are read once for the group): scores (a warp
//            per key, a lane per 32nd value of head_dim, warp-shuffle sum), then per head the
//            chunk's max m and sum l of exp(s - m) (a warp per head), then the unnormalised
//            acc[d] = sum exp(s - m) v[d] (a thread per (head, d)). Shared memory:
//            f32 q [group][head_dim] + p [group][chunk].
//   reduce:  grid n_head, 128 threads: out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M).
// Prefill (n tokens), tiled with an online softmax: grid (ceil(n / 8), n_head), 8 warps; warp
// w owns query token blockIdx.x * 8 + w of head blockIdx.y; the block walks the keys its
// queries can see in tiles of 32 rows of K and V staged in shared memory ([32][head_dim + 1]:
// the pad makes the per-lane key rows fall in distinct banks); lane j scores key j of the
// tile, then every lane adds the 32 weighted V rows to its own values of head_dim.
#include <cmath>

#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace odmoe::cuda {
namespace {

constexpr int kMaxHeadDim = 256;
constexpr int kMaxPerLane = kMaxHeadDim / kWarp;  // head_dim values a lane holds
constexpr int kDecodeWarps = 4;
constexpr int kDecodeThreads = kDecodeWarps * kWarp;
constexpr int kMaxChunk = 256;
constexpr int kTargetBlocks = 128;  // decode: enough blocks to fill an H100's SMs once
constexpr size_t kDefaultSmem = 48 * 1024;
constexpr int kPrefillWarps = 8;
constexpr int kKeyTile = kWarp;  // one key per lane

__device__ __host__ inline int window_start(int pos, int window) {
  return window > 0 ? (pos - window + 1 > 0 ? pos - window + 1 : 0) : 0;
}

// k_new, v_new f32 [n][n_head_kv][head_dim] -> caches f32 [n_head_kv][n_ctx][head_dim] at
// rows pos0 + t. Grid-stride, one thread per value.
__global__ void kv_append_kernel(const float* __restrict__ k_new, const float* __restrict__ v_new, size_t n, int pos0,
                                 int n_head_kv, int head_dim, float* __restrict__ k_cache, float* __restrict__ v_cache,
                                 size_t n_ctx) {
  const size_t hd = static_cast<size_t>(head_dim), count = n * static_cast<size_t>(n_head_kv) * hd;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t d = i % hd, row = i / hd;  // row = t * n_head_kv + kvh
    const size_t kvh = row % static_cast<size_t>(n_head_kv), t = row / static_cast<size_t>(n_head_kv);
    const size_t dst = (kvh * n_ctx + static_cast<size_t>(pos0) + t) * hd + d;
    k_cache[dst] = k_new[i];
    v_cache[dst] = v_new[i];
  }
}

// One chunk of keys [j0, j0 + len) for the `group` query heads of kv head blockIdx.y.
// q f32 [n_head][head_dim]; part_acc f32 [n_head][n_split][head_dim]; part_max, part_sum f32
// [n_head][n_split].
__global__ void __launch_bounds__(kDecodeThreads)
    attn_decode_partial_kernel(const float* __restrict__ q, int pos, int start, int group, int head_dim,
                               const float* __restrict__ k, const float* __restrict__ v, size_t n_ctx, float scale,
                               int chunk, int n_split, float* __restrict__ part_acc, float* __restrict__ part_max,
                               float* __restrict__ part_sum) {
  extern __shared__ float smem[];
  float* q_s = smem;                   // [group][head_dim]
  float* p_s = smem + group * head_dim;  // [group][chunk]: scores, then exp(s - m)
  const int split = static_cast<int>(blockIdx.x), kvh = static_cast<int>(blockIdx.y);
  const int warp = static_cast<int>(threadIdx.x) / kWarp, lane = static_cast<int>(threadIdx.x) % kWarp;
  const int j0 = start + split * chunk;
  const int len = min(chunk, pos + 1 - j0);  // >= 1: the host makes every split non-empty
  const size_t hd = static_cast<size_t>(head_dim);
  const float* kh = k + (static_cast<size_t>(kvh) * n_ctx + static_cast<size_t>(j0)) * hd;
  const float* vh = v + (static_cast<size_t>(kvh) * n_ctx + static_cast<size_t>(j0)) * hd;
  const float* qg = q + static_cast<size_t>(kvh) * static_cast<size_t>(group) * hd;  // the group's heads are adjacent

  for (int i = static_cast<int>(threadIdx.x); i < group * head_dim; i += kDecodeThreads) q_s[i] = qg[i];
  __syncthreads();

  for (int jj = warp; jj < len; jj += kDecodeWarps) {
    const float* kr = kh + static_cast<size_t>(jj) * hd;
    float kreg[kMaxPerLane];
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int d = lane + kWarp * i;
      kreg[i] = d < head_dim ? kr[d] : 0.0f;
    }
    for (int g = 0; g < group; ++g) {
      float s = 0.0f;
#pragma unroll
      for (int i = 0; i < kMaxPerLane; ++i) {
        const int d = lane + kWarp * i;
        if (d < head_dim) s = fmaf(q_s[g * head_dim + d], kreg[i], s);
      }
      s = warp_sum(s);
      if (lane == 0) p_s[g * chunk + jj] = s * scale;
    }
  }
  __syncthreads();

  for (int g = warp; g < group; g += kDecodeWarps) {
    float* pg = p_s + g * chunk;
    float m = -INFINITY;
    for (int jj = lane; jj < len; jj += kWarp) m = fmaxf(m, pg[jj]);
    m = warp_max(m);
    float l = 0.0f;
    for (int jj = lane; jj < len; jj += kWarp) {
      const float e = expf(pg[jj] - m);
      pg[jj] = e;
      l += e;
    }
    l = warp_sum(l);
    if (lane == 0) {
      const size_t o = static_cast<size_t>(kvh * group + g) * static_cast<size_t>(n_split) + static_cast<size_t>(split);
      part_max[o] = m;
      part_sum[o] = l;
    }
  }
  __syncthreads();

  for (int idx = static_cast<int>(threadIdx.x); idx < group * head_dim; idx += kDecodeThreads) {
    const int g = idx / head_dim, d = idx % head_dim;
    const float* pg = p_s + g * chunk;
    float a = 0.0f;
    for (int jj = 0; jj < len; ++jj) a = fmaf(pg[jj], vh[static_cast<size_t>(jj) * hd + static_cast<size_t>(d)], a);
    const size_t o = static_cast<size_t>(kvh * group + g) * static_cast<size_t>(n_split) + static_cast<size_t>(split);
    part_acc[o * hd + static_cast<size_t>(d)] = a;
  }
}

// out f32 [n_head][head_dim] from the partial results; grid n_head, kDecodeThreads threads.
__global__ void __launch_bounds__(kDecodeThreads)
    attn_decode_reduce_kernel(const float* __restrict__ part_acc, const float* __restrict__ part_max,
                              const float* __restrict__ part_sum, int n_split, int head_dim, float* __restrict__ out) {
  const size_t h = blockIdx.x, ns = static_cast<size_t>(n_split), hd = static_cast<size_t>(head_dim);
  const float* pm = part_max + h * ns;
  const float* pl = part_sum + h * ns;
  float m = -INFINITY;
  for (int s = 0; s < n_split; ++s) m = fmaxf(m, pm[s]);
  float l = 0.0f;
  for (int s = 0; s < n_split; ++s) l = fmaf(pl[s], expf(pm[s] - m), l);
  for (size_t d = threadIdx.x; d < hd; d += blockDim.x) {
    float a = 0.0f;
    for (size_t s = 0; s < ns; ++s) a = fmaf(part_acc[(h * ns + s) * hd + d], expf(pm[s] - m), a);
    out[h * hd + d] = a / l;
  }
}

// q, out f32 [n][n_head][head_dim]. Shared memory: K, V tiles f32 [kKeyTile][head_dim + 1],
// q f32 [kPrefillWarps][head_dim].
__global__ void __launch_bounds__(kPrefillWarps * kWarp)
    attn_prefill_kernel(const float* __restrict__ q, size_t n, int pos0, int n_head, int group, int head_dim,
                        const float* __restrict__ k, const float* __restrict__ v, size_t n_ctx, int window,
                        float scale, float* __restrict__ out) {
  extern __shared__ float smem[];
  const int ld = head_dim + 1;
  float* k_s = smem;
  float* v_s = k_s + kKeyTile * ld;
  float* q_s = v_s + kKeyTile * ld;
  const int warp = static_cast<int>(threadIdx.x) / kWarp, lane = static_cast<int>(threadIdx.x) % kWarp;
  const int h = static_cast<int>(blockIdx.y), kvh = h / group;
  const size_t hd = static_cast<size_t>(head_dim);
  const size_t t0 = static_cast<size_t>(blockIdx.x) * kPrefillWarps, t = t0 + static_cast<size_t>(warp);
  const bool active = t < n;
  const int p = pos0 + static_cast<int>(t);
  const int start = window_start(p, window);
  // Keys any query of the block sees: from the first query's window start to the last query.
  const int lo = window_start(pos0 + static_cast<int>(t0), window);
  const int hi = pos0 + static_cast<int>(min(n, t0 + kPrefillWarps)) - 1;
  float* qw = q_s + warp * head_dim;
  if (active)
    for (int d = lane; d < head_dim; d += kWarp) qw[d] = q[(t * static_cast<size_t>(n_head) + static_cast<size_t>(h)) * hd + d];

  const float* kh = k + static_cast<size_t>(kvh) * n_ctx * hd;
  const float* vh = v + static_cast<size_t>(kvh) * n_ctx * hd;
  float m = -INFINITY, l = 0.0f;
  float acc[kMaxPerLane];
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) acc[i] = 0.0f;

  for (int j0 = lo; j0 <= hi; j0 += kKeyTile) {
    __syncthreads();  // the previous tile is consumed (and, the first time, q_s is written)
    for (int idx = static_cast<int>(threadIdx.x); idx < kKeyTile * head_dim; idx += kPrefillWarps * kWarp) {
      const int jj = idx / head_dim, d = idx % head_dim, j = j0 + jj;
      const bool in = j <= hi;  // rows past hi may be unwritten: zeros, never NaN garbage
      const size_t off = static_cast<size_t>(j) * hd + static_cast<size_t>(d);
      k_s[jj * ld + d] = in ? kh[off] : 0.0f;
      v_s[jj * ld + d] = in ? vh[off] : 0.0f;
    }
    __syncthreads();
    if (!active || j0 > p || j0 + kKeyTile - 1 < start) continue;  // warp-uniform: no key of the tile is visible

    const int j = j0 + lane;
    float s = -INFINITY;
    if (j >= start && j <= p) {
      const float* kr = k_s + lane * ld;
      float dot = 0.0f;
      for (int d = 0; d < head_dim; ++d) dot = fmaf(qw[d], kr[d], dot);
      s = dot * scale;
    }
    const float m_new = fmaxf(m, warp_max(s));  // finite: the tile has a visible key
    const float corr = expf(m - m_new);          // 0 on the first visible tile (m = -inf)
    const float pj = expf(s - m_new);            // 0 for masked keys
    l = fmaf(l, corr, warp_sum(pj));
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) acc[i] *= corr;
    for (int jj = 0; jj < kKeyTile; ++jj) {
      const float pjj = __shfl_sync(kFullMask, pj, jj);
      const float* vr = v_s + jj * ld;
#pragma unroll
      for (int i = 0; i < kMaxPerLane; ++i) {
        const int d = lane + kWarp * i;
        if (d < head_dim) acc[i] = fmaf(pjj, vr[d], acc[i]);
      }
    }
    m = m_new;
  }
  if (!active) return;
  float* o = out + (t * static_cast<size_t>(n_head) + static_cast<size_t>(h)) * hd;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + kWarp * i;
    if (d < head_dim) o[d] = acc[i] / l;
  }
}

void check_shape(int n_head, int n_head_kv, int head_dim) {
  ODMOE_CHECK(n_head > 0 && n_head_kv > 0 && n_head % n_head_kv == 0, kCuda, "bad-argument",
              "attention: n_head " << n_head << " is no multiple of n_head_kv " << n_head_kv, "");
  ODMOE_CHECK(head_dim > 0 && head_dim <= kMaxHeadDim, kCuda, "unsupported",
              "attention: head_dim " << head_dim << " (the kernels take 1.." << kMaxHeadDim << ")", "");
}

// Keys per split for `len` visible keys: about kTargetBlocks blocks in all, a multiple of 32,
// at most what shared memory holds for the group.
int decode_chunk_for(int len, int n_head_kv, int group, int head_dim, int forced) {
  const int fit = (static_cast<int>(kDefaultSmem / sizeof(float)) / group - head_dim) / kWarp * kWarp;
  const int most = std::min(kMaxChunk, fit);
  ODMOE_CHECK(most >= kWarp, kCuda, "unsupported",
              "attention: " << group << " query heads per kv head with head_dim " << head_dim
                            << " do not fit the decode kernel's shared memory", "");
  if (forced > 0) {
    ODMOE_CHECK(forced % kWarp == 0 && forced <= most, kCuda, "bad-argument",
                "attention: decode_chunk " << forced << " (a multiple of 32, at most " << most << ")", "");
    return forced;
  }
  const int splits = std::max(1, kTargetBlocks / n_head_kv);
  const int per = (len + splits - 1) / splits;
  return std::min(most, std::max(kWarp, (per + kWarp - 1) / kWarp * kWarp));
}

}  // namespace

void kv_append(const float* k_new, const float* v_new, size_t n, int pos0, int n_head_kv, int head_dim,
               float* k_cache, float* v_cache, size_t n_ctx, cudaStream_t stream) {
  ODMOE_CHECK(pos0 >= 0 && static_cast<size_t>(pos0) + n <= n_ctx && n_head_kv > 0 && head_dim > 0, kCuda,
              "bad-argument", "kv_append: rows [" << pos0 << ", " << pos0 + static_cast<long>(n) << ") in a context of "
                                                  << n_ctx, "");
  const size_t count = n * static_cast<size_t>(n_head_kv) * static_cast<size_t>(head_dim);
  if (count == 0) return;
  constexpr int kThreads = 256;
  kv_append_kernel<<<grid_blocks(count, kThreads), kThreads, 0, stream>>>(k_new, v_new, n, pos0, n_head_kv, head_dim,
                                                                          k_cache, v_cache, n_ctx);
  ODMOE_CUDA_CHECK_LAUNCH();
}

size_t attention_workspace_bytes(int n_head, int head_dim, size_t n_ctx) {
  const size_t max_split = (n_ctx + kWarp - 1) / kWarp;  // every chunk has at least 32 keys
  return static_cast<size_t>(n_head) * max_split * (static_cast<size_t>(head_dim) + 2) * sizeof(float);
}

void attention_decode(const float* q, int pos, int n_head, int n_head_kv, int head_dim, const float* k,
                      const float* v, size_t n_ctx, int window, float scale, float* out, void* workspace,
                      size_t workspace_bytes, cudaStream_t stream, int decode_chunk) {
  check_shape(n_head, n_head_kv, head_dim);
  ODMOE_CHECK(pos >= 0 && static_cast<size_t>(pos) < n_ctx, kCuda, "bad-argument",
              "attention: position " << pos << " in a context of " << n_ctx, "");
  const int group = n_head / n_head_kv;
  const int start = window_start(pos, window), len = pos - start + 1;
  const int chunk = decode_chunk_for(len, n_head_kv, group, head_dim, decode_chunk);
  const int n_split = (len + chunk - 1) / chunk;  // the last split holds 1..chunk keys
  const size_t parts = static_cast<size_t>(n_head) * static_cast<size_t>(n_split);
  const size_t need = parts * (static_cast<size_t>(head_dim) + 2) * sizeof(float);
  ODMOE_CHECK(workspace != nullptr && workspace_bytes >= need, kCuda, "bad-argument",
              "attention: workspace of " << workspace_bytes << " bytes, " << need << " needed",
              "size it with attention_workspace_bytes()");
  auto* part_acc = static_cast<float*>(workspace);
  float* part_max = part_acc + parts * static_cast<size_t>(head_dim);
  float* part_sum = part_max + parts;
  const size_t smem = static_cast<size_t>(group) * static_cast<size_t>(head_dim + chunk) * sizeof(float);
  attn_decode_partial_kernel<<<dim3(static_cast<unsigned>(n_split), static_cast<unsigned>(n_head_kv)), kDecodeThreads,
                               smem, stream>>>(q, pos, start, group, head_dim, k, v, n_ctx, scale, chunk, n_split,
                                               part_acc, part_max, part_sum);
  ODMOE_CUDA_CHECK_LAUNCH();
  attn_decode_reduce_kernel<<<static_cast<unsigned>(n_head), kDecodeThreads, 0, stream>>>(part_acc, part_max, part_sum,
                                                                                         n_split, head_dim, out);
  ODMOE_CUDA_CHECK_LAUNCH();
}

void attention_prefill(const float* q, size_t n, int pos0, int n_head, int n_head_kv, int head_dim, const float* k,
                       const float* v, size_t n_ctx, int window, float scale, float* out, cudaStream_t stream) {
  check_shape(n_head, n_head_kv, head_dim);
  ODMOE_CHECK(pos0 >= 0 && static_cast<size_t>(pos0) + n <= n_ctx, kCuda, "bad-argument",
              "attention: positions [" << pos0 << ", " << pos0 + static_cast<long>(n) << ") in a context of " << n_ctx,
              "");
  if (n == 0) return;
  const size_t smem =
      (2 * static_cast<size_t>(kKeyTile) * static_cast<size_t>(head_dim + 1) + kPrefillWarps * static_cast<size_t>(head_dim)) *
      sizeof(float);
  if (smem > kDefaultSmem)  // head_dim > 160: opt in to more than 48 KiB (every supported GPU has >= 99 KiB)
    ODMOE_CUDA_CHECK(cudaFuncSetAttribute(attn_prefill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(smem)));
  const size_t x_blocks = (n + kPrefillWarps - 1) / kPrefillWarps;
  ODMOE_CHECK(x_blocks < (size_t{1} << 31) && n_head <= 65535, kCuda, "too-large", "attention: " << n << " tokens", "");
  attn_prefill_kernel<<<dim3(static_cast<unsigned>(x_blocks), static_cast<unsigned>(n_head)), kPrefillWarps * kWarp,
                        smem, stream>>>(q, n, pos0, n_head, n_head / n_head_kv, head_dim, k, v, n_ctx, window, scale,
                                        out);
  ODMOE_CUDA_CHECK_LAUNCH();
}

void attention(const float* q, size_t n, int pos0, int n_head, int n_head_kv, int head_dim, const float* k,
               const float* v, size_t n_ctx, int window, float scale, float* out, void* workspace,
               size_t workspace_bytes, cudaStream_t stream, int decode_chunk) {
  if (n == 1)
    attention_decode(q, pos0, n_head, n_head_kv, head_dim, k, v, n_ctx, window, scale, out, workspace,
                     workspace_bytes, stream, decode_chunk);
  else
    attention_prefill(q, n, pos0, n_head, n_head_kv, head_dim, k, v, n_ctx, window, scale, out, stream);
}

}  // namespace odmoe::cuda
