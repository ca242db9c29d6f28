// The single-process engine against Hugging Face transformers: logits of tiny random
// checkpoints of all four architectures (tests/data/golden, made by
// tests/fixtures/make_golden_logits.py) and transformers' greedy continuation.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "convert_util.h"
#include "odmoe/backend/cpu_backend.h"
#include "odmoe/core/error.h"
#include "odmoe/runtime/local_engine.h"

namespace odmoe {
namespace {

struct Golden {
  std::vector<int32_t> ids;
  std::vector<int> positions;
  std::vector<std::vector<float>> logits;
  std::vector<int32_t> argmax, greedy_prompt, greedy_tokens;
};

Golden load_golden(const std::string& name) {
  const auto j = nlohmann::json::parse(test::read_file(test::data_dir() + "/golden/" + name + ".json"));
  return {j["token_ids"].get<std::vector<int32_t>>(), j["positions"].get<std::vector<int>>(),
          j["logits"].get<std::vector<std::vector<float>>>(), j["argmax"].get<std::vector<int32_t>>(),
          j["greedy_prompt"].get<std::vector<int32_t>>(), j["greedy_tokens"].get<std::vector<int32_t>>()};
}

// f32 weights, f32 accumulation in another order than PyTorch's: 1e-4 absolute on logits
// of magnitude ~1-10 leaves room for the accumulated rounding of 2 layers, and is far
// below what any wrong op (a missing norm, a swapped rotation) produces.
constexpr float kTol = 1e-4f;

void expect_logits(const Golden& g, const std::vector<float>& all, size_t vocab, const std::string& what) {
  for (size_t pi = 0; pi < g.positions.size(); ++pi) {
    const size_t p = static_cast<size_t>(g.positions[pi]);
    float max_err = 0;
    size_t worst = 0;
    for (size_t v = 0; v < vocab; ++v) {
      const float got = all[p * vocab + v];
      ASSERT_TRUE(std::isfinite(got)) << what << " position " << p;
      const float err = std::fabs(got - g.logits[pi][v]);
      if (err > max_err) max_err = err, worst = v;
    }
    EXPECT_LE(max_err, kTol) << what << ": position " << p << " token " << worst << " got " << all[p * vocab + worst]
                             << " want " << g.logits[pi][worst];
  }
}

// Each test: the fixture's golden data and its f32 conversion loaded in a LocalEngine.
class Golden4Arch : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    g = load_golden(GetParam());
    test::convert_fixture(GetParam(), tmp.str("m"), DType::kF32);
    eng = std::make_unique<LocalEngine>(tmp.str("m"));
  }
  Golden g;
  test::TempDir tmp;
  std::unique_ptr<LocalEngine> eng;
};

TEST_P(Golden4Arch, PrefillLogitsMatchTransformers) {
  Model& model = eng->model;
  std::vector<float> logits;
  model.forward(g.ids.data(), g.ids.size(), true, &logits);
  const size_t V = static_cast<size_t>(model.config().vocab_size);
  expect_logits(g, logits, V, "prefill");
  for (size_t t = 0; t < g.ids.size(); ++t) {
    const auto best = std::max_element(logits.begin() + static_cast<long>(t * V), logits.begin() + static_cast<long>((t + 1) * V));
    EXPECT_EQ(best - (logits.begin() + static_cast<long>(t * V)), g.argmax[t]) << "argmax at position " << t;
  }
}

TEST_P(Golden4Arch, DecodeOneTokenAtATimeMatchesToo) {
  Model& model = eng->model;
  const size_t V = static_cast<size_t>(model.config().vocab_size);
  // A prompt of 33 in one batch, then every further token alone through the KV cache.
  std::vector<float> all(g.ids.size() * V), step;
  model.forward(g.ids.data(), 33, true, &step);
  std::copy(step.begin(), step.end(), all.begin());
  for (size_t t = 33; t < g.ids.size(); ++t) {
    model.forward(&g.ids[t], 1, false, &step);
    std::copy(step.begin(), step.end(), all.begin() + static_cast<long>(t * V));
  }
  expect_logits(g, all, V, "decode");
}

TEST_P(Golden4Arch, GreedyContinuationEqualsTransformersGenerate) {
  Model& model = eng->model;
  std::vector<float> logits;
  model.forward(g.greedy_prompt.data(), g.greedy_prompt.size(), false, &logits);
  std::vector<int32_t> out;
  for (size_t i = 0; i < g.greedy_tokens.size(); ++i) {
    const auto next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(next);
    model.forward(&next, 1, false, &logits);
  }
  EXPECT_EQ(out, g.greedy_tokens);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Golden4Arch, ::testing::Values("mixtral", "qwen3_moe", "olmoe", "qwen2_moe"));

TEST(ModelInput, RejectsBadTokensAndAFullContext) {
  test::TempDir tmp;
  test::convert_fixture("mixtral", tmp.str("m"), DType::kF32);
  LocalEngine eng(tmp.str("m"), 0, 16);
  Model& model = eng.model;
  std::vector<float> logits;
  const int32_t bad[2] = {5, 320};
  EXPECT_THROW(model.forward(bad, 2, false, &logits), Error);
  const int32_t neg = -1;
  EXPECT_THROW(model.forward(&neg, 1, false, &logits), Error);
  std::vector<int32_t> many(17, 3);
  try {
    model.forward(many.data(), many.size(), false, &logits);
    FAIL() << "17 tokens in a 16-position context";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("context holds 16 positions"), std::string::npos) << e.message();
  }
}

}  // namespace
}  // namespace odmoe
