#include "odmoe/runtime/perplexity.h"

#include <algorithm>
#include <cmath>

#include "odmoe/core/error.h"

namespace odmoe {

PerplexityResult evaluate_perplexity(Model& model, const std::vector<int32_t>& ids, int context, bool token_by_token) {
  ODMOE_CHECK(context >= 2 && context <= model.n_ctx(), kCli, "bad-option",
              "the perplexity window must be between 2 and the context (" << model.n_ctx() << "), got " << context, "");
  ODMOE_CHECK(ids.size() >= 2, kCli, "bad-text", "perplexity needs at least 2 tokens", "");
  const size_t V = static_cast<size_t>(model.config().vocab_size);
  PerplexityResult r;
  double nll = 0;
  std::vector<float> logits;
  for (size_t start = 0; start + 1 < ids.size(); start += static_cast<size_t>(context)) {
    const size_t len = std::min(static_cast<size_t>(context), ids.size() - start);
    if (len < 2) break;
    model.reset();
    if (token_by_token) {
      std::vector<float> one;
      logits.resize(len * V);
      for (size_t t = 0; t < len; ++t) {
        model.forward(&ids[start + t], 1, false, &one);
        std::copy(one.begin(), one.end(), logits.begin() + static_cast<long>(t * V));
      }
    } else {
      model.forward(&ids[start], len, true, &logits);
    }
    for (size_t t = 0; t + 1 < len; ++t) {
      const float* lg = &logits[t * V];
      const float mx = *std::max_element(lg, lg + V);
      double se = 0;
      for (size_t v = 0; v < V; ++v) se += std::exp(static_cast<double>(lg[v] - mx));
      nll += std::log(se) - static_cast<double>(lg[static_cast<size_t>(ids[start + t + 1])] - mx);
      ++r.tokens_scored;
    }
  }
  r.nll_per_token = nll / static_cast<double>(r.tokens_scored);
  r.perplexity = std::exp(r.nll_per_token);
  return r;
}

}  // namespace odmoe
