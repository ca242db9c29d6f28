// The bundled model (weights-tools/models/shakespeare-mixtral) end to end: converted by
// odmoe-weights, its logits against transformers, quantized perplexity against f32 on
// held-out text, and `odmoe generate` / `logits` as a user runs them.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "odmoe/backend/cpu_backend.h"
#include "odmoe/runtime/local_engine.h"
#include "odmoe/runtime/perplexity.h"
#include "odmoe/tokenizer/tokenizer.h"
#include "odmoe/weights/h5_file.h"
#include "test_util.h"

namespace odmoe {
namespace {

const std::string kWeights = ODMOE_WEIGHTS_BIN;
#ifdef ODMOE_CHILD_ENV
const std::string kOdmoe = std::string(ODMOE_CHILD_ENV) + " " + ODMOE_CLI_BIN;
#else
const std::string kOdmoe = ODMOE_CLI_BIN;
#endif
const std::string kModelSrc = std::string(ODMOE_SOURCE_DIR) + "/weights-tools/models/shakespeare-mixtral";

// One conversion per dtype for the whole suite.
class Bundled : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new test::TempDir();
    for (const char* dt : {"f32", "bf16", "int8", "int4"}) {
      const auto r = test::run_command(kWeights + " convert " + kModelSrc + " " + dir(dt) + " --dtype " + dt);
      ASSERT_EQ(r.status, 0) << r.output;
    }
  }
  static void TearDownTestSuite() { delete tmp_; }
  static std::string dir(const std::string& dtype) { return tmp_->str("shakespeare-" + dtype); }
  static test::TempDir* tmp_;
};
test::TempDir* Bundled::tmp_ = nullptr;

TEST_F(Bundled, LogitsMatchTransformers) {
  const auto g = nlohmann::json::parse(test::read_file(test::data_dir() + "/golden/shakespeare-mixtral.json"));
  const auto ids = g["token_ids"].get<std::vector<int32_t>>();
  const auto positions = g["positions"].get<std::vector<size_t>>();
  const auto want = g["logits"].get<std::vector<std::vector<float>>>();
  // bf16 checkpoint: the bf16 and f32 conversions hold exactly the weights transformers upcasts.
  for (const char* dt : {"bf16", "f32"}) {
    LocalEngine eng(dir(dt));
    Model& model = eng.model;
    std::vector<float> logits;
    model.forward(ids.data(), ids.size(), true, &logits);
    const size_t V = 2048;
    for (size_t i = 0; i < positions.size(); ++i) {
      float max_err = 0;
      for (size_t v = 0; v < V; ++v) max_err = std::max(max_err, std::fabs(logits[positions[i] * V + v] - want[i][v]));
      // 6 layers of f32 arithmetic in another order than PyTorch: see test_model_golden.cpp.
      EXPECT_LE(max_err, 1e-4f) << dt << " position " << positions[i];
    }
    model.reset();
    const auto prompt = g["greedy_prompt"].get<std::vector<int32_t>>();
    model.forward(prompt.data(), prompt.size(), false, &logits);
    std::vector<int32_t> out;
    for (size_t i = 0; i < g["greedy_tokens"].size(); ++i) {
      const auto next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      out.push_back(next);
      model.forward(&next, 1, false, &logits);
    }
    EXPECT_EQ(out, g["greedy_tokens"].get<std::vector<int32_t>>()) << dt;
  }
}

TEST_F(Bundled, QuantizedPerplexityOnHeldOutText) {
  const std::string text = test::read_file(test::data_dir() + "/shakespeare_heldout_excerpt.txt");
  std::map<std::string, double> ppl;
  for (const char* dt : {"f32", "bf16", "int8", "int4"}) {
    LocalEngine eng(dir(dt), 0, 256);
    const Tokenizer tok = Tokenizer::from_json(eng.files.tokenizer_json());
    ppl[dt] = evaluate_perplexity(eng.model, tok.encode(text, false), 256).perplexity;
    std::printf("[   INFO   ] perplexity %-5s %.4f\n", dt, ppl[dt]);
    RecordProperty(std::string("perplexity_") + dt, std::to_string(ppl[dt]));
  }
  EXPECT_GT(ppl["f32"], 10);  // a trained model, not a random one (random: ~2048)
  EXPECT_LT(ppl["f32"], 200);
  EXPECT_NEAR(ppl["bf16"], ppl["f32"], 1e-3 * ppl["f32"]) << "bf16 holds the checkpoint's exact weights";
  EXPECT_LE(std::fabs(ppl["int8"] / ppl["f32"] - 1), 0.01) << "int8 within 1% of f32";
  EXPECT_LE(ppl["int4"] / ppl["f32"] - 1, 0.15) << "int4 (group 32) within 15% of f32";
}

TEST_F(Bundled, GenerateAsAUserRunsIt) {
  const std::string stats = tmp_->str("stats.json");
  auto r = test::run_command(kOdmoe + " generate --model " + dir("bf16") +
                             " --prompt 'ROMEO:' --max-new-tokens 24 --stats-json " + stats);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.rfind("ROMEO:", 0), 0u) << "output starts with the prompt:\n" << r.output;
  EXPECT_GT(r.output.size(), 40u) << r.output;
  const auto j = nlohmann::json::parse(test::read_file(stats));
  EXPECT_EQ(j["generated_tokens"].get<int>(), 24);
  EXPECT_GT(j["decode_tokens_per_second"].get<double>(), 0);
  EXPECT_GT(j["prefill_tokens_per_second"].get<double>(), 0);
  EXPECT_GT(j["ranks"][0]["peak_host_bytes"].get<double>(), 0);
  // Greedy is deterministic; sampling with a seed is reproducible.
  auto again = test::run_command(kOdmoe + " generate --model " + dir("bf16") + " --prompt 'ROMEO:' --max-new-tokens 24");
  EXPECT_EQ(r.output.substr(0, r.output.find("[odmoe]")), again.output.substr(0, again.output.find("[odmoe]")));
  const std::string sample = " generate --model " + dir("bf16") +
                             " --prompt 'KING:' --max-new-tokens 16 --temperature 0.9 --top-p 0.9 --top-k 50 --seed 7";
  EXPECT_EQ(test::run_command(kOdmoe + sample).output.substr(0, 40), test::run_command(kOdmoe + sample).output.substr(0, 40));
}

void expect_failure(const test::CommandResult& r, const std::string& words) {
  EXPECT_TRUE(r.exited) << r.output;
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find(words), std::string::npos) << "expected '" << words << "' in:\n" << r.output;
}

TEST_F(Bundled, BadInputGetsAClearError) {
  const std::string gen = kOdmoe + " generate --model " + dir("int8");
  expect_failure(test::run_command(gen + " --prompt ''"), "the prompt is empty");
  expect_failure(test::run_command(gen + " --prompt \"$(printf 'abc\\377\\376')\""), "not valid UTF-8 (bad byte at offset 3)");
  std::string long_prompt;
  for (int i = 0; i < 400; ++i) long_prompt += "ROMEO and JULIET ";
  expect_failure(test::run_command(gen + " --n-ctx 128 --prompt '" + long_prompt + "'"), "the context holds 128");
  expect_failure(test::run_command(kOdmoe + " logits --model " + dir("int8") + " --token-ids 1,2,5000"),
                 "token id 5000 is outside the vocabulary [0, 2048)");
  expect_failure(test::run_command(kOdmoe + " generate --model " + tmp_->str("nope") + " --prompt hi"),
                 "does not exist");
  auto r = test::run_command(gen + " --prompt hi --temperature -1");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("--temperature must be >= 0"), std::string::npos) << r.output;
  r = test::run_command(kOdmoe + " logits --model " + dir("int8") + " --token-ids 1,x");
  EXPECT_EQ(r.status, 2) << r.output;
  // A model directory of another format version.
  std::filesystem::copy(dir("int4"), tmp_->str("v2"), std::filesystem::copy_options::recursive);
  hid_t f = H5Fopen(tmp_->str("v2/model.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  h5::set_attr_i32(f, layout::kAttrFormatVersion, 7);
  H5Fclose(f);
  expect_failure(test::run_command(kOdmoe + " generate --model " + tmp_->str("v2") + " --prompt hi"),
                 "weight format version 7");
}

TEST_F(Bundled, LogitsCommandMatchesTheLibrary) {
  const auto r = test::run_command(kOdmoe + " logits --model " + dir("f32") + " --token-ids 1,487,642,901,259");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  ASSERT_EQ(j["logits"].size(), 5u);
  ASSERT_EQ(j["logits"][4].size(), 2048u);
  LocalEngine eng(dir("f32"));
  std::vector<float> logits;
  const std::vector<int32_t> ids = {1, 487, 642, 901, 259};
  eng.model.forward(ids.data(), ids.size(), true, &logits);
  for (size_t v = 0; v < 2048; ++v) EXPECT_FLOAT_EQ(j["logits"][4][v].get<float>(), logits[4 * 2048 + v]);
}

}  // namespace
}  // namespace odmoe
