// A predictor that is never worse than its fallback: a primary predictor running on its own
// thread or rank (the shadow), with the gaps it leaves when it lags filled at once from
// sources that need nothing but the full model.
//
// Why gaps appear. The shadow is only useful ahead of the full model. When its thread loses
// the CPU while main goes on (a busy host, another job), main reaches layers the shadow has
// not published: those are loaded after routing. Once main begins the next step, the
// shadow's job for the old step is cancelled at its next layer and it jumps to main's step
// (a catch-up), starting again at layer 0 while main already runs that step: until it has
// overtaken main, every layer it publishes comes too late. A shadow that lost the CPU for a
// while therefore leaves runs of whole steps unpredicted, not single layers.
//
// The fill. When main has routed layer l of a decode step and the primary has not yet
// published layer l+1 (it is behind main, not merely slow to deliver), the routers of
// layers l+1 .. l+depth are applied to layer l's hidden state (as `gate-ahead` does) for
// every layer the primary has not covered. Layer 0 of a step, which no earlier layer of the
// same step can reach, is filled at the step's start from the previous token's routing.
// A later prediction of the primary for the same layer replaces the fill. Predictions carry
// their source ("shadow", "gate-ahead", "previous"), so the ledger reports which source
// served each decode layer.
#pragma once

#include <memory>

#include "odmoe/predict/predictor.h"

namespace odmoe {

// `primary`: the predictor to back (its name is kept); `model`: the full model, whose
// routers the fill applies; `depth` >= 1: layers the fill looks ahead; `extra`: candidates
// published beyond the top-k, as the primary's.
std::unique_ptr<Predictor> make_fallback_predictor(std::unique_ptr<Predictor> primary, const Model& model, int depth,
                                                   int extra);

}  // namespace odmoe
