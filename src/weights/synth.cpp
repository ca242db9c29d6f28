// `odmoe-weights synth`: random weights with a real model's exact shapes, for benchmarks
// of models that cannot be downloaded here.
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "odmoe/core/error.h"
#include "odmoe/weights/model_writer.h"

namespace odmoe {
namespace {

// Published config.json values of the models (only the keys the engine reads, plus identity).
const std::map<std::string, const char*>& builtin_configs() {
  static const std::map<std::string, const char*> m = {
      {"mixtral-8x7b", R"({
  "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
  "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
  "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8, "num_experts_per_tok": 2,
  "max_position_embeddings": 32768, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
  "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
  "torch_dtype": "bfloat16"})"},
      {"qwen3-30b-a3b", R"({
  "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
  "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144, "moe_intermediate_size": 768,
  "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
  "num_experts": 128, "num_experts_per_tok": 8, "norm_topk_prob": true, "decoder_sparse_step": 1,
  "mlp_only_layers": [], "max_position_embeddings": 40960, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "attention_bias": false, "tie_word_embeddings": false, "bos_token_id": 151643, "eos_token_id": 151645,
  "hidden_act": "silu", "torch_dtype": "bfloat16"})"},
      {"olmoe-1b-7b", R"({
  "architectures": ["OlmoeForCausalLM"], "model_type": "olmoe",
  "vocab_size": 50304, "hidden_size": 2048, "intermediate_size": 1024, "num_hidden_layers": 16,
  "num_attention_heads": 16, "num_key_value_heads": 16, "num_experts": 64, "num_experts_per_tok": 8,
  "norm_topk_prob": false, "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
  "attention_bias": false, "clip_qkv": null, "tie_word_embeddings": false, "bos_token_id": null,
  "eos_token_id": 50279, "pad_token_id": 1, "hidden_act": "silu", "torch_dtype": "bfloat16"})"},
  };
  return m;
}

// GPT-2's byte-to-unicode table: printable bytes map to themselves, the rest to U+0100...
std::string byte_level_token(int b) {
  int cp = b;
  const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  if (!printable) {
    int n = 0;
    for (int x = 0; x < b; ++x)
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) ++n;
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xc0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3f));
  }
  return s;
}

std::string byte_level_tokenizer_json() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level_token(b)] = b;
  nlohmann::json j = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", nlohmann::json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
        {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
  };
  return j.dump();
}

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t hash_str(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace

std::vector<std::string> synth_arch_names() {
  std::vector<std::string> v;
  for (const auto& [k, _] : builtin_configs()) v.push_back(k);
  return v;
}

std::optional<std::string> synth_arch_config_json(const std::string& name) {
  auto it = builtin_configs().find(name);
  if (it == builtin_configs().end()) return std::nullopt;
  return std::string(it->second);
}

ModelSource synth_source(const std::string& config_json, int n_layer_override, uint64_t seed) {
  auto j = nlohmann::json::parse(config_json, nullptr, false);
  ODMOE_CHECK(!j.is_discarded() && j.is_object(), kConfig, "invalid-json", "the synth config is not a JSON object",
              "pass --arch with a built-in name or a Hugging Face config.json");
  if (n_layer_override > 0) {
    ODMOE_CHECK(j.contains("num_hidden_layers") && j["num_hidden_layers"].is_number_integer(), kConfig, "missing-key",
                "config has no num_hidden_layers", "");
    ODMOE_CHECK(n_layer_override <= j["num_hidden_layers"].get<int>(), kCli, "bad-option",
                "--layers " << n_layer_override << " is more than the model's " << j["num_hidden_layers"].get<int>(),
                "");
    j["num_hidden_layers"] = n_layer_override;
  }
  ModelSource src;
  src.config = ModelConfig::from_hf_json(j);
  src.config_json = j.dump(2);
  src.tokenizer_json = byte_level_tokenizer_json();
  src.read = [seed](const layout::TensorSpec& s, std::vector<float>* out) {
    out->resize(s.numel());
    uint64_t state = seed ^ hash_str(s.path);
    const bool is_norm = s.shape.size() == 1 && (s.kind == layout::TensorKind::kAttnNorm ||
                                                 s.kind == layout::TensorKind::kFfnNorm ||
                                                 s.kind == layout::TensorKind::kFinalNorm ||
                                                 s.kind == layout::TensorKind::kQNorm ||
                                                 s.kind == layout::TensorKind::kKNorm);
    // Irwin-Hall sum of four 16-bit uniforms: mean 2, variance 4/12 -> scaled to std 0.02.
    constexpr float kStd = 0.02f;
    const float scale = kStd / std::sqrt(4.0f / 12.0f) / 65536.0f;
    for (float& v : *out) {
      const uint64_t r = splitmix64(state);
      const float sum = static_cast<float>((r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48));
      const float x = (sum - 2.0f * 65536.0f) * scale;
      v = is_norm ? 1.0f + x : x;
    }
  };
  return src;
}

}  // namespace odmoe
