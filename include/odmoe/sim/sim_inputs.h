// Where the simulator's figures come from (schedule_sim.h): a run measured by odmoe
// (`generate --stats-json`, `bench --json`), or a description of a model and a cluster
// (architecture, dtype, GPU preset, links) from which compute and transfer times are
// derived. Kept apart from the model of the schedule itself.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "odmoe/core/dtype.h"
#include "odmoe/sim/schedule_sim.h"

namespace odmoe::sim {

// A device's figures, for times derived from bytes and FLOPs. Every preset's source or
// assumption is written next to it in sim_inputs.cpp.
struct GpuPreset {
  std::string name;
  double mem_gbs = 0;       // device memory bandwidth, GB/s (1e9 B/s)
  double tflops_16 = 0;     // dense bf16/f16 tensor throughput, TFLOP/s
  double tflops_32 = 0;     // dense f32 throughput, TFLOP/s
  double memory_gb = 0;     // device memory, GB
  double host_load_gbps = 0;  // host -> device copy (PCIe, or a copy within unified memory), Gbit/s
  std::string note;
};
const std::vector<GpuPreset>& gpu_presets();
const GpuPreset& find_gpu(const std::string& name);  // throws ArgumentError naming the presets

// A model's shapes, as far as the schedule needs them.
struct ArchShape {
  std::string name;
  int n_layer = 0, n_dense_layer = 0, n_expert = 0, top_k = 0;
  int n_embd = 0, n_ff_expert = 0;
  double expert_params = 0;       // one routed expert
  double attn_params = 0;         // per layer: attention projections and norms
  double router_params = 0;       // per MoE layer
  double shared_params = 0;       // per MoE layer: shared expert(s)
  double dense_ffn_params = 0;    // per dense layer (no routed experts)
  double head_params = 0;         // LM head (per token)
  double kv_values_per_token = 0; // per layer: cached values one position adds (K and V, or MLA's latent)
  // Stored bytes in a dtype (data and scales): from the weight format's own layout where the
  // architecture is one odmoe runs, else estimated from the parameter count.
  double expert_bytes = 0, attn_bytes = 0, router_bytes = 0, shared_bytes = 0, dense_ffn_bytes = 0, head_bytes = 0;
};
std::vector<std::string> sim_arch_names();  // odmoe-weights synth's built-ins + deepseek-v3
// Throws ArgumentError for an unknown name. `layers` > 0 keeps the first layers.
ArchShape arch_shape(const std::string& name, DType dtype, int layers = 0);

// How a described cluster computes and moves data.
struct Hardware {
  GpuPreset gpu;
  double mem_efficiency = 0.7;      // share of memory bandwidth a batch-1 GEMV reaches
  double compute_efficiency = 0.5;  // share of peak FLOP/s
  double main_overhead_s = 30e-6;   // per layer on main: kernel launches, norms, RoPE, routing top-k
  double expert_overhead_s = 15e-6; // per expert on a worker: launches, copies in and out
  double step_overhead_s = 50e-6;   // per token on main: sampling, bookkeeping
  int context = 512;                // positions in the KV cache read per layer
  double kv_bytes_per_value = 2;    // bf16 KV cache
};

// The compute times of a shape on a device (memory-bound unless FLOPs say otherwise).
struct DerivedTimes {
  double t_main_s = 0, t_dense_layer_s = 0, t_step_s = 0, t_expert_s = 0;
  double main_weight_bytes = 0;  // what main holds (all but the routed experts)
};
DerivedTimes derive_times(const ArchShape& a, DType dtype, const Hardware& hw);

// One measured run, turned into a simulator config: the figures taken from it and how.
struct MeasuredRun {
  std::string label;
  SimConfig config;
  nlohmann::json measured;  // decode tok/s, stall, ... as odmoe reported them
  nlohmann::json derived;   // each input figure and where it came from
  // The message latency comes from the expert phase less what the workers did in it; a
  // missed expert's pull post is part of that (see set_pull_post).
  double msg_before_post_s = 0;
  double misses_per_worker_layer = 0;
};
// A `generate --stats-json` file, or `bench --json` ({"runs": [{..., "stats": {...}}]}):
// one MeasuredRun per run. Throws odmoe::Error naming the field that is missing.
std::vector<MeasuredRun> runs_from_stats_file(const std::string& path);
MeasuredRun run_from_stats(const nlohmann::json& stats, const std::string& label);
// Sets the pull post time (--pull-post-us) and rederives the message latency with it.
void set_pull_post(MeasuredRun& run, double post_s);

}  // namespace odmoe::sim
