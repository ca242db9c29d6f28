// The CUDA decoder against the CPU oracle. Skips (and says why) where there is no GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "odmoe/backend/cuda_dequant.h"

namespace odmoe {
namespace {

TEST(CudaDequant, MatchesCpuForEveryDtype) {
  std::string why;
  if (!cuda::device_available(&why)) GTEST_SKIP() << why;
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0, 0.1f);
  const size_t rows = 37, cols = 75;  // int4: three groups, the last one partial
  std::vector<float> src(rows * cols);
  for (auto& v : src) v = d(rng);
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16, DType::kInt8, DType::kInt4}) {
    EncodedTensor e;
    encode_tensor(src.data(), rows, cols, t, &e);
    std::vector<float> cpu(rows * cols), gpu(rows * cols, -1.0f);
    decode_tensor(e, cpu.data());
    cuda::decode_tensor_on_device(e, gpu.data());
    // Decoding is exact arithmetic (one multiply by a scale): results must be bit-identical.
    for (size_t i = 0; i < cpu.size(); ++i) ASSERT_EQ(cpu[i], gpu[i]) << dtype_name(t) << " element " << i;
  }
}

}  // namespace
}  // namespace odmoe
