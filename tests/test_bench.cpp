// `odmoe bench` end to end under a real MPI job, and bench/bench_report.py on what it wrote:
// every mode gives the single process's tokens, substitution's changes are measured, the
// figures are where the report expects them, bad input is refused on every rank.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "test_util.h"

namespace odmoe {
namespace {

const std::string kChildEnv = test::child_env();
const std::string kOdmoe = ODMOE_CLI_BIN;
const std::string kMpirun = kChildEnv + ODMOE_MPIEXEC + " --allow-run-as-root --oversubscribe";

class Bench : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new test::TempDir();
    const std::string hf = std::string(ODMOE_SOURCE_DIR) + "/weights-tools/models/shakespeare-mixtral";
    auto r = test::run_command(kChildEnv + ODMOE_WEIGHTS_BIN + " convert " + hf + " " + tmp_->str("m") + " --shadow int8");
    ASSERT_EQ(r.status, 0) << r.output;
    // Five runs x two group counts x two cases, in one job of main + 2 expert ranks.
    r = test::run_command(kMpirun + " -np 3 " + kOdmoe + " bench --model " + tmp_->str("m") +
                          " --runs resident,on-demand/shadow,on-demand/none,cache/gate-ahead,substitute/none --groups 1,2"
                          " --input-len 8,20 --output-len 6 --prompts-per-case 2 --perplexity-tokens 24 --timeout 60"
                          " --trace-dir " + tmp_->str("traces") + " --json " + tmp_->str("bench.json"));
    ASSERT_EQ(r.status, 0) << r.output;
    table_ = new std::string(r.output);
    result_ = new nlohmann::json(nlohmann::json::parse(test::read_file(tmp_->str("bench.json"))));
  }
  static void TearDownTestSuite() {
    delete result_;
    delete table_;
    delete tmp_;
    result_ = nullptr;
    table_ = nullptr;
    tmp_ = nullptr;
  }
  static const nlohmann::json& find(const std::string& name, int groups, int in_len) {
    for (const auto& r : (*result_)["runs"])
      if (r["name"] == name && r["groups"] == groups && r["input_len"] == in_len) return r;
    static const nlohmann::json none;
    ADD_FAILURE() << "no run " << name << " G" << groups << " in " << in_len;
    return none;
  }
  static test::TempDir* tmp_;
  static nlohmann::json* result_;
  static std::string* table_;
};
test::TempDir* Bench::tmp_ = nullptr;
nlohmann::json* Bench::result_ = nullptr;
std::string* Bench::table_ = nullptr;

TEST_F(Bench, EveryRunAndCaseIsMeasured) {
  const nlohmann::json& j = *result_;
  EXPECT_EQ(j["ranks"], 3);
  EXPECT_EQ(j["protocol"]["input_lens"], nlohmann::json({8, 20}));
  EXPECT_EQ(j["protocol"]["output_lens"], nlohmann::json({6}));
  ASSERT_EQ(j["runs"].size(), 20u);
  std::set<std::string> names;
  for (const auto& r : j["runs"]) {
    names.insert(r["name"].get<std::string>());
    for (const char* k : {"mode", "predictor", "groups", "input_len", "output_len", "decode_tokens_per_second",
                          "ttft_seconds", "output_tokens_per_second", "device_bytes_per_rank", "device_bytes_total",
                          "peak_host_bytes_per_rank", "bytes_pulled", "stall_fraction", "per_prompt", "stats"})
      EXPECT_TRUE(r.contains(k)) << r["name"] << " lacks " << k;
    EXPECT_GT(r["decode_tokens_per_second"].get<double>(), 0);
    EXPECT_GT(r["ttft_seconds"].get<double>(), 0);
    EXPECT_EQ(r["device_bytes_per_rank"].size(), 3u);
    EXPECT_EQ(r["peak_host_bytes_per_rank"].size(), 3u);
    for (const auto& b : r["peak_host_bytes_per_rank"]) EXPECT_GT(b.get<double>(), 0);
    ASSERT_EQ(r["per_prompt"].size(), 2u);
    for (const auto& p : r["per_prompt"]) EXPECT_EQ(p["tokens"].size(), 6u);  // EOS ignored: exactly the output length
    const double stall = r["stall_fraction"];
    EXPECT_GE(stall, 0);
    EXPECT_LE(stall, 1);
  }
  EXPECT_EQ(names, (std::set<std::string>{"resident", "on-demand/shadow", "on-demand/none", "cache/gate-ahead",
                                          "substitute/none"}));
  // The table names every run, and the first case of each run left a trace.
  for (const auto& n : names) EXPECT_NE(table_->find(n), std::string::npos) << *table_;
  for (const auto& r : j["runs"])
    if (r["input_len"] == 8) {
      ASSERT_TRUE(r.contains("trace")) << r["name"];
      EXPECT_FALSE(test::read_file(r["trace"].get<std::string>()).empty());
    }
}

TEST_F(Bench, ModesReportWhatTheyDo) {
  for (int g : {1, 2}) {
    const auto& res = find("resident", g, 20);
    EXPECT_FALSE(res.contains("recall"));  // nothing is predicted once everything is loaded
    EXPECT_EQ(res["stall_fraction"], 0.0);
    const auto& shadow = find("on-demand/shadow", g, 20);
    // Under mpirun the shadow races the full model for the cores, so its recall depends on
    // timing (its accuracy is tested apart from timing in test_predictor); above chance here.
    EXPECT_GT(shadow["recall"].get<double>(), 0.3);
    EXPECT_EQ(find("on-demand/none", g, 20)["recall"], 0.0);
    // On demand, every decode layer's experts are pulled: bytes per token at least top-k experts per layer.
    EXPECT_GT(shadow["bytes_pulled_per_token"].get<double>(), find("resident", g, 20)["bytes_pulled_per_token"].get<double>());
    const auto& cache = find("cache/gate-ahead", g, 20);
    EXPECT_GE(cache["hit_rate"].get<double>(), 0.0);
    EXPECT_LE(cache["hit_rate"].get<double>(), 1.0);
    // Resident keeps every expert on the expert ranks: more memory than slots for one layer.
    EXPECT_GT(res["device_bytes_total"].get<double>(), find("on-demand/none", g, 20)["device_bytes_total"].get<double>());
  }
}

TEST_F(Bench, ExactRunsAgreeAndSubstitutionIsMeasured) {
  for (const auto& r : (*result_)["runs"]) {
    if (r["mode"] == "substitute") {
      ASSERT_TRUE(r.contains("token_agreement")) << r["name"];
      EXPECT_GE(r["token_agreement"].get<double>(), 0.0);
      EXPECT_LE(r["token_agreement"].get<double>(), 1.0);
      EXPECT_EQ(r["substitute_alpha"], 0.2);
      ASSERT_TRUE(r.contains("perplexity"));
      EXPECT_TRUE(r["perplexity"].contains("change_vs_exact"));
    } else {
      EXPECT_EQ(r["tokens_match_reference"], true) << r["name"] << " G" << r["groups"];
      // Exact modes score held-out text exactly alike.
      EXPECT_EQ(r["perplexity"]["perplexity"], find("resident", 1, 8)["perplexity"]["perplexity"]) << r["name"];
    }
  }
  // The single process gives the same tokens as every exact distributed run.
  const auto sp = test::run_command(kChildEnv + kOdmoe + " bench --model " + tmp_->str("m") +
                                    " --input-len 8,20 --output-len 6 --prompts-per-case 2 --json " + tmp_->str("sp.json"));
  ASSERT_EQ(sp.status, 0) << sp.output;
  const nlohmann::json one = nlohmann::json::parse(test::read_file(tmp_->str("sp.json")));
  ASSERT_EQ(one["runs"].size(), 2u);
  for (const auto& r : one["runs"]) {
    EXPECT_EQ(r["mode"], "single-process");
    const auto& res = find("on-demand/shadow", 2, r["input_len"].get<int>());
    for (size_t p = 0; p < 2; ++p) EXPECT_EQ(r["per_prompt"][p]["tokens"], res["per_prompt"][p]["tokens"]);
  }
}

TEST_F(Bench, ReportWritesTableTwoAndPlots) {
  const std::string out = tmp_->str("report");
  const auto r = test::run_command(kChildEnv + ODMOE_PYTHON + " " + ODMOE_SOURCE_DIR + "/bench/bench_report.py " +
                                   tmp_->str("bench.json") + " --out " + out + " --name t2");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string md = test::read_file(out + "/t2.md");
  EXPECT_NE(md.find("## Table 2"), std::string::npos) << md;
  EXPECT_NE(md.find("| 8/6 decode tok/s |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 20/6 decode tok/s |"), std::string::npos) << md;
  for (const char* row : {"| resident | 1 |", "| on-demand/shadow | 2 |", "| substitute/none | 2 |"})
    EXPECT_NE(md.find(row), std::string::npos) << row << "\n" << md;
  EXPECT_EQ(md.find("DIFFERS"), std::string::npos) << md;
  for (const char* png : {"/t2-speed-memory.png", "/t2-timeline.png"}) {
    const std::string b = test::read_file(out + png);
    ASSERT_GT(b.size(), 1000u) << png;
    EXPECT_EQ(b.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << png;
  }
  // Not bench's JSON: a clear error.
  test::write_file(tmp_->str("other.json"), "{\"ranks\": []}");
  const auto bad = test::run_command(kChildEnv + ODMOE_PYTHON + " " + ODMOE_SOURCE_DIR + "/bench/bench_report.py " +
                                     tmp_->str("other.json"));
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("no runs"), std::string::npos) << bad.output;
}

TEST_F(Bench, BadInputIsRefusedOnEveryRank) {
  const std::string base = kMpirun + " -np 3 " + kOdmoe + " bench --model " + tmp_->str("m") + " --timeout 20 --json " +
                           tmp_->str("bad.json");
  struct Case {
    std::string args, says;
    int status;
  };
  for (const Case& c : std::vector<Case>{
           {"--runs resident/shadow", "takes no predictor", 2},
           {"--runs warp/none", "unknown mode", 2},
           {"--runs on-demand/psychic", "unknown predictor", 2},
           {"--groups 3", "groups", 1},  // 2 expert ranks do not split into 3 groups
           {"--input-len 500 --output-len 500", "exceeds the context", 2},
           {"--output-len 0", "--output-len", 2},
           {"--prompts-per-case 0", "--prompts-per-case", 2},
           {"--runs on-demand/oracle", "oracle", 2},
       }) {
    const auto r = test::run_command(base + " " + c.args);
    EXPECT_EQ(r.status, c.status) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.says), std::string::npos) << c.args << "\n" << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(tmp_->str("bad.json")));  // nothing written
  EXPECT_FALSE(std::filesystem::exists(tmp_->str("bad.json.tmp")));
}

}  // namespace
}  // namespace odmoe
