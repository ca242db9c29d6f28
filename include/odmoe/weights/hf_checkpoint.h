// A Hugging Face checkpoint directory: config.json, tokenizer.json, and either
// model.safetensors or sharded *.safetensors with model.safetensors.index.json.
//
// Maps the engine's tensors (shard_layout.h) to Hugging Face names for each architecture,
// in both layouts found in the wild: one tensor per expert, as on the Hub
// (`...experts.{e}.w1.weight` for Mixtral, `...experts.{e}.gate_proj.weight` for Qwen/OLMoE)
// and experts fused per layer, as transformers 5 holds them in memory
// (`...mlp.experts.gate_up_proj` [E, 2*ff, d] with gate first, `...mlp.experts.down_proj` [E, d, ff]).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "odmoe/arch/model_config.h"
#include "odmoe/weights/safetensors.h"
#include "odmoe/weights/shard_layout.h"

namespace odmoe {

// The Hub name of the tensor `spec` (one tensor per expert, as published on the Hub).
// Throws odmoe::Error for a tensor the architecture does not have.
std::string hf_hub_tensor_name(const ModelConfig& c, const layout::TensorSpec& spec);

class HfCheckpoint {
 public:
  explicit HfCheckpoint(const std::string& dir);  // throws odmoe::Error with a hint
  ~HfCheckpoint();

  const ModelConfig& config() const { return config_; }
  const std::string& config_json() const { return config_json_; }
  const std::string& tokenizer_json() const { return tokenizer_json_; }
  const std::string& tokenizer_config_json() const { return tokenizer_config_json_; }  // "" if absent
  const std::string& generation_config_json() const { return generation_config_json_; }  // "" if absent
  uint64_t total_bytes() const;  // of all safetensors files

  // Reads the tensor for `spec` as f32 [rows, cols], checking its shape against the config.
  void read(const layout::TensorSpec& spec, std::vector<float>* out) const;

 private:
  struct Located {
    const SafetensorsFile* file;
    const SafetensorsEntry* entry;
  };
  const Located* find(const std::string& name) const;

  std::string dir_;
  ModelConfig config_;
  std::string config_json_, tokenizer_json_, tokenizer_config_json_, generation_config_json_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Located> index_;
};

}  // namespace odmoe
