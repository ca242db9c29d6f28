// Writes a model directory in the weight format from any source of f32 tensors: the
// converter reads them from a Hugging Face checkpoint, `synth` makes them up. Streams one
// tensor at a time (peak memory ~ the largest tensor, not the model), writes every file
// under a temporary name, and renames them only when all are complete (model.h5 last).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "odmoe/core/dtype.h"
#include "odmoe/arch/model_config.h"
#include "odmoe/weights/shard_layout.h"

namespace odmoe {

struct ModelSource {
  ModelConfig config;
  std::string config_json;     // kept verbatim in model.h5
  std::string tokenizer_json;  // kept verbatim in model.h5
  std::string tokenizer_config_json;   // optional ("" = absent)
  std::string generation_config_json;  // optional
  // Fills `out` with the tensor as f32 [rows, cols].
  std::function<void(const layout::TensorSpec&, std::vector<float>* out)> read;
  // Optional: held-out prompts (JSON Lines) kept beside the model as prompts.jsonl, where
  // `odmoe bench` and `eval-predictor` find their default --prompts.
  std::string prompts_jsonl;
};

struct WriteOptions {
  DType dtype = DType::kBF16;
  int n_shard = 1;
  std::optional<DType> shadow_dtype;  // write shadow.h5 in this dtype
  bool overwrite = false;             // replace a model already in the output directory
  bool progress = false;              // draw a progress bar on stdout
  std::string progress_label = "convert";
};

struct WriteStats {
  uint64_t params = 0;         // values read from the source
  uint64_t bytes_written = 0;  // stored bytes (data + scales), all files
  double seconds = 0.0;
  std::vector<std::string> files;  // final paths
};

WriteStats write_model_dir(const ModelSource& src, const std::string& out_dir, const WriteOptions& opts);

// Built-in configs of real models for `synth` ("mixtral-8x7b", "qwen3-30b-a3b", "olmoe-1b-7b").
std::vector<std::string> synth_arch_names();
std::optional<std::string> synth_arch_config_json(const std::string& name);
// A source of deterministic pseudo-random weights (normal, std 0.02; norms near 1) with the
// config's exact shapes, and a byte-level tokenizer.json of 256 tokens.
ModelSource synth_source(const std::string& config_json, int n_layer_override, uint64_t seed);

}  // namespace odmoe
