// The one generation loop: prefill a prompt, then choose and forward one token a step. Every
// command that generates (generate, bench, eval-predictor) runs it; they differ only in how
// a token is chosen and what they record.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "odmoe/model/model.h"

namespace odmoe {

struct GenerationResult {
  std::vector<int32_t> tokens;          // the chosen tokens, a stop id excluded
  int n_chosen = 0;                     // tokens chosen, a stop id included
  std::string stop = "max-new-tokens";  // | "eos" (a stop id) | "context-full"
  double prefill_s = 0;                 // the prompt's forward pass
  double decode_s = 0;                  // from then to the last token chosen
  // Decode forward passes per second: n_chosen - 1 passes followed the prefill.
  double decode_rate() const { return n_chosen > 1 ? (n_chosen - 1) / decode_s : 0.0; }
};

struct GenerationOptions {
  int max_new = 128;              // tokens to choose at most
  std::vector<int32_t> stop_ids;  // choosing one of these ends the generation (EOS)
  bool forward_last = false;      // forward the last chosen token too (a predictor evaluation scores every step)
};

// Picks the next token from the logits of the last position ([vocab]).
using ChooseToken = std::function<int32_t(const std::vector<float>& logits)>;

// Resets `model`, prefills `prompt`, then chooses up to `o.max_new` tokens (fewer when a
// stop id is chosen or the context is full); every chosen token but the last (with
// forward_last: every one) is forwarded. `on_token` sees each chosen token that is not a
// stop id, as it is chosen; `on_forward` each batch of tokens forwarded (the prompt, then
// one token a step).
GenerationResult generate(Model& model, const std::vector<int32_t>& prompt, const GenerationOptions& o,
                          const ChooseToken& choose, const std::function<void(int32_t)>& on_token = {},
                          const std::function<void(const int32_t*, size_t)>& on_forward = {});

// The most likely token (the lowest id among equals): greedy decoding.
int32_t argmax_token(const std::vector<float>& logits);

}  // namespace odmoe
