// odmoe bench: the paper's measurement protocol over a list of configurations, in one job.
//
//   mpirun -np N odmoe bench --model DIR [--runs resident,on-demand/shadow,...] [--groups 1,2]
//                            [--input-len 16,128] [--output-len 64,256] [--prompts-per-case 3]
//                            [--prompts FILE] [--trace-dir DIR] --json FILE
//
// A run is a mode with a predictor at a group count: `resident`, `on-demand/PRED`,
// `cache/PRED` or `substitute/PRED` (cache mode with --substitute ALPHA). A case is an input
// length with an output length. For every run and case the engine is opened afresh (every
// rank takes part), --prompts-per-case prompts of exactly the input length are prefilled and
// exactly the output length of tokens is generated, greedy, batch 1, EOS ignored; then the
// engine is finished and its statistics gathered. Per case: decode tokens/s, time to first
// token, output tokens/s (a prompt's tokens over its prefill + decode time) -- medians over
// the prompts, means beside them -- peak memory per rank, bytes moved, the expert ranks'
// stall fraction, the predictor's recall or the cache's hit rate.
//
// Every exact run must give the same tokens (checked: `tokens_match_reference`); a
// substituting run's tokens are compared with them (`token_agreement`). Each run's speed is
// reported beside the resident run's at the same group count, the limit of loading on demand.
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench_report.h"
#include "engine_args.h"
#include "odmoe/core/error.h"
#include "odmoe/core/json_file.h"
#include "odmoe/core/memory_stats.h"
#include "odmoe/comm/comm.h"
#include "odmoe/runtime/generation.h"
#include "odmoe/runtime/perplexity.h"
#include "odmoe/tokenizer/tokenizer.h"

namespace odmoe::cli {

namespace {

struct RunSpec {
  std::string mode;       // resident | on-demand | cache | substitute
  std::string predictor;  // "none" for resident
  int groups = 0;
  std::string name() const { return mode == "resident" ? mode : mode + "/" + predictor; }
};

std::vector<std::string> split_list(const std::string& s, const char* what) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  if (out.empty()) throw UsageError(std::string(what) + " is empty");
  return out;
}

std::vector<int> int_list(const std::string& s, const char* what, int min_value) {
  std::vector<int> out;
  for (const std::string& item : split_list(s, what)) {
    size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v < min_value)
      throw UsageError(std::string(what) + ": '" + item + "' is not an integer >= " + std::to_string(min_value));
    out.push_back(v);
  }
  return out;
}

bool is_mode(const std::string& m) { return m == "resident" || m == "on-demand" || m == "cache" || m == "substitute"; }

// --runs MODE[/PRED],... or the product of --modes and --predictors; then every group count.
std::vector<RunSpec> make_runs(const std::string& runs_s, const std::string& modes_s, const std::string& preds_s,
                               const std::vector<int>& groups) {
  std::vector<std::pair<std::string, std::string>> pairs;
  auto add = [&](const std::string& mode, std::string pred) {
    if (!is_mode(mode)) throw UsageError("bench: unknown mode '" + mode + "' (resident, on-demand, cache, substitute)");
    if (mode == "resident") {
      if (pred != "none" && !runs_s.empty())
        throw UsageError("bench: resident loads nothing after start-up, so it takes no predictor ('resident/" + pred + "')");
      pred = "none";
    }
    if (!is_predictor_name(pred))
      throw UsageError("bench: unknown predictor '" + pred + "' (" + kPredictorNames + ")");
    if (std::find(pairs.begin(), pairs.end(), std::make_pair(mode, pred)) == pairs.end()) pairs.emplace_back(mode, pred);
  };
  if (!runs_s.empty()) {
    for (const std::string& item : split_list(runs_s, "--runs")) {
      const size_t slash = item.find('/');
      add(item.substr(0, slash), slash == std::string::npos ? "none" : item.substr(slash + 1));
    }
  } else {
    for (const std::string& m : split_list(modes_s, "--modes"))
      for (const std::string& p : split_list(preds_s, "--predictors")) add(m, p);
  }
  std::vector<RunSpec> out;
  for (int g : groups)
    for (const auto& [m, p] : pairs) out.push_back({m, p, g});
  return out;
}

// `n` prompts of exactly `len` tokens (BOS first where the model has one): consecutive
// passages joined until long enough, starting at a different passage for each prompt.
std::vector<std::vector<int32_t>> make_inputs(const Tokenizer& tok, const std::vector<std::string>& passages, int len,
                                              int n) {
  std::vector<std::vector<int32_t>> out;
  const size_t stride = std::max<size_t>(1, passages.size() / static_cast<size_t>(n));
  for (int p = 0; p < n; ++p) {
    std::string text;
    std::vector<int32_t> ids;
    for (size_t i = 0; i < passages.size() && static_cast<int>(ids.size()) < len; ++i) {
      text += passages[(static_cast<size_t>(p) * stride + i) % passages.size()];
      ids = tok.encode(text, true);
    }
    ODMOE_CHECK(static_cast<int>(ids.size()) >= len, kCli, "bad-prompts",
                "the prompts hold " << ids.size() << " tokens in all, fewer than --input-len " << len,
                "give --prompts a longer file or lower --input-len");
    ids.resize(static_cast<size_t>(len));
    out.push_back(std::move(ids));
  }
  return out;
}

double num(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0.0;
}

// What a rank holds that a GPU-backed rank keeps in device memory (the CPU backend reports
// no device memory): main's dense weights and KV cache (and the shadow on main), an expert
// rank's slots.
double working_set_bytes(const nlohmann::json& rank, const nlohmann::json& stats, double main_bytes) {
  if (rank.value("role", "") == "main") {
    double b = main_bytes;
    if (stats.contains("predictor") && !stats["predictor"].contains("predictor_rank"))
      b += num(stats["predictor"], "shadow_weight_bytes") + num(stats["predictor"], "shadow_kv_cache_bytes");
    return b;
  }
  return num(rank, "slot_bytes") * num(rank, "slots");
}

// Where it ran: the CPU model, cores and memory of main's node (the per-rank hosts are in
// each run's statistics).
nlohmann::json machine_info(const std::string& backend) {
  std::string cpu = "unknown", line;
  std::ifstream f("/proc/cpuinfo");
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return {{"cpu", cpu},
          {"cores", sysconf(_SC_NPROCESSORS_ONLN)},
          {"memory_bytes", pages > 0 && page > 0 ? static_cast<double>(pages) * page : 0.0},
          {"backend", backend}};
}

double median_of(const nlohmann::json& prompts, const char* key) {
  std::vector<double> v;
  for (const auto& p : prompts) v.push_back(p[key].get<double>());
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}


// The command line of odmoe bench.
struct BenchArgs {
  std::string runs_s, modes_s = "resident,on-demand,cache", preds_s = "shadow,none", groups_s = "0";
  std::string in_s = "16,128", out_s = "64,256", prompts_path, json_path, trace_dir;
  int per_case = 3, warmup = 1, ppl_tokens = 0;
  double alpha = 0.2;
  EngineArgs ea;
  bool default_prompts = false, modes_given = false;
  std::vector<int> in_lens, out_lens, groups;
};

// False: the help was asked for (printed).
bool parse_bench_args(int argc, char** argv, BenchArgs* a) {
  po::options_description o("bench options");
  a->ea.add(o, false);
  o.add_options()("runs", po::value(&a->runs_s),
                  "comma-separated MODE[/PREDICTOR]: resident | on-demand/P | cache/P | substitute/P (cache with "
                  "--substitute); e.g. resident,on-demand/shadow,on-demand/none,cache/gate-ahead,substitute/gate-ahead. "
                  "Overrides --modes x --predictors")(
      "modes", po::value(&a->modes_s)->default_value(a->modes_s), "modes to cross with --predictors (resident once)")(
      "predictors", po::value(&a->preds_s)->default_value(a->preds_s), "predictors to cross with --modes")(
      "groups", po::value(&a->groups_s)->default_value(a->groups_s), "group counts; every run at each (0: the default G)")(
      "substitute", po::value(&a->alpha)->default_value(a->alpha), "alpha of the substitute mode (0..1)")(
      "input-len", po::value(&a->in_s)->default_value(a->in_s), "prompt lengths in tokens")(
      "output-len", po::value(&a->out_s)->default_value(a->out_s), "generated tokens per prompt (EOS ignored)")(
      "prompts-per-case", po::value(&a->per_case)->default_value(a->per_case), "prompts measured per run and case")(
      "warmup", po::value(&a->warmup)->default_value(a->warmup),
      "untimed generations (the first prompt, at most 16 tokens) before each case's measured ones")(
      "perplexity-tokens", po::value(&a->ppl_tokens)->default_value(a->ppl_tokens),
      "per run, also score this many tokens of the prompts' text one token per step (what substitution changes; "
      "0: off)")(
      "prompts", po::value(&a->prompts_path),
      "JSON Lines text the prompts are cut from (default: the model's prompts.jsonl, held-out passages kept by "
      "odmoe-weights convert)")(
      "trace-dir", po::value(&a->trace_dir), "write each run's trace of its first case here (Chrome/Perfetto JSON)")(
      "json", po::value(&a->json_path)->required(), "write the results here");
  po::variables_map vm;
  if (!cli::parse_options(argc, argv, o, po::positional_options_description(),
                          "usage: mpirun -np N odmoe bench --model DIR [--runs LIST] [--groups 1,2] [--input-len 16,128] "
                          "[--output-len 64,256] --json FILE",
                          &vm))
    return false;
  a->ea.finalize();
  if (!a->ea.trace.empty()) throw UsageError("bench: use --trace-dir DIR (one trace per run), not --trace");
  if (a->per_case < 1) throw UsageError("--prompts-per-case must be at least 1");
  if (a->warmup < 0 || a->ppl_tokens < 0) throw UsageError("--warmup and --perplexity-tokens must be >= 0");
  if (a->ppl_tokens == 1) throw UsageError("--perplexity-tokens must be 0 (off) or at least 2");
  if (!(a->alpha >= 0 && a->alpha <= 1)) throw UsageError("--substitute alpha must be in [0, 1]");
  a->default_prompts = a->prompts_path.empty();
  a->prompts_path = prompts_or_default(a->prompts_path, a->ea.eo.model_dir);
  a->in_lens = int_list(a->in_s, "--input-len", 1);
  a->out_lens = int_list(a->out_s, "--output-len", 1);
  a->groups = int_list(a->groups_s, "--groups", 0);
  a->modes_given = !vm["modes"].defaulted();
  return true;
}

// The runs, every one checked before the first starts (on every rank alike); sets the
// context where none was given.
std::vector<RunSpec> bench_runs(BenchArgs* a, int world, const ModelConfig& mc) {
  std::vector<RunSpec> runs;
  if (world == 1) {
    if (!a->runs_s.empty() || a->modes_given)
      std::fprintf(stderr, "[bench] one process: every expert in memory; --runs/--modes need mpirun -np N (N >= 2)\n");
    runs.push_back({"single-process", "none", 0});
  } else {
    runs = make_runs(a->runs_s, a->modes_s, a->preds_s, a->groups);
  }
  EngineOptions& eo = a->ea.eo;
  const int max_in = *std::max_element(a->in_lens.begin(), a->in_lens.end());
  const int max_out = *std::max_element(a->out_lens.begin(), a->out_lens.end());
  const int needed = std::max(max_in + max_out, a->ppl_tokens);
  if (eo.n_ctx == 0) eo.n_ctx = std::min(mc.max_position_embeddings, needed);
  if (needed > std::min(eo.n_ctx, mc.max_position_embeddings))
    throw UsageError("bench: --input-len " + std::to_string(max_in) + " + --output-len " + std::to_string(max_out) +
                     " (or --perplexity-tokens) exceeds the context (" +
                     std::to_string(std::min(eo.n_ctx, mc.max_position_embeddings)) + ")");
  const int workers = world - 1 - (eo.dist.predictor_rank >= 0 ? 1 : 0);
  for (const RunSpec& r : runs) {
    if (world == 1) break;
    const int g = r.groups > 0 ? r.groups : Schedule::default_groups(workers, mc.n_expert_used);
    Schedule(mc.n_layer, mc.n_expert, mc.n_expert_used, workers, g, eo.dist.lookahead, eo.dist.predict_extra);
    if (r.predictor == "oracle") throw UsageError("bench: the oracle replays one recorded generation; it cannot run here");
    if (eo.dist.predictor_rank >= 0 && (r.predictor != "shadow" || r.mode == "resident"))
      throw UsageError("bench: --predictor-rank applies to shadow runs only; run " + r.name() + " separately");
  }
  return runs;
}

// One case: its prompts and how long they took.
struct CaseSpec {
  const RunSpec* spec;
  int in_len, out_len, world, warmup;
  double alpha;
  const std::vector<std::vector<int32_t>>* inputs;  // [prompt]: int32 token ids of in_len each
  std::string trace_path;
};

struct CaseTimes {
  nlohmann::json prompts = nlohmann::json::array();  // per prompt: times and tokens
  double ttft_sum = 0, decode_s = 0, prefill_s = 0;
  int decode_steps = 0, generated = 0, warmup_tokens = 0;
};

CaseTimes generate_case(Model& model, const CaseSpec& c) {
  CaseTimes t;
  GenerationOptions warm;
  warm.max_new = std::min(c.out_len, 16);
  for (int w = 0; w < c.warmup; ++w) {  // untimed: first-touch costs, caches and threads warm up
    t.warmup_tokens += warm.max_new;
    generate(model, (*c.inputs)[0], warm, argmax_token);
  }
  GenerationOptions go;
  go.max_new = c.out_len;
  for (const std::vector<int32_t>& ids : *c.inputs) {
    const GenerationResult g = generate(model, ids, go, argmax_token);
    const double ttft = g.prefill_s, dec = g.decode_s;
    t.ttft_sum += ttft;
    t.prefill_s += ttft;
    t.decode_s += dec;
    t.decode_steps += c.out_len - 1;
    t.generated += c.out_len;
    t.prompts.push_back({{"ttft_seconds", ttft},
                         {"decode_seconds", dec},
                         {"decode_tokens_per_second", c.out_len > 1 ? (c.out_len - 1) / dec : 0.0},
                         {"output_tokens_per_second", c.out_len / (ttft + dec)},
                         {"tokens", g.tokens}});
  }
  return t;
}

// Memory per rank: measured device peaks where the ranks report them, else the working set.
void add_memory(const nlohmann::json& stats, double main_bytes, nlohmann::json* r) {
  nlohmann::json dev = nlohmann::json::array(), host = nlohmann::json::array();
  double dev_total = 0, dev_max = 0, measured_device = 0;
  for (const auto& rk : stats["ranks"]) measured_device += num(rk, "peak_device_bytes");
  for (const auto& rk : stats["ranks"]) {
    const double d = measured_device > 0 ? num(rk, "peak_device_bytes") : working_set_bytes(rk, stats, main_bytes);
    dev.push_back(d);
    host.push_back(num(rk, "peak_host_bytes"));
    dev_total += d;
    dev_max = std::max(dev_max, d);
  }
  (*r)["device_bytes_source"] = measured_device > 0 ? "measured" : "working-set";
  (*r)["device_bytes_per_rank"] = dev;
  (*r)["device_bytes_total"] = dev_total;
  (*r)["device_bytes_max_rank"] = dev_max;
  (*r)["peak_host_bytes_per_rank"] = host;
}

// The figures of the run's statistics a case reports (`busy_s`: the span they cover).
void add_run_figures(const nlohmann::json& stats, const RunSpec& spec, const CaseTimes& t, double busy_s,
                     nlohmann::json* r) {
  if (stats.contains("timing")) {
    const auto& tm = stats["timing"];
    const double n_workers = static_cast<double>(stats["ranks"].size() - 1);
    (*r)["bytes_pulled"] = num(tm, "workers_bytes_pulled");
    // Resident pulls every expert once, at start-up; nothing per token.
    (*r)["bytes_pulled_per_token"] =
        spec.mode == "resident" ? 0.0 : num(tm, "workers_bytes_pulled") / std::max(1, t.generated + t.warmup_tokens);
    (*r)["stall_fraction"] = num(tm, "workers_stall_seconds") / std::max(1e-12, busy_s * n_workers);
    (*r)["load_hidden_fraction"] = num(tm, "load_hidden_fraction");
    const double load_s = num(tm, "workers_load_seconds");
    (*r)["pull_gbps"] = load_s > 0 ? num(tm, "workers_bytes_pulled") * 8 / load_s / 1e9 : 0.0;
  }
  if (spec.mode != "resident" && stats.contains("predictor") && stats["predictor"].value("decode_layers", 0) > 0) {
    (*r)["recall"] = num(stats["predictor"], "recall");
    (*r)["precision"] = num(stats["predictor"], "precision");
  }
  if (stats.contains("cache")) {
    (*r)["hit_rate"] = num(stats["cache"], "hit_rate");
    (*r)["substitutions"] = num(stats["cache"], "substitutions");
  }
}

// Runs one case on the engine and returns its record; the engine is finished.
nlohmann::json measure_case(Engine& eng, const CaseSpec& c, nlohmann::json* machine) {
  const RunSpec& spec = *c.spec;
  Model& model = eng.model();
  const double t_ready = now_s();  // the statistics cover from here (warm-up included) to finish()
  const CaseTimes t = generate_case(model, c);
  const double main_bytes = static_cast<double>(model.dense_weight_bytes() + model.kv_cache_bytes());
  const std::string desc = eng.describe();
  if (machine->is_null()) *machine = machine_info(eng.backend().to_string());
  const double t_done = now_s();
  nlohmann::json stats = eng.finish(c.trace_path);
  const double wall = t.prefill_s + t.decode_s;
  const nlohmann::json& prompts = t.prompts;
  nlohmann::json r = {
      {"name", spec.name()},
      {"mode", c.world > 1 ? spec.mode : "single-process"},
      {"predictor", spec.predictor},
      {"groups", stats.contains("schedule") ? stats["schedule"].value("groups", 0) : 0},
      {"groups_requested", spec.groups},
      {"substitute_alpha", spec.mode == "substitute" ? nlohmann::json(c.alpha) : nlohmann::json()},
      {"input_len", c.in_len},
      {"output_len", c.out_len},
      {"prompts", prompts.size()},
      {"engine", desc},
      // Medians over the prompts (a prompt that another process delayed does not move them);
      // the means over all of them beside.
      {"ttft_seconds", median_of(prompts, "ttft_seconds")},
      {"decode_tokens_per_second", median_of(prompts, "decode_tokens_per_second")},
      {"output_tokens_per_second", median_of(prompts, "output_tokens_per_second")},
      {"ttft_seconds_mean", t.ttft_sum / static_cast<double>(prompts.size())},
      {"decode_tokens_per_second_mean", t.decode_s > 0 ? t.decode_steps / t.decode_s : 0.0},
      {"output_tokens_per_second_mean", wall > 0 ? t.generated / wall : 0.0},
      {"prefill_tokens_per_second",
       t.prefill_s > 0 ? static_cast<double>(c.in_len) * prompts.size() / t.prefill_s : 0.0},
  };
  add_memory(stats, main_bytes, &r);
  add_run_figures(stats, spec, t, t_done - t_ready, &r);
  if (!c.trace_path.empty()) r["trace"] = c.trace_path;
  r["per_prompt"] = prompts;
  // The statistics as `generate --stats-json` writes them (what `odmoe simulate
  // --from-stats` reads); their counters include the warm-up.
  stats["generated_tokens"] = t.generated;
  stats["decode_seconds"] = t.decode_s;
  stats["decode_tokens_per_second"] = t.decode_s > 0 ? t.decode_steps / t.decode_s : 0.0;
  stats["prompt_tokens"] = c.in_len * static_cast<int>(prompts.size());
  stats["prefill_seconds"] = t.prefill_s;
  stats["ttft_seconds"] = r["ttft_seconds"];
  stats["mode"] = r["mode"];
  stats["engine"] = desc;
  r["stats"] = stats;
  std::fprintf(stderr, "[bench] %-22s G=%d in %4d out %4d: decode %8.1f tok/s, TTFT %7.2f ms\n", spec.name().c_str(),
               r["groups"].get<int>(), c.in_len, c.out_len, r["decode_tokens_per_second"].get<double>(),
               1e3 * r["ttft_seconds"].get<double>());
  return r;
}

// The --json document: how, where and on what it ran, and every run's cases.
nlohmann::json bench_document(int argc, char** argv, const BenchArgs& a, int world, const ModelConfig& mc,
                              const nlohmann::json& machine, const nlohmann::json& results) {
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  std::string command = "mpirun -np " + std::to_string(world) + " odmoe";
  for (int i = 0; i < argc; ++i) command += " " + std::string(argv[i]);
  // The model's own prompts by their name, not this machine's path.
  const std::string prompts_label = a.default_prompts ? "prompts.jsonl of the model" : a.prompts_path;
  return {
      {"benchmark", "odmoe bench"},
      {"command", command},
      {"date", date},
      {"ranks", world},
      {"machine", machine},
      {"model", a.ea.eo.model_dir},
      {"model_config",
       {{"arch", arch_hf_name(mc.arch)},
        {"layers", mc.n_layer},
        {"experts", mc.n_expert},
        {"top_k", mc.n_expert_used},
        {"hidden", mc.n_embd},
        {"expert_ffn", mc.n_ff_expert}}},
      {"protocol",
       {{"input_lens", a.in_lens},
        {"output_lens", a.out_lens},
        {"prompts_per_case", a.per_case},
        {"prompts_file", prompts_label},
        {"greedy", true},
        {"batch", 1},
        {"eos_ignored", true},
        {"n_ctx", a.ea.eo.n_ctx},
        {"warmup_generations", a.warmup},
        {"perplexity_tokens", a.ppl_tokens}}},
      {"load_gbps_emulated", a.ea.eo.dist.load_gbps},
      {"runs", results},
  };
}

// The trace file of a run's first case ("" when none is asked for).
std::string case_trace_path(const BenchArgs& a, const RunSpec& spec, int in_len, int out_len) {
  std::string n = spec.name();
  std::replace(n.begin(), n.end(), '/', '-');
  return a.trace_dir + "/trace-" + n + "-G" + std::to_string(spec.groups) + "-in" + std::to_string(in_len) + "-out" +
         std::to_string(out_len) + ".json";
}

// The engine options of a run.
EngineOptions run_options(const BenchArgs& a, const RunSpec& spec, int world) {
  EngineOptions eo = a.ea.eo;
  if (world > 1) {
    eo.dist.mode = parse_mode(spec.mode == "substitute" ? "cache" : spec.mode);
    eo.dist.predictor = spec.predictor;
    eo.dist.groups = spec.groups;
    eo.dist.substitute = spec.mode == "substitute" ? a.alpha : -1.0;
    a.ea.set_cache_policy(eo.dist);
  }
  return eo;
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  BenchArgs a;
  if (!parse_bench_args(argc, argv, &a)) return 0;
  const int world = mpi_world_size(), rank = mpi_world_rank();  // MPI only under a launcher
  // Everything that can be wrong is checked before the first run, on every rank alike.
  const ModelFiles files(a.ea.eo.model_dir);
  const ModelConfig& mc = files.config();
  const std::vector<RunSpec> runs = bench_runs(&a, world, mc);
  if (!a.trace_dir.empty() && rank == 0) std::filesystem::create_directories(a.trace_dir);

  std::vector<std::vector<std::vector<int32_t>>> inputs;  // [input length][prompt]: int32 token ids
  std::vector<int32_t> ppl_ids;
  if (rank == 0) {
    const std::vector<std::string> passages = read_prompts(a.prompts_path, 100000);
    const Tokenizer tok = Tokenizer::from_json(files.tokenizer_json());
    for (int len : a.in_lens) inputs.push_back(make_inputs(tok, passages, len, a.per_case));
    if (a.ppl_tokens > 0) ppl_ids = make_inputs(tok, passages, a.ppl_tokens, 1)[0];
  }

  nlohmann::json results = nlohmann::json::array();
  std::map<std::string, nlohmann::json> perplexity;  // run name @ groups -> figures
  nlohmann::json machine;
  for (const RunSpec& spec : runs) {
    EngineOptions eo = run_options(a, spec, world);
    for (size_t ci = 0; ci < a.in_lens.size(); ++ci)
      for (int out_len : a.out_lens) {
        const bool first_case = ci == 0 && out_len == a.out_lens.front();
        CaseSpec c{&spec, a.in_lens[ci], out_len, world, a.warmup, a.alpha, rank == 0 ? &inputs[ci] : nullptr, ""};
        if (!a.trace_dir.empty() && first_case) c.trace_path = case_trace_path(a, spec, c.in_len, out_len);
        eo.dist.trace = !c.trace_path.empty();
        reset_peak_rss();  // every rank: this case's peak
        Engine::run(eo, [&](Engine& eng) {
          results.push_back(measure_case(eng, c, &machine));
          return 0;
        });
      }
    if (a.ppl_tokens > 0) {  // an engine of its own, so the cases' statistics stay theirs
      Engine::run(eo, [&](Engine& eng) {
        const PerplexityResult p = evaluate_perplexity(eng.model(), ppl_ids, a.ppl_tokens, true);
        eng.finish();
        perplexity[spec.name() + "@" + std::to_string(spec.groups)] = {
            {"perplexity", p.perplexity}, {"nll_per_token", p.nll_per_token}, {"tokens_scored", p.tokens_scored}};
        std::fprintf(stderr, "[bench] %-22s perplexity %.4f over %zu tokens (token by token)\n", spec.name().c_str(),
                     p.perplexity, p.tokens_scored);
        return 0;
      });
    }
  }
  if (rank != 0) return 0;
  for (auto& r : results) {
    const auto it = perplexity.find(r["name"].get<std::string>() + "@" + std::to_string(r["groups_requested"].get<int>()));
    if (it != perplexity.end()) r["perplexity"] = it->second;
  }
  compare_tokens(&results);
  const bool tokens_agree = print_bench_table(results, a.in_lens.front(), a.out_lens.front(), a.ea.eo.dist.load_gbps);
  // Compact: a full sweep holds every generated token.
  write_json_file(a.json_path, bench_document(argc, argv, a, world, mc, machine, results), -1, "--json");
  std::fprintf(stderr, "[bench] wrote %s (%zu runs x cases)\n", a.json_path.c_str(), results.size());
  ODMOE_CHECK(tokens_agree, kCore, "tokens-differ", "an exact run generated other tokens than the first exact run",
              "this is a bug: report it with the JSON");
  return 0;
}

}  // namespace odmoe::cli
