// The distributed runtime end to end: real `mpirun` jobs of the odmoe CLI on one machine.
// Greedy generation in every mode, rank count and group count must give exactly the tokens
// (and router decisions) of the single-process run; logits must be equal.
#include <gtest/gtest.h>

#include <dirent.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <sstream>
#include <nlohmann/json.hpp>
#include <thread>

#include <set>

#include "test_util.h"

namespace odmoe {
namespace {

const std::string kOdmoe = ODMOE_CLI_BIN;
const std::string kWeights = ODMOE_WEIGHTS_BIN;
const std::string kMpirun = std::string(ODMOE_MPIEXEC) + " --allow-run-as-root --oversubscribe";

using test::child_env;

std::string mpirun(int np) { return child_env() + kMpirun + " -np " + std::to_string(np) + " " + kOdmoe; }

class Distributed : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new test::TempDir();
    // The bundled model in bf16 over 3 shards; a tiny Qwen3-MoE (5 experts, top-3) in f32.
    auto r = test::run_command(kWeights + " convert " + std::string(ODMOE_SOURCE_DIR) +
                               "/weights-tools/models/shakespeare-mixtral " + tmp_->str("mixtral") + " --shards 3");
    ASSERT_EQ(r.status, 0) << r.output;
    r = test::run_command(kWeights + " convert " + test::data_dir() + "/hf/qwen3_moe " + tmp_->str("qwen3") + " --dtype f32 --shards 2");
    ASSERT_EQ(r.status, 0) << r.output;
  }
  static void TearDownTestSuite() {
    delete tmp_;
    tmp_ = nullptr;
  }
  static std::string model(const std::string& m) { return tmp_->str(m); }
  static std::string prompt(const std::string& m) { return m == "mixtral" ? "'ROMEO:'" : "'Hello world, the'"; }

  // Runs generate and returns its routing trace (input tokens and router choices per step).
  static nlohmann::json generate(const std::string& launcher, const std::string& m, const std::string& extra,
                                 const std::string& tag, nlohmann::json* stats = nullptr) {
    const std::string routing = tmp_->str("routing-" + tag + ".json"), st = tmp_->str("stats-" + tag + ".json");
    const auto r = test::run_command(launcher + " generate --model " + model(m) + " --prompt " + prompt(m) +
                                     " --max-new-tokens 20 --timeout 30 --save-routing " + routing +
                                     " --stats-json " + st + " " + extra);
    EXPECT_EQ(r.status, 0) << launcher << " " << extra << "\n" << r.output;
    if (r.status != 0) return {};
    if (stats) *stats = nlohmann::json::parse(test::read_file(st));
    return nlohmann::json::parse(test::read_file(routing))["steps"];
  }
  static test::TempDir* tmp_;
};
test::TempDir* Distributed::tmp_ = nullptr;

struct Case {
  Case(std::string m, int n, int g, std::string md, std::string p, int ahead = 1, std::string x = "", std::string t = "")
      : model(std::move(m)), np(n), groups(g), mode(std::move(md)), predictor(std::move(p)), lookahead(ahead),
        extra(std::move(x)), tag(std::move(t)) {}
  std::string model;
  int np, groups;
  std::string mode, predictor;
  int lookahead;
  std::string extra;  // more options
  std::string tag;    // names the extra options in the test name
};

std::string case_name(const Case& c) {
  return c.model + "_np" + std::to_string(c.np) + "_G" + std::to_string(c.groups) + "_" + c.mode + "_" + c.predictor +
         (c.lookahead > 1 ? "_ahead" + std::to_string(c.lookahead) : "") + (c.tag.empty() ? "" : "_" + c.tag);
}

void PrintTo(const Case& c, std::ostream* os) { *os << case_name(c); }

class DistributedTokens : public Distributed, public ::testing::WithParamInterface<Case> {};

TEST_P(DistributedTokens, MatchSingleProcess) {
  const Case& c = GetParam();
  const nlohmann::json single = generate(child_env() + kOdmoe, c.model, "", "single-" + c.model);
  ASSERT_FALSE(single.empty());
  std::string extra = "--mode " + c.mode + " --groups " + std::to_string(c.groups);
  if (c.mode != "resident") extra += " --predictor " + c.predictor + " --lookahead " + std::to_string(c.lookahead);
  if (c.predictor == "oracle") extra += " --routing-trace " + tmp_->str("routing-single-" + c.model + ".json");
  extra += " " + c.extra;
  nlohmann::json stats;
  const nlohmann::json dist = generate(mpirun(c.np), c.model, extra, case_name(c), &stats);
  ASSERT_EQ(dist, single) << "tokens or routing differ from the single-process run";
  // The run really was distributed the way it was asked to be.
  const bool predictor_rank = c.extra.find("--predictor-rank") != std::string::npos;
  ASSERT_EQ(stats["ranks"].size(), static_cast<size_t>(c.np - (predictor_rank ? 1 : 0)));
  if (predictor_rank) {
    EXPECT_EQ(stats["predictor"]["predictor_rank"], c.np - 1);
  }
  EXPECT_EQ(stats["schedule"]["groups"], c.groups);
  EXPECT_EQ(stats["schedule"]["mode"], c.mode);
  uint64_t pulled = 0, computes = 0;
  for (size_t r = 1; r < stats["ranks"].size(); ++r) {
    pulled += stats["ranks"][r]["bytes_pulled"].get<uint64_t>();
    computes += stats["ranks"][r]["computes"].get<uint64_t>();
  }
  EXPECT_GT(pulled, 0u);
  EXPECT_GT(computes, 0u);
  if (c.mode == "cache") {
    // Every decode expert was either in its rank's cache or loaded after routing.
    const auto& cs = stats["cache"];
    EXPECT_EQ(cs["decode_experts_needed"], stats["predictor"]["decode_activated"]);
    EXPECT_LE(cs["loaded_after_routing"].get<uint64_t>(), cs["decode_experts_needed"].get<uint64_t>());
    EXPECT_GT(cs["evictions"].get<uint64_t>(), 0u) << "the cache is smaller than the model";
    if (c.predictor != "none") {
      EXPECT_GT(cs["prefetch_loads"].get<uint64_t>(), 0u);
    }
  }
  if (c.mode == "on-demand") {
    const double recall = stats["predictor"]["recall"];
    if (c.predictor == "oracle") {
      EXPECT_EQ(recall, 1.0);
      EXPECT_EQ(stats["predictor"]["precision"], 1.0);
    } else if (c.predictor == "none") {
      EXPECT_EQ(recall, 0.0);
      if (c.extra.find("--miss-policy cpu") != std::string::npos) {
        // Every decode expert was a miss, computed on a store rank; nothing but the
        // prompt's experts was loaded.
        EXPECT_EQ(stats["ranks"][0]["misses_computed_on_store_ranks"], stats["predictor"]["decode_activated"]);
        uint64_t host = 0;
        for (size_t r = 1; r < stats["ranks"].size(); ++r) host += stats["ranks"][r]["host_computes"].get<uint64_t>();
        EXPECT_EQ(host, stats["ranks"][0]["misses_computed_on_store_ranks"].get<uint64_t>());
      }
    } else if (c.predictor == "shadow") {
      // How many predictions come in time depends on thread timing; what must hold is that
      // the shadow predicted, and (test above) that it never changed the tokens. On a rank of
      // its own it first re-encodes the whole model, so under load a 20-token run may end
      // before any of its predictions is in time: there, that it ran steps is what is sure.
      if (!predictor_rank) {
        EXPECT_GT(stats["predictor"]["decode_predicted"].get<int>(), 0);
      }
      EXPECT_GT(stats["predictor"]["steps_run"].get<int>(), 0);
    } else {  // real predictors: some hits, never all of them on these models
      EXPECT_GT(recall, 0.0) << c.predictor;
      EXPECT_LT(recall, 1.0) << c.predictor;
    }
  }
}

std::vector<Case> cases() {
  std::vector<Case> v;
  for (const std::string m : {"mixtral", "qwen3"})
    for (int np : {2, 3, 5})
      for (int g : {1, 2}) {
        if ((np - 1) % g) continue;
        v.push_back({m, np, g, "resident", "none"});
        v.push_back({m, np, g, "on-demand", "none"});
        v.push_back({m, np, g, "on-demand", "oracle"});
      }
  for (const std::string pred : {"previous", "random", "gate-ahead"}) {
    v.push_back({"mixtral", 5, 2, "on-demand", pred});
    v.push_back({"qwen3", 3, 1, "on-demand", pred});
  }
  // The shadow predictor: int8 made in memory, int4 with extra candidates, late departure,
  // no alignment, and with banks of slots ahead.
  v.push_back({"mixtral", 5, 2, "on-demand", "shadow"});
  v.push_back({"mixtral", 3, 1, "on-demand", "shadow", 1, "--shadow-dtype int4 --predict-extra 2", "int4_extra2"});
  v.push_back({"mixtral", 5, 2, "on-demand", "shadow", 1, "--shadow-departure late", "late"});
  v.push_back({"mixtral", 5, 2, "on-demand", "shadow", 2, "--align-token-period 0 --align-kv-period 0", "unaligned"});
  v.push_back({"qwen3", 3, 1, "on-demand", "shadow", 1, "--shadow-dtype f16 --predict-extra 1", "f16_extra1"});
  // The shadow on a rank of its own (the last), fed the full model's KV rows by messages.
  v.push_back({"mixtral", 6, 2, "on-demand", "shadow", 1, "--predictor-rank 5", "predictor_rank"});
  v.push_back({"qwen3", 4, 1, "on-demand", "shadow", 1, "--predictor-rank 3 --shadow-dtype int4", "predictor_rank_int4"});
  // Cache mode: LRU and LFU, prefetched by the shadow and gate-ahead, or not at all.
  v.push_back({"mixtral", 5, 2, "cache", "shadow"});
  v.push_back({"mixtral", 3, 1, "cache", "none", 1, "--cache-slots 2 --cache-policy lfu", "lfu2"});
  v.push_back({"qwen3", 3, 1, "cache", "gate-ahead", 1, "--cache-slots 4", "slots4"});
  v.push_back({"mixtral", 5, 2, "cache", "shadow", 2, "--cache-policy lfu", "lfu"});
  // --miss-policy cpu: misses computed by store ranks from their own copy.
  v.push_back({"mixtral", 5, 2, "on-demand", "none", 1, "--miss-policy cpu", "miss_cpu"});
  v.push_back({"qwen3", 3, 1, "on-demand", "shadow", 1, "--shadow-dtype int4 --miss-policy cpu", "int4_miss_cpu"});
  v.push_back({"mixtral", 3, 1, "on-demand", "oracle", 2});
  v.push_back({"qwen3", 5, 2, "on-demand", "oracle", 3});
  v.push_back({"mixtral", 5, 2, "on-demand", "none", 2});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Modes, DistributedTokens, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& p) {
                           std::string n = case_name(p.param);
                           for (char& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

TEST_F(Distributed, LogitsEqualSingleProcess) {
  const std::string ids = "1,487,642,901,259,33,1200,7";
  const auto single = test::run_command(child_env() + kOdmoe + " logits --model " + model("mixtral") + " --token-ids " + ids);
  ASSERT_EQ(single.status, 0) << single.output;
  for (const std::string mode : {"resident", "on-demand"}) {
    const auto dist = test::run_command(mpirun(4) + " logits --model " + model("mixtral") + " --token-ids " + ids +
                                        " --mode " + mode + " --prefill-batch 8 --timeout 30");
    ASSERT_EQ(dist.status, 0) << dist.output;
    const auto a = nlohmann::json::parse(single.output)["logits"], b = nlohmann::json::parse(dist.output)["logits"];
    ASSERT_EQ(a.size(), b.size());
    double worst = 0;
    for (size_t t = 0; t < a.size(); ++t)
      for (size_t v = 0; v < a[t].size(); ++v)
        worst = std::max(worst, std::abs(a[t][v].get<double>() - b[t][v].get<double>()));
    // Same kernels on the same token batches, summed in the same order: bit-identical.
    EXPECT_EQ(worst, 0.0) << mode;
  }
}

TEST_F(Distributed, StatsAndTraceDescribeEveryRank) {
  const std::string trace = tmp_->str("trace.json");
  nlohmann::json stats;
  generate(mpirun(3), "mixtral", "--mode on-demand --trace " + trace + " --load-gbps 2 --verify-pulls", "trace", &stats);
  ASSERT_FALSE(stats.empty());
  EXPECT_GT(stats["decode_tokens_per_second"].get<double>(), 0.0);
  EXPECT_GT(stats["ttft_seconds"].get<double>(), 0.0);
  for (size_t r = 0; r < 3; ++r) EXPECT_GT(stats["ranks"][r]["peak_host_bytes"].get<uint64_t>(), 0u);
  for (size_t r = 1; r < 3; ++r) {
    const auto& w = stats["ranks"][r];
    EXPECT_EQ(w["pulls_verified"], w["pulls"]);
    // An emulated 2 Gbit/s link: pulls take at least bytes / rate.
    EXPECT_GE(w["load_seconds"].get<double>(), w["bytes_pulled"].get<double>() * 8 / 2e9 * 0.99);
    EXPECT_GE(w["compute_seconds"].get<double>(), 0.0);
    EXPECT_GE(w["stall_seconds"].get<double>(), 0.0);
    EXPECT_GE(w["message_wait_seconds"].get<double>(), 0.0);
  }
  EXPECT_GT(stats["timing"]["t_main_seconds_per_layer"].get<double>(), 0.0);
  const auto t = nlohmann::json::parse(test::read_file(trace));
  std::set<std::pair<int, std::string>> seen;  // (rank, category)
  for (const auto& e : t["traceEvents"])
    if (e["ph"] == "X") {
      seen.insert({e["pid"].get<int>(), e["cat"].get<std::string>()});
      EXPECT_GE(e["dur"].get<double>(), 0.0);
    }
  EXPECT_TRUE(seen.count({0, "main"}));
  for (int r = 1; r < 3; ++r) {
    EXPECT_TRUE(seen.count({r, "load"})) << r;
    EXPECT_TRUE(seen.count({r, "compute"})) << r;
  }
}

// perplexity runs distributed too, and scores exactly as one process does (the logits are
// bit-identical), in batch and token by token.
TEST_F(Distributed, PerplexityEqualsSingleProcess) {
  const std::string text = tmp_->str("ppl.txt");
  {
    std::ofstream f(text);
    f << test::read_file(test::data_dir() + "/shakespeare_heldout_excerpt.txt").substr(0, 1500);
  }
  auto nll = [&](const std::string& launcher, const std::string& extra) {
    const std::string out = tmp_->str("ppl.json");
    const auto r = test::run_command(launcher + " perplexity --model " + model("mixtral") + " --text " + text +
                                     " --context 64 --timeout 30 --json " + out + " " + extra);
    EXPECT_EQ(r.status, 0) << launcher << " " << extra << "\n" << r.output;
    return r.status == 0 ? nlohmann::json::parse(test::read_file(out)) : nlohmann::json{};
  };
  const nlohmann::json single = nll(child_env() + kOdmoe, "");
  ASSERT_FALSE(single.empty());
  const double exact = single["nll_per_token"];
  EXPECT_EQ(nll(child_env() + kOdmoe, "--token-by-token")["nll_per_token"].get<double>(), exact);
  EXPECT_EQ(nll(mpirun(3), "--mode on-demand")["nll_per_token"].get<double>(), exact);
  EXPECT_EQ(nll(mpirun(5), "--groups 2 --mode cache --token-by-token")["nll_per_token"].get<double>(), exact);
  // Substitution with alpha 0 never fires; with a large alpha it does, and changes the scores.
  const nlohmann::json a0 = nll(mpirun(3), "--mode cache --cache-slots 3 --substitute 0 --token-by-token");
  EXPECT_EQ(a0["nll_per_token"].get<double>(), exact);
  EXPECT_EQ(a0["cache"]["substitutions"], 0);
  EXPECT_EQ(a0["cache"]["policy"], "score");
  const nlohmann::json a5 = nll(mpirun(3), "--mode cache --cache-slots 3 --substitute 0.5 --token-by-token");
  EXPECT_GT(a5["cache"]["substitutions"].get<int>(), 0);
  EXPECT_NE(a5["nll_per_token"].get<double>(), exact);
  EXPECT_GT(a5["cache"]["hit_rate"].get<double>(), a0["cache"]["hit_rate"].get<double>());
}

TEST_F(Distributed, BadInputBringsEveryRankDown) {
  // A bad option: every rank sees it, exit status 2 with the reason.
  auto r = test::run_command(mpirun(3) + " generate --model " + model("mixtral") + " --prompt hi --groups 3");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("--groups 3 does not divide the 2 expert ranks"), std::string::npos) << r.output;
  // An error only main finds (after the engine is up): the job still ends, non-zero, quickly.
  const auto t0 = std::chrono::steady_clock::now();
  r = test::run_command(mpirun(3) + " generate --model " + model("mixtral") + " --prompt '' --timeout 30");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("the prompt is empty"), std::string::npos) << r.output;
  EXPECT_LT(secs, 25.0);
  // An oracle trace from another model.
  r = test::run_command(mpirun(3) + " generate --model " + model("qwen3") + " --prompt hi --predictor oracle " +
                        "--routing-trace " + tmp_->str("routing-single-mixtral.json"));
  EXPECT_NE(r.status, 0);
  r = test::run_command(mpirun(2) + " generate --model " + model("mixtral") + " --prompt hi --predictor oracle");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("--routing-trace"), std::string::npos) << r.output;
  // Substitution swaps in cached experts: only in cache mode.
  r = test::run_command(mpirun(3) + " generate --model " + model("mixtral") + " --prompt hi --substitute 0.3");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("--substitute needs --mode cache"), std::string::npos) << r.output;
  // The predictor rank must be the last one, and only the shadow runs there.
  r = test::run_command(mpirun(4) + " generate --model " + model("mixtral") + " --prompt hi --predictor shadow " +
                        "--predictor-rank 2");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("must be the last rank (3)"), std::string::npos) << r.output;
  r = test::run_command(mpirun(4) + " generate --model " + model("mixtral") + " --prompt hi --predictor gate-ahead " +
                        "--predictor-rank 3");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("--predictor-rank runs the shadow"), std::string::npos) << r.output;
}

// Batch mode (--prompts): many generations in one job give the single process's texts, and
// every rank records its memory after each one.
TEST_F(Distributed, BatchOfPromptsMatchesOneProcessAndMarksMemory) {
  const std::string prompts = tmp_->str("batch.jsonl");
  {
    std::ofstream f(prompts);
    const char* lines[] = {"ROMEO:", "JULIET:\\nO Romeo", "KING HENRY:\\nOnce more", "First Citizen:\\nBefore we"};
    for (int i = 0; i < 24; ++i) f << "{\"prompt\": \"" << lines[i % 4] << " " << i << "\"}\n";
  }
  const std::string opts = " generate --model " + model("mixtral") + " --prompts " + prompts + " --max-new-tokens 6";
  // stdout (the JSON lines) to a file, stderr (the summary) to the output.
  const auto one = test::run_command("{ " + child_env() + kOdmoe + opts + " > " + tmp_->str("batch-one.jsonl") + "; }");
  ASSERT_EQ(one.status, 0) << one.output;
  const auto job = test::run_command("{ " + mpirun(3) + opts + " --predictor shadow --timeout 30 --stats-json " +
                                     tmp_->str("batch-stats.json") + " > " + tmp_->str("batch-job.jsonl") + "; }");
  ASSERT_EQ(job.status, 0) << job.output;
  auto texts = [](const std::string& out) {
    std::vector<std::string> t;
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
      const nlohmann::json j = nlohmann::json::parse(line);
      EXPECT_EQ(j["index"], t.size() + 1);
      EXPECT_EQ(j["generated_tokens"], 6);
      t.push_back(j["text"].get<std::string>());
    }
    return t;
  };
  const std::vector<std::string> a = texts(test::read_file(tmp_->str("batch-one.jsonl"))),
                                 b = texts(test::read_file(tmp_->str("batch-job.jsonl")));
  ASSERT_EQ(a.size(), 24u) << one.output;
  EXPECT_EQ(a, b);
  const nlohmann::json st = nlohmann::json::parse(test::read_file(tmp_->str("batch-stats.json")));
  ASSERT_EQ(st["batch"]["prompts"], 24);
  ASSERT_EQ(st["batch"]["per_prompt"].size(), 24u);
  for (const auto& r : st["ranks"]) {
    ASSERT_EQ(r["memory_marks"].size(), 24u) << r["rank"];
    EXPECT_EQ(r["memory_marks"].back()["mark"], 24);
  }
  ASSERT_EQ(st["batch"]["memory_per_rank"].size(), 3u);
  // Bad batches: a line that is not a prompt names its line; --prompt and --prompts exclude each other.
  test::write_file(tmp_->str("bad.jsonl"), "{\"prompt\": \"ROMEO:\"}\n{\"text\": 3}\n");
  auto r = test::run_command(mpirun(3) + " generate --model " + model("mixtral") + " --prompts " + tmp_->str("bad.jsonl"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("bad.jsonl:2"), std::string::npos) << r.output;
  r = test::run_command(child_env() + kOdmoe + " generate --model " + model("mixtral") + " --prompts " + prompts +
                        " --prompt hi");
  EXPECT_EQ(r.status, 2) << r.output;
  test::write_file(tmp_->str("empty.jsonl"), "{\"prompt\": \"ROMEO:\"}\n{\"prompt\": \"\"}\n");
  r = test::run_command(child_env() + kOdmoe + " generate --model " + model("mixtral") + " --prompts " + tmp_->str("empty.jsonl"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("empty.jsonl:2"), std::string::npos) << r.output;
}

// Processes whose command line contains `marker` and whose environment says they are MPI
// rank `rank` (Open MPI sets OMPI_COMM_WORLD_RANK).
std::vector<pid_t> find_ranks(const std::string& marker, int rank) {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    const std::string cmd = test::read_file("/proc/" + std::string(e->d_name) + "/cmdline");
    if (cmd.find(marker) == std::string::npos || cmd.find("generate") == std::string::npos) continue;
    std::string env = test::read_file("/proc/" + std::string(e->d_name) + "/environ");
    for (char& c : env)
      if (c == '\0') c = '\n';
    if (rank < 0 || env.find("\nOMPI_COMM_WORLD_RANK=" + std::to_string(rank) + "\n") != std::string::npos) out.push_back(pid);
  }
  closedir(d);
  return out;
}

// Starts a long generation, does `fault` once tokens flow, and returns the job's output,
// exit status and the seconds from the fault to the end of the job (a job still running
// 60 s after it is killed and reported as a hang: status -1).
struct KillRun {
  std::string output;
  int status = -1;
  double seconds = 0;
  bool killed = false;  // the fault found what it acts on
};
KillRun run_with_fault(const std::string& launcher_opts, const std::string& model_dir, const std::string& out_path,
                       int np, int max_new, const std::string& extra, const std::string& err_path,
                       const std::function<bool()>& fault) {
  KillRun k;
  const std::string cmd = child_env() + kMpirun + " " + launcher_opts + " -np " + std::to_string(np) + " " + kOdmoe +
                          " generate --model " + model_dir + " --prompt 'ROMEO:' --max-new-tokens " +
                          std::to_string(max_new) + " --n-ctx 500 --timeout 4 " +
                          (extra.find("--load-gbps") == std::string::npos ? "--load-gbps 0.05 " : "") + extra + " > " +
                          out_path + (err_path.empty() ? " 2>&1" : " 2> " + err_path);
  const pid_t child = fork();
  if (child == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until the job streams text, then strike.
  const auto start = std::chrono::steady_clock::now();
  auto since = [](auto t) { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count(); };
  int st = 0;
  bool ended = false;  // before the text came: the fault is not applied
  while (since(start) < 60 && test::read_file(out_path).find("ROMEO: ") == std::string::npos && !ended) {
    ended = waitpid(child, &st, WNOHANG) == child;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto t_fault = std::chrono::steady_clock::now();
  k.killed = !ended && fault();
  while (!ended && since(t_fault) < 60) {
    if (waitpid(child, &st, WNOHANG) == child) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  k.seconds = since(t_fault);
  if (k.seconds >= 60) {  // a hang: clean up and report it
    for (pid_t p : find_ranks(model_dir, -1)) ::kill(p, SIGKILL);
    waitpid(child, &st, 0);
  }
  k.status = k.seconds < 60 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  k.output = test::read_file(out_path) + (err_path.empty() ? "" : test::read_file(err_path));
  return k;
}

// The same, the fault being a SIGKILL of rank `victim`.
KillRun kill_a_worker(const std::string& launcher_opts, const std::string& model_dir, const std::string& out_path,
                      int np = 3, int max_new = 400, const std::string& extra = "", const std::string& err_path = "",
                      int victim = 2) {
  return run_with_fault(launcher_opts, model_dir, out_path, np, max_new, extra, err_path, [&] {
    bool killed = false;
    for (pid_t p : find_ranks(model_dir, victim)) killed = ::kill(p, SIGKILL) == 0 || killed;
    return killed;
  });
}

TEST_F(Distributed, KilledWorkerBringsTheJobDownNamingTheRank) {
  // As launched by default: mpirun sees rank 2 die and ends the job, naming it.
  KillRun k = kill_a_worker("", model("mixtral"), tmp_->str("kill1.out"));
  ASSERT_TRUE(k.killed) << "rank 2 was not found\n" << k.output;
  EXPECT_NE(k.status, 0) << k.output;
  EXPECT_LT(k.seconds, 20.0) << k.output;
  EXPECT_NE(k.output.find("rank 2"), std::string::npos) << k.output;
  EXPECT_TRUE(find_ranks(model("mixtral"), -1).empty());

  // With the job kept alive after a death (--enable-recovery), main itself finds the dead
  // rank within --timeout (4 s), names it and its host, and brings every rank down.
  k = kill_a_worker("--enable-recovery", model("mixtral"), tmp_->str("kill2.out"));
  ASSERT_TRUE(k.killed) << k.output;
  EXPECT_LT(k.seconds, 20.0) << k.output;
  EXPECT_NE(k.output.find("timed out after 4 s waiting for the results of layer"), std::string::npos) << k.output;
  EXPECT_NE(k.output.find("from rank 2 on "), std::string::npos) << k.output;
  EXPECT_TRUE(find_ranks(model("mixtral"), -1).empty());
}

// --on-worker-failure degrade: the same kill, and main re-plans rank 2's layers onto the
// other expert ranks and finishes the generation with the tokens of the undisturbed run.
TEST_F(Distributed, KilledWorkerWithDegradeFinishesWithTheSameTokens) {
  const std::string want_path = tmp_->str("degrade-single.txt");
  ASSERT_EQ(test::run_command("{ " + child_env() + kOdmoe + " generate --model " + model("mixtral") +
                              " --prompt 'ROMEO:' --max-new-tokens 24 --n-ctx 500 > " + want_path + "; }")
                .status,
            0);
  const std::string want = test::read_file(want_path);
  for (const auto& [np, mode] : std::vector<std::pair<int, std::string>>{{4, "--mode on-demand --predictor shadow"},
                                                                          {5, "--mode cache --predictor gate-ahead"}}) {
    SCOPED_TRACE(std::to_string(np) + " ranks, " + mode);
    const std::string stats = tmp_->str("degrade-" + std::to_string(np) + ".json");
    const std::string out = tmp_->str("degrade-" + std::to_string(np) + ".out");
    const KillRun k = kill_a_worker("--enable-recovery", model("mixtral"), out, np, 24,
                                    "--on-worker-failure degrade " + mode + " --stats-json " + stats,
                                    tmp_->str("degrade-" + std::to_string(np) + ".err"));
    ASSERT_TRUE(k.killed) << k.output;
    // mpirun --enable-recovery (Open MPI 4.1) exits 0 whatever its ranks return: success is
    // no rank's error, and main's statistics, written once the generation is complete.
    EXPECT_EQ(k.status, 0) << k.output;
    EXPECT_EQ(k.output.find("error ["), std::string::npos) << k.output;
    EXPECT_LT(k.seconds, 60.0) << k.output;
    EXPECT_NE(k.output.find("rank 2 on "), std::string::npos) << k.output;
    EXPECT_NE(k.output.find("stopped answering"), std::string::npos) << k.output;
    EXPECT_EQ(test::read_file(out), want) << k.output;  // the single process's text
    const nlohmann::json st = nlohmann::json::parse(test::read_file(stats));
    ASSERT_EQ(st["failures"].size(), 1u) << st.dump();
    EXPECT_EQ(st["failures"][0]["rank"], 2);
    EXPECT_EQ(st["failures"][0]["expert_ranks_after"], np - 2);
    EXPECT_EQ(st["generated_tokens"], 24);
    EXPECT_TRUE(find_ranks(model("mixtral"), -1).empty());
  }
  // Not with resident mode (nothing is loaded after start-up to re-plan).
  const auto r = test::run_command(mpirun(3) + " generate --model " + model("mixtral") +
                                   " --prompt hi --mode resident --on-worker-failure degrade");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("--on-worker-failure degrade re-plans loads on demand"), std::string::npos) << r.output;
}


// A store rank (rank 1 holds the replicated store on this one node) killed mid-decode: the
// job ends, naming it, by the launcher or -- with the job kept alive -- by main, which
// refuses to degrade around the rank every other pulls from.
TEST_F(Distributed, KilledStoreRankEndsTheJobNamingIt) {
  KillRun k = kill_a_worker("", model("mixtral"), tmp_->str("kill-store1.out"), 3, 400, "", "", 1);
  ASSERT_TRUE(k.killed) << k.output;
  EXPECT_NE(k.status, 0) << k.output;
  EXPECT_LT(k.seconds, 20.0) << k.output;
  EXPECT_NE(k.output.find("rank 1"), std::string::npos) << k.output;
  EXPECT_TRUE(find_ranks(model("mixtral"), -1).empty());

  // (mpirun --enable-recovery of Open MPI 4.1 exits 0 whatever its ranks' status: main's
  // error and every rank's end are what show the failure.)
  k = kill_a_worker("--enable-recovery", model("mixtral"), tmp_->str("kill-store2.out"), 4, 400,
                    "--on-worker-failure degrade", "", 1);
  ASSERT_TRUE(k.killed) << k.output;
  EXPECT_LT(k.seconds, 15.0) << k.output;  // --timeout 4, a probe, then every rank down at once
  EXPECT_NE(k.output.find("error [mpi/rank-failed] rank 0 on "), std::string::npos) << k.output;
  EXPECT_NE(k.output.find("main failed (its error is above); this rank exits"), std::string::npos) << k.output;
  EXPECT_NE(k.output.find("rank 1 on "), std::string::npos) << k.output;
  EXPECT_NE(k.output.find("a store rank"), std::string::npos) << k.output;
  EXPECT_TRUE(find_ranks(model("mixtral"), -1).empty());
}

// Expert shard files changed under a running job. Deleted (or replaced whole, as a
// re-conversion does): the store serves the copy it mapped and the tokens are unchanged.
// Rewritten in place: the store rank finds it within a second and ends the job naming the
// file. Truncated: a read of the mapping faults (SIGBUS) and that rank names the file and
// dies, or the store rank's check names it first.
TEST_F(Distributed, ShardFilesChangedAfterStart) {
  const std::string src = std::string(ODMOE_SOURCE_DIR) + "/weights-tools/models/shakespeare-mixtral";
  const std::string want_path = tmp_->str("shard-single.txt");
  ASSERT_EQ(test::run_command(kWeights + " convert " + src + " " + tmp_->str("shard-ref") + " --shards 2").status, 0);
  ASSERT_EQ(test::run_command("{ " + child_env() + kOdmoe + " generate --model " + tmp_->str("shard-ref") +
                              " --prompt 'ROMEO:' --max-new-tokens 40 --n-ctx 500 > " + want_path + "; }")
                .status,
            0);
  struct Fault {
    std::string name, shell;  // run in the model directory
  };
  for (const Fault& f : {Fault{"deleted", "rm experts-0000*-of-00002.h5"},
                         Fault{"rewritten", "dd if=/dev/urandom of=experts-00001-of-00002.h5 bs=4096 seek=64 count=4 "
                                            "conv=notrunc 2>/dev/null"},
                         Fault{"truncated", "truncate -s 8192 experts-00000-of-00002.h5"}}) {
    SCOPED_TRACE(f.name);
    const std::string dir = tmp_->str("shard-" + f.name);
    ASSERT_EQ(test::run_command(kWeights + " convert " + src + " " + dir + " --shards 2").status, 0);
    const std::string out = tmp_->str("shard-" + f.name + ".out"), err = tmp_->str("shard-" + f.name + ".err");
    const KillRun k = run_with_fault("", dir, out, 3, f.name == "deleted" ? 40 : 400, "--load-gbps 0.5", err, [&] {
      return test::run_command("cd " + dir + " && " + f.shell).status == 0;
    });
    ASSERT_TRUE(k.killed) << k.output;
    EXPECT_LT(k.seconds, 20.0) << k.output;
    EXPECT_TRUE(find_ranks(dir, -1).empty());
    if (f.name == "deleted") {
      EXPECT_EQ(k.status, 0) << k.output;
      EXPECT_EQ(test::read_file(out), test::read_file(want_path)) << k.output;
      EXPECT_NE(k.output.find("experts-00000-of-00002.h5 was deleted after the job started"), std::string::npos)
          << k.output;
    } else {
      EXPECT_NE(k.status, 0) << k.output;
      EXPECT_NE(k.output.find("error [io/file-changed] rank "), std::string::npos) << k.output;
      // Truncated: a rank whose read of the mapping faults names the file (SIGBUS), unless the
      // transport reads it in the kernel (EFAULT, no signal) and the store rank's check does.
      const std::string file = f.name == "rewritten" ? "experts-00001-of-00002.h5" : "experts-00000-of-00002.h5";
      EXPECT_TRUE(k.output.find(file + " was changed after the job started") != std::string::npos ||
                  (f.name == "truncated" && k.output.find(file + " is now 8192 bytes") != std::string::npos))
          << k.output;
    }
  }
}

// Expert slots that do not fit an expert rank's device memory (emulated: --device-mib) fail
// to allocate at start-up: the rank names itself and the sizes, and every rank exits.
TEST_F(Distributed, SlotsThatDoNotFitTheDeviceEndTheJob) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = test::run_command(mpirun(3) + " generate --model " + model("mixtral") +
                                   " --prompt hi --device-mib 0.3 --timeout 10");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_LT(secs, 20.0) << r.output;
  EXPECT_NE(r.output.find("error [core/device-memory] rank "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("MiB (--device-mib) and the slots need"), std::string::npos) << r.output;
  EXPECT_TRUE(find_ranks(model("mixtral"), -1).empty());
  // Enough for the slots: the same command runs.
  EXPECT_EQ(test::run_command(mpirun(3) + " generate --model " + model("mixtral") +
                              " --prompt hi --max-new-tokens 4 --device-mib 64")
                .status,
            0);
}

// An expert rank with nothing to do for longer than --timeout (3 expert ranks, top-2: one
// idles in every decode layer of a group of 3) is kept alive by main, not timed out.
TEST_F(Distributed, IdleExpertRankOutlastsTheTimeout) {
  const auto r = test::run_command(mpirun(4) + " generate --model " + model("mixtral") +
                                   " --prompt 'ROMEO:' --max-new-tokens 60 --groups 1 --load-gbps 0.1 --timeout 1.5 " +
                                   "--stats-json " + tmp_->str("idle.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  const nlohmann::json st = nlohmann::json::parse(test::read_file(tmp_->str("idle.json")));
  EXPECT_GT(st["decode_seconds"].get<double>(), 3.0) << "the run must outlast --timeout twice";
}

}  // namespace
}  // namespace odmoe
