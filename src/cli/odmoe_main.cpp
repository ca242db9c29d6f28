// odmoe: run a converted model.
//
//   [mpirun -np N] odmoe generate --model DIR --prompt TEXT|--prompts FILE [--max-new-tokens K]
//                  [--temperature T --top-k K --top-p P --seed S] [--stats-json FILE] [--trace FILE]
//                  [--save-routing FILE] [distributed options]
//   [mpirun -np N] odmoe logits --model DIR --token-ids 1,2,3 [--out FILE]
//   [mpirun -np N] odmoe perplexity --model DIR --text FILE [--context 256] [--json FILE]
//   odmoe tokenize --model DIR|--tokenizer FILE --text T|--file F|--decode 1,2,3 [--ids] [--no-special]
//
// One process runs everything; with mpirun -np N (N >= 2) rank 0 is main and ranks 1..N-1
// are expert ranks (--mode, --predictor, --groups, --placement, ...). Exit status: 0
// success, 1 error (the message says what was wrong and how to fix it; every rank is
// brought down), 2 bad command line.
#include <mpi.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <algorithm>
#include <chrono>
#include <functional>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "odmoe/backend/cpu_backend.h"
#include "odmoe/core/cli.h"
#include "odmoe/core/error.h"
#include "odmoe/core/memory_stats.h"
#include "odmoe/model/model.h"
#include "odmoe/runtime/engine.h"
#include "odmoe/runtime/perplexity.h"
#include "odmoe/runtime/sampler.h"
#include "odmoe/tokenizer/tokenizer.h"
#include "odmoe/weights/model_files.h"
#include "engine_args.h"

namespace po = boost::program_options;
using namespace odmoe;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kUsage =
    "usage: odmoe COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  generate     generate text from a prompt, streaming it as it is produced\n"
    "  logits       print the logits of a sequence of token ids as JSON\n"
    "  perplexity   perplexity of the model on a text file\n"
    "  eval-predictor  recall, precision and lead time of expert predictors over prompts\n"
    "  bench        the paper's protocol over modes x predictors x groups in one job (JSON)\n"
    "  simulate     discrete-event model of distributed decode; projects other clusters, --suggest-groups\n"
    "  tokenize     the ids (and vocabulary entries) of a text, or the text of ids (--decode)\n"
    "\n"
    "`odmoe COMMAND --help` describes each command's options.\n";

using cli::EngineArgs;
using cli::UsageError;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

bool parse(int argc, char** argv, po::options_description& opts, const char* usage, po::variables_map* vm) {
  return cli::parse_options(argc, argv, opts, po::positional_options_description(), usage, vm);
}

std::vector<int32_t> eos_ids(const ModelFiles& files, const Tokenizer& tok) {
  std::vector<int32_t> ids(files.config().eos_token_ids.begin(), files.config().eos_token_ids.end());
  if (ids.empty() && tok.eos_id()) ids.push_back(*tok.eos_id());
  return ids;
}

// One generation: prefill `ids`, then sample until EOS, `budget` tokens or the end of the
// context. `emit` gets each piece of text as it is decoded.
struct Generation {
  int n_gen = 0;
  std::string stop = "max-new-tokens", text;
  double prefill_s = 0, decode_s = 0;
};

Generation generate_one(Engine& eng, const Tokenizer& tok, const std::vector<int32_t>& ids, int max_new,
                        const SamplerConfig& sc, const std::vector<int32_t>& eos,
                        const std::function<void(const int32_t*, size_t)>& record,
                        const std::function<void(const std::string&)>& emit) {
  Generation g;
  const int budget = std::min(max_new, eng.model().n_ctx() - static_cast<int>(ids.size()));
  Sampler sampler(sc);
  StreamDecoder stream(tok);
  for (int32_t id : ids) stream.push(id);  // the prompt is given; the text continues after it
  std::vector<float> logits;
  eng.model().reset();
  const auto t0 = Clock::now();
  eng.model().forward(ids.data(), ids.size(), false, &logits);
  g.prefill_s = seconds_since(t0);
  record(ids.data(), ids.size());
  const auto t1 = Clock::now();
  while (g.n_gen < budget) {
    const int32_t next = sampler.sample(logits.data(), logits.size());
    ++g.n_gen;
    if (std::find(eos.begin(), eos.end(), next) != eos.end()) {
      g.stop = "eos";
      break;
    }
    const std::string piece = stream.push(next);
    g.text += piece;
    emit(piece);
    if (g.n_gen == budget) break;
    eng.model().forward(&next, 1, false, &logits);
    record(&next, 1);
  }
  g.decode_s = seconds_since(t1);
  const std::string rest = stream.flush();
  g.text += rest;
  emit(rest);
  if (g.n_gen == budget && budget < max_new) g.stop = "context-full";
  return g;
}

// n_gen tokens were sampled; n_gen - 1 forward passes followed the prefill.
double decode_rate(const Generation& g) { return g.n_gen > 1 ? (g.n_gen - 1) / g.decode_s : 0.0; }

int cmd_generate(int argc, char** argv) {
  po::options_description o("generate options");
  std::string prompt, prompts_path, stats_path, routing_path;
  int max_new = 128;
  SamplerConfig sc;
  EngineArgs ea;
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
    return 0;
  if (max_new < 0) throw UsageError("--max-new-tokens must be >= 0");
  const bool batch = vm.count("prompts") > 0;
  if (batch == (vm.count("prompt") > 0)) throw UsageError("give either --prompt TEXT or --prompts FILE");
  if (batch && !routing_path.empty()) throw UsageError("--save-routing records one generation: use it with --prompt");
  sc.validate();
  ea.finalize();
  const int n_ctx = ea.eo.n_ctx;
  const std::string& model_dir = ea.eo.model_dir;
  // Every rank reads the batch, so a bad file stops the job before anything starts.
  const std::vector<std::string> prompts = batch ? cli::read_prompts(prompts_path, SIZE_MAX) : std::vector<std::string>{prompt};

  const auto t_load = Clock::now();
  std::unique_ptr<Engine> engine = Engine::open(ea.eo);
  if (!engine) return 0;  // an expert rank: main has finished
  Engine& eng = *engine;
  const Tokenizer tok = Tokenizer::from_json(eng.files().tokenizer_json());
  const double load_s = seconds_since(t_load);

  const int ctx = eng.model().n_ctx();
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
  const std::vector<int32_t> eos = eos_ids(eng.files(), tok);

  dist::RoutingTrace routing;
  const ModelConfig& mc = eng.model().config();
  routing.model_uid = eng.files().header().model_uid;
  routing.n_layer = mc.n_layer;
  routing.n_expert = mc.n_expert;
  routing.top_k = mc.n_expert_used;
  routing.prompt = inputs[0];
  auto record = [&](const int32_t* toks, size_t n) {
    if (routing_path.empty()) return;
    dist::RoutingTrace::Step st;
    st.tokens.assign(toks, toks + n);
    for (int l = 0; l < mc.n_layer; ++l) st.layers.push_back(eng.model().last_routing(l));
    routing.steps.push_back(std::move(st));
  };

  std::vector<Generation> gens;
  nlohmann::json per_prompt = nlohmann::json::array();
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!batch) {
      std::fputs(prompt.c_str(), stdout);
      std::fflush(stdout);
    }
    gens.push_back(generate_one(eng, tok, inputs[i], max_new, sc, eos, record, [&](const std::string& piece) {
      if (batch || piece.empty()) return;
      std::fputs(piece.c_str(), stdout);
      std::fflush(stdout);
    }));
    const Generation& g = gens.back();
    if (batch) {
      eng.mark_memory(static_cast<int64_t>(i + 1));
      const nlohmann::json line = {{"index", i + 1},
                                   {"prompt_tokens", inputs[i].size()},
                                   {"generated_tokens", g.n_gen},
                                   {"stop", g.stop},
                                   {"ttft_seconds", g.prefill_s},
                                   {"decode_tokens_per_second", decode_rate(g)},
                                   {"text", g.text}};
      std::printf("%s\n", line.dump().c_str());
      std::fflush(stdout);
      nlohmann::json brief = line;
      brief.erase("text");
      per_prompt.push_back(brief);
    } else {
      std::fputs("\n", stdout);
      std::fflush(stdout);
    }
  }
  double prefill_s = 0, decode_s = 0;
  int n_gen = 0, decode_steps = 0;
  size_t prompt_tokens = 0;
  for (size_t i = 0; i < gens.size(); ++i) {
    prefill_s += gens[i].prefill_s;
    decode_s += gens[i].decode_s;
    n_gen += gens[i].n_gen;
    decode_steps += std::max(0, gens[i].n_gen - 1);
    prompt_tokens += inputs[i].size();
  }
  const double decode_tps = decode_steps > 0 ? decode_steps / decode_s : 0.0;
  const nlohmann::json run = eng.finish(ea.trace);
  if (!routing_path.empty()) routing.save(routing_path);
  const std::string stop = gens.back().stop;
  std::fprintf(stderr,
               "[odmoe] %s%zu tokens, prefill %.3f s (%.1f tok/s), TTFT %.3f s; generated %d tokens, decode %.1f "
               "tok/s; stop: %s; peak RSS %.1f MiB; %s; %s\n",
               batch ? ("batch of " + std::to_string(gens.size()) + " prompts: ").c_str() : "prompt ", prompt_tokens,
               prefill_s, static_cast<double>(prompt_tokens) / prefill_s, gens.front().prefill_s, n_gen, decode_tps,
               batch ? "per prompt in the JSON lines" : stop.c_str(),
               static_cast<double>(peak_rss_bytes()) / (1 << 20), eng.describe().c_str(), sc.to_string().c_str());
  nlohmann::json batch_summary;
  if (batch) {
    // How speed and memory moved from the start of the batch to its end.
    const size_t tenth = std::max<size_t>(1, gens.size() / 10);
    auto rate = [&](size_t from, size_t to) {
      double s = 0;
      int steps = 0;
      for (size_t i = from; i < to; ++i) {
        s += gens[i].decode_s;
        steps += std::max(0, gens[i].n_gen - 1);
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
  if (run.contains("timing")) {
    const auto& t = run["timing"];
    const double wall = prefill_s + decode_s, workers = static_cast<double>(run["ranks"].size() - 1);
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
  if (!stats_path.empty()) {
    nlohmann::json j = {
        {"model", model_dir},
        {"mode", eng.distributed() ? dist::mode_name(ea.eo.dist.mode) : "single-process"},
        {"engine", eng.describe()},
        {"backend", eng.backend().to_string()},
        {"sampler", sc.to_string()},
        {"load_seconds", load_s},
        {"prompt_tokens", prompt_tokens},
        {"prefill_seconds", prefill_s},
        {"prefill_tokens_per_second", static_cast<double>(prompt_tokens) / prefill_s},
        {"ttft_seconds", gens.front().prefill_s},
        {"generated_tokens", n_gen},
        {"decode_seconds", decode_s},
        {"decode_tokens_per_second", decode_tps},
        {"stop_reason", stop},
    };
    for (const auto& [key, value] : run.items()) j[key] = value;
    if (batch) {
      j["batch"] = batch_summary;
      j["batch"]["per_prompt"] = per_prompt;
    }
    std::ofstream f(stats_path);
    ODMOE_CHECK(f.good(), kIo, "open", "cannot write --stats-json " << stats_path, "check the path");
    f << j.dump(2) << "\n";
  }
  return 0;
}

int cmd_logits(int argc, char** argv) {
  po::options_description o("logits options");
  std::string ids_s, out;
  EngineArgs ea;
  ea.add(o);
  o.add_options()("token-ids", po::value(&ids_s)->required(), "comma-separated token ids, e.g. 1,2,3")(
      "out", po::value(&out), "write the JSON here instead of stdout");
  po::variables_map vm;
  if (!parse(argc, argv, o, "usage: [mpirun -np N] odmoe logits --model DIR --token-ids 1,2,3 [--out FILE]", &vm))
    return 0;
  ea.finalize();
  std::vector<int32_t> ids;
  std::stringstream ss(ids_s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || item.empty()) throw UsageError("--token-ids: '" + item + "' is not an integer");
    ODMOE_CHECK(v >= 0 && v <= INT32_MAX, kCli, "bad-token", "--token-ids: " << v << " is not a valid token id", "");
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) throw UsageError("--token-ids is empty");
  std::unique_ptr<Engine> engine = Engine::open(ea.eo);
  if (!engine) return 0;
  Engine& eng = *engine;
  const int vocab = eng.model().config().vocab_size;
  for (int32_t id : ids)
    ODMOE_CHECK(id < vocab, kCli, "bad-token", "token id " << id << " is outside the vocabulary [0, " << vocab << ")",
                "use ids the model's tokenizer produces");
  std::vector<float> logits;
  eng.model().forward(ids.data(), ids.size(), true, &logits);
  eng.finish(ea.trace);
  nlohmann::json j;
  j["token_ids"] = ids;
  j["logits"] = nlohmann::json::array();
  for (size_t t = 0; t < ids.size(); ++t)
    j["logits"].push_back(std::vector<float>(logits.begin() + static_cast<long>(t * vocab),
                                             logits.begin() + static_cast<long>((t + 1) * vocab)));
  if (out.empty()) {
    std::cout << j.dump() << "\n";
  } else {
    std::ofstream f(out);
    ODMOE_CHECK(f.good(), kIo, "open", "cannot write " << out, "check the path");
    f << j.dump() << "\n";
  }
  return 0;
}

int cmd_perplexity(int argc, char** argv) {
  po::options_description o("perplexity options");
  std::string text_path, json_path;
  int context = 256;
  bool token_by_token = false;
  EngineArgs ea;
  ea.add(o);
  o.add_options()("text", po::value(&text_path)->required(), "UTF-8 text file")(
      "token-by-token", po::bool_switch(&token_by_token),
      "score each window one token per forward step, as decoding runs (what decode-only behaviour such as "
      "--substitute changes)")(
      "context", po::value(&context)->default_value(256), "tokens per window (non-overlapping windows)")(
      "json", po::value(&json_path), "also write the result as JSON");
  po::variables_map vm;
  if (!parse(argc, argv, o, "usage: [mpirun -np N] odmoe perplexity --model DIR --text FILE [--context N]", &vm))
    return 0;
  ea.finalize();
  const std::string& model_dir = ea.eo.model_dir;
  if (context < 2) throw UsageError("--context must be at least 2");
  std::ifstream in(text_path, std::ios::binary);
  ODMOE_CHECK(in.good(), kIo, "open", "cannot read --text " << text_path, "check the path");
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  size_t bad = 0;
  ODMOE_CHECK(Tokenizer::is_valid_utf8(text, &bad), kCli, "bad-text",
              text_path << " is not valid UTF-8 (bad byte at offset " << bad << ")", "");
  ea.eo.n_ctx = std::max(ea.eo.n_ctx, context);
  std::unique_ptr<Engine> engine = Engine::open(ea.eo);
  if (!engine) return 0;
  Engine& eng = *engine;
  ODMOE_CHECK(context <= eng.model().n_ctx(), kCli, "bad-option",
              "--context " << context << " exceeds the model's context of " << eng.model().n_ctx(), "");
  const Tokenizer tok = Tokenizer::from_json(eng.files().tokenizer_json());
  const std::vector<int32_t> ids = tok.encode(text, false);
  ODMOE_CHECK(ids.size() >= 2, kCli, "bad-text", text_path << " holds fewer than 2 tokens", "");
  const auto t0 = Clock::now();
  const PerplexityResult r = evaluate_perplexity(eng.model(), ids, context, token_by_token);
  const double secs = seconds_since(t0), mean = r.nll_per_token;
  const size_t n_scored = r.tokens_scored;
  const nlohmann::json run = eng.finish(ea.trace);  // stops the expert ranks
  std::printf("perplexity %.4f  (%.4f nats/token over %zu predicted tokens, windows of %d, %s weights, %.1f s)\n",
              std::exp(mean), mean, n_scored, context, dtype_name(eng.files().header().weight_dtype), secs);
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    ODMOE_CHECK(f.good(), kIo, "open", "cannot write " << json_path, "check the path");
    nlohmann::json j{{"model", model_dir},
                     {"text", text_path},
                     {"weight_dtype", dtype_name(eng.files().header().weight_dtype)},
                     {"context", context},
                     {"token_by_token", token_by_token},
                     {"engine", eng.describe()},
                     {"tokens_scored", n_scored},
                     {"nll_per_token", mean},
                     {"perplexity", std::exp(mean)},
                     {"seconds", secs}};
    for (const auto& [key, value] : run.items()) j[key] = value;
    f << j.dump(2) << "\n";
  }
  return 0;
}

int run(int argc, char** argv) {
  return cli::dispatch("odmoe", argc, argv,
                       {{"generate", cmd_generate},
                        {"logits", cmd_logits},
                        {"perplexity", cmd_perplexity},
                        {"eval-predictor", cli::cmd_eval_predictor},
                        {"bench", cli::cmd_bench},
                        {"simulate", cli::cmd_simulate}}, kUsage);
}

}  // namespace

namespace odmoe::cli {
int cmd_tokenize(int argc, char** argv);  // tokenize.cpp
}  // namespace odmoe::cli

int main(int argc, char** argv) {
  // tokenize runs in one process without MPI: it needs neither ranks nor the MPI runtime.
  if (argc >= 2 && std::string(argv[1]) == "tokenize")
    return cli::dispatch("odmoe", argc, argv, {{"tokenize", cli::cmd_tokenize}}, kUsage);
  int provided = 0;
  // MULTIPLE: the expert store's progress thread calls MPI beside the rank's main thread.
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  const int rc = run(argc, argv);
  if (dist::job_degraded()) {
    // An expert rank died and the run carried on without it (--on-worker-failure degrade):
    // MPI without fault tolerance cannot finalize with a dead rank, so end here.
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(rc);
  }
  if (rc != 0 && Engine::ranks_coupled()) {
    // The other ranks are waiting on this one: bring the whole job down now rather than
    // let them run into their timeouts.
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, rc);
  }
  MPI_Finalize();
  return rc;
}
