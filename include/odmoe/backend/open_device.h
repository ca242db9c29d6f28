// Choosing a rank's device by name: "cpu", "cuda" (the node-local rank's GPU) or "cuda:N".
// The one place that knows every Device implementation; engines and ranks ask here.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "odmoe/backend/device.h"

namespace odmoe {

struct DeviceSpec {
  enum class Kind { kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int ordinal = -1;  // cuda:N; -1: chosen from the node-local rank (cuda)
  std::string to_string() const;  // "cpu", "cuda", "cuda:1"
};

// Parses a --device value. Throws ArgumentError naming the value and the accepted forms.
DeviceSpec parse_device_spec(const std::string& spec);
// $ODMOE_DEVICE when set (parsed as --device), otherwise "cpu".
std::string default_device_spec();

// Whether this build has the CUDA backend, and how many GPUs this process sees (0 without one
// or without the backend).
bool cuda_built();
int cuda_device_count();

struct DeviceOptions {
  size_t limit_bytes = 0;  // allocator limit (--device-mib); 0: none
  int cpu_threads = 0;     // the CPU device's threads; 0: all of OpenMP's
  int local_rank = 0;      // node-local rank, picks the GPU of "cuda" (local_rank % count)
};

// Opens the device `spec` names. Throws odmoe::Error (kCuda) when the build has no CUDA
// backend or the GPU is absent, naming the spec and what this process sees.
std::unique_ptr<Device> open_device(const DeviceSpec& spec, const DeviceOptions& options);

}  // namespace odmoe
