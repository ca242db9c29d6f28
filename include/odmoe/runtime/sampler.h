// Token sampling: greedy, or temperature with optional top-k and top-p, seeded.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace odmoe {

struct SamplerConfig {
  float temperature = 0.0f;  // 0: greedy (argmax, ties to the lowest id)
  int top_k = 0;             // 0: no top-k filter
  float top_p = 1.0f;        // 1: no nucleus filter
  uint64_t seed = 0;

  void validate() const;  // throws odmoe::Error (kCli) on an impossible value
  std::string to_string() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplerConfig& cfg);
  int32_t sample(const float* logits, size_t vocab);
  const SamplerConfig& config() const { return cfg_; }

 private:
  SamplerConfig cfg_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;
};

}  // namespace odmoe
