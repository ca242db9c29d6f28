// The simulator's inputs (sim_inputs.h): GPU presets, model shapes, measured runs.
#include "odmoe/sim/sim_inputs.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <regex>

#include "odmoe/core/error.h"
#include "odmoe/arch/model_config.h"
#include "odmoe/weights/model_files.h"
#include "odmoe/weights/model_writer.h"
#include "odmoe/weights/shard_layout.h"

namespace odmoe::sim {

// Bandwidths are peak figures from the vendors' data sheets; what a batch-1 GEMV reaches of
// them is Hardware::mem_efficiency. FLOP/s are dense (no sparsity). The host -> device
// figure is what a pinned cudaMemcpy reaches, not the link's raw rate (an assumption where
// marked).
const std::vector<GpuPreset>& gpu_presets() {
  static const std::vector<GpuPreset> presets = {
      // GeForce RTX 3090 (GA102): 24 GB GDDR6X, 19.5 Gbit/s x 384 bit = 936 GB/s; 71 TFLOP/s
      // FP16 tensor with FP32 accumulate, 35.6 TFLOP/s FP32 (NVIDIA Ampere GA102 whitepaper).
      // PCIe 4.0 x16: 31.5 GB/s raw; ~25 GB/s pinned host->device (assumption) = 200 Gbit/s.
      {"rtx3090", 936, 71, 35.6, 24, 200, "GA102 whitepaper; PCIe 4.0 x16 at ~25 GB/s"},
      // GeForce RTX 4090 (AD102): 24 GB, 1008 GB/s; 165 TFLOP/s FP16 tensor with FP32
      // accumulate, 82.6 TFLOP/s FP32 (NVIDIA Ada whitepaper). PCIe 4.0 x16 as above.
      {"rtx4090", 1008, 165, 82.6, 24, 200, "Ada whitepaper; PCIe 4.0 x16 at ~25 GB/s"},
      // A100 80 GB SXM: 2039 GB/s HBM2e, 312 TFLOP/s BF16, 19.5 TFLOP/s FP32 (A100 data
      // sheet). PCIe 4.0 x16 host link, ~25 GB/s (assumption).
      {"a100", 2039, 312, 19.5, 80, 200, "A100 80GB SXM data sheet; PCIe 4.0 x16 at ~25 GB/s"},
      // H100 SXM5 80 GB: 3350 GB/s HBM3, 989 TFLOP/s BF16 dense, 67 TFLOP/s FP32 (H100 data
      // sheet). PCIe 5.0 x16: 63 GB/s raw, ~50 GB/s pinned (assumption) = 400 Gbit/s.
      {"h100", 3350, 989, 67, 80, 400, "H100 SXM5 data sheet; PCIe 5.0 x16 at ~50 GB/s"},
      // Jetson AGX Orin 64 GB: 204.8 GB/s LPDDR5 shared by CPU and GPU (Jetson AGX Orin data
      // sheet); GPU 85 INT8 TOPS dense (170 sparse) -> ~42 TFLOP/s FP16 (assumption: half the
      // INT8 rate), 5.3 TFLOP/s FP32. A "load" is a copy within the same memory: read + write
      // at ~100 GB/s (assumption: half the bandwidth) = 800 Gbit/s.
      {"orin", 204.8, 42, 5.3, 64, 800, "Jetson AGX Orin 64GB data sheet; load = copy in unified memory"},
  };
  return presets;
}

const GpuPreset& find_gpu(const std::string& name) {
  std::string names;
  for (const GpuPreset& g : gpu_presets()) {
    if (g.name == name) return g;
    names += (names.empty() ? "" : ", ") + g.name;
  }
  throw ArgumentError("--gpu '" + name + "' is not a preset; choose one of " + names +
                        " (or give --mem-gbs and --tflops)");
}

std::vector<std::string> sim_arch_names() {
  std::vector<std::string> v = synth_arch_names();
  v.push_back("deepseek-v3");
  return v;
}

namespace {

// Stored bytes of a tensor with every block 4096-aligned, as the expert shards lay it out
// (a pull moves the byte range, padding included).
double aligned_bytes(DType dt, size_t rows, size_t cols) {
  const auto up = [](double b) { return std::ceil(b / layout::kAlignment) * layout::kAlignment; };
  double b = up(static_cast<double>(dtype_data_bytes(dt, rows, cols)));
  const size_t scales = dtype_scale_count(dt, rows, cols);
  if (scales) b += up(static_cast<double>(scales * sizeof(float)));
  return b;
}

double plain_bytes(DType dt, size_t rows, size_t cols) {
  return static_cast<double>(dtype_data_bytes(dt, rows, cols) + dtype_scale_count(dt, rows, cols) * sizeof(float));
}

// DeepSeek-V3 (its published config.json: hidden_size 7168, intermediate_size 18432,
// moe_intermediate_size 2048, 61 layers of which the first 3 (first_k_dense_replace) are
// dense, 256 routed experts top-8 plus 1 shared, 128 heads, MLA with q_lora_rank 1536,
// kv_lora_rank 512, qk_nope_head_dim 128, qk_rope_head_dim 64, v_head_dim 128, vocab
// 129280). Not an architecture odmoe runs (MLA), so its shapes live here. Its 3 multi-token
// prediction layers are left out. The total comes to 671e9 parameters, as published.
ArchShape deepseek_v3(DType dt) {
  constexpr size_t d = 7168, ff = 2048, dense_ff = 18432, heads = 128, q_lora = 1536, kv_lora = 512, nope = 128,
                   rope = 64, v_dim = 128, vocab = 129280;
  ArchShape a;
  a.name = "deepseek-v3";
  a.n_layer = 61;
  a.n_dense_layer = 3;
  a.n_expert = 256;
  a.top_k = 8;
  a.n_embd = static_cast<int>(d);
  a.n_ff_expert = static_cast<int>(ff);
  struct Mat {
    size_t rows, cols;
  };
  const Mat attn[] = {{q_lora, d}, {heads * (nope + rope), q_lora}, {kv_lora + rope, d}, {heads * (nope + v_dim), kv_lora},
                      {d, heads * v_dim}};
  for (const Mat& m : attn) {
    a.attn_params += static_cast<double>(m.rows * m.cols);
    a.attn_bytes += plain_bytes(dt, m.rows, m.cols);
  }
  a.attn_params += 2.0 * d + q_lora + kv_lora;  // norms stay f32
  a.attn_bytes += 4.0 * (2.0 * d + q_lora + kv_lora);
  a.router_params = 256.0 * d;
  a.router_bytes = 4.0 * a.router_params;  // routers stay f32 (as in odmoe's format)
  a.expert_params = 3.0 * ff * d;
  a.expert_bytes = 2 * aligned_bytes(dt, ff, d) + aligned_bytes(dt, d, ff);
  a.shared_params = 3.0 * ff * d;  // 1 shared expert of the routed experts' size
  a.shared_bytes = 2 * plain_bytes(dt, ff, d) + plain_bytes(dt, d, ff);
  a.dense_ffn_params = 3.0 * dense_ff * d;
  a.dense_ffn_bytes = 2 * plain_bytes(dt, dense_ff, d) + plain_bytes(dt, d, dense_ff);
  a.head_params = static_cast<double>(vocab * d);
  a.head_bytes = plain_bytes(dt, vocab, d);
  a.kv_values_per_token = kv_lora + rope;  // MLA caches the compressed latent and the RoPE key
  return a;
}

}  // namespace

ArchShape arch_shape(const std::string& name, DType dt, int layers) {
  ArchShape a;
  if (name == "deepseek-v3") {
    a = deepseek_v3(dt);
  } else {
    const std::optional<std::string> js = synth_arch_config_json(name);
    if (!js) {
      std::string names;
      for (const std::string& n : sim_arch_names()) names += (names.empty() ? "" : ", ") + n;
      throw ArgumentError("--arch '" + name + "' is not known; choose one of " + names);
    }
    const ModelConfig cfg = ModelConfig::from_hf_json_text(*js);
    a.name = name;
    a.n_layer = cfg.n_layer;
    a.n_expert = cfg.n_expert;
    a.top_k = cfg.n_expert_used;
    a.n_embd = cfg.n_embd;
    a.n_ff_expert = cfg.n_ff_expert;
    a.expert_params = static_cast<double>(cfg.expert_params());
    for (const layout::TensorSpec& s : layout::expert_tensor_specs(cfg, 0, 0))
      a.expert_bytes += aligned_bytes(layout::stored_dtype(s, dt), s.rows(), s.cols());
    // Main's tensors of one layer, from the weight format's own list.
    for (const layout::TensorSpec& s : layout::dense_tensor_specs(cfg)) {
      const double p = static_cast<double>(s.numel()), b = static_cast<double>(layout::stored_bytes(s, dt));
      using K = layout::TensorKind;
      if (s.layer_idx < 0) {
        if (s.kind == K::kLmHead || (cfg.tie_word_embeddings && s.kind == K::kEmbed)) {
          a.head_params += p;
          a.head_bytes += b;
        }
        continue;
      }
      if (s.layer_idx != 0) continue;
      if (s.kind == K::kRouter) {
        a.router_params += p;
        a.router_bytes += b;
      } else if (s.kind == K::kSharedGate || s.kind == K::kSharedUp || s.kind == K::kSharedDown ||
                 s.kind == K::kSharedExpertGate) {
        a.shared_params += p;
        a.shared_bytes += b;
      } else {
        a.attn_params += p;
        a.attn_bytes += b;
      }
    }
    a.kv_values_per_token = 2.0 * cfg.n_head_kv * cfg.head_dim;
  }
  if (layers > 0) {
    if (layers > a.n_layer)
      throw ArgumentError("--layers " + std::to_string(layers) + " is more than " + name + "'s " +
                            std::to_string(a.n_layer));
    a.n_dense_layer = std::min(a.n_dense_layer, layers - 1);
    a.n_layer = layers;
  }
  return a;
}

DerivedTimes derive_times(const ArchShape& a, DType dt, const Hardware& hw) {
  ODMOE_CHECK(hw.gpu.mem_gbs > 0 && hw.gpu.tflops_16 > 0 && hw.gpu.tflops_32 > 0, kCli, "bad-figure",
              "the device needs a memory bandwidth and FLOP/s > 0", "give --gpu or --mem-gbs and --tflops");
  ODMOE_CHECK(hw.mem_efficiency > 0 && hw.mem_efficiency <= 1 && hw.compute_efficiency > 0 && hw.compute_efficiency <= 1,
              kCli, "bad-figure",
              "--mem-efficiency and --compute-efficiency must be in (0, 1], got " << hw.mem_efficiency << " and "
                                                                                   << hw.compute_efficiency,
              "");
  const double bw = hw.gpu.mem_gbs * 1e9 * hw.mem_efficiency;
  const double flops = (dt == DType::kF32 ? hw.gpu.tflops_32 : hw.gpu.tflops_16) * 1e12 * hw.compute_efficiency;
  // Batch 1: each weight is read once and used for one multiply-add.
  const auto t = [&](double bytes, double params) { return std::max(bytes / bw, 2.0 * params / flops); };
  const double kv = a.kv_values_per_token * hw.context * hw.kv_bytes_per_value / bw;
  DerivedTimes d;
  d.t_main_s = t(a.attn_bytes + a.router_bytes + a.shared_bytes, a.attn_params + a.router_params + a.shared_params) +
               kv + hw.main_overhead_s;
  d.t_dense_layer_s = t(a.attn_bytes + a.dense_ffn_bytes, a.attn_params + a.dense_ffn_params) + kv + hw.main_overhead_s;
  d.t_step_s = t(a.head_bytes, a.head_params) + hw.step_overhead_s;
  d.t_expert_s = t(a.expert_bytes, a.expert_params) + hw.expert_overhead_s;
  const int moe = a.n_layer - a.n_dense_layer;
  d.main_weight_bytes = a.n_layer * a.attn_bytes + moe * (a.router_bytes + a.shared_bytes) +
                        a.n_dense_layer * a.dense_ffn_bytes + 2 * a.head_bytes;
  return d;
}

namespace {

const nlohmann::json& field(const nlohmann::json& j, const char* key, const std::string& where) {
  ODMOE_CHECK(j.is_object() && j.contains(key), kConfig, "missing-field",
              where << " has no \"" << key << "\"",
              "give the JSON written by `odmoe generate --stats-json` (distributed: mpirun -np N >= 2) or `odmoe bench --json`");
  return j.at(key);
}

double number(const nlohmann::json& j, const char* key, const std::string& where) {
  const nlohmann::json& v = field(j, key, where);
  ODMOE_CHECK(v.is_number(), kConfig, "bad-field", where << ": \"" << key << "\" is not a number", "");
  return v.get<double>();
}

double number_or(const nlohmann::json& j, const char* key, double dflt) {
  return j.is_object() && j.contains(key) && j.at(key).is_number() ? j.at(key).get<double>() : dflt;
}

}  // namespace

namespace {

// The expert ranks' figures summed (ranks[1..]).
struct WorkerTotals {
  double compute = 0, computes = 0, pulls = 0, bytes = 0, load = 0, stall = 0;
  double startup_ranks = 0;  // expert ranks that pulled
};

// The workers' expert time and the pulls' rate and delays, from the ranks' figures.
WorkerTotals read_workers(const nlohmann::json& ranks, const nlohmann::json& sched, const std::string& where,
                          SimConfig* cp, nlohmann::json* dp) {
  SimConfig& c = *cp;
  nlohmann::json& d = *dp;
  WorkerTotals w;
  double& compute = w.compute;
  double& computes = w.computes;
  double& pulls = w.pulls;
  double& bytes = w.bytes;
  double& load = w.load;
  double& stall = w.stall;
  double& startup_ranks = w.startup_ranks;
  for (size_t r = 1; r < ranks.size(); ++r) {
    const nlohmann::json& rk = ranks[r];
    compute += number_or(rk, "compute_seconds", 0);
    computes += number_or(rk, "computes", 0);
    const double p = number_or(rk, "pulls", 0), ls = number_or(rk, "load_seconds", 0);
    pulls += p;
    bytes += number_or(rk, "bytes_pulled", 0);
    load += ls;
    stall += number_or(rk, "stall_seconds", 0);
    if (p > 0) ++startup_ranks;
  }
  ODMOE_CHECK(computes > 0, kConfig, "bad-field", where << ": the expert ranks computed nothing", "");
  c.t_expert_s = compute / computes;
  d["t_expert_seconds"] = {{"value", c.t_expert_s}, {"from", "sum of ranks[].compute_seconds / computes"}};
  c.expert_bytes = pulls > 0 ? bytes / pulls : 0;
  d["expert_bytes"] = {{"value", c.expert_bytes}, {"from", "bytes pulled / pulls"}};
  // Pulls. A worker's loader posts a layer's pulls together and they queue on its path, so
  // the mean measured pull (post -> noticed) holds (n + 1) / 2 services for n pulls per
  // worker and layer (resident: all of a worker's pulls at start-up).
  const int S_used = c.n_groups > 0 ? c.n_workers / c.n_groups : 1;
  const double n_per_layer = c.mode == SimMode::kResident ? std::max(1.0, pulls / std::max(1.0, startup_ranks))
                             : c.top_k > 0 && S_used > 0  ? std::ceil(static_cast<double>(c.top_k) / S_used)
                                                          : 1.0;
  const double queue = (n_per_layer + 1) / 2;
  const double per_pull = pulls > 0 ? load / pulls : 0;
  const double emulated = number_or(sched, "load_gbps_emulated", 0);
  if (emulated > 0) {
    // The emulated link serialises pulls at its nominal rate; what a pull took beyond that
    // (the loader noticing it, CPU contention) is a delay that does not hold the link.
    c.load_gbps = emulated;
    c.pull_notice_s = c.expert_bytes > 0 ? std::max(0.0, per_pull - queue * c.expert_bytes * 8 / (emulated * 1e9)) : 0;
    d["load_gbps"] = {{"value", c.load_gbps}, {"from", "schedule.load_gbps_emulated (the emulated link)"}};
    d["pull_notice_seconds"] = {{"value", c.pull_notice_s},
                                {"from", "mean measured pull (load_seconds / pulls) less (n + 1) / 2 nominal link times"}};
  } else if (per_pull > 0) {
    c.load_gbps = c.expert_bytes * 8 / (per_pull / queue) / 1e9;
    // Without a link cap a pull on one node is the copy itself, made as the get is posted.
    if (c.mode != SimMode::kResident) {
      c.pull_post_s = per_pull / queue;
      d["pull_post_seconds"] = {{"value", c.pull_post_s}, {"from", "the measured pull: on one node a get is a copy made as it is posted"}};
    }
    d["load_gbps"] = {{"value", c.load_gbps},
                      {"from", "bytes per pull / (mean measured pull / ((n + 1) / 2)): the measured pull rate"
                               + std::string(c.mode == SimMode::kResident ? " (start-up pulls: approximate)" : "")}};
  }
  d["pull_start_seconds"] = {{"value", c.pull_start_s}, {"from", "not in the statistics (0); --pull-start-us sets it"}};

  return w;
}

// Resident places expert e on worker e mod S: a worker may compute several experts of a
// layer. The expected largest share of a layer's top-k on one worker, over uniform routing
// (deterministic draws).
double expected_largest_share(int n_expert, int top_k, int S) {
  uint64_t z = 12345;
  const auto next = [&z] {
    uint64_t x = (z += 0x9e3779b97f4a7c15ull);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
  };
  std::vector<int> perm(static_cast<size_t>(n_expert)), per(static_cast<size_t>(S));
  double sum = 0;
  constexpr int kDraws = 4096;
  for (int i = 0; i < kDraws; ++i) {
    for (int e = 0; e < n_expert; ++e) perm[static_cast<size_t>(e)] = e;
    std::fill(per.begin(), per.end(), 0);
    for (int j = 0; j < top_k; ++j) {
      const size_t pick = static_cast<size_t>(j) + next() % static_cast<uint64_t>(n_expert - j);
      std::swap(perm[static_cast<size_t>(j)], perm[pick]);
      ++per[static_cast<size_t>(perm[static_cast<size_t>(j)] % S)];
    }
    sum += *std::max_element(per.begin(), per.end());
  }
  return sum / kDraws;
}

// The predictor: recall, and when its predictions were ready (the lead histogram). Returns
// its name ("none" when there was none).
std::string read_predictor(const nlohmann::json& pred, SimConfig* cp, nlohmann::json* dp) {
  SimConfig& c = *cp;
  nlohmann::json& d = *dp;
  const std::string pname = pred.contains("name") && pred["name"].is_string() ? pred["name"].get<std::string>() : "none";
  c.predicted = c.mode != SimMode::kResident && pname != "none";
  c.recall = std::clamp(number_or(pred, "recall", 0), 0.0, 1.0);
  if (c.predicted && pred.contains("lead_histogram") && pred["lead_histogram"].is_object()) {
    const nlohmann::json& h = pred["lead_histogram"];
    double unpred = number_or(h, "unpredicted", 0), total = unpred, known = 0, n_known = 0, n_far = 0;
    for (int l = 0; l < 5; ++l) {
      const double n = number_or(h, std::to_string(l).c_str(), 0);
      total += n;
      if (n > 0) c.lead.push_back({static_cast<double>(l), n});
      known += l * n;
      n_known += n;
    }
    n_far = number_or(h, "5+", 0);
    total += n_far;
    if (n_far > 0) {
      // The "5+" bucket's mean lead: the overall mean less the other buckets' share.
      const double mean = number_or(pred, "mean_lead_layers", 5);
      const double far = std::max(5.0, (mean * (n_known + n_far) - known) / n_far);
      c.lead.push_back({far, n_far});
    }
    c.unpredicted = total > 0 ? unpred / total : 0;
  }
  d["predictor"] = {{"name", pname}, {"recall", c.recall}, {"unpredicted_layers", c.unpredicted},
                    {"from", "predictor.recall and predictor.lead_histogram"}};
  return pname;
}

// The model directory, where it is at hand, has the exact shape and the hidden size
// (activation messages carry n_embd f32 values).
void read_model_dir(SimConfig* cp, nlohmann::json* dp) {
  SimConfig& c = *cp;
  nlohmann::json& d = *dp;
  if (!c.model_name.empty() && std::ifstream(c.model_name + "/" + layout::kModelFile).good()) {
    try {
      const ModelFiles files(c.model_name);
      const ModelConfig& cfg = files.config();
      c.n_layer = cfg.n_layer;
      c.n_expert = cfg.n_expert;
      c.top_k = cfg.n_expert_used;
      c.act_bytes = 4.0 * cfg.n_embd;
      d["shape"] = {{"from", c.model_name + "/" + layout::kModelFile}};
    } catch (const Error&) {
      // A directory that is not (or no longer) a model: the figures above stand.
    }
  }
  if (!d.contains("shape")) d["shape"] = {{"from", "schedule.description and predictor.per_layer"}};
}

// Main waits for the slowest of a layer's workers, not for their mean: how much more it saw
// than the mean stall is read off the simulation of this very run (one refinement of the
// message latency). `phase`: main's expert phase per layer; `rtt`: the best round trip.
void refine_msg_latency(MeasuredRun* runp, double stall_mean, int per_worker, double phase, double rtt) {
  MeasuredRun& run = *runp;
  SimConfig& c = run.config;
  nlohmann::json& d = run.derived;
  if (stall_mean > 0) {
    try {
      SimConfig probe = c;
      probe.validate();
      const SimResult r = simulate(probe);
      const int used = std::min(probe.group_size(), probe.top_k);
      const double sim_mean = r.stall_seconds / (static_cast<double>(probe.n_tokens) * probe.n_moe_layer() * used);
      const double seen = r.expert_phase_s - 2 * probe.transfer_seconds() - per_worker * c.t_expert_s -
                          c.pull_post_s * run.misses_per_worker_layer;
      if (sim_mean > 1e-12) {
        const double f = std::clamp(seen / sim_mean, 1.0, static_cast<double>(used));
        run.msg_before_post_s = std::max(rtt / 2, (phase - per_worker * c.t_expert_s - f * stall_mean) / 2);
        c.msg_latency_s = std::max(0.0, run.msg_before_post_s - c.pull_post_s * run.misses_per_worker_layer / 2);
        d["msg_latency_seconds"] = {{"value", c.msg_latency_s},
                                    {"from", "(t_submit + t_worker - experts per worker x t_expert - f x mean worker "
                                             "stall per layer) / 2, f: main's stall over the workers' mean in the "
                                             "simulation of this run"},
                                    {"f", f}};
      }
    } catch (const Error&) {
      // A shape the statistics do not pin down (the caller sets it): keep the first estimate.
    }
  }
}

}  // namespace

MeasuredRun run_from_stats(const nlohmann::json& s, const std::string& label) {
  const std::string where = label.empty() ? std::string("the statistics") : label;
  MeasuredRun run;
  run.label = label;
  SimConfig& c = run.config;
  nlohmann::json& d = run.derived;
  const nlohmann::json& timing = field(s, "timing", where);
  const nlohmann::json& sched = field(s, "schedule", where);
  const nlohmann::json& ranks = field(s, "ranks", where);
  ODMOE_CHECK(ranks.is_array() && ranks.size() >= 2, kConfig, "bad-field",
              where << " has " << (ranks.is_array() ? ranks.size() : 0) << " rank(s); a distributed run has main and expert ranks",
              "run `mpirun -np N odmoe generate ... --stats-json FILE` with N >= 2");
  const std::string mode = field(sched, "mode", where).get<std::string>();
  c.mode = parse_sim_mode(mode);
  c.n_workers = static_cast<int>(number(sched, "workers", where));
  c.n_groups = static_cast<int>(number(sched, "groups", where));
  c.lookahead = static_cast<int>(number_or(sched, "lookahead", 1));
  c.model_name = s.contains("model") && s["model"].is_string() ? s["model"].get<std::string>() : "";

  // Shape: experts and top-k from the schedule's description, layers from the per-layer
  // predictor figures (else decode layers / decode steps).
  const std::string desc = sched.contains("description") ? sched["description"].get<std::string>() : "";
  std::smatch mt;
  if (std::regex_search(desc, mt, std::regex("top-([0-9]+) of ([0-9]+) experts"))) {
    c.top_k = std::stoi(mt[1]);
    c.n_expert = std::stoi(mt[2]);
  }
  const nlohmann::json pred = s.contains("predictor") ? s["predictor"] : nlohmann::json::object();
  const double decode_layers = number(timing, "decode_layers", where);
  const double generated = number(s, "generated_tokens", where);
  if (pred.contains("per_layer") && pred["per_layer"].is_array() && !pred["per_layer"].empty())
    c.n_layer = static_cast<int>(pred["per_layer"].size());
  else if (generated > 1)
    c.n_layer = static_cast<int>(std::lround(decode_layers / (generated - 1)));
  ODMOE_CHECK(decode_layers > 0 && c.n_layer > 0, kConfig, "bad-field", where << " has no decode steps",
              "generate at least 2 tokens");
  read_model_dir(&c, &d);
  const double steps = decode_layers / c.n_layer;
  c.n_tokens = std::max(1, static_cast<int>(std::lround(steps)));

  // Main's own work.
  const double decode_s = number(s, "decode_seconds", where);
  const double t_worker = number(timing, "t_worker_seconds_per_layer", where);
  c.t_main_s = number(timing, "t_main_seconds_per_layer", where);
  // What main did besides its dense work and its waits (t_worker, which main counts from
  // the end of its sends): sending and predictor upkeep in each layer, the LM head and
  // sampling per token, and being descheduled where ranks outnumber cores. The statistics
  // do not split these; the simulator runs them beside each layer's expert phase
  // (t_submit), and the expert phase as main lived it is counted from the end of routing:
  // t_submit + t_worker. Its messages take what the workers' work leaves of that.
  const double rest = std::max(0.0, decode_s / steps - c.n_layer * (c.t_main_s + t_worker));
  const double phase = rest / c.n_layer + t_worker;
  d["t_main_seconds"] = {{"value", c.t_main_s}, {"from", "timing.t_main_seconds_per_layer (main's dense work per decode layer)"}};

  // The workers.
  const WorkerTotals wt = read_workers(ranks, sched, where, &c, &d);
  const double stall = wt.stall, load = wt.load;

  // Messages: main's expert phase less the workers' compute (and, on demand, their stall)
  // is two messages.
  const int S = c.n_groups > 0 ? c.n_workers / c.n_groups : 1;
  const int per_worker = S > 0 && c.top_k > 0 ? (c.top_k + S - 1) / S : 1;
  double phase_compute = per_worker * c.t_expert_s;
  double stall_mean = 0;  // on demand: mean stall per decode layer of a worker a layer uses
  std::string msg_from;
  if (c.mode == SimMode::kResident && c.top_k > 0 && c.n_expert > 0 && S > 0) {
    phase_compute = expected_largest_share(c.n_expert, c.top_k, S) * c.t_expert_s;
    msg_from = "(t_submit + t_worker - expected largest share of a layer's experts on one worker x t_expert) / 2";
  } else {
    // A worker takes a missed expert's COMPUTE only after posting its pull (pull_post_s);
    // the measured stall starts there. (Predicted pulls are posted before the COMPUTE comes.)
    const double recall = std::clamp(number_or(pred, "recall", 0), 0.0, 1.0);
    const bool predicting = pred.contains("name") && pred["name"].is_string() && pred["name"] != "none";
    const double miss = predicting ? 1.0 - recall : 1.0;
    run.misses_per_worker_layer = miss * c.top_k / std::max(1, std::min(S, c.top_k));
    // Mean stall per decode layer of the workers a layer uses (the j-th expert goes to worker
    // j mod S: min(S, k) of them). Prefill stalls are included: a small bias.
    stall_mean = stall / std::max(1.0, decode_layers * std::min(S, std::max(1, c.top_k)));
    phase_compute += stall_mean;
    msg_from = "(t_submit + t_worker - experts per worker x t_expert - mean worker stall per layer) / 2 (approximate: "
               "main waits for the slowest worker)";
  }
  // At least half the best round trip main measured to each worker (ranks[].clock_rtt_seconds).
  double rtt = 0;
  for (size_t r = 1; r < ranks.size(); ++r) rtt = std::max(rtt, number_or(ranks[r], "clock_rtt_seconds", 0));
  run.msg_before_post_s = std::max(rtt / 2, (phase - phase_compute) / 2);
  c.msg_latency_s = std::max(0.0, run.msg_before_post_s - c.pull_post_s * run.misses_per_worker_layer / 2);
  c.t_submit_s = rest / c.n_layer;
  c.t_step_s = 0;
  d["t_submit_seconds"] = {{"value", c.t_submit_s},
                           {"from", "(decode_seconds / steps - layers x (t_main + t_worker)) / layers: main's time "
                                    "outside its dense part and its waits, run beside the expert phase"}};
  // The measured figures already hold the time this machine's threads took to notice
  // events (waits on pulls: in the measured pull time).
  c.poll.messages = false;
  c.poll.loads = false;
  d["msg_latency_seconds"] = {{"value", c.msg_latency_s}, {"from", msg_from}};

  const std::string pname = read_predictor(pred, &c, &d);
  if (c.mode == SimMode::kCache) {
    c.cache_hit_rate = s.contains("cache") ? std::clamp(number_or(s["cache"], "hit_rate", 0), 0.0, 1.0) : 0.0;
    d["cache_hit_rate"] = {{"value", c.cache_hit_rate}, {"from", "cache.hit_rate"}};
  }

  refine_msg_latency(&run, stall_mean, per_worker, phase, rtt);

  run.measured = {{"decode_tokens_per_second", number(s, "decode_tokens_per_second", where)},
                  {"decode_seconds", decode_s},
                  {"decode_steps", steps},
                  {"t_main_seconds_per_layer", c.t_main_s},
                  {"t_worker_seconds_per_layer", t_worker},
                  {"workers_stall_seconds", stall},
                  {"workers_load_seconds", load},
                  {"load_hidden_fraction", number_or(timing, "load_hidden_fraction", 1)},
                  {"predictor", pname},
                  {"recall", c.recall}};
  return run;
}

void set_pull_post(MeasuredRun& run, double post_s) {
  run.config.pull_post_s = post_s;
  run.config.msg_latency_s = std::max(0.0, run.msg_before_post_s - post_s * run.misses_per_worker_layer / 2);
  run.derived["pull_post_seconds"] = {{"value", post_s}, {"from", "command line"}};
  run.derived["msg_latency_seconds"]["value"] = run.config.msg_latency_s;
}

std::vector<MeasuredRun> runs_from_stats_file(const std::string& path) {
  std::ifstream f(path);
  ODMOE_CHECK(f.good(), kIo, "open", "cannot read --from-stats " << path, "check the path");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    ODMOE_THROW(kConfig, "invalid-json", path << " is not JSON: " << e.what(), "");
  }
  std::vector<MeasuredRun> out;
  if (j.is_object() && j.contains("runs")) {  // odmoe bench --json
    ODMOE_CHECK(j["runs"].is_array() && !j["runs"].empty(), kConfig, "bad-field", path << ": \"runs\" is empty", "");
    size_t i = 0;
    for (const nlohmann::json& r : j["runs"]) {
      std::string label = "run " + std::to_string(i++);
      for (const char* k : {"mode", "predictor", "groups", "input_len", "output_len"})
        if (r.contains(k)) label += std::string(" ") + k + "=" + (r[k].is_string() ? r[k].get<std::string>() : r[k].dump());
      out.push_back(run_from_stats(field(r, "stats", path + " " + label), label));
    }
  } else {
    out.push_back(run_from_stats(j, path));
  }
  return out;
}

}  // namespace odmoe::sim
