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
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "odmoe/arch/model_config.h"

namespace odmoe {
class Model;
}

namespace odmoe {

// One prediction: the experts layer `layer` of forward step `step` will use, in priority
// order (most likely first), and when it was made (now_s()). A predictor may predict the
// current step or the next one (a shadow running ahead); a later prediction for the same
// layer replaces an earlier one. `source` names what made it (a predictor's name, or the
// fallback that filled a gap a lagging shadow left: "gate-ahead", "previous"); a string
// literal, so a Prediction stays cheap to copy.
struct Prediction {
  int step = 0, layer = 0;
  std::vector<int32_t> experts;
  double time = 0;
  const char* source = "unnamed";
};

// Where predictions go: the scheduler (or, single-process, the accounting).
class PredictionSink {
 public:
  virtual ~PredictionSink() = default;
  virtual void publish(const Prediction& p) = 0;
  // Convenience: a prediction made now by `source` (a string literal).
  void publish(int step, int layer, std::vector<int32_t> experts, const char* source);
};

class Predictor {
 public:
  virtual ~Predictor() = default;
  virtual std::string name() const = 0;
  // The input tokens of forward step `step` are known (the prompt, then one sampled token
  // per step), at positions [pos, pos + n): pos 0 starts a new sequence. Called before
  // layer 0 runs.
  virtual void begin_step(int step, int pos, const int32_t* tokens, size_t n, PredictionSink& sink) = 0;
  // The full model has routed `layer` of this step: `ids` [n, k] is the truth, `h` [n,
  // n_embd] the layer's normed MoE input. Predictors that look ahead from the current
  // hidden state publish here.
  virtual void after_routing(int step, int layer, const float* h, size_t n, const int32_t* ids, size_t k,
                             PredictionSink& sink) {
    (void)step, (void)layer, (void)h, (void)n, (void)ids, (void)k, (void)sink;
  }
  // Delivers predictions made since the last call by a predictor that works on its own
  // thread. The scheduler calls it whenever it can act (while waiting for results, too).
  virtual void poll(PredictionSink& sink) { (void)sink; }
  // True while a prediction for (step, layer) is still to come from a predictor working on
  // its own thread: a single-process evaluation may wait for it, to measure accuracy apart
  // from timing.
  virtual bool pending(int step, int layer) const { (void)step, (void)layer; return false; }
  // The run is over (called once, before stats()): a predictor on another rank stops it.
  virtual void finish() {}
  // The predictor's own figures (a shadow's memory, restarts, ...), for --stats-json.
  virtual nlohmann::json stats() const { return nlohmann::json::object(); }
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

// The names --predictor accepts: none, shadow, oracle, previous, random, gate-ahead.
bool is_predictor_name(const std::string& name);
inline constexpr const char* kPredictorNames = "none, shadow, oracle, previous, random or gate-ahead";

// `none`: publishes nothing; every expert is loaded after routing (a miss).
std::unique_ptr<Predictor> make_none_predictor();
// `oracle`: publishes, at the start of each step, the recorded experts of every layer of
// this step and of the next (so loads may cross the token boundary, as a shadow's do).
// Steps whose input tokens differ from the recording (another prompt, sampling) are
// predicted from the recording anyway: the mismatch shows as lower recall.
std::unique_ptr<Predictor> make_oracle_predictor(RoutingTrace trace);
// `previous`: each layer gets the experts the previous token used there.
std::unique_ptr<Predictor> make_previous_predictor(int n_layer);
// `random`: k experts per layer drawn uniformly without replacement (seeded): the floor.
std::unique_ptr<Predictor> make_random_predictor(int n_layer, int n_expert, int top_k, uint64_t seed);
// `gate-ahead` (Pre-gated / HOBBIT / AdapMoE style): when layer l is routed, the routers of
// layers l+1..l+depth are applied to layer l's hidden state and their top-k (+ `extra`
// next candidates) published. Layers 0..depth-1 of a token have no earlier layer to look
// from and go unpredicted.
std::unique_ptr<Predictor> make_gate_ahead_predictor(const Model& model, int depth, int extra = 0);

// The `extra` next-best experts after the top-k, from router logits [n_expert]: the
// candidates a predictor adds when a group has spare slots. Returns top_k + extra ids in
// order of decreasing logit (ties to the lower id).
std::vector<int32_t> rank_experts(const float* router_logits, int n_expert, int count);

}  // namespace odmoe
