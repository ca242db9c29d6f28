#include "odmoe/predict/fallback.h"

#include <algorithm>
#include <array>

#include "odmoe/core/error.h"
#include "odmoe/model/model.h"

namespace odmoe {

namespace {

class FallbackPredictor final : public Predictor {
 public:
  FallbackPredictor(std::unique_ptr<Predictor> primary, const Model& model, int depth, int extra)
      : primary_(std::move(primary)), model_(model), depth_(depth), extra_(extra),
        covered_(static_cast<size_t>(model.config().n_layer), {-1, -1}),
        previous_(static_cast<size_t>(model.config().n_layer)),
        logits_(static_cast<size_t>(model.config().n_expert)) {}

  std::string name() const override { return primary_->name(); }

  void begin_step(int step, int pos, const int32_t* tokens, size_t n, PredictionSink& sink) override {
    decode_ = n == 1;
    Tap tap(*this, sink);
    primary_->begin_step(step, pos, tokens, n, tap);
    primary_->poll(tap);
    if (decode_ && !covered(step, 0) && !previous_[0].empty()) fill(sink, step, 0, previous_[0], "previous");
  }

  void after_routing(int step, int layer, const float* h, size_t n, const int32_t* ids, size_t k,
                     PredictionSink& sink) override {
    Tap tap(*this, sink);
    primary_->after_routing(step, layer, h, n, ids, k, tap);
    primary_->poll(tap);  // what has arrived counts before deciding the primary is behind
    previous_[static_cast<size_t>(layer)].assign(ids + (n - 1) * k, ids + n * k);  // the last token's choice
    const int n_layer = model_.config().n_layer, n_expert = model_.config().n_expert;
    if (!decode_ || n != 1 || layer + 1 >= n_layer || covered(step, layer + 1)) return;
    for (int d = 1; d <= depth_ && layer + d < n_layer; ++d) {
      if (covered(step, layer + d)) continue;
      model_.router_logits(layer + d, h, 1, logits_.data());
      fill(sink, step, layer + d, rank_experts(logits_.data(), n_expert, static_cast<int>(k) + extra_), "gate-ahead");
    }
  }

  void poll(PredictionSink& sink) override {
    Tap tap(*this, sink);
    primary_->poll(tap);
  }
  bool pending(int step, int layer) const override { return primary_->pending(step, layer); }
  void finish() override { primary_->finish(); }

  nlohmann::json stats() const override {
    nlohmann::json j = primary_->stats();
    j["fallback"] = {{"sources", "gate-ahead, previous"}, {"depth", depth_}, {"filled_layers", filled_}};
    return j;
  }

 private:
  // The sink the primary publishes through: notes which (step, layer) it has covered.
  class Tap final : public PredictionSink {
   public:
    Tap(FallbackPredictor& owner, PredictionSink& sink) : owner_(owner), sink_(sink) {}
    void publish(const Prediction& p) override {
      if (p.layer >= 0 && static_cast<size_t>(p.layer) < owner_.covered_.size())
        owner_.covered_[static_cast<size_t>(p.layer)][static_cast<size_t>(p.step & 1)] = p.step;
      sink_.publish(p);
    }

   private:
    FallbackPredictor& owner_;
    PredictionSink& sink_;
  };

  bool covered(int step, int layer) const { return covered_[static_cast<size_t>(layer)][static_cast<size_t>(step & 1)] == step; }

  void fill(PredictionSink& sink, int step, int layer, std::vector<int32_t> experts, const char* source) {
    ++filled_;
    sink.publish(step, layer, std::move(experts), source);
  }

  std::unique_ptr<Predictor> primary_;
  const Model& model_;
  int depth_, extra_;
  bool decode_ = false;
  std::vector<std::array<int, 2>> covered_;     // [layer][step & 1]: the step the primary published it for
  std::vector<std::vector<int32_t>> previous_;  // [layer]: the last token's expert ids (k)
  std::vector<float> logits_;                   // [n_expert] router logits scratch
  uint64_t filled_ = 0;                         // predictions the fallback published
};

}  // namespace

std::unique_ptr<Predictor> make_fallback_predictor(std::unique_ptr<Predictor> primary, const Model& model, int depth,
                                                   int extra) {
  ODMOE_CHECK(depth >= 1, kCli, "bad-option", "the fallback's look-ahead depth must be at least 1", "");
  return std::make_unique<FallbackPredictor>(std::move(primary), model, depth, extra);
}

}  // namespace odmoe
