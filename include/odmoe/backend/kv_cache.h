// The attention KV cache of one sequence, in one KV buffer of a device.
//
// Layout: f32 [2][n_layer][n_head_kv][n_ctx][head_dim] (K then V): each KV head's rows are
// contiguous, so attention reads one head's keys and values as two dense matrices. Rows
// [0, filled(l)) of layer l hold this sequence's entries; filled grows with release order as
// they are written, so another thread may read the rows below it meanwhile.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>

#include "odmoe/backend/device.h"

namespace odmoe {

class KvCache {
 public:
  KvCache(Device& device, int n_layer, int n_head_kv, int head_dim, int n_ctx);

  int n_layer() const { return n_layer_; }
  int n_head_kv() const { return n_head_kv_; }
  int head_dim() const { return head_dim_; }
  int n_ctx() const { return n_ctx_; }
  size_t kv_dim() const { return static_cast<size_t>(n_head_kv_) * head_dim_; }
  size_t bytes() const { return buf_->bytes(); }

  // Layer l's keys / values: f32 [n_head_kv * n_ctx, head_dim], head h's rows at h * n_ctx.
  Tensor k(int layer) const { return part(0, layer); }
  Tensor v(int layer) const { return part(1, layer); }

  int filled(int layer) const { return filled_[static_cast<size_t>(layer)].load(std::memory_order_acquire); }
  void set_filled(int layer, int n) { filled_[static_cast<size_t>(layer)].store(n, std::memory_order_release); }
  void clear();              // every layer empty
  void truncate(int n_pos);  // filled(l) = min(filled(l), n_pos) for every layer

  // Rows [pos0, pos0 + n) of `layer` to and from the host, token-major: k, v [n, kv_dim]
  // (heads in order). Complete when the call returns. Writing leaves filled() as it is: the
  // caller says what the rows hold.
  void read_rows(Stream& s, int layer, int pos0, size_t n, float* k, float* v) const;
  void write_rows(Stream& s, int layer, int pos0, size_t n, const float* k, const float* v);

 private:
  Tensor part(int kv, int layer) const;
  void check_rows(int layer, int pos0, size_t n) const;

  int n_layer_, n_head_kv_, head_dim_, n_ctx_;
  std::unique_ptr<Buffer> buf_;  // f32 [2][n_layer][n_head_kv][n_ctx][head_dim]
  std::unique_ptr<std::atomic<int>[]> filled_;  // [n_layer]
};

}  // namespace odmoe
