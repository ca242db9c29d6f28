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

// `token_by_token`: each window's first token is a prompt of one, then every next token is
// its own forward step, as in decoding (what decode-only behaviour, such as expert
// substitution, changes); otherwise a window is one batched forward.
PerplexityResult evaluate_perplexity(Model& model, const std::vector<int32_t>& ids, int context,
                                     bool token_by_token = false);

}  // namespace odmoe
