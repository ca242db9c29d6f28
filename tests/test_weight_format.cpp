// The weight format end to end: write a model whose every value says where it came from,
// read it back through HDF5 and through the memory-mapped byte range of each expert.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "odmoe/core/error.h"
#include "odmoe/core/mapped_file.h"
#include "odmoe/weights/h5_file.h"
#include "odmoe/weights/model_files.h"
#include "odmoe/weights/model_writer.h"
#include "test_util.h"

namespace odmoe {
namespace {
namespace fs = std::filesystem;
using layout::TensorKind;
using layout::TensorSpec;

const char* kConfig = R"({"architectures":["MixtralForCausalLM"],"vocab_size":64,"hidden_size":32,
  "intermediate_size":24,"num_hidden_layers":3,"num_attention_heads":2,"num_key_value_heads":1,
  "num_local_experts":5,"num_experts_per_tok":2,"max_position_embeddings":64,"rms_norm_eps":1e-5})";

int tensor_code(TensorKind k) {
  return k == TensorKind::kExpertGate ? 0 : k == TensorKind::kExpertUp ? 1 : k == TensorKind::kExpertDown ? 2 : 3;
}

// Expert values encode (layer, expert, tensor, index) exactly in f32: < 2^24.
float encoded_value(int l, int e, int t, size_t idx) {
  return static_cast<float>(((static_cast<size_t>(l) * 8 + static_cast<size_t>(e)) * 4 + static_cast<size_t>(t)) *
                                1024 +
                            idx);
}

ModelSource value_encoded_source() {
  ModelSource src;
  src.config = ModelConfig::from_hf_json_text(kConfig);
  src.config_json = kConfig;
  src.tokenizer_json = R"({"model":{"type":"BPE","vocab":{},"merges":[]}})";
  src.read = [](const TensorSpec& s, std::vector<float>* out) {
    out->resize(s.numel());
    for (size_t i = 0; i < out->size(); ++i)
      (*out)[i] = s.is_expert() ? encoded_value(s.layer_idx, s.expert_idx, tensor_code(s.kind), i)
                                : 0.001f * static_cast<float>(i % 1000) - 0.5f;
  };
  return src;
}

class WeightFormat : public ::testing::TestWithParam<DType> {};

TEST_P(WeightFormat, ExpertRangeThroughMmapEqualsH5Dread) {
  const DType dtype = GetParam();
  test::TempDir tmp;
  const ModelSource src = value_encoded_source();
  WriteOptions w;
  w.dtype = dtype;
  w.n_shard = 3;
  write_model_dir(src, tmp.str("m"), w);
  ASSERT_TRUE(validate_model_dir(tmp.str("m")).empty());

  ModelFiles mf(tmp.str("m"));
  const ModelConfig& c = mf.config();
  std::vector<std::unique_ptr<MappedFile>> maps;
  for (int i = 0; i < mf.n_shard(); ++i) maps.push_back(std::make_unique<MappedFile>(mf.shard_path(i)));
  std::vector<float> want, got;
  for (int l = 0; l < c.n_layer; ++l) {
    for (int e = 0; e < c.n_expert; ++e) {
      const ExpertExtent x = mf.expert_extent(l, e);
      EXPECT_EQ(x.shard_idx, (l * c.n_expert + e) % 3);
      EXPECT_EQ(x.offset % layout::kAlignment, 0u) << "expert range must be 4096-aligned";
      const uint8_t* range = maps[static_cast<size_t>(x.shard_idx)]->data();
      const auto specs = layout::expert_tensor_specs(c, l, e);
      for (int t = 0; t < 3; ++t) {
        const TensorSpec& s = specs[static_cast<size_t>(t)];
        // Every dataset of the expert lies inside its one byte range.
        ASSERT_GE(x.data[t].offset, x.offset);
        ASSERT_LE(x.data[t].offset + x.data[t].bytes, x.offset + x.bytes);
        const EncodedTensor h5 = mf.read_tensor(s);
        ASSERT_EQ(h5.data.size(), x.data[t].bytes);
        EXPECT_EQ(0, std::memcmp(range + x.data[t].offset, h5.data.data(), h5.data.size()))
            << "mmap bytes differ from H5Dread for " << s.path;
        if (is_quantized(dtype)) {
          ASSERT_EQ(h5.scales.size() * 4, x.scales[t].bytes);
          EXPECT_EQ(0, std::memcmp(range + x.scales[t].offset, h5.scales.data(), x.scales[t].bytes));
        }
        // Decode straight from the mapped bytes.
        got.resize(s.numel());
        decode_rows(dtype, s.cols(), range + x.data[t].offset,
                    reinterpret_cast<const float*>(range + x.scales[t].offset), 0, s.rows(), got.data());
        src.read(s, &want);
        if (dtype == DType::kF32) {
          for (size_t i = 0; i < got.size(); ++i)
            ASSERT_EQ(got[i], encoded_value(l, e, t, i)) << "expert (" << l << ", " << e << ") tensor " << t
                                                         << " index " << i;
        } else {
          EncodedTensor ref;
          encode_tensor(want.data(), s.rows(), s.cols(), dtype, &ref);
          std::vector<float> ref_dec(s.numel());
          decode_tensor(ref, ref_dec.data());
          EXPECT_EQ(0, std::memcmp(ref_dec.data(), got.data(), got.size() * 4)) << s.path;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, WeightFormat,
                         ::testing::Values(DType::kF32, DType::kBF16, DType::kF16, DType::kInt8, DType::kInt4),
                         [](const auto& param_info) { return std::string(dtype_name(param_info.param)); });

TEST(WeightFormatFiles, RootAttributesAndVerbatimJson) {
  test::TempDir tmp;
  const ModelSource src = value_encoded_source();
  WriteOptions w;
  w.shadow_dtype = DType::kInt4;
  write_model_dir(src, tmp.str("m"), w);
  ModelFiles mf(tmp.str("m"));
  EXPECT_EQ(mf.hf_config_json(), src.config_json);
  EXPECT_EQ(mf.tokenizer_json(), src.tokenizer_json);
  EXPECT_EQ(mf.header().kind, "model");
  EXPECT_TRUE(mf.has_shadow());
  const TensorSpec s = layout::expert_tensor_specs(mf.config(), 2, 4)[2];
  EXPECT_EQ(mf.read_shadow_tensor(s).dtype, DType::kInt4);
  // bf16 is stored as little-endian uint16 (DESIGN.md: a native conversion corrupts it).
  h5::Handle d = h5::open_dataset(mf.model_file(), "/layers/0/attn/q");
  const h5::DatasetInfo info = h5::dataset_info(d.get());
  EXPECT_EQ(info.type_class, H5T_INTEGER);
  EXPECT_EQ(info.type_size, 2u);
  EXPECT_EQ(info.sign, H5T_SGN_NONE);
  EXPECT_EQ(h5::get_attr_string(d.get(), layout::kAttrDtype).value(), "bf16");
}

TEST(WeightFormatFiles, FailedWriteLeavesNothing) {
  test::TempDir tmp;
  ModelSource src = value_encoded_source();
  int calls = 0;
  auto inner = src.read;
  src.read = [&](const TensorSpec& s, std::vector<float>* out) {
    if (++calls == 40) throw std::runtime_error("source failed half-way");
    inner(s, out);
  };
  EXPECT_THROW(write_model_dir(src, tmp.str("new"), WriteOptions{}), std::runtime_error);
  EXPECT_FALSE(fs::exists(tmp.str("new"))) << "a directory the writer created is removed on failure";

  fs::create_directories(tmp.str("existing"));
  calls = 0;
  EXPECT_THROW(write_model_dir(src, tmp.str("existing"), WriteOptions{}), std::runtime_error);
  EXPECT_TRUE(fs::is_empty(tmp.str("existing"))) << "no temporary or partial file is left";
}

TEST(WeightFormatFiles, RefusesToOverwriteUnlessAsked) {
  test::TempDir tmp;
  const ModelSource src = value_encoded_source();
  WriteOptions w;
  w.n_shard = 4;
  w.shadow_dtype = DType::kInt8;
  write_model_dir(src, tmp.str("m"), w);
  EXPECT_THROW(write_model_dir(src, tmp.str("m"), w), Error);
  w.overwrite = true;
  w.n_shard = 2;
  w.shadow_dtype.reset();
  write_model_dir(src, tmp.str("m"), w);
  // Old shards of another count and the old shadow are gone; the directory validates.
  EXPECT_FALSE(fs::exists(tmp.str("m/experts-00000-of-00004.h5")));
  EXPECT_FALSE(fs::exists(tmp.str("m/shadow.h5")));
  EXPECT_TRUE(validate_model_dir(tmp.str("m")).empty());
}

TEST(WeightFormatFiles, ValidateCatchesAFlippedByteAndAWrongVersion) {
  test::TempDir tmp;
  write_model_dir(value_encoded_source(), tmp.str("m"), WriteOptions{});
  {
    ModelFiles mf(tmp.str("m"));
    const ExpertExtent x = mf.expert_extent(1, 3);
    std::fstream f(mf.shard_path(x.shard_idx), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(x.data[1].offset + 17));
    char b = 0;
    f.read(&b, 1);
    f.seekp(static_cast<std::streamoff>(x.data[1].offset + 17));
    b = static_cast<char>(b ^ 0x10);
    f.write(&b, 1);
  }
  const auto problems = validate_model_dir(tmp.str("m"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("checksum mismatch in /layers/1/experts/3/up"), std::string::npos) << problems[0];
  {
    ModelFiles mf(tmp.str("m"));
    EXPECT_THROW(mf.read_tensor(layout::expert_tensor_specs(mf.config(), 1, 3)[1]), Error);
  }
  // Rewrite the version attribute of model.h5.
  {
    hid_t f = H5Fopen(tmp.str("m/model.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    h5::set_attr_i32(f, layout::kAttrFormatVersion, 99);
    H5Fclose(f);
  }
  try {
    ModelFiles mf(tmp.str("m"));
    FAIL() << "opened a version-99 model";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("version 99"), std::string::npos) << e.message();
    EXPECT_NE(e.hint().find("re-convert"), std::string::npos) << e.hint();
  }
}

TEST(SynthShapes, Mixtral8x7bExpertsHaveTheRealShapes) {
  const ModelSource src = synth_source(*synth_arch_config_json("mixtral-8x7b"), 1, 1);
  const auto specs = layout::expert_tensor_specs(src.config, 0, 7);
  EXPECT_EQ(specs[0].shape, (std::vector<size_t>{14336, 4096}));
  EXPECT_EQ(specs[1].shape, (std::vector<size_t>{14336, 4096}));
  EXPECT_EQ(specs[2].shape, (std::vector<size_t>{4096, 14336}));
  EXPECT_EQ(src.config.n_layer, 1);
  EXPECT_EQ(src.config.n_expert, 8);
  const ModelSource qwen = synth_source(*synth_arch_config_json("qwen3-30b-a3b"), 2, 1);
  EXPECT_EQ(layout::expert_tensor_specs(qwen.config, 1, 127)[0].shape, (std::vector<size_t>{768, 2048}));
  const ModelSource olmoe = synth_source(*synth_arch_config_json("olmoe-1b-7b"), 0, 1);
  EXPECT_EQ(olmoe.config.n_layer, 16);
  EXPECT_EQ(layout::expert_tensor_specs(olmoe.config, 15, 63)[2].shape, (std::vector<size_t>{2048, 1024}));
}

}  // namespace
}  // namespace odmoe
