// The shadow predictor: the whole model in a smaller dtype, run as its own decoder with its
// own KV cache on a thread of the main rank, one token ahead of the full model. For every
// layer it routes, it publishes the experts the full model will need there, so the
// scheduler can load them before the full model gets to that layer.
//
// Alignment keeps the shadow on the full model's path:
//  * token alignment (every `align_token_period` decode steps): the shadow's input is the
//    token the full model sampled, not its own;
//  * KV alignment (every `align_kv_period` decode steps): the full model's KV entries
//    overwrite the shadow's, layer by layer, as soon as the full model has written them.
// Without either, the shadow generates its own text and drifts away.
//
// Early departure (beyond the paper): the shadow does not wait for the full model's token.
// As soon as it has its own logits for step s it starts step s+1 from its own greedy token,
// so even the first layers of s+1 are predicted while the full model still computes s.
// When the full model's token turns out different (and token alignment applies), the
// shadow redoes s+1 with the right token and its corrections replace what it published.
// With late departure (the paper's schedule) it starts s+1 only once the token is known.
#pragma once

#include <memory>
#include <string>

#include "odmoe/predict/predictor.h"
#include "odmoe/model/model.h"
#include "odmoe/weights/model_files.h"

namespace odmoe {

struct ShadowOptions {
  // Where the shadow's weights come from: auto (shadow.h5 if the model has one, else int8
  // made in memory), file (shadow.h5, required), or a dtype (f32|bf16|f16|int8|int4): the
  // model's own weights re-encoded in memory (shadow.h5 is used if it has that dtype).
  std::string dtype = "auto";
  int align_token_period = 1;  // 0: never
  int align_kv_period = 1;     // 0: never
  bool early_departure = true;
  int extra = 0;    // candidates published beyond the top-k (loaded when a group has room)
  int threads = 1;  // CPU threads of the shadow's backend
  // Gaps the shadow leaves when it lags are filled from gate-ahead and the previous token
  // (fallback.h); false only for ablations.
  bool fallback = true;
  // The shadow thread's niceness is lowered by this much below the process's where the OS
  // allows it (Linux: CAP_SYS_NICE or a raised RLIMIT_NICE), so a busy host takes its CPU
  // from main's threads before the shadow's; 0 leaves it. Refused: it runs as it is.
  int priority = 5;
  // TESTING: make the shadow lag on purpose. Sleep `lag_ms` before every layer of one decode
  // step in `lag_every` (1: every step), as if its thread had lost the CPU.
  double lag_ms = 0;
  int lag_every = 1;
};

// Throws ArgumentError unless `dtype` is a --shadow-dtype value (auto, file or a dtype name).
void check_shadow_dtype(const std::string& dtype);

// The shadow's tensors for `dtype` (see ShadowOptions::dtype); `resolved` gets what was
// chosen ("int8 (shadow.h5)", "f16 (re-encoded in memory)", ...).
TensorReader shadow_tensor_reader(const ModelFiles& files, const std::string& dtype, std::string* resolved);

// `full`: the KV rows of the model the shadow predicts (the model itself on main, or a
// mirror on a predictor rank), read for alignment while it runs. `n_ctx`: the model's.
std::unique_ptr<Predictor> make_shadow_predictor(const ModelFiles& files, const KvRows& full, int n_ctx,
                                                 const ShadowOptions& o);

}  // namespace odmoe
