// Device memory: buffers allocated by usage, and the allocator's accounting of them.
//
// A Buffer is a range of one device's memory (or a host range the device computes from
// without a copy). Every buffer a device allocates is counted by its MemoryAccount: the bytes
// live now, their peak, and an optional limit past which an allocation fails with an error
// naming the device, what was asked for and what is already live.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

namespace odmoe {

class Device;

enum class BufferUsage {
  kWeights,      // written once at load time, read by every step
  kCompute,      // activations and scratch of a forward step
  kKvCache,      // the attention KV cache
  kHostStaging,  // pinned host memory for transfers (MPI in and out, device <-> host copies)
};
inline constexpr size_t kBufferUsageCount = 4;
const char* buffer_usage_name(BufferUsage usage);

// Live and peak bytes of one device's buffers, and the limit they must stay under.
// Thread-safe: a device may be used by several threads (the shadow predictor's own thread).
class MemoryAccount {
 public:
  // owner: how errors name the device ("cpu device"); limit_bytes 0: no limit.
  explicit MemoryAccount(std::string owner, size_t limit_bytes = 0);

  // Counts `bytes` more of `usage` for `what`. Throws odmoe::Error (core/device-memory) naming
  // the owner, `what`, the bytes asked for, the bytes live and the limit when the total would
  // pass the limit; nothing is counted then.
  void reserve(size_t bytes, BufferUsage usage, const std::string& what);
  void release(size_t bytes, BufferUsage usage);

  size_t live_bytes() const;
  size_t live_bytes(BufferUsage usage) const;
  size_t peak_bytes() const;  // the largest live_bytes() so far
  // Host ranges the device computes from without owning them (Device::wrap_host): not live
  // device memory, but what a device with its own memory would have to hold.
  void add_wrapped(ptrdiff_t bytes);
  size_t wrapped_bytes() const;
  size_t limit_bytes() const;
  void set_limit_bytes(size_t limit_bytes);  // 0: no limit; applies to the next reserve()
  const std::string& owner() const { return owner_; }
  std::string to_string() const;  // "live 12 MiB (weights 0, compute 4, kv 8, staging 0), peak 14 MiB, limit none"

 private:
  std::string owner_;
  mutable std::mutex mu_;
  size_t limit_ = 0, live_ = 0, peak_ = 0, wrapped_ = 0;
  std::array<size_t, kBufferUsageCount> live_by_usage_{};
};

// A range of device memory. Made by Device::allocate (counted, freed by the destructor) or
// Device::wrap_host (a host range its owner keeps alive; not counted, not freed).
class Buffer {
 public:
  virtual ~Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  BufferUsage usage() const { return usage_; }
  size_t bytes() const { return bytes_; }
  const std::string& name() const { return name_; }
  bool wrapped() const { return wrapped_; }
  // The first byte as the device's kernels address it (a host address on the CPU device).
  void* base() const { return base_; }
  // The first byte as the host addresses it, or nullptr where the host cannot read the buffer
  // directly (device memory): then go through Stream::get/set.
  void* host() const { return host_; }

 protected:
  Buffer(BufferUsage usage, size_t bytes, std::string name, bool wrapped, void* base, void* host)
      : usage_(usage), bytes_(bytes), name_(std::move(name)), wrapped_(wrapped), base_(base), host_(host) {}

 private:
  BufferUsage usage_;
  size_t bytes_;
  std::string name_;
  bool wrapped_;
  void* base_;
  void* host_;
};

}  // namespace odmoe
