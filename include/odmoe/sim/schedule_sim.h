// The schedule simulator: a discrete-event model of distributed decode at batch 1, as
// odmoe's runtime schedules it (DESIGN.md "Ranks and what each one does"), for clusters
// that are not at hand. `odmoe simulate` is its command line.
//
// What is modelled, per decoded token and layer:
//  * main computes the dense part of layer l (t_main), then sends the hidden state to the
//    workers of the k routed experts (message latency + hidden bytes / network bandwidth,
//    serialised on main's link; a missed expert's LOAD first), waits for all k results and
//    for its own work of the layer (t_submit: sending, predictor upkeep), and goes on;
//    after the last layer it spends t_step (LM head, sampling) before the next token;
//  * layer l is served by group l mod G (MoE layers only); the j-th expert of a layer goes
//    to worker j mod S of the group, as Schedule places it (resident: e mod S);
//  * a worker handles its commands one at a time, in arrival order (LOAD only queues a
//    pull; COMPUTE waits for the activation and for the weights, then computes);
//  * pulls of the workers that share a load path (a node's NIC for a sharded store, a GPU's
//    PCIe link) queue on it, first come first served: latency + bytes / bandwidth each;
//    a pull may start late (pull_start_s), be noticed late (pull_notice_s, off the path),
//    and hold its worker while it is posted (pull_post_s: on one node the get's copy);
//  * on-demand: the prediction for layer gl (counted over tokens) is ready `lead` layers
//    ahead: when main starts layer gl - lead. Its loads are sent when it is ready and the
//    group has a slot bank free: with lookahead D, after main has collected the group's
//    layer D rounds earlier (what the runtime's pump() does). A prediction names k experts;
//    each routed expert is in it with probability `recall`, the rest are wrong guesses, which
//    still occupy the link. A routed expert that was not predicted is loaded after routing
//    (a miss: LOAD + COMPUTE, the worker stalls);
//  * cache: each expert the schedule would load is already cached with probability
//    `cache_hit_rate` and then costs nothing;
//  * resident: nothing is loaded.
// Routing is uniform over the E experts (k distinct per layer), drawn from a seeded
// generator, as are which experts a prediction misses: the result is deterministic.
//
// Waiting, as odmoe's threads wait (PollModel): a waiter polls with Backoff
// (src/core/clock.cpp: 64 spins, then yields up to 256 polls, then sleeps of 10 us x n,
// capped at 200 us), so an event is noticed at the waiter's next poll, and each sleep lasts
// longer than asked (timer slack). A blocked loader thread needs `wake_s` to run after it is
// notified. The loader notices a finished pull this way, and a worker a slot it stalls on;
// with `messages`, also a worker its next command and main each result.
//
// What is not modelled: CPU contention between ranks that share cores (a measured run's
// figures hold its average effect, not its variance), prefill, network contention between
// activations and pulls, batch > 1. bench/sim_validate.py compares the model with runs.
#pragma once

#include "odmoe/sched/schedule.h"

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace odmoe::sim {

using SimMode = Mode;  // the runtime's modes (sched/schedule.h)
inline SimMode parse_sim_mode(const std::string& s) { return parse_mode(s); }  // throws ArgumentError
inline const char* sim_mode_name(SimMode m) { return mode_name(m); }

// When a layer's prediction is ready, in layers ahead of the layer it is for (0: while
// main computes that layer's dense part; >= G-1: in time to hide a group's loads). `weight`:
// the share of predicted layers with this lead.
struct LeadBucket {
  double layers = 0;
  double weight = 1;
};

// How waiting threads notice events (see above). The defaults are Linux's: 50 us timer slack.
struct PollModel {
  bool loads = true;         // the loader polls for finished pulls, a stalled worker for its slot
  bool messages = true;      // workers poll for commands, main for results
  double spin_s = 100e-6;    // polling before the first sleep (64 spins and 192 yields, each with an MPI poll)
  double overshoot_s = 55e-6;  // a sleep_for(x) lasts x + this (timer slack, wake-up)
  double wake_s = 5e-6;      // a thread blocked on a condition variable runs this long after notify
  // When a waiter that began waiting at t0 notices an event that happens at te.
  double notice(double t0, double te) const;
};

struct SimConfig {
  // The model.
  std::string model_name;     // for reports
  int n_layer = 0;            // decoder layers
  int n_dense_layer = 0;      // leading layers without routed experts (DeepSeek-V3: 3); main computes them
  int n_expert = 0;           // routed experts per layer
  int top_k = 0;              // experts per token and layer
  double expert_bytes = 0;    // stored bytes of one routed expert (what a pull moves)
  double act_bytes = 0;       // bytes of one hidden state message (activation out, result back)

  // The cluster.
  int n_workers = 0;          // W expert ranks
  int n_groups = 0;           // G (0: Schedule::default_groups)
  int lookahead = 1;          // decode layers in flight per group (slot banks)
  int workers_per_link = 1;   // workers sharing one load path (consecutive ranks)
  double load_gbps = 0;       // bandwidth of one load path, Gbit/s (<= 0: loads are instant)
  double load_latency_s = 0;  // fixed cost of one pull, on the load path (serialised with the bytes)
  double pull_start_s = 0;    // a LOAD received -> its pull posted (beyond the loader's wake-up)
  double pull_notice_s = 0;   // a pull's bytes in -> its slot usable (beyond polling: completion, contention)
  double pull_post_s = 0;     // posting a pull holds its worker's next command this long (on one node an
                              // RMA get is a copy made by the caller, under MPI's lock)
  double net_gbps = 0;        // main's link for activations and results, Gbit/s (<= 0: only latency)
  double msg_latency_s = 0;   // one-way latency of a message (send, transport, the receiver noticing it)

  // Compute.
  double t_main_s = 0;        // main's dense work per MoE layer (attention, router, shared expert)
  double t_submit_s = 0;      // main's work per MoE layer beside its expert phase (sending, predictor
                              // upkeep); the layer is collected when this and the results are done
  double t_dense_layer_s = 0; // main's work for a layer without routed experts
  double t_step_s = 0;        // main's work per token outside the layers (LM head, sampling)
  double t_expert_s = 0;      // one expert on a worker

  // Mode and predictor.
  SimMode mode = SimMode::kOnDemand;
  bool predicted = false;           // false: no predictor (every expert loaded after routing)
  double recall = 0;                // share of routed experts the prediction names
  double unpredicted = 0;           // share of layers that get no prediction at all
  std::vector<LeadBucket> lead;     // when predictions are ready (empty: lead 0)
  // >= 0: instead, every layer of token t is predicted when main starts token t - lead_tokens
  // (0: when it starts token t, as a predictor that needs the last token does; 1: during
  // the token before, as the shadow with early departure does).
  int lead_tokens = -1;
  double cache_hit_rate = 0;        // cache mode

  PollModel poll;

  // The run.
  int n_tokens = 128;  // decode steps simulated
  uint64_t seed = 1;

  int group_size() const { return n_groups > 0 ? n_workers / n_groups : 0; }
  int n_moe_layer() const { return n_layer - n_dense_layer; }
  // Experts one worker computes (and, on demand, pulls) per layer of its group.
  int experts_per_worker() const { int s = group_size(); return s > 0 ? (top_k + s - 1) / s : 0; }
  double pull_seconds() const;      // one expert over one load path, alone
  double transfer_seconds() const;  // one activation message: latency + bytes / net bandwidth

  // Fills n_groups (0 -> Schedule::default_groups) and checks everything; throws
  // odmoe::Error (kCli) naming the figure that is wrong and how to fix it.
  void validate();
  std::string to_string() const;
  nlohmann::json to_json() const;
};

// Eq. 1 of the paper for a config, steady state with perfect prediction:
//   t_worker  = 2 transfers + experts_per_worker * t_expert  (one layer's expert phase;
//               at least t_submit, main's own work beside it)
//   t_maxload = G t_main + (G-1) t_worker                      (a group's time to load)
//   t_load    = experts per load path and layer * pull time
// If t_load <= t_maxload the loads are hidden; otherwise every layer waits
// (t_load - t_maxload) / G more, so a layer takes max(t_main + t_worker, (t_load + t_worker) / G).
struct Eq1 {
  double t_main_s = 0, t_worker_s = 0, t_maxload_s = 0, t_load_s = 0, stall_per_layer_s = 0;
  double tokens_per_second = 0;  // with that layer time, t_step and dense layers
  bool hidden() const { return t_load_s <= t_maxload_s; }
  nlohmann::json to_json() const;
};
Eq1 eq1(const SimConfig& c);

struct SimResult {
  double seconds_per_token = 0;
  double tokens_per_second = 0;
  double main_busy_fraction = 0;     // main computing / wall time
  double worker_stall_fraction = 0;  // workers' time stalled on weights / (W x wall time)
  double worker_busy_fraction = 0;   // workers computing / (W x wall time)
  double load_hidden_fraction = 1;   // 1 - stall / load time (as odmoe reports it)
  double expert_phase_s = 0;         // main's mean wait for a MoE layer's results (from routing to the last result)
  double stall_per_layer_s = 0;      // expert_phase_s beyond the resident run's: what loading costs per MoE layer
  double loads_per_token = 0;        // pulls per token, all workers (wrong guesses included)
  double misses_per_token = 0;       // experts loaded after routing, per token
  double load_seconds = 0;           // sum over pulls of pull time (queueing excluded)
  double stall_seconds = 0;          // sum over workers
  double wall_seconds = 0;
  double resident_tokens_per_second = 0;  // the same config with mode resident
  Eq1 eq1;
  nlohmann::json to_json() const;
};

// Runs the model. `c` must have been validated.
SimResult simulate(const SimConfig& c);

// One row of --suggest-groups.
struct GroupsRow {
  int groups = 0, group_size = 0;
  bool is_default = false;  // Schedule::default_groups
  SimResult result;
};
struct GroupsSuggestion {
  std::vector<GroupsRow> rows;  // every G that divides W, ascending
  int best_groups = 0;          // fastest; within 0.1% the fewer groups win
  nlohmann::json to_json() const;
};
// Simulates every valid G for the config's W (Schedule's rules).
GroupsSuggestion suggest_groups(const SimConfig& base);

}  // namespace odmoe::sim
