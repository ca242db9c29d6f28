// odmoe eval-predictor: how well each predictor foresees the experts the model routes to.
//
// For every predictor in --predictors (shadow:DTYPE for a shadow of that precision) it runs
// the model over the prompts, greedy by default, --tokens decode steps per prompt, and
// reports recall (correctly predicted activated experts / activated experts, the paper's
// Eq. 3), precision (used / predicted), and lead time (layers between a prediction and the
// layer it is for), per layer and overall, plus recall by token index.
//
// Distributed (mpirun -np N, N >= 2, --mode on-demand), lead times are those of the real
// schedule: a prediction counts only if it came before its layer was routed. In one process
// the model does not wait for experts, so the predictor is waited for (--predictor-sync is
// implied): the figures are its accuracy, and lead times are not meaningful.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine_args.h"
#include "odmoe/core/error.h"
#include "odmoe/core/json_file.h"
#include "odmoe/comm/comm.h"
#include "odmoe/predict/prediction_ledger.h"
#include "odmoe/predict/shadow.h"
#include "odmoe/runtime/generation.h"
#include "odmoe/runtime/sampler.h"
#include "odmoe/tokenizer/tokenizer.h"

namespace odmoe::cli {

std::string prompts_or_default(const std::string& prompts_path, const std::string& model_dir) {
  if (!prompts_path.empty()) return prompts_path;
  const std::string p = model_dir + "/prompts.jsonl";
  if (std::ifstream(p).good()) return p;
  if (!std::ifstream(model_dir + "/model.h5").good())
    throw UsageError("--model " + model_dir + " is not a converted model directory (no model.h5)");
  throw UsageError("--prompts FILE is required: " + model_dir +
                   " has no prompts.jsonl (odmoe-weights convert keeps a checkpoint's heldout-prompts.jsonl there)");
}

std::vector<std::string> read_prompts(const std::string& path, size_t limit) {
  std::ifstream f(path);
  ODMOE_CHECK(f.good(), kIo, "open", "cannot read --prompts " << path,
              "give a JSON Lines file with one {\"prompt\": \"...\"} per line");
  std::vector<std::string> out;
  std::string line;
  size_t line_no = 0;
  while (std::getline(f, line) && out.size() < limit) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      ODMOE_THROW(kConfig, "bad-prompts", path << ":" << line_no << " is not JSON: " << e.what(),
                  "one {\"prompt\": \"...\"} per line");
    }
    std::string p;
    if (j.is_string()) p = j.get<std::string>();
    else if (j.is_object() && j.contains("prompt") && j["prompt"].is_string()) p = j["prompt"].get<std::string>();
    else if (j.is_object() && j.contains("text") && j["text"].is_string()) p = j["text"].get<std::string>();
    else ODMOE_THROW(kConfig, "bad-prompts", path << ":" << line_no << " has no \"prompt\" string", "");
    size_t bad = 0;
    ODMOE_CHECK(!p.empty() && Tokenizer::is_valid_utf8(p, &bad), kConfig, "bad-prompts",
                path << ":" << line_no << ": the prompt is empty or not valid UTF-8", "");
    out.push_back(std::move(p));
  }
  ODMOE_CHECK(!out.empty(), kConfig, "bad-prompts", path << " holds no prompts", "");
  return out;
}

namespace {

struct Spec {
  std::string label, predictor, shadow_dtype;
  int fallback = -1;  // shadow: 1 backed by its fallback, 0 alone, -1 as --shadow-fallback says
};

std::vector<Spec> parse_specs(const std::string& s) {
  std::vector<Spec> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    Spec sp{item, item, ""};
    const size_t colon = item.find(':');
    if (colon != std::string::npos) {
      sp.predictor = item.substr(0, colon);
      sp.shadow_dtype = item.substr(colon + 1);
      if (sp.predictor != "shadow") throw UsageError("--predictors: only shadow takes a :DTYPE, not '" + item + "'");
      const size_t second = sp.shadow_dtype.find(':');
      if (second != std::string::npos) {
        const std::string how = sp.shadow_dtype.substr(second + 1);
        sp.shadow_dtype.resize(second);
        if (how != "alone" && how != "backed")
          throw UsageError("--predictors: shadow:DTYPE:alone or shadow:DTYPE:backed, not '" + item + "'");
        sp.fallback = how == "backed";
      }
      check_shadow_dtype(sp.shadow_dtype);
    }
    if (!is_predictor_name(sp.predictor))
      throw UsageError("--predictors: unknown predictor '" + sp.predictor + "' (" + kPredictorNames + ")");
    out.push_back(sp);
  }
  if (out.empty()) throw UsageError("--predictors is empty");
  return out;
}

std::string fmt_pct(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f%%", 100.0 * x);
  return b;
}

// One predictor over every prompt: its figures from the run's statistics.
nlohmann::json evaluate_one(Engine& eng, const Spec& sp, const std::vector<std::string>& prompts, int tokens,
                            const SamplerConfig& sc) {
  const Tokenizer tok = Tokenizer::from_json(eng.files().tokenizer_json());
  Model& model = eng.model();
  const int ctx = model.n_ctx();
  ODMOE_CHECK(tokens + 2 <= ctx, kCli, "bad-option", "--tokens " << tokens << " does not fit the context of " << ctx,
              "lower --tokens");
  Sampler sampler(sc);
  GenerationOptions go;
  go.max_new = tokens;
  go.forward_last = true;  // every sampled token is a decode step whose experts were predicted
  size_t decode_steps = 0, prompt_tokens = 0;
  double decode_s = 0;
  std::fprintf(stderr, "[eval-predictor] %s: %zu prompts x %d tokens ...", sp.label.c_str(), prompts.size(), tokens);
  for (const std::string& p : prompts) {
    std::vector<int32_t> ids = tok.encode(p, true);
    const size_t keep = static_cast<size_t>(ctx - tokens - 1);
    if (ids.size() > keep) ids.erase(ids.begin(), ids.end() - static_cast<long>(keep));  // the prompt's end
    prompt_tokens += ids.size();
    const GenerationResult g =
        generate(model, ids, go, [&](const std::vector<float>& l) { return sampler.sample(l.data(), l.size()); });
    decode_steps += static_cast<size_t>(g.n_chosen);
    decode_s += g.decode_s;
  }
  nlohmann::json run = eng.finish();
  nlohmann::json r = run["predictor"];
  r["label"] = sp.label;
  r["prompts"] = prompts.size();
  r["prompt_tokens"] = prompt_tokens;
  r["decode_steps"] = decode_steps;
  r["decode_tokens_per_second"] = decode_s > 0 ? static_cast<double>(decode_steps) / decode_s : 0.0;
  nlohmann::json peaks = nlohmann::json::array();
  for (const auto& rk : run["ranks"]) peaks.push_back(rk.value("peak_host_bytes", 0));
  r["peak_host_bytes_per_rank"] = peaks;
  std::fprintf(stderr, " recall %.4f\n", r.value("recall", 0.0));
  return r;
}

// The table, one line per predictor.
void print_eval_table(const nlohmann::json& results, int world) {
  std::printf("%-20s %9s %9s %9s %10s %9s %9s  %s\n", "predictor", "recall", "precision", "ready", "mean lead", "shadow",
              "tok/s", "decode layers served by");
  for (const auto& r : results) {
    const double shadow_mb = static_cast<double>(r.value("shadow_weight_bytes", 0)) / (1 << 20);
    char sh[32] = "-";
    if (r.contains("shadow_weight_bytes")) std::snprintf(sh, sizeof sh, "%.1f MiB", shadow_mb);
    std::printf("%-20s %9s %9s %9s %10.2f %9s %9.0f  %s\n", r["label"].get<std::string>().c_str(),
                fmt_pct(r["recall"].get<double>()).c_str(), fmt_pct(r["precision"].get<double>()).c_str(),
                fmt_pct(r["ready_fraction"].get<double>()).c_str(), r["mean_lead_layers"].get<double>(), sh,
                r["decode_tokens_per_second"].get<double>(), format_sources(r.value("sources", nlohmann::json())).c_str());
  }
  std::printf("ready: share of decode layers whose prediction was complete at least %d layer(s) before the layer "
              "ran%s\n",
              results.empty() ? 1 : results[0]["ready_lead_layers"].get<int>(),
              world == 1 ? " (one process: the model waited for the predictor, so lead times are not meaningful)" : "");
}

}  // namespace

int cmd_eval_predictor(int argc, char** argv) {
  po::options_description o("eval-predictor options");
  std::string prompts_path, specs_s = "shadow:f16,shadow:int8,shadow:int4,gate-ahead,previous,random";
  std::string json_path;
  int tokens = 256, limit = 100;
  SamplerConfig sc;
  EngineArgs ea;
  ea.add(o);
  o.add_options()("prompts", po::value(&prompts_path),
                  "JSON Lines prompts (default: the model's prompts.jsonl, held-out passages kept by odmoe-weights "
                  "convert)")(
      "limit", po::value(&limit)->default_value(limit), "use at most this many prompts")(
      "tokens", po::value(&tokens)->default_value(tokens), "decode steps per prompt")(
      "predictors", po::value(&specs_s)->default_value(specs_s),
      "comma-separated: shadow:DTYPE[:alone|:backed] (DTYPE f32|bf16|f16|int8|int4|file|auto; alone: without its "
      "fallback, backed: with it; default as --shadow-fallback), gate-ahead, previous, random, none")(
      "temperature", po::value(&sc.temperature)->default_value(0.0f), "0: greedy")(
      "seed", po::value(&sc.seed)->default_value(0), "sampling seed")(
      "json", po::value(&json_path), "write the results as JSON");
  po::variables_map vm;
  if (!cli::parse_options(argc, argv, o, po::positional_options_description(),
                          "usage: [mpirun -np N] odmoe eval-predictor --model DIR [--prompts FILE] [--tokens 256] "
                          "[--predictors LIST] [--json FILE]",
                          &vm))
    return 0;
  if (tokens < 1) throw UsageError("--tokens must be at least 1");
  if (limit < 1) throw UsageError("--limit must be at least 1");
  sc.validate();
  ea.finalize();
  prompts_path = prompts_or_default(prompts_path, ea.eo.model_dir);
  const std::vector<Spec> specs = parse_specs(specs_s);
  const int world = mpi_world_size();  // MPI only under a launcher
  if (world > 1 && ea.eo.dist.mode != Mode::kOnDemand)
    throw UsageError("eval-predictor runs --mode on-demand (a resident run loads nothing, so predicts nothing)");
  if (world == 1) ea.eo.dist.predictor_sync = true;
  for (const Spec& sp : specs)
    if (sp.predictor == "oracle" && ea.eo.dist.routing_trace.empty())
      throw UsageError("--predictors oracle needs --routing-trace");

  std::vector<std::string> prompts;
  const int rank = mpi_world_rank();
  if (rank == 0) prompts = read_prompts(prompts_path, static_cast<size_t>(limit));

  nlohmann::json results = nlohmann::json::array();
  std::string engine_desc;
  for (const Spec& sp : specs) {
    EngineOptions eo = ea.eo;
    eo.dist.predictor = sp.predictor;
    if (!sp.shadow_dtype.empty()) eo.dist.shadow.dtype = sp.shadow_dtype;
    if (sp.fallback >= 0) eo.dist.shadow.fallback = sp.fallback == 1;
    Engine::run(eo, [&](Engine& eng) {
      engine_desc = eng.describe();
      results.push_back(evaluate_one(eng, sp, prompts, tokens, sc));
      return 0;
    });
  }
  if (rank != 0) return 0;

  print_eval_table(results, world);
  if (!json_path.empty()) {
    nlohmann::json j = {{"model", ea.eo.model_dir},
                        {"prompts_file", prompts_path},
                        {"prompts", prompts.size()},
                        {"tokens_per_prompt", tokens},
                        {"sampler", sc.to_string()},
                        {"ranks", world},
                        {"timing", world == 1 ? "single process: the model waited for each prediction"
                                              : "distributed: predictions count only if made before their layer ran"},
                        {"engine", engine_desc},
                        {"align_token_period", ea.eo.dist.shadow.align_token_period},
                        {"align_kv_period", ea.eo.dist.shadow.align_kv_period},
                        {"shadow_departure", ea.eo.dist.shadow.early_departure ? "early" : "late"},
                        {"results", results}};
    write_json_file(json_path, j, 2, "--json");
  }
  return 0;
}

}  // namespace odmoe::cli
