// Perplexity of a model on a token sequence: non-overlapping windows of `context` tokens,
// each scored from a fresh KV cache (every token but a window's first is predicted).
#pragma once

#include <cstdint>
#include <vector>

#include "odmoe/model/model.h"

namespace odmoe {

struct PerplexityResult {
  double nll_per_token = 0;  // mean negative log-likelihood, nats
  double perplexity = 0;     // exp(nll_per_token)
  size_t tokens_scored = 0;
};

PerplexityResult evaluate_perplexity(Model& model, const std::vector<int32_t>& ids, int context);

}  // namespace odmoe
