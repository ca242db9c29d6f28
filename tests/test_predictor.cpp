// Predictors end to end through the odmoe CLI, in one process with --predictor-sync (the
// model waits for each pending prediction, so the figures are the predictor's accuracy and
// do not depend on thread timing), plus the prediction ledger's arithmetic.
//
// The distributed runs with a shadow (tokens equal to the single-process run, on-demand,
// every group count) are in test_distributed.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "odmoe/predict/prediction_ledger.h"
#include "test_util.h"

namespace odmoe {
namespace {

const std::string kChildEnv = test::child_env();
const std::string kOdmoe = kChildEnv + ODMOE_CLI_BIN;
const std::string kWeights = kChildEnv + ODMOE_WEIGHTS_BIN;

class Predictors : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new test::TempDir();
    const std::string hf = std::string(ODMOE_SOURCE_DIR) + "/weights-tools/models/shakespeare-mixtral";
    // f32 weights, so that an f32 shadow is exactly the model; an int4 shadow.h5 beside it.
    auto r = test::run_command(kWeights + " convert " + hf + " " + tmp_->str("f32") + " --dtype f32 --shadow int4");
    ASSERT_EQ(r.status, 0) << r.output;
  }
  static void TearDownTestSuite() {
    delete tmp_;
    tmp_ = nullptr;
  }

  // generate in one process; returns the stats JSON and the routing trace's steps.
  static nlohmann::json generate(const std::string& extra, nlohmann::json* steps = nullptr, int tokens = 48) {
    const std::string st = tmp_->str("stats.json"), routing = tmp_->str("routing.json");
    const auto r = test::run_command(kOdmoe + " generate --model " + tmp_->str("f32") +
                                     " --prompt 'ROMEO:' --max-new-tokens " + std::to_string(tokens) +
                                     " --stats-json " + st + " --save-routing " + routing + " " + extra);
    EXPECT_EQ(r.status, 0) << extra << "\n" << r.output;
    if (r.status != 0) return {};
    if (steps) *steps = nlohmann::json::parse(test::read_file(routing))["steps"];
    return nlohmann::json::parse(test::read_file(st));
  }
  static test::TempDir* tmp_;
};
test::TempDir* Predictors::tmp_ = nullptr;

TEST_F(Predictors, OracleRecallIsOne) {
  nlohmann::json steps;
  generate("", &steps);
  ASSERT_FALSE(steps.empty());
  const std::string trace = tmp_->str("oracle-trace.json");
  ASSERT_EQ(test::run_command("cp " + tmp_->str("routing.json") + " " + trace).status, 0);
  const nlohmann::json s = generate("--predictor oracle --routing-trace " + trace);
  ASSERT_TRUE(s.contains("predictor"));
  EXPECT_EQ(s["predictor"]["name"], "oracle");
  EXPECT_EQ(s["predictor"]["recall"], 1.0);
  EXPECT_EQ(s["predictor"]["precision"], 1.0);
  EXPECT_GT(s["predictor"]["decode_activated"].get<int>(), 0);
}

TEST_F(Predictors, F32ShadowPredictsEveryExpert) {
  const nlohmann::json s = generate("--predictor shadow --shadow-dtype f32 --predictor-sync");
  const nlohmann::json& p = s["predictor"];
  EXPECT_EQ(p["name"], "shadow");
  EXPECT_EQ(p["recall"], 1.0) << p.dump();
  EXPECT_EQ(p["precision"], 1.0);
  EXPECT_EQ(p["restarts"], 0);  // it always guessed the full model's token
  EXPECT_EQ(p["shadow_weight_bytes"], p["full_model_weight_bytes"]);
  for (const auto& l : p["per_layer"]) EXPECT_EQ(l["recall"], 1.0);
}

TEST_F(Predictors, PredictionsNeverChangeTheTokens) {
  nlohmann::json plain, with;
  generate("", &plain);
  ASSERT_FALSE(plain.empty());
  for (const std::string p : {"shadow --shadow-dtype int4 --align-token-period 0 --align-kv-period 0",
                              "shadow --shadow-dtype int4 --predict-extra 2", "gate-ahead --gate-ahead-depth 3",
                              "previous", "random"}) {
    generate("--predictor " + p, &with);
    EXPECT_EQ(with, plain) << p;
  }
}

TEST_F(Predictors, ShadowFileAndInMemoryDtypes) {
  nlohmann::json s = generate("--predictor shadow --shadow-dtype file --predictor-sync");
  EXPECT_EQ(s["predictor"]["shadow_dtype"], "int4 (shadow.h5)");
  s = generate("--predictor shadow --shadow-dtype int8 --predictor-sync");
  const std::string d = s["predictor"]["shadow_dtype"];
  EXPECT_EQ(d.rfind("int8 (re-encoded in memory", 0), 0u) << d;
  // int8 is about a quarter of f32.
  const double ratio = s["predictor"]["shadow_to_full_ratio"];
  EXPECT_GT(ratio, 0.2);
  EXPECT_LT(ratio, 0.35);
  EXPECT_GT(s["predictor"]["recall"].get<double>(), 0.9);
  // Without shadow.h5, --shadow-dtype file is an error that says what to do.
  const auto r = test::run_command(kWeights + " convert " + std::string(ODMOE_SOURCE_DIR) +
                                   "/weights-tools/models/shakespeare-mixtral " + tmp_->str("noshadow"));
  ASSERT_EQ(r.status, 0) << r.output;
  const auto bad = test::run_command(kOdmoe + " generate --model " + tmp_->str("noshadow") +
                                     " --prompt 'A' --max-new-tokens 2 --predictor shadow --shadow-dtype file");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("no shadow.h5"), std::string::npos) << bad.output;
  const auto bad2 = test::run_command(kOdmoe + " generate --model " + tmp_->str("noshadow") +
                                      " --prompt 'A' --max-new-tokens 2 --predictor shadow --shadow-dtype int3");
  EXPECT_EQ(bad2.status, 2) << bad2.output;
}

// Alignment as specified: without it the shadow generates its own text and its recall
// collapses; token alignment redoes a step whose guessed token was wrong (early
// departure) and never happens when disabled; late departure never guesses.
TEST_F(Predictors, AlignmentPeriodsChangeBehaviour) {
  const int n = 96;
  const std::string base = "--predictor shadow --shadow-dtype int4 --predictor-sync ";
  const nlohmann::json aligned = generate(base, nullptr, n)["predictor"];
  const nlohmann::json none = generate(base + "--align-token-period 0 --align-kv-period 0", nullptr, n)["predictor"];
  const nlohmann::json every4 = generate(base + "--align-token-period 4 --align-kv-period 4", nullptr, n)["predictor"];
  const nlohmann::json late = generate(base + "--shadow-departure late", nullptr, n)["predictor"];
  const double ra = aligned["recall"], rn = none["recall"], r4 = every4["recall"];
  EXPECT_GT(ra, 0.85);
  EXPECT_LT(rn, ra - 0.3) << "an unaligned int4 shadow drifts away from the model";
  EXPECT_GT(r4, rn);
  EXPECT_EQ(none["restarts"], 0);
  EXPECT_GT(aligned["restarts"].get<int>(), 0) << "int4 guesses some tokens wrong; token alignment redoes those steps";
  EXPECT_GT(aligned["steps_speculated"].get<int>(), 0);
  EXPECT_EQ(late["steps_speculated"], 0);
  EXPECT_EQ(late["restarts"], 0);
  EXPECT_EQ(aligned["align_token_period"], 1);
  EXPECT_EQ(every4["align_kv_period"], 4);
}

// A shadow that lags (here on purpose: it sleeps before every layer of one decode step in
// two, as a thread that lost its CPU to a busy host would) leaves layers unpredicted; the
// fallback fills them from the router of the layer before and the previous token, so every
// decode layer is predicted by something and recall does not fall below gate-ahead's.
// Asynchronous (no --predictor-sync): the lag is real thread timing.
TEST_F(Predictors, FallbackCoversALaggingShadow) {
  nlohmann::json plain, alone_steps, backed_steps;
  generate("", &plain);
  ASSERT_FALSE(plain.empty());
  const std::string lag = "--predictor shadow --shadow-dtype int4 --shadow-lag-ms 4 --shadow-lag-every 2 ";
  const nlohmann::json alone = generate(lag + "--shadow-fallback off", &alone_steps)["predictor"];
  const nlohmann::json backed = generate(lag, &backed_steps)["predictor"];
  const nlohmann::json gate = generate("--predictor gate-ahead")["predictor"];
  EXPECT_EQ(alone_steps, plain);
  EXPECT_EQ(backed_steps, plain) << "predictions never change the tokens";
  ASSERT_TRUE(alone.contains("sources")) << alone.dump();
  EXPECT_GT(alone["sources"].value("unpredicted", nlohmann::json::object()).value("layers", 0), 0)
      << "a shadow sleeping 4 ms a layer falls behind: " << alone["sources"].dump();
  EXPECT_FALSE(alone.contains("fallback"));
  const nlohmann::json& src = backed["sources"];
  EXPECT_EQ(src.value("unpredicted", nlohmann::json::object()).value("layers", 0), 0) << src.dump();
  EXPECT_TRUE(src.contains("gate-ahead") && src.contains("previous")) << src.dump();
  EXPECT_GT(backed["fallback"]["filled_layers"].get<int>(), 0);
  EXPECT_GT(backed["injected_lag_ms"].get<double>(), 0.0);
  double share = 0;
  for (const auto& [name, s] : src.items()) share += s["share"].get<double>();
  EXPECT_NEAR(share, 1.0, 1e-9);
  EXPECT_GE(backed["recall"].get<double>(), gate["recall"].get<double>()) << src.dump();
  EXPECT_GT(backed["recall"].get<double>(), alone["recall"].get<double>()) << src.dump();
  // Bad values are usage errors.
  for (const std::string bad : {"--shadow-fallback maybe", "--shadow-priority 40", "--shadow-lag-ms -1",
                                "--shadow-lag-every 0"}) {
    const auto r = test::run_command(kOdmoe + " generate --model " + tmp_->str("f32") +
                                     " --prompt A --max-new-tokens 2 --predictor shadow " + bad);
    EXPECT_EQ(r.status, 2) << bad << "\n" << r.output;
  }
}

TEST_F(Predictors, EvalPredictorJson) {
  const std::string prompts = tmp_->str("prompts.jsonl"), out = tmp_->str("eval.json");
  {
    std::ofstream f(prompts);
    f << R"({"prompt": "ROMEO:\nWhat light"})" << "\n" << R"({"prompt": "JULIET:\n"})" << "\n\n"
      << R"("KING RICHARD II:\nSay")" << "\n";
  }
  const auto r = test::run_command(kOdmoe + " eval-predictor --model " + tmp_->str("f32") + " --prompts " + prompts +
                                   " --tokens 12 --predictors shadow:f32,shadow:int4,gate-ahead,previous,random --json " +
                                   out);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("shadow:int4"), std::string::npos) << r.output;  // the table
  const nlohmann::json j = nlohmann::json::parse(test::read_file(out));
  EXPECT_EQ(j["prompts"], 3);
  EXPECT_EQ(j["tokens_per_prompt"], 12);
  ASSERT_EQ(j["results"].size(), 5u);
  for (const auto& res : j["results"]) {
    for (const char* k : {"label", "name", "recall", "precision", "mean_lead_layers", "ready_fraction", "lead_histogram",
                          "per_layer", "recall_by_token", "decode_steps", "decode_activated", "decode_tokens_per_second"})
      EXPECT_TRUE(res.contains(k)) << res["label"] << " lacks " << k;
    EXPECT_EQ(res["decode_steps"], 36);
    EXPECT_EQ(res["per_layer"].size(), 6u);
    for (const auto& l : res["per_layer"])
      for (const char* k : {"recall", "precision", "mean_lead_layers", "ready_fraction"}) EXPECT_TRUE(l.contains(k));
    const double rc = res["recall"];
    EXPECT_GE(rc, 0.0);
    EXPECT_LE(rc, 1.0);
  }
  EXPECT_EQ(j["results"][0]["recall"], 1.0);
  EXPECT_TRUE(j["results"][0].contains("shadow_weight_bytes"));
  EXPECT_GT(j["results"][1]["recall"].get<double>(), j["results"][4]["recall"].get<double>());  // int4 shadow > random
  // gate-ahead cannot predict layer 0 of a token: nothing to look ahead from.
  EXPECT_EQ(j["results"][2]["per_layer"][0]["predicted"], 0);
  // Bad input.
  const auto bad = test::run_command(kOdmoe + " eval-predictor --model " + tmp_->str("f32") + " --prompts " +
                                     tmp_->str("missing.jsonl") + " --tokens 2");
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.output.find("missing.jsonl"), std::string::npos) << bad.output;
  const auto bad2 = test::run_command(kOdmoe + " eval-predictor --model " + tmp_->str("f32") + " --predictors shadow:f16,magic");
  EXPECT_EQ(bad2.status, 2) << bad2.output;
}

// The ledger's arithmetic on a hand-made timeline: 2 layers, ready lead 1.
TEST(PredictionLedger, RecallPrecisionAndLead) {
  PredictionLedger led(2, 4, 1);
  led.begin_step(0, false);  // prefill: not accounted
  led.routed(0, {0, 1, 2, 3});
  led.layer_done(1.0);
  led.routed(1, {0, 1, 2, 3});
  // During the prompt's last layer, predictions for the first decode step (step 1).
  EXPECT_TRUE(led.publish({1, 0, {2, 3}, 1.5}));
  EXPECT_TRUE(led.publish({1, 1, {1, 0, 3}, 1.6}, 2));  // capacity 2: {1, 0}
  led.layer_done(2.0);
  led.begin_step(1, true);
  EXPECT_EQ(led.predicted(1, 1), (std::vector<int32_t>{1, 0}));
  led.routed(0, {2, 0});  // hit 2 (lead: layer 2 - 1 done at t=1.5 = 1), miss 0
  EXPECT_FALSE(led.publish({1, 0, {0}, 2.1}));  // routed already: too late
  led.layer_done(3.0);
  led.routed(1, {0, 1});  // both hits, lead 3 - 1 = 2
  led.layer_done(4.0);
  const nlohmann::json j = led.to_json(1);
  EXPECT_EQ(j["decode_activated"], 4);
  EXPECT_EQ(j["hits"], 3);
  EXPECT_DOUBLE_EQ(j["recall"].get<double>(), 0.75);
  EXPECT_DOUBLE_EQ(j["precision"].get<double>(), 0.75);  // 3 of the 4 predicted were used
  EXPECT_DOUBLE_EQ(j["mean_lead_layers"].get<double>(), (1.0 + 2 + 2) / 3);
  EXPECT_DOUBLE_EQ(j["ready_fraction"].get<double>(), 1.0);
  EXPECT_EQ(j["lead_histogram"]["1"], 1);
  EXPECT_EQ(j["lead_histogram"]["2"], 1);
  EXPECT_EQ(j["per_layer"][0]["misses"], 1);
  ASSERT_EQ(j["recall_by_token"].size(), 1u);
  EXPECT_DOUBLE_EQ(j["recall_by_token"][0]["recall"].get<double>(), 0.75);
}

}  // namespace
}  // namespace odmoe
