// The schedule simulator against results that can be computed by hand: resident speed,
// Eq. 1's hidden loads and the stall just beyond them, misses, groups, the choice of G,
// reading measured statistics back, and bad input. (The suite is lower case so that
// `ctest -R simulator` selects it.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "odmoe/core/error.h"
#include "odmoe/sim/schedule_sim.h"
#include "odmoe/sim/sim_inputs.h"

using odmoe::sim::SimConfig;
using odmoe::sim::SimMode;
using odmoe::sim::SimResult;

namespace {

constexpr double kMs = 1e-3;

// 4 layers, 4 experts top-2 on W workers: with S >= E (or on demand, S >= k) no two
// experts of a layer share a worker, so every layer's expert phase is one compute. Times in ms, no
// polling delays, no per-token work unless a test sets it.
SimConfig base(int workers, int groups) {
  SimConfig c;
  c.model_name = "test";
  c.n_layer = 4;
  c.n_expert = 4;
  c.top_k = 2;
  c.expert_bytes = 1e6;
  c.n_workers = workers;
  c.n_groups = groups;
  c.t_main_s = 1 * kMs;
  c.t_expert_s = 1 * kMs;
  c.poll.loads = c.poll.messages = false;
  c.poll.wake_s = 0;
  c.n_tokens = 200;
  c.mode = SimMode::kOnDemand;
  c.predicted = true;
  c.recall = 1.0;
  c.lead_tokens = 1;  // every layer predicted a token ahead
  return c;
}

// A pull of `ms` milliseconds: 1e6 bytes at the matching rate.
void set_pull_ms(SimConfig& c, double ms) { c.load_gbps = 1e6 * 8 / (ms * kMs) / 1e9; }

SimResult run(SimConfig c) {
  c.validate();
  return odmoe::sim::simulate(c);
}

// Relative agreement; simulated figures are exact sums of the inputs unless a start-up
// transient (the first layers' loads) enters, hence the tolerances given per test.
void expect_rel(double got, double want, double rtol, const std::string& what) {
  EXPECT_NEAR(got, want, rtol * std::fabs(want)) << what;
}

}  // namespace

TEST(simulator, ResidentSpeedIsOneOverLayersTimesMainWorkerAndTransfers) {
  SimConfig c = base(4, 1);  // S = 4 >= E: no collisions
  c.mode = SimMode::kResident;
  c.msg_latency_s = 0.25 * kMs;
  const SimResult r = run(c);
  // Each layer: t_main + transfer out + t_expert + transfer back = 1 + 0.25 + 1 + 0.25 ms.
  expect_rel(r.tokens_per_second, 1.0 / (4 * 2.5 * kMs), 1e-9, "resident tok/s");
  EXPECT_EQ(r.worker_stall_fraction, 0.0);
  expect_rel(r.main_busy_fraction, 1.0 / 2.5, 1e-9, "main busy");

  // Activation bytes over main's link: k = 1, so nothing queues; and per-token work.
  c.top_k = 1;
  c.act_bytes = 125000;  // 1 Mbit at 1 Gbit/s: 1 ms each way
  c.net_gbps = 1;
  c.msg_latency_s = 0;
  c.t_step_s = 3 * kMs;
  expect_rel(run(c).tokens_per_second, 1.0 / (4 * (1 + 1 + 1 + 1) * kMs + 3 * kMs), 1e-9, "with bytes and t_step");
}

TEST(simulator, OnDemandWithInstantLoadsEqualsResident) {
  for (const bool predicted : {false, true}) {
    SimConfig c = base(8, 2);  // S = 4 = E
    c.msg_latency_s = 0.1 * kMs;
    c.load_gbps = 0;  // instant pulls
    c.predicted = predicted;
    const SimResult od = run(c);
    c.mode = SimMode::kResident;
    const SimResult res = run(c);
    expect_rel(od.tokens_per_second, res.tokens_per_second, 1e-9, predicted ? "predicted" : "no predictor");
    EXPECT_EQ(od.stall_seconds, 0.0);
  }
}

TEST(simulator, LoadsWithinEq1AreHiddenAndJustBeyondStallByTheExcessOverG) {
  // G = 2 (S = 4 = E): t_worker = 1 ms, t_maxload = 2 t_main + t_worker = 3 ms.
  SimConfig c = base(8, 2);
  set_pull_ms(c, 2.9);
  const SimResult hidden = run(c);
  EXPECT_TRUE(hidden.eq1.hidden());
  expect_rel(hidden.eq1.t_maxload_s, 3 * kMs, 1e-12, "t_maxload");
  // Only the very first layer stalls: its loads start with the run, nothing runs before
  // them (2 workers x (2.9 - 1) ms). Every later load is hidden.
  EXPECT_NEAR(hidden.stall_seconds, 2 * 1.9 * kMs, 1e-12);
  expect_rel(hidden.wall_seconds, 200 * 4 * 2 * kMs + 1.9 * kMs, 1e-9, "hidden loads cost nothing");
  EXPECT_GT(hidden.load_hidden_fraction, 0.995);

  // 0.4 ms beyond t_maxload: every layer waits 0.4 / G = 0.2 ms more in the steady state,
  // a layer takes (t_load + t_worker) / G = 2.2 ms.
  set_pull_ms(c, 3.4);
  const SimResult over = run(c);
  EXPECT_FALSE(over.eq1.hidden());
  expect_rel(over.eq1.stall_per_layer_s, 0.2 * kMs, 1e-9, "Eq. 1 stall");
  // (The first layer's start-up stall, 1.9 ms over 800 layers, is within the tolerance.)
  expect_rel(over.stall_per_layer_s, 0.2 * kMs, 0.02, "simulated stall per layer");
  expect_rel(over.seconds_per_token, 4 * 2.2 * kMs, 0.01, "simulated layer time");
  expect_rel(over.tokens_per_second, over.eq1.tokens_per_second, 0.01, "simulation vs Eq. 1");
}

TEST(simulator, NoPredictionAddsTheFullLoadPerLayer) {
  SimConfig c = base(2, 1);  // S = 2 = k: one pull per worker and layer
  c.predicted = false;
  set_pull_ms(c, 5);
  const SimResult r = run(c);
  // Each layer: t_main, then the pull (5 ms) and the compute, after routing.
  expect_rel(r.seconds_per_token, 4 * (1 + 5 + 1) * kMs, 1e-9, "recall 0");
  expect_rel(r.misses_per_token, 4 * 2, 1e-12, "every expert missed");
  EXPECT_EQ(r.load_hidden_fraction, 0.0);

  // Recall 0 through a predictor that is always wrong: its wrong pulls hold the link, so
  // the misses queue behind them (a second pull's time more per layer).
  c.predicted = true;
  c.recall = 0;
  c.lead_tokens = 0;
  c.n_expert = 8;  // room for wrong guesses
  const SimResult wrong = run(c);
  EXPECT_GT(wrong.seconds_per_token, r.seconds_per_token * 1.2);
  expect_rel(wrong.loads_per_token, 2 * 8, 1e-12, "wrong guesses are pulled too");
}

TEST(simulator, MoreGroupsNeverHurtWhenLoadsDominate) {
  double last = 0;
  for (int G : {1, 2, 4}) {  // W = 8, S >= k
    SimConfig c = base(8, G);
    c.n_layer = 8;
    set_pull_ms(c, 20);
    const SimResult r = run(c);
    EXPECT_GE(r.tokens_per_second, last * (1 - 1e-9)) << "G=" << G;
    last = r.tokens_per_second;
  }
}

TEST(simulator, SuggestGroupsPicksTheHandComputedBest) {
  // W = 4, pull 3.4 ms: a layer takes G=1: (3.4 + 1) / 1 = 4.4 ms; G=2: max(2, (3.4 + 1) / 2)
  // = 2.2 ms; G=4 (S=1: two pulls and two computes per worker): max(1 + 2, (6.8 + 2) / 4) = 3 ms.
  SimConfig c = base(4, 0);
  set_pull_ms(c, 3.4);
  const odmoe::sim::GroupsSuggestion s = odmoe::sim::suggest_groups(c);
  ASSERT_EQ(s.rows.size(), 3u);
  const double want_ms[] = {4.4, 2.2, 3.0};
  for (size_t i = 0; i < 3; ++i) expect_rel(s.rows[i].result.seconds_per_token, 4 * want_ms[i] * kMs, 0.02, "row");
  EXPECT_EQ(s.best_groups, 2);
  EXPECT_TRUE(s.rows[1].is_default);  // Schedule::default_groups(4, 2) = 2

  // No loads at all: G = 1 and G = 2 tie at resident speed; the fewer groups win.
  c.load_gbps = 0;
  EXPECT_EQ(odmoe::sim::suggest_groups(c).best_groups, 1);
}

TEST(simulator, DeterministicForASeed) {
  SimConfig c = base(4, 2);
  c.n_expert = 8;
  c.recall = 0.7;
  set_pull_ms(c, 2);
  const SimResult a = run(c), b = run(c);
  EXPECT_EQ(a.seconds_per_token, b.seconds_per_token);
  EXPECT_EQ(a.misses_per_token, b.misses_per_token);
  c.seed = 99;
  EXPECT_NE(run(c).misses_per_token, a.misses_per_token);
  // About (1 - recall) of the routed experts are missed.
  expect_rel(a.misses_per_token, 0.3 * 4 * 2, 0.1, "misses");
}

TEST(simulator, PollingFollowsTheBackoffSchedule) {
  odmoe::sim::PollModel p;
  p.spin_s = 60e-6;
  p.overshoot_s = 55e-6;
  EXPECT_DOUBLE_EQ(p.notice(1.0, 0.5), 1.0);             // already there
  EXPECT_DOUBLE_EQ(p.notice(0, 50e-6), 50e-6);           // within the spinning polls
  EXPECT_NEAR(p.notice(0, 100e-6), 125e-6, 1e-12);       // first sleep: 60 + 10 + 55
  EXPECT_NEAR(p.notice(0, 126e-6), 200e-6, 1e-12);       // second: + 20 + 55
  // Far out every sleep is the 200 us cap plus the overshoot.
  const double t = p.notice(0, 0.1);
  EXPECT_GE(t, 0.1);
  EXPECT_LT(t, 0.1 + 255e-6 + 1e-12);
}

TEST(simulator, MeasuredResidentRunIsReproduced) {
  // A resident run as `generate --stats-json` writes it: 6 layers, top-2 of 8 on 2 workers.
  const nlohmann::json stats = {
      {"decode_seconds", 0.05},
      {"decode_tokens_per_second", 127 / 0.05},
      {"generated_tokens", 128},
      {"model", "no-such-dir"},
      {"schedule",
       {{"mode", "resident"}, {"groups", 1}, {"group_size", 2}, {"workers", 2}, {"lookahead", 1},
        {"load_gbps_emulated", 0.0},
        {"description", "2 expert ranks in 1 group of 2; top-2 of 8 experts, 1 decode slot per rank and layer"}}},
      {"timing",
       {{"decode_layers", 762}, {"t_main_seconds_per_layer", 15e-6}, {"t_worker_seconds_per_layer", 30e-6},
        {"workers_load_seconds", 0.01}, {"workers_bytes_pulled", 48 * 196608}, {"load_hidden_fraction", 1.0},
        {"workers_stall_seconds", 0.0}}},
      {"ranks",
       {{{"role", "main"}},
        {{"compute_seconds", 0.009}, {"computes", 776}, {"pulls", 24}, {"bytes_pulled", 24 * 196608},
         {"load_seconds", 0.005}, {"stall_seconds", 0.0}},
        {{"compute_seconds", 0.009}, {"computes", 776}, {"pulls", 24}, {"bytes_pulled", 24 * 196608},
         {"load_seconds", 0.005}, {"stall_seconds", 0.0}}}},
      {"predictor", {{"name", "none"}, {"recall", 0.0}}}};
  odmoe::sim::MeasuredRun m = odmoe::sim::run_from_stats(stats, "test");
  EXPECT_EQ(m.config.n_layer, 6);
  EXPECT_EQ(m.config.n_expert, 8);
  EXPECT_EQ(m.config.top_k, 2);
  expect_rel(m.config.expert_bytes, 196608, 1e-12, "expert bytes");
  m.config.validate();
  // The decomposition keeps the token's total: the simulation gives back the measured
  // speed (to the noise of the routing draws: which experts share a worker).
  expect_rel(odmoe::sim::simulate(m.config).tokens_per_second, 127 / 0.05, 0.02, "reproduced");

  // `odmoe bench --json`: every run in it.
  const std::string path = testing::TempDir() + "sim_bench.json";
  {
    std::ofstream f(path);
    f << nlohmann::json{{"runs", {{{"mode", "resident"}, {"groups", 1}, {"stats", stats}},
                                  {{"mode", "resident"}, {"groups", 1}, {"stats", stats}}}}}.dump();
  }
  EXPECT_EQ(odmoe::sim::runs_from_stats_file(path).size(), 2u);
  std::remove(path.c_str());
}

TEST(simulator, ArchitecturesComeFromTheWeightFormat) {
  const odmoe::sim::ArchShape mx = odmoe::sim::arch_shape("mixtral-8x7b", odmoe::DType::kBF16);
  EXPECT_EQ(mx.n_layer, 32);
  EXPECT_DOUBLE_EQ(mx.expert_bytes, 3.0 * 4096 * 14336 * 2);  // already 4096-aligned
  const odmoe::sim::ArchShape ds = odmoe::sim::arch_shape("deepseek-v3", odmoe::DType::kBF16);
  const double total = (ds.n_layer - ds.n_dense_layer) * (ds.attn_params + ds.router_params + ds.shared_params +
                                                          ds.n_expert * ds.expert_params) +
                       ds.n_dense_layer * (ds.attn_params + ds.dense_ffn_params) + 2 * ds.head_params;
  expect_rel(total, 671e9, 0.01, "DeepSeek-V3 parameters");
  EXPECT_EQ(ds.top_k, 8);
  EXPECT_EQ(ds.n_expert, 256);
}

TEST(simulator, BadInputIsAClearError) {
  SimConfig c = base(4, 3);  // 3 does not divide 4
  EXPECT_THROW(c.validate(), odmoe::Error);
  try {
    c.validate();
  } catch (const odmoe::Error& e) {
    EXPECT_NE(e.message().find("does not divide"), std::string::npos) << e.message();
  }
  c = base(4, 2);
  c.load_gbps = -1;
  EXPECT_THROW(c.validate(), odmoe::Error);
  c = base(4, 2);
  c.recall = 1.5;
  EXPECT_THROW(c.validate(), odmoe::Error);
  c = base(4, 2);
  c.top_k = 5;  // more than the 4 experts
  EXPECT_THROW(c.validate(), odmoe::Error);
  c = base(0, 0);
  EXPECT_THROW(c.validate(), odmoe::Error);
  EXPECT_THROW(odmoe::sim::arch_shape("gpt-5", odmoe::DType::kBF16), odmoe::ArgumentError);
  EXPECT_THROW(odmoe::sim::find_gpu("voodoo2"), odmoe::ArgumentError);
  EXPECT_THROW(odmoe::sim::run_from_stats(nlohmann::json{{"timing", nlohmann::json::object()}}, "x"), odmoe::Error);
}
