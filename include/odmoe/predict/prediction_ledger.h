// The accounting of predictions against what the routers chose: recall, precision and
// lead time, per layer and overall, and recall by token index (how a predictor drifts over
// a generation). Both executors keep one: the distributed one next to its scheduling, the
// single-process one for `odmoe eval-predictor`.
//
// Layers are counted globally over forward steps: layer l of step s is number s*L + l.
// A prediction's lead is how many layers before the one it is for it was made:
// (s*L + l) - (layers completed when it was made). Lead 0: made while that very layer's
// dense part ran (too late to hide a load); lead >= G-1 is what hides a load behind the
// other groups' work (DESIGN.md, Eq. 1).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "odmoe/predict/predictor.h"
#include "odmoe/model/model.h"

namespace odmoe {

// "shadow 97.3%, gate-ahead 2.5%, unpredicted 0.2%": the "sources" of a ledger's JSON,
// largest share first ("-" when empty).
std::string format_sources(const nlohmann::json& sources);

class PredictionLedger {
 public:
  // `ready_lead`: the lead a prediction needs to count as ready in time (G - 1, at least 1).
  PredictionLedger(int n_layer, int n_expert, int ready_lead);

  // Forward step `step` begins; decode steps (one token) are the ones accounted.
  void begin_step(int step, bool decode);
  int step() const { return step_; }
  bool decode() const { return decode_; }

  // Records `p` as the standing prediction of its layer, truncated to `capacity` experts
  // (what the scheduler can load; <= 0: no limit). Returns false (and records nothing) if
  // the layer has been routed already or the step is neither the current nor the next.
  bool publish(const Prediction& p, int capacity = 0);
  // The standing prediction of (step, layer), empty if none.
  const std::vector<int32_t>& predicted(int step, int layer) const;
  bool has_prediction(int step, int layer) const;

  // The full model routed `layer` of the current step: `used` are the distinct experts.
  void routed(int layer, const std::vector<int32_t>& used);
  // The current step's `layer` has completed (its expert outputs are combined).
  void layer_done(double t);

  // {"recall", "precision", "mean_lead_layers", "ready_fraction", "lead_histogram",
  //  "sources", "per_layer": [...], "recall_by_token": [...], ...}. "sources": per source of
  //  the standing prediction when a decode layer was routed (Prediction::source, or
  //  "unpredicted"): {"layers", "share" of the decode layers, "activated", "hits", "recall"}. `token_bucket`: tokens per entry
  // of recall_by_token.
  nlohmann::json to_json(int token_bucket = 16) const;

 private:
  struct Entry {
    int step = -1;
    std::vector<int32_t> experts;
    std::vector<double> since;  // per expert: when it entered the standing prediction
    double time = 0;            // when the standing prediction took its final form
    bool routed = false;
    const char* source = nullptr;  // what made the standing prediction
  };
  struct SourceStats {
    uint64_t layers = 0, activated = 0, hits = 0;
  };
  struct LayerStats {
    uint64_t activated = 0, predicted = 0, hits = 0, lead_sum = 0, layers = 0, ready = 0;
    LayerStats& operator+=(const LayerStats& o) {
      activated += o.activated, predicted += o.predicted, hits += o.hits;
      lead_sum += o.lead_sum, layers += o.layers, ready += o.ready;
      return *this;
    }
  };
  Entry& entry(int step, int layer) { return ring_[static_cast<size_t>((step & 1) * n_layer_ + layer)]; }
  const Entry& entry(int step, int layer) const { return ring_[static_cast<size_t>((step & 1) * n_layer_ + layer)]; }
  int64_t layers_done_at(double t) const;  // global layers completed at time t
  int64_t lead(int layer, double t) const;

  int n_layer_, n_expert_, ready_lead_;
  int step_ = -1;
  bool decode_ = false;
  int token_index_ = 0;  // decode steps since the last prefill
  std::vector<Entry> ring_;  // [step & 1][layer]
  int64_t done_ = 0;         // global layers completed
  std::deque<double> done_times_;  // completion times of the last few global layers
  int64_t done_times_first_ = 0;   // global index of done_times_.front()
  std::vector<LayerStats> layers_;
  std::vector<uint64_t> lead_hist_;  // [0]: unpredicted, [1 + lead] for lead 0..4, last: more
  std::vector<std::pair<uint64_t, uint64_t>> by_token_;  // [token index]: (hits, activated)
  std::map<std::string, SourceStats> sources_;  // decode layers by the source that served them
};

}  // namespace odmoe

namespace odmoe {

// Single process: every expert is in memory, so nothing is loaded; a predictor runs beside
// the model and its predictions are accounted exactly as the distributed runtime accounts
// them (`odmoe eval-predictor`, `odmoe generate --predictor` in one process).
class AccountingExecutor final : public ExpertExecutor, private PredictionSink {
 public:
  // `capacity`: experts a prediction may name per layer (what a group could load).
  // `sync`: before each decode layer, wait (at most `timeout_s`) for the prediction a
  // predictor still has pending for it: accuracy apart from timing.
  AccountingExecutor(ExpertExecutor& inner, int n_layer, int n_expert, int ready_lead, int capacity,
                     std::unique_ptr<Predictor> predictor, bool sync = false, double timeout_s = 60);
  void set_predictor(std::unique_ptr<Predictor> p) { predictor_ = std::move(p); }
  Predictor& predictor() { return *predictor_; }

  void begin_forward(const int32_t* tokens, size_t n, int pos) override;
  void submit(int layer, const float* h, size_t n, size_t k, const int32_t* ids, const float* weights) override;
  void collect(float* out) override;

  // The ledger's JSON with the predictor's name and figures.
  nlohmann::json stats() const;

 private:
  void publish(const Prediction& p) override;

  ExpertExecutor& inner_;
  PredictionLedger ledger_;
  int capacity_;
  std::unique_ptr<Predictor> predictor_;
  bool sync_;
  double timeout_s_;
  int step_ = -1, cur_layer_ = -1, layers_done_ = 0;
  bool prefill_ = false;
};

}  // namespace odmoe
