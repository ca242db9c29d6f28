// Expert predictors: what tells the scheduler which experts a token will need before the
// router of that layer has run. A predictor publishes, layer by layer, the experts it
// expects; the scheduler turns each prediction into loads the moment it is published.
//
// This file has the interface, the routing trace (what an earlier run's routers chose),
// and the predictors that need nothing but that: `none` (load after routing) and `oracle`
// (replays a recorded trace: the upper bound every other predictor is measured against).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "odmoe/model/model_config.h"

namespace odmoe {
class Model;
}

namespace odmoe::dist {

// Where predictions go: the scheduler. `experts` are in priority order (most likely first).
class PredictionSink {
 public:
  virtual ~PredictionSink() = default;
  virtual void publish(int layer, const std::vector<int32_t>& experts) = 0;
};

class Predictor {
 public:
  virtual ~Predictor() = default;
  virtual std::string name() const = 0;
  // The input tokens of forward step `step` are known (step 0: the prompt; then one
  // sampled token per step). Called before layer 0 runs.
  virtual void begin_step(int step, const int32_t* tokens, size_t n, PredictionSink& sink) = 0;
  // The full model has routed `layer` of this step: `ids` [n, k] is the truth, `h` [n,
  // n_embd] the layer's normed MoE input. Predictors that look ahead from the current
  // hidden state publish here.
  virtual void after_routing(int step, int layer, const float* h, size_t n, const int32_t* ids, size_t k,
                             PredictionSink& sink) {
    (void)step, (void)layer, (void)h, (void)n, (void)ids, (void)k, (void)sink;
  }
};

// What the routers chose in a run: per forward step, per layer, the expert ids of every
// token ([n_tokens * k]). Written by `odmoe generate --save-routing`, read by `oracle`.
struct RoutingTrace {
  uint64_t model_uid = 0;
  int n_layer = 0, n_expert = 0, top_k = 0;
  std::vector<int32_t> prompt;  // token ids of the prompt
  struct Step {
    std::vector<int32_t> tokens;                  // the step's input tokens
    std::vector<std::vector<int32_t>> layers;     // [layer][n_tokens * k]
  };
  std::vector<Step> steps;

  void save(const std::string& path) const;  // JSON; written to a temporary name, then renamed
  static RoutingTrace load(const std::string& path);  // throws odmoe::Error with the reason
};

// `none`: publishes nothing; every expert is loaded after routing (a miss).
std::unique_ptr<Predictor> make_none_predictor();
// `oracle`: publishes, at the start of each step, the recorded experts of every layer.
// Steps whose input tokens differ from the recording (another prompt, sampling) are
// predicted from the recording anyway: the mismatch shows as lower recall.
std::unique_ptr<Predictor> make_oracle_predictor(RoutingTrace trace);
// `previous`: each layer gets the experts the previous token used there.
std::unique_ptr<Predictor> make_previous_predictor(int n_layer);
// `random`: k experts per layer drawn uniformly without replacement (seeded): the floor.
std::unique_ptr<Predictor> make_random_predictor(int n_layer, int n_expert, int top_k, uint64_t seed);
// `gate-ahead` (Pre-gated / HOBBIT / AdapMoE style): when layer l is routed, the routers of
// layers l+1..l+depth are applied to layer l's hidden state and their top-k published.
// Layers 0..depth-1 of a token have no earlier layer to look from and go unpredicted.
std::unique_ptr<Predictor> make_gate_ahead_predictor(const Model& model, int depth);

}  // namespace odmoe::dist
