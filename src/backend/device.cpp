// What every device shares: the allocator's accounting, tensor views, the KV cache.
#include <algorithm>
#include <cstring>
#include <sstream>
#include <vector>

#include "odmoe/backend/device.h"
#include "odmoe/backend/kv_cache.h"
#include "odmoe/core/error.h"

namespace odmoe {

const char* buffer_usage_name(BufferUsage usage) {
  switch (usage) {
    case BufferUsage::kWeights: return "weights";
    case BufferUsage::kCompute: return "compute";
    case BufferUsage::kKvCache: return "kv-cache";
    case BufferUsage::kHostStaging: return "host-staging";
  }
  return "?";
}

const char* op_name(DeviceOp op) {
  switch (op) {
    case DeviceOp::kEmbedRows: return "embed_rows";
    case DeviceOp::kMatmul: return "matmul";
    case DeviceOp::kRmsNorm: return "rms_norm";
    case DeviceOp::kRope: return "rope";
    case DeviceOp::kAddBias: return "add_bias";
    case DeviceOp::kAdd: return "add";
    case DeviceOp::kClamp: return "clamp";
    case DeviceOp::kSigmoidGateAdd: return "sigmoid_gate_add";
    case DeviceOp::kSwiglu: return "swiglu";
    case DeviceOp::kKvStore: return "kv_store";
    case DeviceOp::kAttention: return "attention";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------
// MemoryAccount

MemoryAccount::MemoryAccount(std::string owner, size_t limit_bytes) : owner_(std::move(owner)), limit_(limit_bytes) {}

void MemoryAccount::reserve(size_t bytes, BufferUsage usage, const std::string& what) {
  std::lock_guard<std::mutex> lk(mu_);
  ODMOE_CHECK(limit_ == 0 || (bytes <= limit_ && live_ <= limit_ - bytes), kCore, "device-memory",
              owner_ << " cannot allocate " << bytes << " bytes of " << buffer_usage_name(usage) << " for " << what
                     << ": " << live_ << " bytes are live and the limit is " << limit_ << " bytes ("
                     << live_ + bytes - limit_ << " bytes over)",
              "raise the device memory limit (--device-mib), or use a shorter context or fewer slots");
  live_ += bytes;
  live_by_usage_[static_cast<size_t>(usage)] += bytes;
  peak_ = std::max(peak_, live_);
}

void MemoryAccount::release(size_t bytes, BufferUsage usage) {
  std::lock_guard<std::mutex> lk(mu_);
  live_ -= std::min(live_, bytes);
  size_t& u = live_by_usage_[static_cast<size_t>(usage)];
  u -= std::min(u, bytes);
}

size_t MemoryAccount::live_bytes() const {
  std::lock_guard<std::mutex> lk(mu_);
  return live_;
}

size_t MemoryAccount::live_bytes(BufferUsage usage) const {
  std::lock_guard<std::mutex> lk(mu_);
  return live_by_usage_[static_cast<size_t>(usage)];
}

size_t MemoryAccount::peak_bytes() const {
  std::lock_guard<std::mutex> lk(mu_);
  return peak_;
}

void MemoryAccount::add_wrapped(ptrdiff_t bytes) {
  std::lock_guard<std::mutex> lk(mu_);
  wrapped_ = static_cast<size_t>(static_cast<ptrdiff_t>(wrapped_) + bytes);
}

size_t MemoryAccount::wrapped_bytes() const {
  std::lock_guard<std::mutex> lk(mu_);
  return wrapped_;
}

size_t MemoryAccount::limit_bytes() const {
  std::lock_guard<std::mutex> lk(mu_);
  return limit_;
}

void MemoryAccount::set_limit_bytes(size_t limit_bytes) {
  std::lock_guard<std::mutex> lk(mu_);
  limit_ = limit_bytes;
}

std::string MemoryAccount::to_string() const {
  std::lock_guard<std::mutex> lk(mu_);
  std::ostringstream os;
  os << owner_ << ": live " << live_ << " bytes (";
  for (size_t u = 0; u < kBufferUsageCount; ++u)
    os << (u ? ", " : "") << buffer_usage_name(static_cast<BufferUsage>(u)) << " " << live_by_usage_[u];
  os << "), peak " << peak_ << " bytes, wrapped host " << wrapped_ << " bytes, limit ";
  if (limit_) os << limit_ << " bytes";
  else os << "none";
  return os.str();
}

// ---------------------------------------------------------------------------------------
// Tensor

Tensor Tensor::row_range(size_t first, size_t n) const {
  ODMOE_CHECK(first + n <= rows, kCore, "range",
              "rows [" << first << ", " << first + n << ") of a tensor of " << rows << " rows", "");
  Tensor t = *this;
  t.rows = n;
  t.offset = offset + dtype_data_bytes(dtype, first, cols);
  if (scale_buffer) t.scale_offset = scale_offset + dtype_scale_count(dtype, first, cols) * sizeof(float);
  return t;
}

Tensor Tensor::reshape(size_t new_rows, size_t new_cols) const {
  ODMOE_CHECK(dtype == DType::kF32 && new_rows * new_cols == rows * cols, kCore, "shape",
              "cannot see a " << dtype_name(dtype) << " [" << rows << ", " << cols << "] tensor as [" << new_rows
                              << ", " << new_cols << "]",
              "");
  Tensor t = *this;
  t.rows = new_rows;
  t.cols = new_cols;
  return t;
}

void* Tensor::host_data() const {
  if (!buffer || !buffer->host()) return nullptr;
  return static_cast<char*>(buffer->host()) + offset;
}

const float* Tensor::host_scales() const {
  if (!scale_buffer || !scale_buffer->host()) return nullptr;
  return reinterpret_cast<const float*>(static_cast<char*>(scale_buffer->host()) + scale_offset);
}

WeightView Tensor::host_view() const {
  ODMOE_CHECK(host_data() && (!scale_buffer || host_scales()), kCore, "not-host",
              "a tensor of buffer " << (buffer ? buffer->name() : std::string("(none)"))
                                    << " is not host-visible: the host kernels cannot read it",
              "");
  return {dtype, rows, cols, host_data(), host_scales()};
}

// ---------------------------------------------------------------------------------------
// KvCache

KvCache::KvCache(Device& device, int n_layer, int n_head_kv, int head_dim, int n_ctx)
    : n_layer_(n_layer), n_head_kv_(n_head_kv), head_dim_(head_dim), n_ctx_(n_ctx),
      buf_(device.allocate(BufferUsage::kKvCache,
                           2 * static_cast<size_t>(n_layer) * n_head_kv * n_ctx * head_dim * sizeof(float),
                           "the KV cache (" + std::to_string(n_layer) + " layers, " + std::to_string(n_ctx) +
                               " positions)")),
      filled_(std::make_unique<std::atomic<int>[]>(static_cast<size_t>(n_layer))) {
  clear();
}

Tensor KvCache::part(int kv, int layer) const {
  const size_t rows = static_cast<size_t>(n_head_kv_) * n_ctx_;
  const size_t idx = static_cast<size_t>(kv) * n_layer_ + static_cast<size_t>(layer);
  return Tensor::f32(buf_.get(), idx * rows * head_dim_ * sizeof(float), rows, static_cast<size_t>(head_dim_));
}

void KvCache::clear() {
  for (int l = 0; l < n_layer_; ++l) set_filled(l, 0);
}

void KvCache::truncate(int n_pos) {
  for (int l = 0; l < n_layer_; ++l) {
    auto& f = filled_[static_cast<size_t>(l)];
    f.store(std::min(f.load(std::memory_order_relaxed), n_pos), std::memory_order_release);
  }
}

void KvCache::check_rows(int layer, int pos0, size_t n) const {
  ODMOE_CHECK(layer >= 0 && layer < n_layer_ && pos0 >= 0 && static_cast<size_t>(pos0) + n <= static_cast<size_t>(n_ctx_),
              kModel, "range",
              "KV rows [" << pos0 << ", " << pos0 + static_cast<long>(n) << ") of layer " << layer
                          << " do not fit a cache of " << n_layer_ << " layers and " << n_ctx_ << " positions",
              "");
}

void KvCache::read_rows(Stream& s, int layer, int pos0, size_t n, float* k, float* v) const {
  check_rows(layer, pos0, n);
  const size_t hd = static_cast<size_t>(head_dim_), kv = kv_dim(), row_bytes = hd * sizeof(float);
  std::vector<float> head(n * hd);  // one head's rows [n, head_dim]
  for (int part_idx = 0; part_idx < 2; ++part_idx) {
    const Tensor src = part(part_idx, layer);
    float* dst = part_idx == 0 ? k : v;
    for (size_t h = 0; h < static_cast<size_t>(n_head_kv_); ++h) {
      s.get(src, (h * n_ctx_ + static_cast<size_t>(pos0)) * row_bytes, head.data(), n * row_bytes);
      s.synchronize();
      for (size_t t = 0; t < n; ++t) std::memcpy(dst + t * kv + h * hd, &head[t * hd], row_bytes);
    }
  }
}

void KvCache::write_rows(Stream& s, int layer, int pos0, size_t n, const float* k, const float* v) {
  check_rows(layer, pos0, n);
  const size_t hd = static_cast<size_t>(head_dim_), kv = kv_dim(), row_bytes = hd * sizeof(float);
  std::vector<float> head(n * hd);  // one head's rows [n, head_dim]
  for (int part_idx = 0; part_idx < 2; ++part_idx) {
    const Tensor dst = part(part_idx, layer);
    const float* src = part_idx == 0 ? k : v;
    for (size_t h = 0; h < static_cast<size_t>(n_head_kv_); ++h) {
      for (size_t t = 0; t < n; ++t) std::memcpy(&head[t * hd], src + t * kv + h * hd, row_bytes);
      s.set(dst, (h * n_ctx_ + static_cast<size_t>(pos0)) * row_bytes, head.data(), n * row_bytes);
      s.synchronize();  // `head` is reused
    }
  }
}

}  // namespace odmoe
