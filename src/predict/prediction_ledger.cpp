#include "odmoe/predict/prediction_ledger.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "odmoe/core/error.h"
#include "odmoe/core/clock.h"

namespace odmoe {

namespace {
const std::vector<int32_t> kNone;
double ratio(uint64_t a, uint64_t b) { return b ? static_cast<double>(a) / static_cast<double>(b) : 0.0; }
constexpr int kHistLeads = 5;  // histogram buckets: lead 0..4, then "5+"
}  // namespace

std::string format_sources(const nlohmann::json& sources) {
  std::vector<std::pair<double, std::string>> v;
  if (sources.is_object())
    for (const auto& [name, s] : sources.items()) v.emplace_back(s.value("share", 0.0), name);
  if (v.empty()) return "-";
  std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::string out;
  for (const auto& [share, name] : v) {
    char b[96];
    std::snprintf(b, sizeof b, "%s%s %.1f%%", out.empty() ? "" : ", ", name.c_str(), 100.0 * share);
    out += b;
  }
  return out;
}

PredictionLedger::PredictionLedger(int n_layer, int n_expert, int ready_lead)
    : n_layer_(n_layer), n_expert_(n_expert), ready_lead_(std::max(1, ready_lead)),
      ring_(static_cast<size_t>(2 * n_layer)), layers_(static_cast<size_t>(n_layer)),
      lead_hist_(2 + kHistLeads, 0) {}

void PredictionLedger::begin_step(int step, bool decode) {
  step_ = step;
  decode_ = decode;
  token_index_ = decode ? token_index_ + 1 : 0;
  done_ = static_cast<int64_t>(step) * n_layer_;
  // The slots of step + 1 held step - 1: clear them for predictions made ahead.
  for (int l = 0; l < n_layer_; ++l) {
    Entry& e = entry(step + 1, l);
    if (e.step != step + 1) e = Entry{};
    Entry& c = entry(step, l);
    if (c.step != step) c = Entry{};
  }
}

bool PredictionLedger::publish(const Prediction& p, int capacity) {
  if (p.layer < 0 || p.layer >= n_layer_ || p.step < step_ || p.step > step_ + 1) return false;
  Entry& e = entry(p.step, p.layer);
  if (e.step != p.step) e = Entry{};
  if (e.routed) return false;
  std::vector<int32_t> experts;
  for (int32_t x : p.experts)
    if (x >= 0 && x < n_expert_ && std::find(experts.begin(), experts.end(), x) == experts.end()) experts.push_back(x);
  if (capacity > 0 && static_cast<int>(experts.size()) > capacity) experts.resize(static_cast<size_t>(capacity));
  std::vector<double> since(experts.size(), p.time);
  for (size_t i = 0; i < experts.size(); ++i)
    for (size_t j = 0; j < e.experts.size(); ++j)
      if (e.experts[j] == experts[i]) since[i] = std::min(since[i], e.since[j]);
  if (e.step == p.step && e.experts == experts) return true;  // unchanged: keeps its time
  e.step = p.step;
  e.experts = std::move(experts);
  e.since = std::move(since);
  e.time = p.time;
  e.source = p.source;
  return true;
}

const std::vector<int32_t>& PredictionLedger::predicted(int step, int layer) const {
  const Entry& e = entry(step, layer);
  return e.step == step ? e.experts : kNone;
}

bool PredictionLedger::has_prediction(int step, int layer) const {
  const Entry& e = entry(step, layer);
  return e.step == step && !e.experts.empty();
}

int64_t PredictionLedger::layers_done_at(double t) const {
  const auto it = std::upper_bound(done_times_.begin(), done_times_.end(), t);
  return done_times_first_ + (it - done_times_.begin());
}

int64_t PredictionLedger::lead(int layer, double t) const {
  return static_cast<int64_t>(step_) * n_layer_ + layer - layers_done_at(t);
}

void PredictionLedger::routed(int layer, const std::vector<int32_t>& used) {
  Entry& e = entry(step_, layer);
  if (e.step != step_) e = Entry{step_, {}, {}, 0, false, nullptr};
  e.routed = true;
  if (!decode_) return;
  LayerStats& st = layers_[static_cast<size_t>(layer)];
  ++st.layers;
  st.activated += used.size();
  st.predicted += e.experts.size();
  uint64_t hits = 0;
  for (int32_t x : used) {
    const auto it = std::find(e.experts.begin(), e.experts.end(), x);
    if (it == e.experts.end()) continue;
    ++hits;
    st.lead_sum += static_cast<uint64_t>(std::max<int64_t>(0, lead(layer, e.since[static_cast<size_t>(it - e.experts.begin())])));
  }
  st.hits += hits;
  SourceStats& src = sources_[e.experts.empty() ? "unpredicted" : e.source ? e.source : "unnamed"];
  ++src.layers;
  src.activated += used.size();
  src.hits += hits;
  if (e.experts.empty()) {
    ++lead_hist_[0];
  } else {
    const int64_t l = std::max<int64_t>(0, lead(layer, e.time));
    ++lead_hist_[static_cast<size_t>(1 + std::min<int64_t>(l, kHistLeads))];
    st.ready += l >= ready_lead_;
  }
  const size_t ti = static_cast<size_t>(std::max(0, token_index_ - 1));
  if (by_token_.size() <= ti) by_token_.resize(ti + 1);
  by_token_[ti].first += hits;
  by_token_[ti].second += used.size();
}

void PredictionLedger::layer_done(double t) {
  ++done_;
  done_times_.push_back(t);
  while (done_times_.size() > static_cast<size_t>(4 * n_layer_ + 8)) {
    done_times_.pop_front();
    ++done_times_first_;
  }
  // Keep the index consistent with done_ (a step may have been cut short by an error).
  done_times_first_ = done_ - static_cast<int64_t>(done_times_.size());
}

nlohmann::json PredictionLedger::to_json(int token_bucket) const {
  token_bucket = std::max(1, token_bucket);
  nlohmann::json per_layer = nlohmann::json::array();
  LayerStats all;
  for (const LayerStats& s : layers_) {
    per_layer.push_back({{"decode_layers", s.layers},
                         {"activated", s.activated},
                         {"predicted", s.predicted},
                         {"hits", s.hits},
                         {"misses", s.activated - s.hits},
                         {"recall", ratio(s.hits, s.activated)},
                         {"precision", ratio(s.hits, s.predicted)},
                         {"mean_lead_layers", s.hits ? static_cast<double>(s.lead_sum) / static_cast<double>(s.hits) : 0.0},
                         {"ready_fraction", ratio(s.ready, s.layers)}});
    all += s;
  }
  nlohmann::json hist = {{"unpredicted", lead_hist_[0]}};
  for (int l = 0; l < kHistLeads; ++l) hist[std::to_string(l)] = lead_hist_[static_cast<size_t>(1 + l)];
  hist[std::to_string(kHistLeads) + "+"] = lead_hist_.back();
  nlohmann::json by_token = nlohmann::json::array();
  for (size_t b = 0; b < by_token_.size(); b += static_cast<size_t>(token_bucket)) {
    uint64_t h = 0, a = 0;
    for (size_t i = b; i < std::min(by_token_.size(), b + static_cast<size_t>(token_bucket)); ++i) {
      h += by_token_[i].first;
      a += by_token_[i].second;
    }
    by_token.push_back({{"first_token", b}, {"tokens", std::min(by_token_.size(), b + token_bucket) - b},
                        {"activated", a}, {"recall", ratio(h, a)}});
  }
  nlohmann::json sources = nlohmann::json::object();
  for (const auto& [name, s] : sources_)
    sources[name] = {{"layers", s.layers}, {"share", ratio(s.layers, all.layers)}, {"activated", s.activated},
                     {"hits", s.hits}, {"recall", ratio(s.hits, s.activated)}};
  return {{"decode_layers", all.layers},
          {"decode_activated", all.activated},
          {"decode_predicted", all.predicted},
          {"hits", all.hits},
          {"recall", ratio(all.hits, all.activated)},
          {"precision", ratio(all.hits, all.predicted)},
          {"mean_lead_layers", all.hits ? static_cast<double>(all.lead_sum) / static_cast<double>(all.hits) : 0.0},
          {"ready_lead_layers", ready_lead_},
          {"ready_fraction", ratio(all.ready, all.layers)},
          {"lead_histogram", hist},
          {"sources", sources},
          {"per_layer", per_layer},
          {"recall_by_token", by_token}};
}

}  // namespace odmoe

namespace odmoe {

AccountingExecutor::AccountingExecutor(ExpertExecutor& inner, int n_layer, int n_expert, int ready_lead, int capacity,
                                       std::unique_ptr<Predictor> predictor, bool sync, double timeout_s)
    : inner_(inner), ledger_(n_layer, n_expert, ready_lead), capacity_(capacity), predictor_(std::move(predictor)),
      sync_(sync), timeout_s_(timeout_s) {}

void AccountingExecutor::begin_forward(const int32_t* tokens, size_t n, int pos) {
  ++step_;
  prefill_ = n > 1;
  layers_done_ = 0;
  cur_layer_ = -1;
  ledger_.begin_step(step_, !prefill_);
  inner_.begin_forward(tokens, n, pos);
  predictor_->begin_step(step_, pos, tokens, n, *this);
}

void AccountingExecutor::publish(const Prediction& p) {
  if (p.step == step_ && (prefill_ || p.layer < layers_done_ || p.layer == cur_layer_)) return;
  ledger_.publish(p, capacity_);
}

void AccountingExecutor::submit(int layer, const float* h, size_t n, size_t k, const int32_t* ids, const float* w) {
  if (sync_ && !prefill_) {
    const double deadline = now_s() + timeout_s_;
    while (predictor_->pending(step_, layer)) {
      ODMOE_CHECK(now_s() < deadline, kCore, "timeout",
                  "the " << predictor_->name() << " predictor did not predict layer " << layer << " within " << timeout_s_
                         << " s", "");
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
  predictor_->poll(*this);
  cur_layer_ = layer;
  std::vector<int32_t> used;
  for (size_t i = 0; i < n * k; ++i)
    if (std::find(used.begin(), used.end(), ids[i]) == used.end()) used.push_back(ids[i]);
  ledger_.routed(layer, used);
  inner_.submit(layer, h, n, k, ids, w);
  predictor_->after_routing(step_, layer, h, n, ids, k, *this);
}

void AccountingExecutor::collect(float* out) {
  inner_.collect(out);
  ledger_.layer_done(now_s());
  ++layers_done_;
  cur_layer_ = -1;
  predictor_->poll(*this);
}

nlohmann::json AccountingExecutor::stats() const {
  nlohmann::json j = ledger_.to_json();
  j["name"] = predictor_->name();
  const nlohmann::json ps = predictor_->stats();
  for (const auto& [key, value] : ps.items()) j[key] = value;
  return j;
}

}  // namespace odmoe
