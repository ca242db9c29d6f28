// Token sampling: greedy, or temperature with optional top-k and top-p, seeded. Candidates are
// drawn best first (logit descending, ties to the lower id); only as many are sorted as the
// filters and the draw reach (selection, not a sort of the whole vocabulary).
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

  struct Candidate {
    float logit;  // logit / temperature
    float p;      // exp(logit - max logit)
    int32_t id;
  };

 private:
  // Puts the best n candidates (logit descending, ties to the lower id) sorted at the front;
  // the first n_sorted_ are there already. Selection, not a full sort of the vocabulary.
  void sort_prefix(size_t n);

  SamplerConfig cfg_;
  std::mt19937_64 rng_;
  std::vector<Candidate> cand_;  // [vocab]
  size_t n_sorted_ = 0;
};

}  // namespace odmoe
