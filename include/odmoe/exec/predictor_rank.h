// The predictor rank (--predictor-rank): the shadow model on a rank of its own, and main's
// side of it.
#pragma once

#include <memory>

#include "odmoe/comm/comm.h"
#include "odmoe/exec/options.h"
#include "odmoe/model/model.h"
#include "odmoe/predict/predictor.h"
#include "odmoe/weights/model_files.h"

namespace odmoe {

// The predictor rank (--predictor-rank, the paper's shadow node): runs the shadow on a KV
// mirror fed by main's messages and sends its predictions to main, until STOP.
void run_shadow_rank(const Comm& comm, const ModelFiles& files, int n_ctx, const DistOptions& opts);
// Main's side of it: forwards each step's tokens and the full model's new KV rows to
// `rank`, and delivers its predictions as they arrive.
std::unique_ptr<Predictor> make_remote_shadow_predictor(const Comm& comm, int rank, const Model& full);

}  // namespace odmoe
