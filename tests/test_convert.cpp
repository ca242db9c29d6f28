// Converting the Hugging Face fixtures (tests/data/hf, made by transformers) and comparing
// every tensor with checksums computed by the `safetensors` library
// (tests/fixtures/make_tensor_reference.py), then every dtype against the f32 conversion.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "odmoe/weights/hf_checkpoint.h"
#include "odmoe/weights/model_files.h"
#include "odmoe/weights/model_writer.h"
#include "convert_util.h"

namespace odmoe {
namespace {
using layout::TensorSpec;

std::vector<TensorSpec> all_specs(const ModelConfig& c) {
  auto specs = layout::dense_tensor_specs(c);
  for (int l = 0; l < c.n_layer; ++l)
    for (int e = 0; e < c.n_expert; ++e)
      for (auto& s : layout::expert_tensor_specs(c, l, e)) specs.push_back(s);
  return specs;
}

std::vector<float> decoded(const ModelFiles& mf, const TensorSpec& s) {
  const EncodedTensor t = mf.read_tensor(s);
  std::vector<float> v(s.numel());
  decode_tensor(t, v.data());
  return v;
}

void convert(const std::string& fixture, const std::string& out, DType dtype, int shards,
             std::optional<DType> shadow = std::nullopt) {
  test::convert_fixture(fixture, out, dtype, shards, shadow);
}

class ConvertFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(ConvertFixture, F32MatchesTheSafetensorsLibrary) {
  test::TempDir tmp;
  convert(GetParam(), tmp.str("f32"), DType::kF32, 2, DType::kInt8);
  EXPECT_EQ(validate_model_dir(tmp.str("f32")), std::vector<std::string>{});
  ModelFiles mf(tmp.str("f32"));
  const auto ref = nlohmann::json::parse(test::read_file(test::data_dir() + "/hf/" + GetParam() + "/reference.json"));
  EXPECT_EQ(ref["architecture"].get<std::string>(), arch_hf_name(mf.config().arch));
  const auto specs = all_specs(mf.config());
  EXPECT_EQ(specs.size(), ref["tensors"].size()) << "every tensor of the checkpoint is converted, nothing more";
  for (const TensorSpec& s : specs) {
    ASSERT_TRUE(ref["tensors"].contains(s.path)) << s.path << " has no reference";
    const auto& r = ref["tensors"][s.path];
    const auto v = decoded(mf, s);
    std::vector<size_t> shape = r["shape"].get<std::vector<size_t>>();
    if (shape.size() == 2 && shape[0] == 1 && s.shape.size() == 2) shape = {1, shape[1]};
    EXPECT_EQ(shape, s.shape) << s.path;
    double sum = 0, abs_sum = 0, wsum = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      sum += v[i];
      abs_sum += std::fabs(v[i]);
      wsum += static_cast<double>(v[i]) * static_cast<double>(i % 97 + 1);
    }
    // Same f32 values summed in double: only the order of additions may differ.
    const double tol = 1e-9 * r["abs_sum"].get<double>() * 100 + 1e-12;
    EXPECT_NEAR(sum, r["sum"].get<double>(), tol) << s.path;
    EXPECT_NEAR(abs_sum, r["abs_sum"].get<double>(), tol) << s.path;
    EXPECT_NEAR(wsum, r["weighted_sum"].get<double>(), tol * 100) << s.path;
  }
}

TEST_P(ConvertFixture, EveryDtypeAgainstF32) {
  test::TempDir tmp;
  convert(GetParam(), tmp.str("f32"), DType::kF32, 1);
  ModelFiles ref(tmp.str("f32"));
  const std::string src_dtype = ref.config().source_dtype;
  for (DType dt : {DType::kBF16, DType::kF16, DType::kInt8, DType::kInt4}) {
    const std::string out = tmp.str(dtype_name(dt));
    convert(GetParam(), out, dt, 3);
    ASSERT_EQ(validate_model_dir(out), std::vector<std::string>{}) << dtype_name(dt);
    ModelFiles mf(out);
    for (const TensorSpec& s : all_specs(mf.config())) {
      const auto want = decoded(ref, s);
      const auto got = decoded(mf, s);
      const DType stored = layout::stored_dtype(s, dt);
      // A checkpoint already in bf16 (f16) converts to bf16 (f16) bit-exactly.
      const bool exact = stored == DType::kF32 || (stored == DType::kBF16 && src_dtype == "bfloat16") ||
                         (stored == DType::kF16 && src_dtype == "float16");
      const size_t group = stored == DType::kInt8 ? s.cols() : static_cast<size_t>(kInt4Group);
      for (size_t r = 0; r < s.rows(); ++r) {
        for (size_t c0 = 0; c0 < s.cols(); c0 += group) {
          const size_t c1 = std::min(s.cols(), c0 + group);
          float amax = 0;
          for (size_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(want[r * s.cols() + c]));
          for (size_t c = c0; c < c1; ++c) {
            const size_t i = r * s.cols() + c;
            float bound = 0;  // why: round to nearest of each format
            if (exact) bound = 0;
            else if (stored == DType::kBF16) bound = std::ldexp(std::fabs(want[i]), -8);   // half ulp: 2^-9 relative
            else if (stored == DType::kF16) bound = std::ldexp(std::fabs(want[i]), -11) + 6e-8f;  // + subnormal step
            else if (stored == DType::kInt8) bound = amax / 127 / 2 * 1.0001f;
            else bound = amax / 7 / 2 * 1.0001f;
            ASSERT_LE(std::fabs(got[i] - want[i]), bound)
                << GetParam() << " " << dtype_name(dt) << " " << s.path << " element " << i;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ConvertFixture,
                         ::testing::Values("mixtral", "mixtral_fused", "qwen3_moe", "olmoe", "qwen2_moe"));

TEST(ConvertFixtures, FusedAndPerExpertLayoutsGiveTheSameModel) {
  test::TempDir tmp;
  convert("mixtral", tmp.str("a"), DType::kF32, 1);
  convert("mixtral_fused", tmp.str("b"), DType::kF32, 1);
  ModelFiles a(tmp.str("a")), b(tmp.str("b"));
  for (const TensorSpec& s : all_specs(a.config())) EXPECT_EQ(a.read_tensor(s).data, b.read_tensor(s).data) << s.path;
}

TEST(ConvertFixtures, ArchitectureDifferencesAreRead) {
  HfCheckpoint q3(test::data_dir() + "/hf/qwen3_moe");
  EXPECT_EQ(q3.config().qk_norm, QkNorm::kPerHead);
  EXPECT_EQ(q3.config().head_dim, 16);
  EXPECT_EQ(q3.config().n_expert_used, 3);
  EXPECT_TRUE(q3.config().norm_topk_prob);
  HfCheckpoint ol(test::data_dir() + "/hf/olmoe");
  EXPECT_EQ(ol.config().qk_norm, QkNorm::kFull);
  EXPECT_FALSE(ol.config().norm_topk_prob);
  HfCheckpoint q2(test::data_dir() + "/hf/qwen2_moe");
  EXPECT_TRUE(q2.config().attn_qkv_bias);
  EXPECT_EQ(q2.config().n_ff_shared, 40);
  EXPECT_TRUE(q2.config().shared_expert_gate);
  HfCheckpoint mf(test::data_dir() + "/hf/mixtral_fused");  // transformers-5 config spelling
  EXPECT_EQ(mf.config().rope_theta, 50000.0);
  EXPECT_EQ(mf.config().head_dim, 8);
}

}  // namespace
}  // namespace odmoe
