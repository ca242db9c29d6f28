// The model's hyper-parameters, read from a Hugging Face config.json.
//
// One decoder covers the four supported architectures; ModelConfig records how each one
// differs (q/k norm, router normalisation, shared expert, qkv bias). The HF config is kept
// verbatim inside model.h5, and this struct is always derived from it, so there is one
// source of truth for the hyper-parameters.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace odmoe {

enum class Arch { kMixtral, kQwen3Moe, kOlmoe, kQwen2Moe };

// How queries and keys are normalised before RoPE.
enum class QkNorm {
  kNone,     // Mixtral, Qwen2-MoE
  kPerHead,  // Qwen3-MoE: RMSNorm over each head's head_dim
  kFull,     // OLMoE: RMSNorm over the whole q (n_head*head_dim) and k (n_head_kv*head_dim) projection
};

const char* arch_hf_name(Arch a);  // "MixtralForCausalLM", ...
const char* qk_norm_name(QkNorm q);

struct ModelConfig {
  Arch arch = Arch::kMixtral;
  int vocab_size = 0;
  int n_embd = 0;     // hidden_size
  int n_layer = 0;    // num_hidden_layers
  int n_head = 0;     // num_attention_heads
  int n_head_kv = 0;  // num_key_value_heads (GQA)
  int head_dim = 0;
  int n_expert = 0;       // routed experts per layer
  int n_expert_used = 0;  // top-k
  int n_ff_expert = 0;    // intermediate size of one routed expert
  int n_ff_shared = 0;    // intermediate size of the shared expert (Qwen2-MoE), 0 if none
  bool shared_expert_gate = false;  // sigmoid gate on the shared expert's output (Qwen2-MoE)
  bool norm_topk_prob = true;       // renormalise the top-k softmax weights to sum to 1
  bool attn_qkv_bias = false;       // bias on q, k, v projections
  bool attn_o_bias = false;         // bias on the output projection
  QkNorm qk_norm = QkNorm::kNone;
  double clip_qkv = 0.0;  // OLMoE: clamp q, k, v to [-clip, clip] when > 0
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  nlohmann::json rope_scaling;  // null when the model uses plain RoPE
  int max_position_embeddings = 0;
  int sliding_window = 0;  // > 0: each position attends to at most this many most recent positions
  bool tie_word_embeddings = false;
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;
  std::string source_dtype;  // torch_dtype/dtype of the checkpoint, informational

  // Parses and validates. Throws odmoe::Error (kConfig) naming the key that is wrong.
  static ModelConfig from_hf_json(const nlohmann::json& j);
  static ModelConfig from_hf_json_text(const std::string& text);

  // Throws odmoe::Error if the hyper-parameters are inconsistent (top-k > experts, ...).
  void validate() const;

  // Parameter counts.
  size_t expert_params() const { return 3ull * n_ff_expert * n_embd; }  // one routed expert
  size_t total_params() const;
  size_t active_params() const;  // per token: dense + top-k experts

  std::string to_string() const;  // one line, for logs
};

}  // namespace odmoe
