// Activation quantisation and the integer row dot products, portable: the reference every
// vector path must reproduce bit for bit (see cpu_kernels.h for the arithmetic).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "cpu_kernels.h"

namespace odmoe::cpu {
namespace {

size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

// The order of the vector paths' horizontal sum of 8 lanes (qhsum).
float hsum_order(const float* a) { return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])); }

}  // namespace

size_t quantized_x_bytes(size_t cols) {
  const size_t pb = round_up((cols + kQBlock - 1) / kQBlock, kQLanes);
  return round_up(pb * kQBlock, 64) + round_up(pb * sizeof(float), 64) + round_up(pb * sizeof(int32_t), 64);
}

QuantizedX quantized_x_view(DType layout, size_t cols, void* buffer) {
  QuantizedX v;
  v.layout = layout;
  v.cols = cols;
  v.n_blocks = (cols + kQBlock - 1) / kQBlock;
  v.padded_blocks = round_up(v.n_blocks, kQLanes);
  auto* p = static_cast<unsigned char*>(buffer);
  v.q = reinterpret_cast<int8_t*>(p);
  p += round_up(v.padded_blocks * kQBlock, 64);
  v.d = reinterpret_cast<float*>(p);
  p += round_up(v.padded_blocks * sizeof(float), 64);
  v.s8 = reinterpret_cast<int32_t*>(p);
  return v;
}

void quantize_block_scalar(const float* x, size_t n, int8_t* q, float* d, int32_t* sum) {
  uint32_t amax_bits = 0;  // max |x| as bits: exact, and NaN/inf sort above every finite value
  for (size_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, &x[i], 4);
    amax_bits = std::max(amax_bits, u & 0x7fffffffu);
  }
  std::memset(q, 0, kQBlock);
  *sum = 0;
  if (amax_bits >= 0x7f800000u) {
    *d = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  float amax;
  std::memcpy(&amax, &amax_bits, 4);
  if (amax < kQTiny) {
    *d = 0;
    return;
  }
  const float inv = 127.0f / amax;
  *d = amax / 127.0f;
  int32_t s = 0;
  for (size_t i = 0; i < n; ++i) {
    const float v = x[i] * inv;
    q[i] = static_cast<int8_t>(std::nearbyint(v));  // |v| <= 127 (+1 ulp): no clamp needed
    s += q[i];
  }
  *sum = s;
}

void quantize_x_scalar(const float* x, QuantizedX* out) {
  std::memset(out->q, 0, out->padded_blocks * kQBlock);
  for (size_t b = 0; b < out->padded_blocks; ++b) out->d[b] = 0, out->s8[b] = 0;
  for (size_t b = 0; b < out->n_blocks; ++b) {
    const size_t c0 = b * kQBlock, n = std::min(kQBlock, out->cols - c0);
    int8_t blk[kQBlock];
    int32_t sum = 0;
    quantize_block_scalar(x + c0, n, blk, &out->d[b], &sum);
    out->s8[b] = 8 * sum;
    for (size_t j = 0; j < kQBlock; ++j) out->q[qx_pos(out->layout, b, j)] = blk[j];
  }
}

namespace {

// int8 weights: lane k (elements 4k..4k+3) of block b, times the block's scale, into lane k of
// accumulator b % 4; then (A0 + A1) + (A2 + A3) lane by lane, the horizontal sum, the row scale.
float qdot_int8_scalar(const WeightView& w, size_t row, const QuantizedX& x) {
  const auto* p = reinterpret_cast<const int8_t*>(row_data(w, row));
  float acc[4][kQLanes] = {};
  for (size_t b = 0; b < x.n_blocks; ++b) {
    int32_t lane[kQLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (size_t c = b * kQBlock; c < std::min(x.cols, (b + 1) * kQBlock); ++c)
      lane[(c - b * kQBlock) / 4] += static_cast<int32_t>(p[c]) * x.q[c];
    for (size_t k = 0; k < kQLanes; ++k) acc[b % 4][k] = std::fma(static_cast<float>(lane[k]), x.d[b], acc[b % 4][k]);
  }
  float v[kQLanes];
  for (size_t k = 0; k < kQLanes; ++k) v[k] = (acc[0][k] + acc[1][k]) + (acc[2][k] + acc[3][k]);
  return hsum_order(v) * w.scales[row];
}

}  // namespace

// int4 weights: exact block sums (every nibble of the group, padding included: its activations
// are 0, minus 8 x sum(q)) times d x the group's scale, into accumulator b % 8 over the blocks
// padded to a multiple of 8; then the horizontal sum.
float qdot_scalar(const WeightView& w, size_t row, const QuantizedX& x) {
  if (w.dtype == DType::kInt8) return qdot_int8_scalar(w, row, x);
  const unsigned char* p = row_data(w, row);
  const float* ws = w.scales + row * x.n_blocks;
  float acc[kQLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (size_t b = 0; b < x.padded_blocks; ++b) {
    int32_t isum = 0;
    float scale = 0;
    if (b < x.n_blocks) {
      for (size_t j = 0; j < kQBlock; ++j) {
        const unsigned byte = p[b * (kQBlock / 2) + j / 2];
        const auto nib = static_cast<int32_t>(j % 2 == 0 ? (byte & 0x0fu) : (byte >> 4));
        isum += nib * x.q[qx_pos(x.layout, b, j)];
      }
      isum -= x.s8[b];
      scale = x.d[b] * ws[b];
    }
    acc[b % kQLanes] = std::fma(static_cast<float>(isum), scale, acc[b % kQLanes]);
  }
  return hsum_order(acc);
}

}  // namespace odmoe::cpu
