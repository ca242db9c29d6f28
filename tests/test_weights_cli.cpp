// odmoe-weights as a user runs it: bad input gives a clear message, an ordinary exit
// status 1 (never a crash or abort) and no output left behind.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "odmoe/weights/h5_file.h"
#include "odmoe/weights/model_files.h"
#include "test_util.h"

namespace odmoe {
namespace {
namespace fs = std::filesystem;

const std::string kBin = ODMOE_WEIGHTS_BIN;

std::string fixture(const std::string& name) { return test::data_dir() + "/hf/" + name; }

// A private copy of a fixture that a test can damage.
std::string copy_fixture(const test::TempDir& tmp, const std::string& name) {
  const std::string dst = tmp.str("ckpt-" + name);
  fs::copy(fixture(name), dst, fs::copy_options::recursive);
  return dst;
}

void expect_failure(const test::CommandResult& r, const std::string& words) {
  EXPECT_TRUE(r.exited) << "killed by a signal:\n" << r.output;
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find(words), std::string::npos) << "expected '" << words << "' in:\n" << r.output;
  EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
}

test::CommandResult convert(const std::string& in, const std::string& out, const std::string& extra = "") {
  return test::run_command(kBin + " convert '" + in + "' '" + out + "' " + extra);
}

void json_edit(const std::string& path, const std::function<void(nlohmann::json&)>& f) {
  auto j = nlohmann::json::parse(test::read_file(path));
  f(j);
  test::write_file(path, j.dump());
}

TEST(WeightsCli, ConvertsInspectsAndValidatesEveryArchitecture) {
  test::TempDir tmp;
  for (const char* name : {"mixtral", "qwen3_moe", "olmoe", "qwen2_moe", "mixtral_fused"}) {
    const std::string out = tmp.str(name);
    auto r = convert(fixture(name), out, "--dtype int8 --shards 2 --shadow int4");
    ASSERT_EQ(r.status, 0) << r.output;
    r = test::run_command(kBin + " validate " + out);
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("valid"), std::string::npos);
    r = test::run_command(kBin + " inspect " + out + " --tensors");
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("experts-00001-of-00002.h5"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("shadow.h5"), std::string::npos) << r.output;
  }
}

TEST(WeightsCli, TruncatedSafetensors) {
  test::TempDir tmp;
  const std::string ck = copy_fixture(tmp, "mixtral");
  fs::resize_file(ck + "/model.safetensors", fs::file_size(ck + "/model.safetensors") - 100);
  expect_failure(convert(ck, tmp.str("out")), "outside the data section");
  EXPECT_FALSE(fs::exists(tmp.str("out")));
}

TEST(WeightsCli, HeaderLengthThatLies) {
  test::TempDir tmp;
  const std::string ck = copy_fixture(tmp, "olmoe");
  std::fstream f(ck + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
  const char big[8] = {0, 0, 0, 0, 0, 1, 0, 0};  // 2^40
  f.write(big, 8);
  f.close();
  expect_failure(convert(ck, tmp.str("out")), "header length");
  EXPECT_FALSE(fs::exists(tmp.str("out")));
}

TEST(WeightsCli, ShapeThatDisagreesWithConfig) {
  test::TempDir tmp;
  const std::string ck = copy_fixture(tmp, "qwen3_moe");
  json_edit(ck + "/config.json", [](auto& j) { j["moe_intermediate_size"] = 28; });
  expect_failure(convert(ck, tmp.str("out")), "config.json implies [28, 40]");
  EXPECT_FALSE(fs::exists(tmp.str("out")));
}

TEST(WeightsCli, MissingTensor) {
  test::TempDir tmp;
  const std::string ck = copy_fixture(tmp, "mixtral");
  // Rename one tensor in the header in place (same length): the file stays valid but lacks it.
  std::string bytes = test::read_file(ck + "/model.safetensors");
  const auto pos = bytes.find("model.layers.1.block_sparse_moe.experts.3.w2.weight");
  ASSERT_NE(pos, std::string::npos);
  bytes.replace(pos, 6, "MODEL.");
  test::write_file(ck + "/model.safetensors", bytes);
  expect_failure(convert(ck, tmp.str("out")), "has neither model.layers.1.block_sparse_moe.experts.3.w2.weight");
  EXPECT_FALSE(fs::exists(tmp.str("out")));
}

TEST(WeightsCli, MissingShardFile) {
  test::TempDir tmp;
  const std::string ck = copy_fixture(tmp, "qwen2_moe");
  fs::remove(ck + "/model-00002-of-00002.safetensors");
  expect_failure(convert(ck, tmp.str("out")), "model-00002-of-00002.safetensors is missing");
}

TEST(WeightsCli, UnknownArchitectureAndImpossibleConfig) {
  test::TempDir tmp;
  const std::string ck = copy_fixture(tmp, "mixtral");
  json_edit(ck + "/config.json", [](auto& j) { j["architectures"] = {"GPT2LMHeadModel"}; });
  expect_failure(convert(ck, tmp.str("out")), "unsupported architecture 'GPT2LMHeadModel'");
  json_edit(ck + "/config.json", [](auto& j) {
    j["architectures"] = {"MixtralForCausalLM"};
    j["num_experts_per_tok"] = 9;
  });
  expect_failure(convert(ck, tmp.str("out")), "num_experts_per_tok = 9 is larger than the number of experts 4");
  json_edit(ck + "/config.json", [](auto& j) {
    j["num_experts_per_tok"] = 2;
    j["num_key_value_heads"] = 2;
  });
  expect_failure(convert(ck, tmp.str("out")), "not a multiple of num_key_value_heads");
  // Heads that do not divide the width, with no head_dim to say otherwise.
  json_edit(ck + "/config.json", [](auto& j) {
    j["num_key_value_heads"] = 1;
    j["num_attention_heads"] = 5;
    j.erase("head_dim");
  });
  expect_failure(convert(ck, tmp.str("out")), "hidden_size = 24 is not a multiple of num_attention_heads = 5");
  EXPECT_FALSE(fs::exists(tmp.str("out")));
}

TEST(WeightsCli, InvalidJson) {
  test::TempDir tmp;
  const std::string ck = copy_fixture(tmp, "olmoe");
  const std::string cfg = test::read_file(ck + "/config.json");
  test::write_file(ck + "/config.json", cfg.substr(0, cfg.size() / 2));
  expect_failure(convert(ck, tmp.str("out")), "config.json is not valid JSON");
  test::write_file(ck + "/config.json", cfg);
  test::write_file(ck + "/tokenizer.json", "{\"model\": [");
  expect_failure(convert(ck, tmp.str("out")), "tokenizer.json is not valid JSON");
  fs::remove(ck + "/tokenizer.json");
  expect_failure(convert(ck, tmp.str("out")), "no tokenizer.json");
  EXPECT_FALSE(fs::exists(tmp.str("out")));
}

TEST(WeightsCli, WrongFormatVersionAndFlippedByte) {
  test::TempDir tmp;
  ASSERT_EQ(convert(fixture("qwen2_moe"), tmp.str("m"), "--shards 2").status, 0);
  // A flipped byte inside an expert's data is caught by its checksum.
  {
    ModelFiles mf(tmp.str("m"));
    const ExpertExtent x = mf.expert_extent(0, 1);
    std::fstream f(mf.shard_path(x.shard_idx), std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(x.data[2].offset + 5));
    char b = 0;
    f.read(&b, 1);
    b = static_cast<char>(b ^ 1);
    f.seekp(static_cast<std::streamoff>(x.data[2].offset + 5));
    f.write(&b, 1);
  }
  expect_failure(test::run_command(kBin + " validate " + tmp.str("m")), "checksum mismatch in /layers/0/experts/1/down");
  // A model.h5 of another format version is refused with a hint.
  {
    hid_t f = H5Fopen(tmp.str("m/model.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    h5::set_attr_i32(f, layout::kAttrFormatVersion, 2);
    H5Fclose(f);
  }
  for (const char* cmd : {" validate ", " inspect "}) {
    const auto r = test::run_command(kBin + cmd + tmp.str("m"));
    expect_failure(r, "weight format version 2, this build reads version 1");
    EXPECT_NE(r.output.find("HINT: re-convert"), std::string::npos) << r.output;
  }
  // A truncated shard.
  ASSERT_EQ(convert(fixture("olmoe"), tmp.str("t")).status, 0);
  const std::string shard = tmp.str("t/experts-00000-of-00001.h5");
  fs::resize_file(shard, fs::file_size(shard) / 2);
  expect_failure(test::run_command(kBin + " validate " + tmp.str("t")), "INVALID");
  // A directory that is not a model.
  expect_failure(test::run_command(kBin + " validate " + fixture("olmoe")), "holds no model.h5");
}

TEST(WeightsCli, OutputDirectoryThatCannotBeWritten) {
  test::TempDir tmp;
  test::write_file(tmp.str("a-file"), "x");
  expect_failure(convert(fixture("mixtral"), tmp.str("a-file/out")), "cannot create output directory");
  expect_failure(convert(fixture("mixtral"), tmp.str("a-file")), "exists and is not a directory");
  ASSERT_EQ(convert(fixture("mixtral"), tmp.str("m")).status, 0);
  expect_failure(convert(fixture("mixtral"), tmp.str("m")), "already holds a converted model");
  EXPECT_EQ(convert(fixture("mixtral"), tmp.str("m"), "--overwrite").status, 0);
}

TEST(WeightsCli, UsageErrorsExitWithTwo) {
  auto r = test::run_command(kBin + " convert " + fixture("mixtral") + " /nonexistent-dir-x --dtype fp8");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("--dtype must be one of"), std::string::npos) << r.output;
  r = test::run_command(kBin + " frobnicate");
  EXPECT_EQ(r.status, 2) << r.output;
  r = test::run_command(kBin + " convert");
  EXPECT_EQ(r.status, 2) << r.output;
  r = test::run_command(kBin + " synth --help");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("--layers"), std::string::npos);
}

TEST(WeightsCli, SynthFromConfigFile) {
  test::TempDir tmp;
  auto r = test::run_command(kBin + " synth --arch " + fixture("qwen3_moe") + "/config.json --layers 1 --dtype int4 " +
                             tmp.str("s"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(test::run_command(kBin + " validate " + tmp.str("s")).status, 0);
  r = test::run_command(kBin + " synth --arch olmoe-1b-7b --layers 99 " + tmp.str("s2"));
  expect_failure(r, "--layers 99 is more than the model's 16");
  r = test::run_command(kBin + " synth --arch gpt-5 " + tmp.str("s3"));
  expect_failure(r, "neither a built-in model nor a file");
}

std::vector<std::string> file_names(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// A conversion killed at any moment leaves nothing `validate` accepts as a model, except a
// complete one: the new one once every file is in place, or with --overwrite the old one.
TEST(WeightsCli, KilledConversionIsNeverTakenForAModel) {
  test::TempDir tmp;
  // A model big enough that a conversion takes a while (about 60 MB of f32).
  auto j = nlohmann::json::parse(test::read_file(fixture("qwen3_moe") + "/config.json"));
  j["hidden_size"] = 256;
  j["head_dim"] = 32;
  j["num_attention_heads"] = 8;
  j["num_key_value_heads"] = 2;
  j["moe_intermediate_size"] = 512;
  j["num_experts"] = 8;
  j["num_hidden_layers"] = 4;
  j["vocab_size"] = 8000;
  test::write_file(tmp.str("config.json"), j.dump());
  const std::string synth = kBin + " synth --arch " + tmp.str("config.json") + " --dtype f32 --shards 2 --no-progress ";
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(test::run_command(synth + tmp.str("whole")).status, 0);
  const double full = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(test::run_command(kBin + " validate " + tmp.str("whole")).status, 0);
  const uint64_t old_uid = ModelFiles(tmp.str("whole")).header().model_uid;

  int killed = 0;
  for (double f : {0.05, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99}) {
    for (bool overwrite : {false, true}) {
      const std::string dir = tmp.str("k" + std::to_string(killed) + (overwrite ? "o" : ""));
      if (overwrite) fs::copy(tmp.str("whole"), dir, fs::copy_options::recursive);
      const pid_t child = fork();
      if (child == 0) {
        const std::string cmd = "exec " + synth + (overwrite ? "--overwrite --seed 7 " : "") + dir + " > /dev/null 2>&1";
        execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
        _exit(127);
      }
      std::this_thread::sleep_for(std::chrono::duration<double>(f * full));
      const bool was_killed = ::kill(child, SIGKILL) == 0;
      int st = 0;
      waitpid(child, &st, 0);
      const bool finished = WIFEXITED(st) && WEXITSTATUS(st) == 0;
      killed += was_killed && !finished;
      const auto v = test::run_command(kBin + " validate " + dir);
      if (finished) {
        EXPECT_EQ(v.status, 0) << "a finished conversion must validate\n" << v.output;
      } else if (v.status == 0) {
        // Accepted: only a whole model (every file of one conversion: ModelFiles checks their
        // model_uid), either the untouched old one (--overwrite), or the new one when the
        // kill came after its last file was renamed into place (the same files as a finished
        // conversion, no temporary left).
        const bool old = overwrite && ModelFiles(dir).header().model_uid == old_uid;
        EXPECT_TRUE(old || file_names(dir) == file_names(tmp.str("whole")))
            << "killed after " << f * full << " s, yet validate accepts it:\n" << v.output;
      } else {
        EXPECT_EQ(v.status, 1) << v.output;
        EXPECT_TRUE(v.output.find("INVALID") != std::string::npos) << v.output;
      }
    }
  }
  EXPECT_GT(killed, 4) << "the conversions finished before they could be killed; make the model bigger";
}

}  // namespace
}  // namespace odmoe
