// `odmoe generate`: text from a prompt (streamed as it is produced) or a batch of prompts
// (one JSON line each), with the run's speed, memory and predictor figures.
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "odmoe/core/clock.h"
#include "odmoe/core/error.h"
#include "odmoe/core/json_file.h"
#include "odmoe/core/memory_stats.h"
#include "odmoe/predict/prediction_ledger.h"
#include "odmoe/predict/predictor.h"
#include "odmoe/runtime/generation.h"
#include "odmoe/runtime/sampler.h"
#include "odmoe/tokenizer/tokenizer.h"

namespace odmoe::cli {
namespace {

struct GenerateArgs {
  std::string prompt, prompts_path, stats_path, routing_path;
  int max_new = 128;
  bool batch = false;
  SamplerConfig sc;
  EngineArgs ea;
};

// One prompt's generation and its text.
struct Generation {
  GenerationResult r;
  std::string text;
};

// Parses the command line; false when --help was printed.
bool parse_generate(int argc, char** argv, GenerateArgs* a) {
  po::options_description o("generate options");
  std::string& prompt = a->prompt;
  std::string& prompts_path = a->prompts_path;
  std::string& stats_path = a->stats_path;
  std::string& routing_path = a->routing_path;
  int& max_new = a->max_new;
  SamplerConfig& sc = a->sc;
  EngineArgs& ea = a->ea;
  ea.add(o);
  o.add_options()("prompt", po::value(&prompt), "prompt text (UTF-8)")(
      "prompts", po::value(&prompts_path),
      "batch: generate for every prompt of this JSON Lines file in turn ({\"prompt\": \"...\"} per line), one JSON "
      "line per prompt on stdout; every rank's memory is recorded after each one")(
      "max-new-tokens", po::value(&max_new)->default_value(128), "stop after this many new tokens")(
      "temperature", po::value(&sc.temperature)->default_value(0.0f), "0: greedy; > 0: sample")(
      "top-k", po::value(&sc.top_k)->default_value(0), "sample among the k most likely tokens (0: all)")(
      "top-p", po::value(&sc.top_p)->default_value(1.0f), "nucleus sampling threshold (1: off)")(
      "seed", po::value(&sc.seed)->default_value(0), "random seed for sampling")(
      "stats-json", po::value(&stats_path), "write timing and memory figures as JSON to this file")(
      "save-routing", po::value(&routing_path), "record every layer's routing per step (for --predictor oracle)");
  po::variables_map vm;
  if (!parse(argc, argv, o, "usage: [mpirun -np N] odmoe generate --model DIR --prompt TEXT|--prompts FILE [options]",
             &vm))
    return false;
  if (max_new < 0) throw UsageError("--max-new-tokens must be >= 0");
  const bool batch = a->batch = vm.count("prompts") > 0;
  if (batch == (vm.count("prompt") > 0)) throw UsageError("give either --prompt TEXT or --prompts FILE");
  if (batch && !routing_path.empty()) throw UsageError("--save-routing records one generation: use it with --prompt");
  sc.validate();
  ea.finalize();
  return true;
}

// The prompts' token ids, each checked against the context.
std::vector<std::vector<int32_t>> encode_prompts(const GenerateArgs& a, const std::vector<std::string>& prompts,
                                                 const Tokenizer& tok, int ctx) {
  const bool batch = a.batch;
  const std::string& prompts_path = a.prompts_path;
  const int n_ctx = a.ea.eo.n_ctx;
  std::vector<std::vector<int32_t>> inputs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::string which = batch ? "prompt " + std::to_string(i + 1) + " of " + prompts_path : "the prompt";
    size_t bad = 0;
    ODMOE_CHECK(Tokenizer::is_valid_utf8(prompts[i], &bad), kCli, "bad-prompt",
                which << " is not valid UTF-8 (bad byte at offset " << bad << ")", "pass the prompt as UTF-8 text");
    ODMOE_CHECK(!prompts[i].empty(), kCli, "bad-prompt", which << " is empty", "give it some text");
    inputs.push_back(tok.encode(prompts[i], true));
    ODMOE_CHECK(!inputs.back().empty(), kCli, "bad-prompt", which << " encodes to no tokens", "");
    ODMOE_CHECK(static_cast<int>(inputs.back().size()) < ctx, kCli, "prompt-too-long",
                which << " is " << inputs.back().size() << " tokens; the context holds " << ctx,
                "shorten it" << (n_ctx > 0 ? " or raise --n-ctx" : ""));
  }
  return inputs;
}

// How speed and memory moved from the start of a batch to its end (printed and returned).
nlohmann::json batch_summary(const std::vector<Generation>& gens, const nlohmann::json& run) {
  nlohmann::json batch_summary;
  {
    const size_t tenth = std::max<size_t>(1, gens.size() / 10);
    auto rate = [&](size_t from, size_t to) {
      double s = 0;
      int steps = 0;
      for (size_t i = from; i < to; ++i) {
        s += gens[i].r.decode_s;
        steps += std::max(0, gens[i].r.n_chosen - 1);
      }
      return s > 0 ? steps / s : 0.0;
    };
    batch_summary = {{"prompts", gens.size()},
                     {"decode_tokens_per_second_first_tenth", rate(0, tenth)},
                     {"decode_tokens_per_second_last_tenth", rate(gens.size() - tenth, gens.size())}};
    nlohmann::json mem = nlohmann::json::array();
    std::string line;
    for (const auto& r : run["ranks"]) {
      const auto& marks = r.value("memory_marks", nlohmann::json::array());
      if (marks.empty()) continue;
      const nlohmann::json m = {{"rank", r["rank"]},
                                {"rss_bytes_after_first", marks.front()["rss_bytes"]},
                                {"rss_bytes_after_last", marks.back()["rss_bytes"]},
                                {"peak_rss_bytes_after_first", marks.front()["peak_rss_bytes"]},
                                {"peak_rss_bytes_after_last", marks.back()["peak_rss_bytes"]}};
      mem.push_back(m);
      char b[96];
      std::snprintf(b, sizeof b, "%s%d: %.1f -> %.1f", line.empty() ? "" : ", ", r["rank"].get<int>(),
                    m["peak_rss_bytes_after_first"].get<double>() / (1 << 20),
                    m["peak_rss_bytes_after_last"].get<double>() / (1 << 20));
      line += b;
    }
    batch_summary["memory_per_rank"] = mem;
    std::fprintf(stderr,
                 "[odmoe] batch: decode %.1f tok/s over the first tenth of the prompts, %.1f over the last; peak RSS "
                 "per rank after the first prompt -> after the last, MiB: %s\n",
                 batch_summary["decode_tokens_per_second_first_tenth"].get<double>(),
                 batch_summary["decode_tokens_per_second_last_tenth"].get<double>(), line.c_str());
  }
  return batch_summary;
}

// The expert ranks', predictor's and memory lines of the summary on stderr.
void report_run(const nlohmann::json& run, double wall) {
  if (run.contains("timing")) {
    const auto& t = run["timing"];
    const double workers = static_cast<double>(run["ranks"].size() - 1);
    std::fprintf(stderr,
                 "[odmoe] expert ranks: %.1f MiB pulled, load %.3f s, stall %.3f s (%.1f%% of their time; %.0f%% of "
                 "load time hidden), compute %.3f s\n",
                 t["workers_bytes_pulled"].get<double>() / (1 << 20), t["workers_load_seconds"].get<double>(),
                 t["workers_stall_seconds"].get<double>(),
                 100.0 * t["workers_stall_seconds"].get<double>() / std::max(1e-9, wall * workers),
                 100.0 * t["load_hidden_fraction"].get<double>(), t["workers_compute_seconds"].get<double>());
  }
  if (run.contains("predictor") && run["predictor"].value("decode_layers", 0) > 0) {
    const auto& p = run["predictor"];
    std::fprintf(stderr, "[odmoe] predictor %s: recall %.2f%%, precision %.2f%%, %.1f%% of layers predicted >= %d layer(s) ahead",
                 p["name"].get<std::string>().c_str(), 100.0 * p["recall"].get<double>(),
                 100.0 * p["precision"].get<double>(), 100.0 * p["ready_fraction"].get<double>(),
                 p["ready_lead_layers"].get<int>());
    if (p.contains("shadow_weight_bytes"))
      std::fprintf(stderr, "; shadow %s, %.1f MiB (model %.1f MiB)", p["shadow_dtype"].get<std::string>().c_str(),
                   p["shadow_weight_bytes"].get<double>() / (1 << 20), p["full_model_weight_bytes"].get<double>() / (1 << 20));
    if (p.contains("sources")) std::fprintf(stderr, "; layers served by %s", format_sources(p["sources"]).c_str());
    std::fputs("\n", stderr);
  }
  if (run["ranks"].size() > 1) {
    std::string peaks;
    for (const auto& r : run["ranks"]) {
      char b[64];
      if (r.value("failed", false))
        std::snprintf(b, sizeof b, "%s%d: failed", peaks.empty() ? "" : ", ", r["rank"].get<int>());
      else
        std::snprintf(b, sizeof b, "%s%d: %.1f", peaks.empty() ? "" : ", ", r["rank"].get<int>(),
                      r.value("peak_host_bytes", 0.0) / (1 << 20));
      peaks += b;
    }
    if (run.contains("predictor") && run["predictor"].contains("predictor_rank")) {
      char b[64];
      std::snprintf(b, sizeof b, ", %d (predictor): %.1f", run["predictor"]["predictor_rank"].get<int>(),
                    run["predictor"].value("peak_host_bytes", 0.0) / (1 << 20));
      peaks += b;
    }
    std::fprintf(stderr, "[odmoe] peak host memory per rank, MiB: %s\n", peaks.c_str());
  }
}

// Generates every prompt in turn: streams the text (one prompt) or prints a JSON line per
// prompt (a batch, into `per_prompt` without its text too), recording the routing for
// --save-routing.
std::vector<Generation> generate_prompts(Engine& eng, const GenerateArgs& a, const Tokenizer& tok,
                                         const std::vector<std::vector<int32_t>>& inputs, nlohmann::json* per_prompt,
                                         RoutingTrace* routing_out) {
  const bool batch = a.batch;
  const std::vector<int32_t> eos = eos_ids(eng.files(), tok);
  RoutingTrace& routing = *routing_out;
  const ModelConfig& mc = eng.model().config();
  routing.model_uid = eng.files().header().model_uid;
  routing.n_layer = mc.n_layer;
  routing.n_expert = mc.n_expert;
  routing.top_k = mc.n_expert_used;
  routing.prompt = inputs[0];
  auto record = [&](const int32_t* toks, size_t n) {
    if (a.routing_path.empty()) return;
    RoutingTrace::Step st;
    st.tokens.assign(toks, toks + n);
    for (int l = 0; l < mc.n_layer; ++l) st.layers.push_back(eng.model().last_routing(l));
    routing.steps.push_back(std::move(st));
  };
  auto emit = [&](const std::string& piece) {
    if (batch || piece.empty()) return;
    std::fputs(piece.c_str(), stdout);
    std::fflush(stdout);
  };

  std::vector<Generation> gens;
  for (size_t i = 0; i < inputs.size(); ++i) {
    emit(a.prompt);
    Generation g;
    Sampler sampler(a.sc);
    StreamDecoder stream(tok);
    for (int32_t id : inputs[i]) stream.push(id);  // the prompt is given; the text continues after it
    GenerationOptions go;
    go.max_new = a.max_new;
    go.stop_ids = eos;
    g.r = generate(
        eng.model(), inputs[i], go, [&](const std::vector<float>& l) { return sampler.sample(l.data(), l.size()); },
        [&](int32_t id) {
          const std::string piece = stream.push(id);
          g.text += piece;
          emit(piece);
        },
        record);
    const std::string rest = stream.flush();
    g.text += rest;
    emit(rest);
    gens.push_back(std::move(g));
    const GenerationResult& r = gens.back().r;
    if (batch) {
      eng.mark_memory(static_cast<int64_t>(i + 1));
      const nlohmann::json line = {{"index", i + 1},
                                   {"prompt_tokens", inputs[i].size()},
                                   {"generated_tokens", r.n_chosen},
                                   {"stop", r.stop},
                                   {"ttft_seconds", r.prefill_s},
                                   {"decode_tokens_per_second", r.decode_rate()},
                                   {"text", gens.back().text}};
      std::printf("%s\n", line.dump().c_str());
      std::fflush(stdout);
      nlohmann::json brief = line;
      brief.erase("text");
      per_prompt->push_back(brief);
    } else {
      std::fputs("\n", stdout);
      std::fflush(stdout);
    }
  }
  return gens;
}

}  // namespace

int cmd_generate(int argc, char** argv) {
  GenerateArgs a;
  if (!parse_generate(argc, argv, &a)) return 0;
  const bool batch = a.batch;
  // Every rank reads the batch, so a bad file stops the job before anything starts.
  const std::vector<std::string> prompts =
      batch ? read_prompts(a.prompts_path, SIZE_MAX) : std::vector<std::string>{a.prompt};
  const double t_load = now_s();
  return Engine::run(a.ea.eo, [&](Engine& eng) {
    const Tokenizer tok = Tokenizer::from_json(eng.files().tokenizer_json());
    const double load_s = now_s() - t_load;
    const std::vector<std::vector<int32_t>> inputs = encode_prompts(a, prompts, tok, eng.model().n_ctx());
    RoutingTrace routing;
    nlohmann::json per_prompt = nlohmann::json::array();
    const std::vector<Generation> gens = generate_prompts(eng, a, tok, inputs, &per_prompt, &routing);
    double prefill_s = 0, decode_s = 0;
    int n_gen = 0, decode_steps = 0;
    size_t prompt_tokens = 0;
    for (size_t i = 0; i < gens.size(); ++i) {
      prefill_s += gens[i].r.prefill_s;
      decode_s += gens[i].r.decode_s;
      n_gen += gens[i].r.n_chosen;
      decode_steps += std::max(0, gens[i].r.n_chosen - 1);
      prompt_tokens += inputs[i].size();
    }
    const double decode_tps = decode_steps > 0 ? decode_steps / decode_s : 0.0;
    const nlohmann::json run = eng.finish(a.ea.trace);
    if (!a.routing_path.empty()) routing.save(a.routing_path);
    const std::string stop = gens.back().r.stop;
    std::fprintf(stderr,
                 "[odmoe] %s%zu tokens, prefill %.3f s (%.1f tok/s), TTFT %.3f s; generated %d tokens, decode %.1f "
                 "tok/s; stop: %s; peak RSS %.1f MiB; %s; %s\n",
                 batch ? ("batch of " + std::to_string(gens.size()) + " prompts: ").c_str() : "prompt ", prompt_tokens,
                 prefill_s, static_cast<double>(prompt_tokens) / prefill_s, gens.front().r.prefill_s, n_gen, decode_tps,
                 batch ? "per prompt in the JSON lines" : stop.c_str(),
                 static_cast<double>(peak_rss_bytes()) / (1 << 20), eng.describe().c_str(), a.sc.to_string().c_str());
    const nlohmann::json summary = batch ? batch_summary(gens, run) : nlohmann::json();
    report_run(run, prefill_s + decode_s);
    if (a.stats_path.empty()) return 0;
    nlohmann::json j = {
        {"model", a.ea.eo.model_dir},
        {"mode", eng.distributed() ? mode_name(a.ea.eo.dist.mode) : "single-process"},
        {"engine", eng.describe()},
        {"backend", eng.backend().to_string()},
        {"sampler", a.sc.to_string()},
        {"load_seconds", load_s},
        {"prompt_tokens", prompt_tokens},
        {"prefill_seconds", prefill_s},
        {"prefill_tokens_per_second", static_cast<double>(prompt_tokens) / prefill_s},
        {"ttft_seconds", gens.front().r.prefill_s},
        {"generated_tokens", n_gen},
        {"decode_seconds", decode_s},
        {"decode_tokens_per_second", decode_tps},
        {"stop_reason", stop},
    };
    for (const auto& [key, value] : run.items()) j[key] = value;
    if (batch) {
      j["batch"] = summary;
      j["batch"]["per_prompt"] = per_prompt;
    }
    write_json_file(a.stats_path, j, 2, "--stats-json");
    return 0;
  });
}

}  // namespace odmoe::cli
