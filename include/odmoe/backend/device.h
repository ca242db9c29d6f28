// The device interface: what every rank computes through. A Device allocates buffers by usage
// (counted by its MemoryAccount) and can wrap a host range without a copy; a Stream runs
// copies and ops in order, records events other streams wait on. Every op of a decoder step
// is a Stream op; routing (top-k, tie-breaks) stays one host function (model/route).
//
// The CPU device (cpu_device.h) is the numerical oracle: its streams run each call before
// returning, so its events are complete when recorded. A device with its own memory (CUDA)
// queues the same calls; host pointers passed to an op are read before the call returns.
// No header here needs a device compiler.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "odmoe/backend/buffer.h"
#include "odmoe/backend/tensor.h"

namespace odmoe {

class KvCache;

enum class DeviceOp {
  kEmbedRows, kMatmul, kRmsNorm, kRope, kAddBias, kAdd, kClamp, kSigmoidGateAdd, kSwiglu, kKvStore, kAttention,
};
const char* op_name(DeviceOp op);

// A point in a stream's work: complete once everything queued before record() has run.
class Event {
 public:
  virtual ~Event() = default;
  virtual bool complete() const = 0;
  virtual void synchronize() const = 0;  // blocks the host until complete()
};

// Attention of the decoder's layers (GQA: query head h reads KV head h / (n_head / n_head_kv)).
struct AttentionParams {
  int n_head = 0, n_head_kv = 0, head_dim = 0;
  int window = 0;      // > 0: a token at position p sees p - window + 1 .. p; <= 0: all of 0 .. p
  float scale = 1.0f;  // multiplies q.k before the softmax
};

class Stream {
 public:
  virtual ~Stream() = default;

  // ---- copies (bytes, at byte offsets into the tensor's data) ----
  virtual void set(const Tensor& dst, size_t dst_offset, const void* src, size_t bytes) = 0;  // host -> device
  virtual void get(const Tensor& src, size_t src_offset, void* dst, size_t bytes) = 0;        // device -> host
  virtual void copy(const Tensor& src, size_t src_offset, const Tensor& dst, size_t dst_offset, size_t bytes) = 0;
  virtual std::shared_ptr<Event> record() = 0;
  virtual void wait(const Event& event) = 0;  // later work on this stream waits for `event`
  virtual void synchronize() = 0;             // blocks the host until everything queued has run

  // ---- ops. Activations are f32 [n, dim] row-major; `out` may alias an input where noted. ----
  // out[t] = row ids[t] of `table` decoded to f32. table: any dtype [vocab, dim]; ids: host [n].
  virtual void embed_rows(const Tensor& table, const int32_t* ids, size_t n, const Tensor& out) = 0;
  // y[t, r] = sum_c w[r, c] * x[t, c]: w any dtype [rows, cols], x f32 [n, cols], y f32 [n, rows].
  // One token (GEMV) and many (GEMM); the router logits are this op with the f32 router.
  virtual void matmul(const Tensor& w, const Tensor& x, size_t n, const Tensor& y) = 0;
  // y[r] = x[r] / rms(x[r]) * weight for n_rows rows of dim; weight f32 [dim]; y may alias x.
  // RMSNorm, and q/k norm: per head (n_rows = n * heads, dim = head_dim) or full (dim = q_dim).
  virtual void rms_norm(const Tensor& x, const Tensor& weight, size_t n_rows, size_t dim, float eps,
                        const Tensor& y) = 0;
  // Rotates pairs (i, i + head_dim/2) of every head of x [n, n_head * head_dim] in place by
  // angle (pos0 + t) * inv_freq[i] (f32 [head_dim / 2]), as transformers' rotate_half does.
  virtual void rope(const Tensor& x, size_t n, size_t n_head, size_t head_dim, int pos0, const Tensor& inv_freq) = 0;
  virtual void add_bias(const Tensor& y, const Tensor& bias, size_t n, size_t dim) = 0;  // y[t, i] += bias[i]
  virtual void add(const Tensor& y, const Tensor& x, size_t count) = 0;                  // y[i] += x[i]
  virtual void clamp(const Tensor& x, size_t count, float limit) = 0;  // x[i] = clamp(x[i], -limit, limit)
  // y[t, i] += sigmoid(gate_logit[t]) * x[t, i]: the shared expert's gate. gate_logit f32 [n].
  virtual void sigmoid_gate_add(const Tensor& y, const Tensor& x, const Tensor& gate_logit, size_t n, size_t dim) = 0;
  // out[i] = silu(gate[i]) * up[i]; out may alias gate.
  virtual void swiglu(const Tensor& gate, const Tensor& up, size_t count, const Tensor& out) = 0;
  // Writes k, v [n, n_head_kv * head_dim] (token-major) to positions pos0 .. pos0+n-1 of `layer`.
  virtual void kv_store(KvCache& cache, int layer, int pos0, size_t n, const Tensor& k, const Tensor& v) = 0;
  // Causal attention of q [n, n_head * head_dim] at positions pos0 .. pos0+n-1 over rows
  // 0 .. pos0+n-1 of `layer`; out [n, n_head * head_dim].
  virtual void attention(const Tensor& q, const KvCache& cache, int layer, int pos0, size_t n,
                         const AttentionParams& p, const Tensor& out) = 0;
};

class Device {
 public:
  virtual ~Device() = default;
  virtual const char* name() const = 0;  // "cpu", "cuda:0"
  virtual std::string to_string() const = 0;
  virtual bool supports(DeviceOp op, DType dtype) const = 0;

  // A zeroed buffer of `bytes`, counted by memory(); throws odmoe::Error past its limit.
  virtual std::unique_ptr<Buffer> allocate(BufferUsage usage, size_t bytes, const std::string& what) = 0;
  // The host range [data, data + bytes) as a buffer, without a copy and not counted (the
  // caller keeps the range alive); nullptr where this device cannot compute from host
  // memory: allocate and set instead.
  virtual std::unique_ptr<Buffer> wrap_host(BufferUsage usage, void* data, size_t bytes, const std::string& what) = 0;

  virtual Stream& stream() = 0;                   // the default stream
  virtual std::unique_ptr<Stream> new_stream() = 0;  // another one (a copy stream)

  MemoryAccount& memory() { return memory_; }
  const MemoryAccount& memory() const { return memory_; }

 protected:
  explicit Device(std::string owner, size_t limit_bytes) : memory_(std::move(owner), limit_bytes) {}

 private:
  MemoryAccount memory_;
};

}  // namespace odmoe
