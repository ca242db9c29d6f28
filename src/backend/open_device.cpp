#include "odmoe/backend/open_device.h"

#include <cstdlib>

#include "odmoe/backend/cpu_device.h"
#include "odmoe/core/error.h"

namespace odmoe {

std::string DeviceSpec::to_string() const {
  if (kind == Kind::kCpu) return "cpu";
  return ordinal < 0 ? "cuda" : "cuda:" + std::to_string(ordinal);
}

DeviceSpec parse_device_spec(const std::string& spec) {
  DeviceSpec d;
  if (spec == "cpu") return d;
  d.kind = DeviceSpec::Kind::kCuda;
  if (spec == "cuda") return d;
  const std::string prefix = "cuda:";
  if (spec.rfind(prefix, 0) == 0 && spec.size() > prefix.size() && spec.size() <= prefix.size() + 4 &&
      spec.find_first_not_of("0123456789", prefix.size()) == std::string::npos) {
    d.ordinal = std::atoi(spec.c_str() + prefix.size());
    return d;
  }
  throw ArgumentError("--device '" + spec + "': expected cpu, cuda (the node-local rank's GPU) or cuda:N");
}

std::string default_device_spec() {
  const char* env = std::getenv("ODMOE_DEVICE");
  if (env == nullptr || *env == '\0') return "cpu";
  parse_device_spec(env);  // a bad value is named here, as the environment's
  return env;
}

#if !defined(ODMOE_WITH_CUDA_DEVICE)
bool cuda_built() { return false; }
int cuda_device_count() { return 0; }
#endif

std::unique_ptr<Device> open_device(const DeviceSpec& spec, const DeviceOptions& o) {
  if (spec.kind == DeviceSpec::Kind::kCpu) return std::make_unique<CpuDevice>(detect_cpu_isa(), o.cpu_threads, o.limit_bytes);
  ODMOE_CHECK(cuda_built(), kCuda, "no-cuda", "--device " << spec.to_string() << ": this odmoe was built without CUDA",
              "install the CUDA toolkit and rebuild (cmake finds nvcc), or use --device cpu");
  const int count = cuda_device_count();
  ODMOE_CHECK(count > 0, kCuda, "no-gpu", "--device " << spec.to_string() << ": no GPU is visible to this process",
              "check nvidia-smi and CUDA_VISIBLE_DEVICES, or use --device cpu");
  const int ordinal = spec.ordinal >= 0 ? spec.ordinal : o.local_rank % count;
  ODMOE_CHECK(ordinal < count, kCuda, "no-gpu",
              "--device " << spec.to_string() << ": this process sees " << count << " GPU(s) (0.." << count - 1 << ")", "");
  ODMOE_CHECK(false, kCuda, "no-cuda-device", "--device " << spec.to_string() << ": the CUDA device is not built yet", "");
  return nullptr;
}

}  // namespace odmoe
