// The scalar reference of the CPU attention kernel (cpu_kernels.h: attention_f32 has the same
// signature): scores, softmax and the V sum in the model's reference order, one (token, head)
// pair per job. Sums run left to right over head_dim and over positions, in f32.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_kernels.h"

namespace odmoe::cpu {

void attention_reference(const float* q, size_t n, int pos0, int n_head, int n_head_kv, int head_dim, const float* k,
                         const float* v, size_t n_ctx, int window, float scale, float* out, int threads) {
  const size_t hd = static_cast<size_t>(head_dim), nh = static_cast<size_t>(n_head);
  const size_t group = nh / static_cast<size_t>(n_head_kv);
  const long n_jobs = static_cast<long>(n * nh);
#pragma omp parallel num_threads(threads) if (threads > 1 && n_jobs > 1)
  {
    std::vector<float> sc;  // scores of one (token, head) over its visible positions
#pragma omp for schedule(dynamic, 1)
    for (long job = 0; job < n_jobs; ++job) {
      const size_t t = static_cast<size_t>(job) / nh, h = static_cast<size_t>(job) % nh;
      const int pos = pos0 + static_cast<int>(t);
      const int start = window > 0 ? std::max(0, pos - window + 1) : 0;
      const float* qh = q + (t * nh + h) * hd;
      const float* kh = k + (h / group) * n_ctx * hd;  // this KV head's rows [n_ctx, head_dim]
      const float* vh = v + (h / group) * n_ctx * hd;
      sc.resize(static_cast<size_t>(pos - start + 1));
      float mx = -INFINITY;
      for (int j = start; j <= pos; ++j) {
        const float* kr = kh + static_cast<size_t>(j) * hd;
        float s = 0;
        for (size_t i = 0; i < hd; ++i) s += qh[i] * kr[i];
        s *= scale;
        sc[static_cast<size_t>(j - start)] = s;
        mx = std::max(mx, s);
      }
      float sum = 0;
      for (float& s : sc) sum += (s = std::exp(s - mx));
      float* o = out + (t * nh + h) * hd;
      std::fill(o, o + hd, 0.0f);
      for (int j = start; j <= pos; ++j) {
        const float w = sc[static_cast<size_t>(j - start)] / sum;
        const float* vr = vh + static_cast<size_t>(j) * hd;
        for (size_t i = 0; i < hd; ++i) o[i] += w * vr[i];
      }
    }
  }
}

}  // namespace odmoe::cpu
