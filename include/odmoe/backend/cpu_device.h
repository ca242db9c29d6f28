// The CPU device: host memory, zero-copy wraps of host ranges (the mapped shards, weights
// already in memory), and streams that run every call before returning (events are complete
// when recorded). matmul, rms_norm and swiglu are the CPU backend's kernels (cpu_backend.h);
// the other ops are f32 loops whose order of additions is the model's reference order.
#pragma once

#include <memory>
#include <string>

#include "odmoe/backend/cpu_backend.h"
#include "odmoe/backend/device.h"

namespace odmoe {

class CpuDevice final : public Device {
 public:
  // Owns a CpuBackend(isa, n_threads). limit_bytes 0: no limit on allocations.
  explicit CpuDevice(CpuIsa isa = detect_cpu_isa(), int n_threads = 0, size_t limit_bytes = 0);
  // Computes matmul/rms_norm/swiglu with `kernels` (kept alive by the caller: a wrapper that
  // times them, say); the other ops use n_threads threads.
  CpuDevice(Backend& kernels, int n_threads, size_t limit_bytes = 0);
  ~CpuDevice() override;

  const char* name() const override { return "cpu"; }
  std::string to_string() const override;
  bool supports(DeviceOp op, DType dtype) const override;
  std::unique_ptr<Buffer> allocate(BufferUsage usage, size_t bytes, const std::string& what) override;
  std::unique_ptr<Buffer> wrap_host(BufferUsage usage, void* data, size_t bytes, const std::string& what) override;
  Stream& stream() override { return *stream_; }
  std::unique_ptr<Stream> new_stream() override;

  Backend& kernels() { return *kernels_; }  // the host-pointer kernels (expert ranks use them directly)
  int n_threads() const { return n_threads_; }

 private:
  std::unique_ptr<CpuBackend> own_;
  Backend* kernels_;
  int n_threads_;
  std::unique_ptr<Stream> stream_;
};

}  // namespace odmoe
