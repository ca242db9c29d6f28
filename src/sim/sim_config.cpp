// The simulator's configuration and results (schedule_sim.h): validation, JSON, Eq. 1 of
// the paper, the waiting model, and the group-count sweep. The event simulation itself is
// schedule_sim.cpp.
#include <algorithm>
#include <cmath>
#include <sstream>

#include "odmoe/core/error.h"
#include "odmoe/sched/schedule.h"
#include "odmoe/sim/schedule_sim.h"

namespace odmoe::sim {

double SimConfig::pull_seconds() const {
  return load_latency_s + (load_gbps > 0 ? expert_bytes * 8.0 / (load_gbps * 1e9) : 0.0);
}

double SimConfig::transfer_seconds() const {
  return msg_latency_s + (net_gbps > 0 ? act_bytes * 8.0 / (net_gbps * 1e9) : 0.0);
}

namespace {

bool finite_nonneg(double x) { return std::isfinite(x) && x >= 0; }

// Backoff (src/core/clock.cpp): polls without sleeping until the 256th, then sleeps
// 10 us x n (n counting from 1), at most 200 us.
constexpr double kSleepStep = 10e-6, kSleepMax = 200e-6;
constexpr int kCapSleeps = 20;  // sleep 20 is the first at the cap

}  // namespace

double PollModel::notice(double t0, double te) const {
  if (te <= t0) return t0;
  const double w = te - t0;
  if (w <= spin_s) return te;
  double t = spin_s;
  for (int n = 1; n < kCapSleeps; ++n) {
    t += n * kSleepStep + overshoot_s;
    if (t >= w) return t0 + t;
  }
  const double period = kSleepMax + overshoot_s;
  return t0 + t + std::ceil((w - t) / period) * period;
}

void SimConfig::validate() {
  ODMOE_CHECK(n_layer > 0 && n_expert > 0 && top_k > 0 && top_k <= n_expert, kCli, "bad-model",
              "cannot simulate a model with " << n_layer << " layers, " << n_expert << " experts, top-" << top_k,
              "give --layers, --experts and --top-k (top-k <= experts), or --arch");
  ODMOE_CHECK(n_dense_layer >= 0 && n_dense_layer < n_layer, kCli, "bad-model",
              n_dense_layer << " dense layers leave no MoE layer of " << n_layer, "");
  ODMOE_CHECK(n_workers >= 1, kCli, "no-workers", "the cluster has " << n_workers << " expert ranks (workers)",
              "give --workers W >= 1 (or --nodes N: main + W workers" << " [+ a shadow node])");
  ODMOE_CHECK(n_groups >= 0, kCli, "bad-groups", "--groups " << n_groups << " is negative", "use 0 (the default) or a divisor of " << n_workers);
  if (n_groups == 0) n_groups = Schedule::default_groups(n_workers, top_k);
  // The runtime's own rules (G divides W, lookahead 1..8, ...): one source of truth.
  Schedule sched(n_moe_layer(), n_expert, top_k, n_workers, n_groups, lookahead);
  (void)sched;
  ODMOE_CHECK(workers_per_link >= 1, kCli, "bad-option", "--workers-per-link " << workers_per_link << " must be >= 1", "");
  struct Figure {
    const char* name;
    double value;
  };
  for (const Figure& f : {Figure{"expert bytes (--expert-mb)", expert_bytes}, Figure{"activation bytes", act_bytes},
                          Figure{"--load-gbps", load_gbps}, Figure{"pull latency (--load-latency-us)", load_latency_s},
                          Figure{"pull start delay", pull_start_s}, Figure{"pull notice delay", pull_notice_s},
                          Figure{"pull post time", pull_post_s},
                          Figure{"--link-gbps", net_gbps}, Figure{"message latency (--msg-us)", msg_latency_s},
                          Figure{"t_main (--main-ms-per-layer)", t_main_s}, Figure{"dense-layer time", t_dense_layer_s},
                          Figure{"t_submit (--submit-ms)", t_submit_s},
                          Figure{"t_step (--step-ms)", t_step_s}, Figure{"t_expert (--expert-ms)", t_expert_s}})
    ODMOE_CHECK(finite_nonneg(f.value), kCli, "bad-figure", f.name << " is " << f.value << "; it must be a finite number >= 0",
                "bandwidths and times cannot be negative");
  ODMOE_CHECK(recall >= 0 && recall <= 1, kCli, "bad-figure", "--recall " << recall << " must be in [0, 1]", "");
  ODMOE_CHECK(unpredicted >= 0 && unpredicted <= 1, kCli, "bad-figure", "unpredicted share " << unpredicted << " must be in [0, 1]", "");
  ODMOE_CHECK(cache_hit_rate >= 0 && cache_hit_rate <= 1, kCli, "bad-figure",
              "--cache-hit-rate " << cache_hit_rate << " must be in [0, 1]", "");
  double w = 0;
  for (const LeadBucket& b : lead) {
    ODMOE_CHECK(finite_nonneg(b.layers) && finite_nonneg(b.weight), kCli, "bad-figure",
                "a prediction lead of " << b.layers << " layers (weight " << b.weight << ") is invalid", "leads are >= 0");
    w += b.weight;
  }
  ODMOE_CHECK(lead.empty() || w > 0, kCli, "bad-figure", "the lead distribution has no weight", "");
  ODMOE_CHECK(lead_tokens >= -1 && lead_tokens <= 1, kCli, "bad-figure",
              "a prediction " << lead_tokens << " tokens ahead is not possible",
              "predictions exist for the current token or the next one (--lead token | next-token | N layers)");
  for (const Figure& f : {Figure{"poll spin time", poll.spin_s}, Figure{"sleep overshoot", poll.overshoot_s},
                          Figure{"thread wake-up", poll.wake_s}})
    ODMOE_CHECK(finite_nonneg(f.value) && f.value < 1, kCli, "bad-figure", f.name << " is " << f.value << " s",
                "give it in microseconds, >= 0");
  ODMOE_CHECK(n_tokens >= 1 && n_tokens <= 1000000, kCli, "bad-option", "--tokens " << n_tokens << " is out of range",
              "use 1 to 1000000");
}

std::string SimConfig::to_string() const {
  std::ostringstream os;
  os << (model_name.empty() ? std::string("model") : model_name) << ": " << n_layer << " layers";
  if (n_dense_layer) os << " (" << n_dense_layer << " dense)";
  os << ", top-" << top_k << " of " << n_expert << " experts of " << expert_bytes / (1 << 20) << " MiB; " << n_workers
     << " workers in " << n_groups << " group(s) of " << group_size() << ", lookahead " << lookahead << "; "
     << sim_mode_name(mode);
  if (mode != SimMode::kResident) {
    if (predicted) os << ", recall " << recall;
    else os << ", no predictor";
  }
  if (mode == SimMode::kCache) os << ", hit rate " << cache_hit_rate;
  return os.str();
}

nlohmann::json SimConfig::to_json() const {
  nlohmann::json leads = nlohmann::json::array();
  for (const LeadBucket& b : lead) leads.push_back({{"layers", b.layers}, {"weight", b.weight}});
  return {{"model", model_name},
          {"layers", n_layer},
          {"dense_layers", n_dense_layer},
          {"experts", n_expert},
          {"top_k", top_k},
          {"expert_bytes", expert_bytes},
          {"activation_bytes", act_bytes},
          {"workers", n_workers},
          {"groups", n_groups},
          {"group_size", group_size()},
          {"lookahead", lookahead},
          {"workers_per_link", workers_per_link},
          {"load_gbps", load_gbps},
          {"load_latency_seconds", load_latency_s},
          {"pull_seconds", pull_seconds()},
          {"pull_start_seconds", pull_start_s},
          {"pull_notice_seconds", pull_notice_s},
          {"pull_post_seconds", pull_post_s},
          {"net_gbps", net_gbps},
          {"msg_latency_seconds", msg_latency_s},
          {"transfer_seconds", transfer_seconds()},
          {"t_main_seconds", t_main_s},
          {"t_dense_layer_seconds", t_dense_layer_s},
          {"t_submit_seconds", t_submit_s},
          {"t_step_seconds", t_step_s},
          {"t_expert_seconds", t_expert_s},
          {"mode", sim_mode_name(mode)},
          {"predicted", predicted},
          {"recall", recall},
          {"unpredicted_layers", unpredicted},
          {"lead", leads},
          {"lead_tokens", lead_tokens},
          {"cache_hit_rate", cache_hit_rate},
          {"poll", {{"loads", poll.loads}, {"messages", poll.messages}, {"spin_seconds", poll.spin_s},
                    {"sleep_overshoot_seconds", poll.overshoot_s}, {"wake_seconds", poll.wake_s}}},
          {"tokens", n_tokens},
          {"seed", seed}};
}

nlohmann::json Eq1::to_json() const {
  return {{"t_main_seconds", t_main_s},
          {"t_worker_seconds", t_worker_s},
          {"t_maxload_seconds", t_maxload_s},
          {"t_load_seconds", t_load_s},
          {"loads_hidden", hidden()},
          {"stall_per_layer_seconds", stall_per_layer_s},
          {"tokens_per_second", tokens_per_second}};
}

Eq1 eq1(const SimConfig& c) {
  Eq1 q;
  const int G = c.n_groups, S = c.group_size(), P = c.workers_per_link;
  q.t_main_s = c.t_main_s;
  // Main's own work of the layer runs beside the expert phase.
  q.t_worker_s = std::max(c.t_submit_s, 2 * c.transfer_seconds() + c.experts_per_worker() * c.t_expert_s);
  q.t_maxload_s = G * q.t_main_s + (G - 1) * q.t_worker_s;
  double layer = q.t_main_s + q.t_worker_s;
  if (c.mode != SimMode::kResident) {
    const double miss = c.mode == SimMode::kCache ? 1.0 - c.cache_hit_rate : 1.0;
    // The busiest load path: the workers of one group that share it, for one layer.
    q.t_load_s = miss * c.experts_per_worker() * std::min(P, S) * c.pull_seconds() + c.pull_start_s + c.pull_notice_s;
    const double per_layer = std::max(layer, (q.t_load_s + q.t_worker_s) / G);
    // A path shared by several groups carries all of their loads.
    const int groups_on_path = std::max(1, std::min(G, P / std::max(S, 1)));
    const double path = groups_on_path > 1 ? groups_on_path * q.t_load_s / G : 0.0;
    const double t = std::max(per_layer, path);
    q.stall_per_layer_s = t - layer;
    layer = t;
  }
  const double token = c.n_moe_layer() * layer + c.n_dense_layer * c.t_dense_layer_s + c.t_step_s;
  q.tokens_per_second = token > 0 ? 1.0 / token : 0.0;
  return q;
}

nlohmann::json SimResult::to_json() const {
  return {{"seconds_per_token", seconds_per_token},
          {"tokens_per_second", tokens_per_second},
          {"main_busy_fraction", main_busy_fraction},
          {"worker_stall_fraction", worker_stall_fraction},
          {"worker_busy_fraction", worker_busy_fraction},
          {"load_hidden_fraction", load_hidden_fraction},
          {"expert_phase_seconds", expert_phase_s},
          {"stall_per_layer_seconds", stall_per_layer_s},
          {"loads_per_token", loads_per_token},
          {"misses_per_token", misses_per_token},
          {"load_seconds", load_seconds},
          {"stall_seconds", stall_seconds},
          {"wall_seconds", wall_seconds},
          {"resident_tokens_per_second", resident_tokens_per_second},
          {"percent_of_resident", resident_tokens_per_second > 0 ? 100.0 * tokens_per_second / resident_tokens_per_second : 0.0},
          {"eq1", eq1.to_json()}};
}

GroupsSuggestion suggest_groups(const SimConfig& base) {
  GroupsSuggestion s;
  const int W = base.n_workers;
  ODMOE_CHECK(W >= 1, kCli, "no-workers", "--suggest-groups needs a cluster with at least one worker", "give --workers or --nodes");
  const int def = Schedule::default_groups(W, base.top_k);
  for (int G = 1; G <= W; ++G) {
    if (W % G) continue;
    SimConfig c = base;
    c.n_groups = G;
    c.validate();
    GroupsRow row;
    row.groups = G;
    row.group_size = c.group_size();
    row.is_default = G == def;
    row.result = simulate(c);
    s.rows.push_back(row);
  }
  double best = -1;
  for (const GroupsRow& r : s.rows)  // ascending G: a later row must be more than 0.1% faster
    if (r.result.tokens_per_second > best * 1.001) {
      best = r.result.tokens_per_second;
      s.best_groups = r.groups;
    }
  return s;
}

nlohmann::json GroupsSuggestion::to_json() const {
  nlohmann::json rows_j = nlohmann::json::array();
  for (const GroupsRow& r : rows)
    rows_j.push_back({{"groups", r.groups}, {"group_size", r.group_size}, {"default", r.is_default},
                      {"result", r.result.to_json()}});
  return {{"rows", rows_j}, {"best_groups", best_groups}};
}

}  // namespace odmoe::sim
