#include "odmoe/predict/predictor.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include <numeric>
#include <random>

#include "odmoe/core/error.h"
#include "odmoe/core/json_file.h"
#include "odmoe/core/clock.h"
#include "odmoe/model/model.h"

namespace odmoe {

void PredictionSink::publish(int step, int layer, std::vector<int32_t> experts, const char* source) {
  publish(Prediction{step, layer, std::move(experts), now_s(), source});
}

bool is_predictor_name(const std::string& n) {
  return n == "none" || n == "shadow" || n == "oracle" || n == "previous" || n == "random" || n == "gate-ahead";
}

std::vector<int32_t> rank_experts(const float* logits, int n_expert, int count) {
  count = std::clamp(count, 0, n_expert);
  std::vector<int32_t> order(static_cast<size_t>(n_expert));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + count, order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  order.resize(static_cast<size_t>(count));
  return order;
}

namespace {
constexpr const char* kFormat = "odmoe-routing-trace";
constexpr int kVersion = 1;

class NonePredictor final : public Predictor {
 public:
  std::string name() const override { return "none"; }
  void begin_step(int, int, const int32_t*, size_t, PredictionSink&) override {}
};

class OraclePredictor final : public Predictor {
 public:
  explicit OraclePredictor(RoutingTrace t) : trace_(std::move(t)) {}
  std::string name() const override { return "oracle"; }
  void begin_step(int step, int, const int32_t*, size_t, PredictionSink& sink) override {
    // This step, and the next one already: the upper bound loads across the token boundary
    // as early as the schedule allows.
    for (int s = std::max(step, published_ + 1); s <= step + 1; ++s) publish_step(s, sink);
  }

 private:
  void publish_step(int step, PredictionSink& sink) {
    published_ = step;
    if (step < 0 || static_cast<size_t>(step) >= trace_.steps.size()) return;  // past the recording
    const RoutingTrace::Step& s = trace_.steps[static_cast<size_t>(step)];
    if (s.tokens.size() != 1) return;  // a prompt: every expert is loaded anyway
    for (size_t l = 0; l < s.layers.size(); ++l) {
      std::vector<int32_t> experts;
      for (int32_t e : s.layers[l])
        if (std::find(experts.begin(), experts.end(), e) == experts.end()) experts.push_back(e);
      sink.publish(step, static_cast<int>(l), experts, "oracle");
    }
  }
  int published_ = -1;  // the last step published
  RoutingTrace trace_;
};
class PreviousPredictor final : public Predictor {
 public:
  explicit PreviousPredictor(int n_layer) : last_(static_cast<size_t>(n_layer)) {}
  std::string name() const override { return "previous"; }
  void begin_step(int step, int, const int32_t*, size_t n, PredictionSink& sink) override {
    if (n != 1) return;  // prefill loads every expert anyway
    for (size_t l = 0; l < last_.size(); ++l)
      if (!last_[l].empty()) sink.publish(step, static_cast<int>(l), last_[l], "previous");
  }
  void after_routing(int, int layer, const float*, size_t n, const int32_t* ids, size_t k, PredictionSink&) override {
    // The last token's choices (prefill: the prompt's last token).
    last_[static_cast<size_t>(layer)].assign(ids + (n - 1) * k, ids + n * k);
  }

 private:
  std::vector<std::vector<int32_t>> last_;
};

class RandomPredictor final : public Predictor {
 public:
  RandomPredictor(int n_layer, int n_expert, int top_k, uint64_t seed)
      : n_layer_(n_layer), n_expert_(n_expert), k_(top_k), rng_(seed) {}
  std::string name() const override { return "random"; }
  void begin_step(int step, int, const int32_t*, size_t n, PredictionSink& sink) override {
    if (n != 1) return;
    std::vector<int32_t> all(static_cast<size_t>(n_expert_));
    for (int l = 0; l < n_layer_; ++l) {
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), rng_);
      sink.publish(step, l, std::vector<int32_t>(all.begin(), all.begin() + k_), "random");
    }
  }

 private:
  int n_layer_, n_expert_, k_;
  std::mt19937_64 rng_;
};

class GateAheadPredictor final : public Predictor {
 public:
  GateAheadPredictor(const Model& m, int depth, int extra) : model_(m), depth_(depth), extra_(extra) {}
  std::string name() const override { return "gate-ahead"; }
  void begin_step(int, int, const int32_t*, size_t n, PredictionSink&) override { decode_ = n == 1; }
  void after_routing(int step, int layer, const float* h, size_t n, const int32_t*, size_t k, PredictionSink& sink) override {
    if (!decode_ || n != 1) return;
    const ModelConfig& c = model_.config();
    logits_.resize(static_cast<size_t>(c.n_expert));
    for (int d = 1; d <= depth_ && layer + d < c.n_layer; ++d) {
      model_.router_logits(layer + d, h, 1, logits_.data());
      sink.publish(step, layer + d, rank_experts(logits_.data(), c.n_expert, static_cast<int>(k) + extra_), "gate-ahead");
    }
  }

 private:
  const Model& model_;
  int depth_, extra_;
  bool decode_ = false;
  std::vector<float> logits_;
};

}  // namespace

std::unique_ptr<Predictor> make_previous_predictor(int n_layer) { return std::make_unique<PreviousPredictor>(n_layer); }
std::unique_ptr<Predictor> make_random_predictor(int n_layer, int n_expert, int top_k, uint64_t seed) {
  return std::make_unique<RandomPredictor>(n_layer, n_expert, top_k, seed);
}
std::unique_ptr<Predictor> make_gate_ahead_predictor(const Model& model, int depth, int extra) {
  ODMOE_CHECK(depth >= 1, kCli, "bad-option", "--gate-ahead-depth must be at least 1", "");
  return std::make_unique<GateAheadPredictor>(model, depth, extra);
}

std::unique_ptr<Predictor> make_none_predictor() { return std::make_unique<NonePredictor>(); }
std::unique_ptr<Predictor> make_oracle_predictor(RoutingTrace trace) {
  return std::make_unique<OraclePredictor>(std::move(trace));
}

void RoutingTrace::save(const std::string& path) const {
  nlohmann::json j = {{"format", kFormat}, {"version", kVersion},   {"model_uid", model_uid}, {"n_layer", n_layer},
                      {"n_expert", n_expert}, {"top_k", top_k}, {"prompt", prompt}};
  j["steps"] = nlohmann::json::array();
  for (const Step& s : steps) j["steps"].push_back({{"tokens", s.tokens}, {"layers", s.layers}});
  write_json_file(path, j, -1, "routing trace");
}

RoutingTrace RoutingTrace::load(const std::string& path) {
  std::ifstream f(path);
  ODMOE_CHECK(f.good(), kIo, "open", "cannot read routing trace " << path,
              "record one with `odmoe generate ... --save-routing FILE`");
  nlohmann::json j;
  try {
    f >> j;
  } catch (const std::exception& e) {
    ODMOE_THROW(kConfig, "bad-trace", path << " is not valid JSON: " << e.what(), "");
  }
  RoutingTrace t;
  try {
    ODMOE_CHECK(j.value("format", "") == kFormat && j.value("version", 0) == kVersion, kConfig, "bad-trace",
                path << " is not an odmoe routing trace (format " << kFormat << " version " << kVersion << ")", "");
    t.model_uid = j.at("model_uid").get<uint64_t>();
    t.n_layer = j.at("n_layer").get<int>();
    t.n_expert = j.at("n_expert").get<int>();
    t.top_k = j.at("top_k").get<int>();
    t.prompt = j.at("prompt").get<std::vector<int32_t>>();
    for (const auto& s : j.at("steps")) {
      Step st;
      st.tokens = s.at("tokens").get<std::vector<int32_t>>();
      st.layers = s.at("layers").get<std::vector<std::vector<int32_t>>>();
      ODMOE_CHECK(static_cast<int>(st.layers.size()) == t.n_layer, kConfig, "bad-trace",
                  path << ": a step has " << st.layers.size() << " layers, the trace says " << t.n_layer, "");
      for (const auto& ids : st.layers) {
        ODMOE_CHECK(ids.size() == st.tokens.size() * static_cast<size_t>(t.top_k), kConfig, "bad-trace",
                    path << ": a step's layer has " << ids.size() << " expert ids for " << st.tokens.size()
                         << " tokens of top-" << t.top_k, "");
        for (int32_t e : ids)
          ODMOE_CHECK(e >= 0 && e < t.n_expert, kConfig, "bad-trace", path << ": expert id " << e << " out of range", "");
      }
      t.steps.push_back(std::move(st));
    }
  } catch (const nlohmann::json::exception& e) {
    ODMOE_THROW(kConfig, "bad-trace", path << " is not a valid routing trace: " << e.what(), "");
  }
  return t;
}

}  // namespace odmoe
