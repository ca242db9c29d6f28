#include "odmoe/weights/model_writer.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <random>

#include "odmoe/core/error.h"
#include "odmoe/core/json_file.h"
#include "odmoe/core/progress.h"
#include "odmoe/weights/model_files.h"
#include "odmoe/core/tensor_codec.h"

namespace odmoe {
namespace fs = std::filesystem;
using layout::TensorSpec;

namespace {

uint64_t random_uid() {
  std::random_device rd;
  const uint64_t hi = rd(), lo = rd();
  return (hi << 32) ^ lo ^ static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
}

// Prepares the output directory. Returns true if it was created by us (so a failure removes it).
bool prepare_out_dir(const std::string& out_dir, bool overwrite) {
  const fs::path d(out_dir);
  std::error_code ec;
  if (fs::exists(d, ec)) {
    ODMOE_CHECK(fs::is_directory(d, ec), kIo, "out-dir", out_dir << " exists and is not a directory",
                "choose another output directory");
    ODMOE_CHECK(overwrite || !fs::exists(d / layout::kModelFile, ec), kIo, "out-dir",
                out_dir << " already holds a converted model", "pass --overwrite to replace it, or choose another directory");
    ODMOE_CHECK(access(out_dir.c_str(), W_OK) == 0, kIo, "out-dir", "cannot write into " << out_dir,
                "check the directory's permissions");
    return false;
  }
  fs::create_directories(d, ec);
  ODMOE_CHECK(!ec, kIo, "out-dir", "cannot create output directory " << out_dir << ": " << ec.message(),
              "check that the parent directory exists and is writable");
  return true;
}

void encode_checked(const TensorSpec& s, const std::vector<float>& v, DType weight_dtype, EncodedTensor* out) {
  const size_t bad = encode_tensor(v.data(), s.rows(), s.cols(), layout::stored_dtype(s, weight_dtype), out);
  ODMOE_CHECK(bad == 0, kConvert, "non-finite", "tensor " << s.path << " holds " << bad << " NaN or Inf values",
              "the checkpoint is corrupted");
}

// Before the commit: an old model.h5 goes first (the directory is then visibly incomplete, the
// new one is renamed in last), and so do the stale files of an older conversion (other shard
// counts, a shadow no longer wanted).
void remove_stale_files(const std::string& out_dir, int n_shard, bool has_shadow) {
  std::error_code ec;
  fs::remove(fs::path(out_dir) / layout::kModelFile, ec);
  for (const auto& ent : fs::directory_iterator(out_dir)) {
    int idx = 0, n = 0;
    const std::string name = ent.path().filename().string();
    if ((layout::parse_expert_shard_file(name, &idx, &n) && n != n_shard) || (name == layout::kShadowFile && !has_shadow))
      fs::remove(ent.path(), ec);
  }
}

}  // namespace

WriteStats write_model_dir(const ModelSource& src, const std::string& out_dir, const WriteOptions& opts) {
  const auto t0 = std::chrono::steady_clock::now();
  const ModelConfig& cfg = src.config;
  cfg.validate();
  ODMOE_CHECK(opts.n_shard >= 1 && opts.n_shard <= 99999, kCli, "bad-option",
              "--shards must be between 1 and 99999, got " << opts.n_shard, "");
  const long long n_experts_total = static_cast<long long>(cfg.n_layer) * cfg.n_expert;
  ODMOE_CHECK(opts.n_shard <= n_experts_total, kCli, "bad-option",
              "--shards " << opts.n_shard << " is more than the model's " << n_experts_total << " experts",
              "use at most one shard per expert");

  const bool created = prepare_out_dir(out_dir, opts.overwrite);
  WriteStats stats;
  try {
    const uint64_t uid = random_uid();
    const std::string arch = arch_hf_name(cfg.arch);
    std::unique_ptr<ShardWriter> model, shadow;
    std::vector<std::unique_ptr<ShardWriter>> shards;
    model = std::make_unique<ShardWriter>(out_dir, layout::kModelFile,
                                          FileHeader{layout::kKindModel, uid, arch, opts.dtype, -1, opts.n_shard},
                                          false);
    for (int i = 0; i < opts.n_shard; ++i)
      shards.push_back(std::make_unique<ShardWriter>(
          out_dir, layout::expert_shard_file(i, opts.n_shard),
          FileHeader{layout::kKindExperts, uid, arch, opts.dtype, i, opts.n_shard}, true));
    if (opts.shadow_dtype)
      shadow = std::make_unique<ShardWriter>(out_dir, layout::kShadowFile,
                                             FileHeader{layout::kKindShadow, uid, arch, *opts.shadow_dtype, -1, 0},
                                             false);

    model->write_bytes(layout::kHfConfigPath, src.config_json);
    model->write_bytes(layout::kTokenizerPath, src.tokenizer_json);
    if (!src.tokenizer_config_json.empty())
      model->write_bytes(layout::kTokenizerConfigPath, src.tokenizer_config_json);
    if (!src.generation_config_json.empty())
      model->write_bytes(layout::kGenerationConfigPath, src.generation_config_json);

    const auto dense = layout::dense_tensor_specs(cfg);
    uint64_t total = 0;
    for (const auto& s : dense) total += s.numel();
    total += static_cast<uint64_t>(n_experts_total) * cfg.expert_params();
    ProgressBar bar(opts.progress_label, total, opts.progress);

    // One routed expert (3 tensors) or one dense tensor at a time.
    std::vector<float> values;
    EncodedTensor enc[3], shadow_enc[3];
    auto put = [&](const std::vector<TensorSpec>& specs, ShardWriter& main_file) {
      std::vector<const TensorSpec*> sp;
      std::vector<const EncodedTensor*> main_t, shadow_t;
      for (size_t i = 0; i < specs.size(); ++i) {
        const TensorSpec& s = specs[i];
        src.read(s, &values);
        ODMOE_CHECK(values.size() == s.numel(), kConvert, "shape",
                    "source gave " << values.size() << " values for " << s.path << ", expected " << s.numel(), "");
        encode_checked(s, values, opts.dtype, &enc[i]);
        if (shadow) encode_checked(s, values, *opts.shadow_dtype, &shadow_enc[i]);
        sp.push_back(&s);
        main_t.push_back(&enc[i]);
        shadow_t.push_back(&shadow_enc[i]);
        stats.params += s.numel();
        bar.advance(s.numel());
      }
      main_file.write_tensors(sp, main_t);
      if (shadow) shadow->write_tensors(sp, shadow_t);
    };
    for (const auto& s : dense) put({s}, *model);
    for (int l = 0; l < cfg.n_layer; ++l)
      for (int e = 0; e < cfg.n_expert; ++e)
        put(layout::expert_tensor_specs(cfg, l, e),
            *shards[static_cast<size_t>(layout::expert_shard_of(cfg, l, e, opts.n_shard))]);
    bar.finish();

    // Commit: model.h5 last, its presence means the conversion finished.
    remove_stale_files(out_dir, opts.n_shard, shadow != nullptr);
    for (auto& w : shards) {
      stats.bytes_written += w->bytes_written();
      w->commit();
      stats.files.push_back(w->final_path());
    }
    if (shadow) {
      stats.bytes_written += shadow->bytes_written();
      shadow->commit();
      stats.files.push_back(shadow->final_path());
    }
    // The default prompts of bench and eval-predictor travel with the model (whole or absent).
    const std::string prompts = (fs::path(out_dir) / "prompts.jsonl").string();
    if (src.prompts_jsonl.empty()) {
      std::error_code ec;
      fs::remove(prompts, ec);
    } else {
      write_text_file(prompts, src.prompts_jsonl, "the default prompts");
      stats.files.push_back(prompts);
    }
    stats.bytes_written += model->bytes_written();
    model->commit();
    stats.files.push_back(model->final_path());
  } catch (...) {
    if (created) {
      std::error_code ec;
      fs::remove(out_dir, ec);  // only succeeds if empty: writers removed their temporary files
    }
    throw;
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

}  // namespace odmoe
