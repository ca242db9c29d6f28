#include "odmoe/runtime/generation.h"

#include <algorithm>

#include "odmoe/core/clock.h"
#include "odmoe/core/error.h"

namespace odmoe {

int32_t argmax_token(const std::vector<float>& logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

GenerationResult generate(Model& model, const std::vector<int32_t>& prompt, const GenerationOptions& o,
                          const ChooseToken& choose, const std::function<void(int32_t)>& on_token,
                          const std::function<void(const int32_t*, size_t)>& on_forward) {
  ODMOE_CHECK(!prompt.empty(), kModel, "empty-prompt", "a generation needs at least one prompt token", "");
  GenerationResult g;
  const int budget = std::min(o.max_new, model.n_ctx() - static_cast<int>(prompt.size()));
  std::vector<float> logits;
  model.reset();
  const double t0 = now_s();
  model.forward(prompt.data(), prompt.size(), false, &logits);
  g.prefill_s = now_s() - t0;
  if (on_forward) on_forward(prompt.data(), prompt.size());
  const double t1 = now_s();
  while (g.n_chosen < budget) {
    const int32_t next = choose(logits);
    ++g.n_chosen;
    if (std::find(o.stop_ids.begin(), o.stop_ids.end(), next) != o.stop_ids.end()) {
      g.stop = "eos";
      break;
    }
    g.tokens.push_back(next);
    if (on_token) on_token(next);
    if (g.n_chosen == budget && !o.forward_last) break;
    model.forward(&next, 1, false, &logits);
    if (on_forward) on_forward(&next, 1);
  }
  g.decode_s = now_s() - t1;
  if (g.stop != "eos" && g.n_chosen == budget && budget < o.max_new) g.stop = "context-full";
  return g;
}

}  // namespace odmoe
