// odmoe simulate: the schedule simulator (include/odmoe/sim/schedule_sim.h) on the command
// line. Its figures come from a run odmoe measured (--from-stats, any figure overridable:
// "what if this run had 4 groups, a 1 Gbit/s link?"), or from a description of a model and
// a cluster (--arch, --dtype, --gpu, --nodes, links). --suggest-groups simulates every
// group count the cluster allows and recommends one.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "engine_args.h"
#include "odmoe/core/error.h"
#include "odmoe/core/json_file.h"
#include "odmoe/predict/predictor.h"
#include "odmoe/sched/schedule.h"
#include "odmoe/sim/sim_inputs.h"

namespace odmoe::cli {

namespace {

constexpr const char* kSimUsage =
    "usage: odmoe simulate --from-stats FILE [overrides] [--suggest-groups] [--json FILE]\n"
    "       odmoe simulate --arch NAME [--dtype bf16] [--gpu rtx3090] [--nodes N | --workers W] [--groups G]\n"
    "                      [--link-gbps 1] [--load-gbps X] [--mode on-demand] [--predictor shadow]\n"
    "                      [--suggest-groups] [--json FILE]\n"
    "\n"
    "A discrete-event model of distributed decode (batch 1) as odmoe schedules it: main's dense\n"
    "work, activation messages, per-worker serial load paths, slots (--lookahead), predictions\n"
    "(recall, lead) and misses. Prints decode speed, main busy, worker stall, load time hidden, and\n"
    "the paper's Eq. 1 (t_maxload = G t_main + (G-1) t_worker) next to it.\n";

// Figures a user may set; unset ones come from the stats file or the description.
struct Overrides {
  std::optional<int> layers, experts, top_k, hidden, nodes, workers, groups, lookahead, workers_per_link, tokens;
  std::optional<double> expert_mb, link_gbps, load_gbps, load_latency_us, msg_us, main_ms, dense_ms, step_ms, expert_ms, submit_ms;
  std::optional<double> recall, cache_hit_rate, unpredicted;
  std::optional<std::string> mode, predictor, lead, store, poll;
  std::optional<double> poll_spin_us, overshoot_us, wake_us, pull_start_us, pull_notice_us, pull_post_us;
};

template <typename T>
void opt(po::options_description& o, const char* name, std::optional<T>* dst, const char* help) {
  o.add_options()(name, po::value<T>()->notifier([dst](const T& v) { *dst = v; }), help);
}

// A predictor's figures when only its name is given: measured by odmoe on the bundled model
// (README "Predictors": mpirun -np 5, 2 groups, 100 held-out prompts x 256 tokens).
struct PredictorDefaults {
  bool predicted;
  double recall;
  int lead_tokens;      // -1: `lead_layers` ahead instead
  double lead_layers;   // < 0: G - 1 (at least 1)
};
PredictorDefaults predictor_defaults(const std::string& name, int top_k, int n_expert) {
  if (!is_predictor_name(name)) throw UsageError(std::string("--predictor must be ") + kPredictorNames);
  if (name == "none") return {false, 0, -1, 0};
  if (name == "oracle") return {true, 1.0, 1, 0};           // a recorded trace: everything, a token ahead
  if (name == "shadow") return {true, 0.9958, 1, 0};        // int8 shadow, early departure: 99.58%
  if (name == "gate-ahead") return {true, 0.619, -1, -1};   // depth G-1 routers: 61.90% at depth 1
  if (name == "previous") return {true, 0.3431, 0, 0};      // the last token's experts: 34.31%
  return {true, static_cast<double>(top_k) / n_expert, 0, 0};  // random: k of E
}

// --lead N (layers ahead) | token | next-token.
void apply_lead(const std::string& s, sim::SimConfig* c) {
  c->lead.clear();
  c->lead_tokens = -1;
  if (s == "token") c->lead_tokens = 0;
  else if (s == "next-token") c->lead_tokens = 1;
  else {
    size_t used = 0;
    double v = -1;
    try {
      v = std::stod(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != s.size() || !(v >= 0)) throw UsageError("--lead must be a number of layers >= 0, token or next-token, not '" + s + "'");
    c->lead = {{v, 1.0}};
  }
}

// "%.<digits>g<unit>"
std::string num(double v, int digits, const char* unit) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*g%s", digits, v, unit);
  return b;
}
std::string ms(double s) { return num(s * 1e3, 4, " ms"); }
std::string pct(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f%%", 100 * x);
  return b;
}

// Per-worker device memory the schedule needs for expert slots.
double worker_slot_bytes(const sim::SimConfig& c) {
  const Schedule sched(c.n_moe_layer(), c.n_expert, c.top_k, c.n_workers, c.n_groups, c.lookahead);
  const int slots = c.mode == sim::SimMode::kResident ? sched.resident_slots() : sched.lookahead() * sched.decode_slots();
  return slots * c.expert_bytes;
}

void print_result(const sim::SimConfig& c, const sim::SimResult& r, const nlohmann::json* measured) {
  const sim::Eq1& q = r.eq1;
  std::printf("  %s\n", c.to_string().c_str());
  std::printf("  per layer: t_main %s + submit %s, t_expert %s, transfer %s each way; pull %s per expert (%s); t_step %s "
              "per token\n",
              ms(c.t_main_s).c_str(), ms(c.t_submit_s).c_str(), ms(c.t_expert_s).c_str(), ms(c.transfer_seconds()).c_str(),
              ms(c.pull_seconds()).c_str(),
              c.load_gbps > 0 ? num(c.load_gbps, 4, " Gbit/s").c_str() : "instant", ms(c.t_step_s).c_str());
  const double m_tps = measured ? (*measured)["decode_tokens_per_second"].get<double>() : 0;
  std::printf("  %-34s %14s%s\n", "", "simulated", measured ? "       measured" : "");
  std::printf("  %-34s %14.2f", "decode tokens/s", r.tokens_per_second);
  if (measured) std::printf(" %14.2f   (error %+.1f%%)", m_tps, 100 * (r.tokens_per_second - m_tps) / m_tps);
  std::printf("\n  %-34s %14s\n", "seconds per token", ms(r.seconds_per_token).c_str());
  std::printf("  %-34s %14s\n", "main busy", pct(r.main_busy_fraction).c_str());
  std::printf("  %-34s %14s\n", "worker stall (waiting for weights)", pct(r.worker_stall_fraction).c_str());
  std::printf("  %-34s %14s", "load time hidden", pct(r.load_hidden_fraction).c_str());
  if (measured) std::printf(" %14s", pct((*measured)["load_hidden_fraction"].get<double>()).c_str());
  std::printf("\n  %-34s %14s\n", "expert phase per MoE layer", ms(r.expert_phase_s).c_str());
  std::printf("  %-34s %14.2f   (after routing, missed: %.2f)\n", "pulls per token", r.loads_per_token,
              r.misses_per_token);
  std::printf("  %-34s %14.2f   (this is %.1f%% of it)\n", "resident tokens/s (simulated)", r.resident_tokens_per_second,
              r.resident_tokens_per_second > 0 ? 100 * r.tokens_per_second / r.resident_tokens_per_second : 0.0);
  std::printf("  Eq. 1: t_maxload = %d x %s + %d x %s = %s; one layer's loads on a load path take %s -> %s; "
              "with perfect prediction, steady state: %.2f tok/s\n",
              c.n_groups, ms(q.t_main_s).c_str(), c.n_groups - 1, ms(q.t_worker_s).c_str(), ms(q.t_maxload_s).c_str(),
              ms(q.t_load_s).c_str(),
              c.mode == sim::SimMode::kResident ? "nothing to load"
              : q.hidden() ? "hidden"
                           : ("not hidden, " + ms(q.stall_per_layer_s) + " stall per layer").c_str(),
              q.tokens_per_second);
}

void print_groups(const sim::GroupsSuggestion& s, double device_bytes, const sim::SimConfig& base) {
  std::printf("  %4s %4s %12s %11s %8s %8s %13s %11s %10s %11s\n", "G", "S", "tok/s", "% resident", "stall", "hidden",
              "t_maxload ms", "t_load ms", "Eq.1 tok/s", "slots/wkr");
  for (const sim::GroupsRow& r : s.rows) {
    sim::SimConfig c = base;
    c.n_groups = r.groups;
    const double slot_bytes = worker_slot_bytes(c);
    const std::string mem = num(slot_bytes / 1e9, 3, " GB") + (device_bytes > 0 && slot_bytes > device_bytes ? "!" : "");
    std::printf("  %4d %4d %12.2f %10.1f%% %8s %8s %13.4g %11.4g %10.2f %11s%s%s\n", r.groups, r.group_size,
                r.result.tokens_per_second,
                r.result.resident_tokens_per_second > 0 ? 100 * r.result.tokens_per_second / r.result.resident_tokens_per_second : 0.0,
                pct(r.result.worker_stall_fraction).c_str(), pct(r.result.load_hidden_fraction).c_str(),
                r.result.eq1.t_maxload_s * 1e3, r.result.eq1.t_load_s * 1e3, r.result.eq1.tokens_per_second, mem.c_str(),
                r.is_default ? "  (odmoe's default)" : "", r.groups == s.best_groups ? "  <- recommended" : "");
  }
  bool any_over = false;
  for (const sim::GroupsRow& r : s.rows) {
    sim::SimConfig c = base;
    c.n_groups = r.groups;
    any_over = any_over || (device_bytes > 0 && worker_slot_bytes(c) > device_bytes);
  }
  std::printf("  recommended: --groups %d (the fastest; within 0.1%% the fewer groups win)%s\n", s.best_groups,
              any_over ? "; '!': the slots do not fit in the device's memory" : "");
}

// The command line of odmoe simulate.
struct SimArgs {
  std::string from_stats, arch, dtype_s = "bf16", gpu_s = "rtx3090", json_path;
  bool suggest = false, shadow_node = false;
  uint64_t seed = 1;
  Overrides ov;
  std::optional<double> mem_gbs, tflops, mem_eff, comp_eff, main_overhead_us, expert_overhead_us;
  std::optional<int> context;
};

// False: the help was asked for (printed).
bool parse_simulate_args(int argc, char** argv, SimArgs* a) {
  std::string& from_stats = a->from_stats;
  std::string& arch = a->arch;
  std::string& dtype_s = a->dtype_s;
  std::string& gpu_s = a->gpu_s;
  std::string& json_path = a->json_path;
  bool& suggest = a->suggest;
  bool& shadow_node = a->shadow_node;
  uint64_t& seed = a->seed;
  Overrides& ov = a->ov;
  po::options_description o("simulate options");
  o.add_options()("from-stats", po::value(&from_stats),
                  "a run measured by odmoe: `generate --stats-json` or `bench --json` (every run in it)")(
      "arch", po::value(&arch), "describe the model instead: mixtral-8x7b | qwen3-30b-a3b | olmoe-1b-7b | deepseek-v3")(
      "dtype", po::value(&dtype_s)->default_value(dtype_s), "--arch: the weights' dtype: f32|bf16|f16|int8|int4")(
      "gpu", po::value(&gpu_s)->default_value(gpu_s), "--arch: device preset: rtx3090 | rtx4090 | a100 | h100 | orin")(
      "suggest-groups", po::bool_switch(&suggest), "simulate every group count the cluster allows; recommend one")(
      "json", po::value(&json_path), "also write everything as JSON")(
      "seed", po::value(&seed)->default_value(seed), "seed of the routing and misprediction draws");
  po::options_description m("model (overrides)");
  opt(m, "layers", &ov.layers, "decoder layers (--arch: keep the first N)");
  opt(m, "experts", &ov.experts, "routed experts per layer");
  opt(m, "top-k", &ov.top_k, "experts per token and layer");
  opt(m, "expert-mb", &ov.expert_mb, "bytes of one routed expert, MiB");
  opt(m, "hidden", &ov.hidden, "hidden size (activation messages carry it as f32)");
  po::options_description cl("cluster (overrides)");
  opt(cl, "nodes", &ov.nodes, "nodes: 1 main + workers (+ 1 with --shadow-node)");
  cl.add_options()("shadow-node", po::bool_switch(&shadow_node), "with --nodes: one node runs the predictor (the paper's shadow node)");
  opt(cl, "workers", &ov.workers, "expert ranks W (instead of --nodes)");
  opt(cl, "groups", &ov.groups, "G groups (a divisor of W; 0: odmoe's default)");
  opt(cl, "lookahead", &ov.lookahead, "decode layers in flight per group (slot banks)");
  opt(cl, "store", &ov.store, "replicated (pulls over the host->device path, --load-gbps) | sharded (pulls cross the "
                              "network too: the slower of --link-gbps and --load-gbps)");
  opt(cl, "workers-per-link", &ov.workers_per_link,
      "workers sharing one load path (replicated: ranks on one GPU; sharded: ranks on one node)");
  po::options_description ln("links (overrides)");
  opt(ln, "link-gbps", &ov.link_gbps, "node interconnect, Gbit/s: carries activations, and pulls when sharded (--arch default 1)");
  opt(ln, "load-gbps", &ov.load_gbps, "one worker's pull path, Gbit/s (--arch default: the GPU preset's host->device rate)");
  opt(ln, "load-latency-us", &ov.load_latency_us, "fixed cost of one pull, microseconds (--arch default 20)");
  opt(ln, "pull-start-us", &ov.pull_start_us, "a LOAD received -> its pull started, microseconds (default 0)");
  opt(ln, "pull-notice-us", &ov.pull_notice_us,
      "a pull's bytes in -> its slot usable, microseconds (--from-stats: the measured excess over the link time)");
  opt(ln, "pull-post-us", &ov.pull_post_us,
      "posting a pull holds its worker this long, microseconds (one node: the get's copy; --from-stats without a "
      "link cap: the measured pull)");
  opt(ln, "msg-us", &ov.msg_us, "one-way message latency, microseconds (--arch default: 50 up to 25 Gbit/s, else 5)");
  po::options_description cp("compute (overrides)");
  opt(cp, "main-ms-per-layer", &ov.main_ms, "main's dense work per MoE layer, ms");
  opt(cp, "submit-ms", &ov.submit_ms, "main's work per MoE layer between routing and sending the activations, ms");
  opt(cp, "dense-ms-per-layer", &ov.dense_ms, "main's work per layer without routed experts, ms");
  opt(cp, "step-ms", &ov.step_ms, "main's work per token outside the layers (LM head, sampling), ms");
  opt(cp, "expert-ms", &ov.expert_ms, "one expert on a worker, ms");
  opt(cp, "mem-gbs", &a->mem_gbs, "--arch: device memory bandwidth, GB/s (instead of the preset's)");
  opt(cp, "tflops", &a->tflops, "--arch: device dense TFLOP/s (instead of the preset's)");
  opt(cp, "mem-efficiency", &a->mem_eff, "--arch: share of memory bandwidth reached (default 0.7)");
  opt(cp, "compute-efficiency", &a->comp_eff, "--arch: share of peak FLOP/s reached (default 0.5)");
  opt(cp, "main-overhead-us", &a->main_overhead_us, "--arch: fixed cost per layer on main (default 30)");
  opt(cp, "expert-overhead-us", &a->expert_overhead_us, "--arch: fixed cost per expert on a worker (default 15)");
  opt(cp, "context", &a->context, "--arch: KV-cache positions read per layer (default 512)");
  po::options_description md("mode and predictor (overrides)");
  opt(md, "mode", &ov.mode, "resident | on-demand | cache (--arch default on-demand)");
  opt(md, "predictor", &ov.predictor, "shadow | gate-ahead | previous | random | oracle | none: sets recall and lead "
                                      "to measured defaults (--arch default shadow)");
  opt(md, "recall", &ov.recall, "share of routed experts predicted, 0..1");
  opt(md, "lead", &ov.lead, "when predictions are ready: N layers ahead | token (when main starts the token) | next-token");
  opt(md, "unpredicted", &ov.unpredicted, "share of layers with no prediction at all, 0..1");
  opt(md, "cache-hit-rate", &ov.cache_hit_rate, "cache mode: share of loads already cached, 0..1");
  po::options_description pl("waiting (overrides; see schedule_sim.h)");
  opt(pl, "poll", &ov.poll, "backoff: waits poll as odmoe's Backoff does (--arch default) | loads: only waits on "
                            "pulls (--from-stats default: the measured message latency holds the rest) | ideal: "
                            "every event is noticed at once");
  opt(pl, "poll-spin-us", &ov.poll_spin_us, "polling before the first sleep, microseconds (default 100)");
  opt(pl, "sleep-overshoot-us", &ov.overshoot_us, "how much longer a sleep lasts than asked, microseconds (default 55)");
  opt(pl, "wake-us", &ov.wake_us, "a blocked thread's wake-up after notify, microseconds (default 5)");
  opt(md, "tokens", &ov.tokens, "decode steps to simulate (default: the run's, or 128)");
  o.add(m).add(cl).add(ln).add(cp).add(md).add(pl);
  po::variables_map vm;
  if (!parse_options(argc, argv, o, po::positional_options_description(), kSimUsage, &vm)) return false;
  if (from_stats.empty() == arch.empty())
    throw UsageError("give either --from-stats FILE (a measured run) or --arch NAME (a description)");
  return true;
}


struct Run {
  std::string label;
  sim::SimConfig config;
  nlohmann::json measured, derived;
};

// The machine an --arch description runs on.
struct ArchHardware {
  double device_bytes = 0;
  nlohmann::json hardware;  // null: --from-stats
};

std::vector<Run> stats_runs(const SimArgs& a) {
  std::vector<Run> runs;
  for (sim::MeasuredRun& r : sim::runs_from_stats_file(a.from_stats)) {
    if (a.ov.pull_post_us) {
      if (*a.ov.pull_post_us < 0) throw UsageError("--pull-post-us must be >= 0");
      sim::set_pull_post(r, *a.ov.pull_post_us * 1e-6);
    }
    runs.push_back({r.label, r.config, r.measured, r.derived});
  }
  return runs;
}

Run arch_run(const SimArgs& args, ArchHardware* out) {
  const std::string& arch = args.arch;
  const std::string& dtype_s = args.dtype_s;
  const Overrides& ov = args.ov;
  const std::optional<DType> dt = parse_dtype(dtype_s);
  if (!dt) throw UsageError("--dtype must be f32, bf16, f16, int8 or int4, not '" + dtype_s + "'");
  const sim::ArchShape a = sim::arch_shape(arch, *dt, ov.layers.value_or(0));
  sim::Hardware hw;
  hw.gpu = sim::find_gpu(args.gpu_s);
  if (args.mem_gbs) hw.gpu.mem_gbs = *args.mem_gbs;
  if (args.tflops) hw.gpu.tflops_16 = hw.gpu.tflops_32 = *args.tflops;
  if (args.mem_eff) hw.mem_efficiency = *args.mem_eff;
  if (args.comp_eff) hw.compute_efficiency = *args.comp_eff;
  if (args.main_overhead_us) hw.main_overhead_s = *args.main_overhead_us * 1e-6;
  if (args.expert_overhead_us) hw.expert_overhead_s = *args.expert_overhead_us * 1e-6;
  if (args.context) {
    if (*args.context < 0) throw UsageError("--context must be >= 0");
    hw.context = *args.context;
  }
  const sim::DerivedTimes t = sim::derive_times(a, *dt, hw);
  sim::SimConfig c;
  c.model_name = arch + " " + dtype_s;
  c.n_layer = a.n_layer;
  c.n_dense_layer = a.n_dense_layer;
  c.n_expert = a.n_expert;
  c.top_k = a.top_k;
  c.expert_bytes = a.expert_bytes;
  c.act_bytes = 4.0 * a.n_embd;
  c.t_main_s = t.t_main_s;
  c.t_dense_layer_s = t.t_dense_layer_s;
  c.t_step_s = t.t_step_s;
  c.t_expert_s = t.t_expert_s;
  c.t_submit_s = 10e-6;  // main: the hidden state device -> host, and the sends (assumption)
  const double link = ov.link_gbps.value_or(1.0);
  c.net_gbps = link;
  c.load_gbps = hw.gpu.host_load_gbps;
  c.load_latency_s = 20e-6;  // a cudaMemcpyAsync and an RMA get posted and completed (assumption)
  c.msg_latency_s = link <= 25 ? 50e-6 : 5e-6;  // MPI over TCP/Ethernet vs RDMA, one way (assumption)
  c.mode = sim::SimMode::kOnDemand;
  const PredictorDefaults pd = predictor_defaults("shadow", c.top_k, c.n_expert);
  c.predicted = pd.predicted;
  c.recall = pd.recall;
  c.lead_tokens = pd.lead_tokens;
  const double device_bytes = hw.gpu.memory_gb * 1e9;
  out->device_bytes = device_bytes;
  out->hardware = {{"gpu", hw.gpu.name},
              {"mem_gbs", hw.gpu.mem_gbs},
              {"tflops_16", hw.gpu.tflops_16},
              {"tflops_32", hw.gpu.tflops_32},
              {"memory_gb", hw.gpu.memory_gb},
              {"host_load_gbps", hw.gpu.host_load_gbps},
              {"source", hw.gpu.note},
              {"mem_efficiency", hw.mem_efficiency},
              {"compute_efficiency", hw.compute_efficiency},
              {"main_overhead_seconds", hw.main_overhead_s},
              {"expert_overhead_seconds", hw.expert_overhead_s},
              {"step_overhead_seconds", hw.step_overhead_s},
              {"context", hw.context},
              {"main_weight_bytes", t.main_weight_bytes},
              {"main_fits", t.main_weight_bytes <= device_bytes}};
  return {arch + " " + dtype_s + " on " + hw.gpu.name, c, nullptr, {{"from", "--arch description"}}};
}

// The command line's overrides, in an order where later ones see the earlier ones.
void apply_overrides(const SimArgs& a, Run* run_p) {
  Run& run = *run_p;
  const Overrides& ov = a.ov;
  const std::string& from_stats = a.from_stats;
  const std::string& arch = a.arch;
  const bool shadow_node = a.shadow_node;
  const uint64_t seed = a.seed;
  sim::SimConfig& c = run.config;
  nlohmann::json& d = run.derived;
  auto note = [&d](const char* key, double v) { d[key] = {{"value", v}, {"from", "command line"}}; };
  if (ov.layers && from_stats.size()) c.n_layer = *ov.layers;
  if (ov.experts) c.n_expert = *ov.experts;
  if (ov.top_k) c.top_k = *ov.top_k;
  if (ov.expert_mb) c.expert_bytes = *ov.expert_mb * (1 << 20), note("expert_bytes", c.expert_bytes);
  if (ov.hidden) c.act_bytes = 4.0 * *ov.hidden;
  if (ov.nodes) {
    const int w = *ov.nodes - 1 - (shadow_node ? 1 : 0);
    if (w < 1) throw UsageError("--nodes " + std::to_string(*ov.nodes) + " leaves no node for workers");
    c.n_workers = w;
    if (!ov.groups) c.n_groups = 0;
  }
  if (ov.workers) {
    if (*ov.workers < 1) throw UsageError("--workers must be at least 1");
    c.n_workers = *ov.workers;
    if (!ov.groups) c.n_groups = 0;
  }
  if (arch.size() && !ov.nodes && !ov.workers)
    throw UsageError("--arch needs the cluster's size: --nodes N or --workers W");
  if (ov.groups) c.n_groups = *ov.groups;
  if (ov.lookahead) c.lookahead = *ov.lookahead;
  if (ov.workers_per_link) c.workers_per_link = *ov.workers_per_link;
  if (ov.link_gbps) {
    if (*ov.link_gbps < 0) throw UsageError("--link-gbps must be >= 0");
    c.net_gbps = *ov.link_gbps;
    note("net_gbps", c.net_gbps);
    if (c.act_bytes <= 0 && !ov.store)
      std::fprintf(stderr, "odmoe simulate: the activation size is not known (the run's model directory is not at "
                           "hand), so --link-gbps only adds latency; give --hidden N\n");
  }
  if (ov.load_gbps) c.load_gbps = *ov.load_gbps, note("load_gbps", c.load_gbps);
  if (ov.store) {
    if (*ov.store != "replicated" && *ov.store != "sharded") throw UsageError("--store must be replicated or sharded");
    if (*ov.store == "sharded") {
      if (c.net_gbps <= 0) throw UsageError("--store sharded needs --link-gbps (the pulls cross it)");
      c.load_gbps = c.load_gbps > 0 ? std::min(c.load_gbps, c.net_gbps) : c.net_gbps;
      note("load_gbps", c.load_gbps);
    }
  }
  if (ov.load_latency_us) c.load_latency_s = *ov.load_latency_us * 1e-6;
  if (ov.pull_start_us) c.pull_start_s = *ov.pull_start_us * 1e-6;
  if (ov.pull_notice_us) c.pull_notice_s = *ov.pull_notice_us * 1e-6;
  if (ov.pull_post_us && from_stats.empty()) c.pull_post_s = *ov.pull_post_us * 1e-6;
  if (ov.msg_us) c.msg_latency_s = *ov.msg_us * 1e-6, note("msg_latency_seconds", c.msg_latency_s);
  if (ov.main_ms) c.t_main_s = *ov.main_ms * 1e-3, note("t_main_seconds", c.t_main_s);
  if (ov.dense_ms) c.t_dense_layer_s = *ov.dense_ms * 1e-3;
  if (ov.submit_ms) c.t_submit_s = *ov.submit_ms * 1e-3, note("t_submit_seconds", c.t_submit_s);
  if (ov.step_ms) c.t_step_s = *ov.step_ms * 1e-3, note("t_step_seconds", c.t_step_s);
  if (ov.expert_ms) c.t_expert_s = *ov.expert_ms * 1e-3, note("t_expert_seconds", c.t_expert_s);
  if (ov.mode) c.mode = sim::parse_sim_mode(*ov.mode);
  if (ov.predictor) {
    const PredictorDefaults pd = predictor_defaults(*ov.predictor, c.top_k, std::max(1, c.n_expert));
    c.predicted = pd.predicted;
    c.recall = pd.recall;
    c.unpredicted = 0;
    c.lead.clear();
    c.lead_tokens = pd.lead_tokens;
    if (pd.lead_tokens < 0) c.lead = {{pd.lead_layers, 1.0}};  // resolved to G - 1 below
    d["predictor"] = {{"name", *ov.predictor}, {"recall", c.recall}, {"from", "--predictor defaults"}};
  }
  if (ov.recall) c.recall = *ov.recall, c.predicted = true, note("recall", c.recall);
  if (ov.unpredicted) c.unpredicted = *ov.unpredicted;
  if (ov.lead) apply_lead(*ov.lead, &c), c.predicted = c.predicted || c.mode != sim::SimMode::kResident;
  if (ov.cache_hit_rate) c.cache_hit_rate = *ov.cache_hit_rate;
  if (ov.tokens) c.n_tokens = *ov.tokens;
  if (ov.poll) {
    if (*ov.poll != "backoff" && *ov.poll != "loads" && *ov.poll != "ideal")
      throw UsageError("--poll must be backoff, loads or ideal, not '" + *ov.poll + "'");
    c.poll.loads = *ov.poll != "ideal";
    c.poll.messages = *ov.poll == "backoff";
  }
  if (ov.poll_spin_us) c.poll.spin_s = *ov.poll_spin_us * 1e-6;
  if (ov.overshoot_us) c.poll.overshoot_s = *ov.overshoot_us * 1e-6;
  if (ov.wake_us) c.poll.wake_s = *ov.wake_us * 1e-6;
  c.seed = seed;
  for (sim::LeadBucket& b : c.lead)  // gate-ahead: G - 1 layers (at least 1)
    if (b.layers < 0) {
      const int G = c.n_groups > 0 ? c.n_groups
                    : c.n_workers > 0 && c.top_k > 0 ? Schedule::default_groups(c.n_workers, c.top_k)
                                                     : 1;
      b.layers = std::max(1, G - 1);
    }
  c.validate();
}

// Simulates one run, prints it (beside what was measured) and returns its JSON; a measured
// run's relative error goes to `errors`.
nlohmann::json simulate_run(const Run& run, const SimArgs& a, const ArchHardware& hwi, std::vector<double>* errors) {
  const nlohmann::json& hardware = hwi.hardware;
  const double device_bytes = hwi.device_bytes;
  const bool suggest = a.suggest;
  const sim::SimResult r = sim::simulate(run.config);
  std::printf("%s\n", run.label.c_str());
  if (!hardware.is_null()) {
    const double main_bytes = hardware["main_weight_bytes"].get<double>();
    sim::SimConfig resident = run.config;
    resident.mode = sim::SimMode::kResident;
    const double resident_bytes = worker_slot_bytes(resident);
    std::printf("  %s: %.4g TB/s, %.4g TFLOP/s (16-bit), %.4g GB, host->device %.4g Gbit/s (%s); main holds %.3g GB "
                "of weights%s; worker slots %.3g GB (resident: %.3g GB%s)\n",
                hardware["gpu"].get<std::string>().c_str(), hardware["mem_gbs"].get<double>() / 1e3,
                hardware["tflops_16"].get<double>(), hardware["memory_gb"].get<double>(),
                hardware["host_load_gbps"].get<double>(), hardware["source"].get<std::string>().c_str(),
                main_bytes / 1e9, main_bytes > device_bytes ? " (MORE than the device holds)" : "",
                worker_slot_bytes(run.config) / 1e9, resident_bytes / 1e9,
                resident_bytes > device_bytes ? ", MORE than the device holds" : "");
  }
  print_result(run.config, r, run.measured.is_null() ? nullptr : &run.measured);
  nlohmann::json j = {{"label", run.label}, {"config", run.config.to_json()}, {"derived", run.derived},
                      {"simulated", r.to_json()}};
  if (!run.measured.is_null()) {
    const double m_tps = run.measured["decode_tokens_per_second"].get<double>();
    const double err = m_tps > 0 ? (r.tokens_per_second - m_tps) / m_tps : 0.0;
    errors->push_back(err);
    j["measured"] = run.measured;
    j["error_fraction"] = err;
  }
  if (suggest) {
    const sim::GroupsSuggestion s = sim::suggest_groups(run.config);
    std::printf("  --suggest-groups for %d workers:\n", run.config.n_workers);
    print_groups(s, device_bytes, run.config);
    j["suggest_groups"] = s.to_json();
  }
  j["worker_slot_bytes"] = worker_slot_bytes(run.config);
  return j;
}

}  // namespace

int cmd_simulate(int argc, char** argv) {
  SimArgs a;
  if (!parse_simulate_args(argc, argv, &a)) return 0;
  ArchHardware hw;
  std::vector<Run> runs = a.from_stats.empty() ? std::vector<Run>{arch_run(a, &hw)} : stats_runs(a);
  for (Run& run : runs) apply_overrides(a, &run);

  nlohmann::json out_runs = nlohmann::json::array();
  std::vector<double> errors;
  for (const Run& run : runs) {
    out_runs.push_back(simulate_run(run, a, hw, &errors));
    std::printf("\n");
  }
  if (errors.size() > 1) {
    double mean = 0, worst = 0;
    for (double e : errors) {
      mean += std::fabs(e);
      worst = std::max(worst, std::fabs(e));
    }
    std::printf("%zu runs: mean |error| %.1f%%, max %.1f%%\n", errors.size(), 100 * mean / errors.size(), 100 * worst);
  }
  if (!a.json_path.empty()) {
    nlohmann::json j = {{"command", "simulate"}, {"runs", out_runs}};
    if (!hw.hardware.is_null()) j["hardware"] = hw.hardware;
    if (!a.from_stats.empty()) j["from_stats"] = a.from_stats;
    write_json_file(a.json_path, j, 2, "--json");
  }
  return 0;
}

}  // namespace odmoe::cli
