#include "odmoe/arch/model_config.h"

#include <sstream>

#include "odmoe/core/error.h"

namespace odmoe {
namespace {

using nlohmann::json;

const json* find_key(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

// An integer in [-1, 2^31 - 1]. (get<long long>() alone would wrap an unsigned value above
// 2^63 to a negative one, and get<int>() would truncate.)
int to_int(const json& v, const char* key) {
  ODMOE_CHECK(v.is_number_integer() || v.is_number_unsigned(), kConfig, "bad-key",
              "config.json: \"" << key << "\" must be an integer, got " << v.dump(), "");
  const bool in_range = v.is_number_unsigned() ? v.get<uint64_t>() <= (1ull << 31) - 1
                                               : v.get<long long>() >= -1 && v.get<long long>() <= (1ll << 31) - 1;
  ODMOE_CHECK(in_range, kConfig, "bad-key", "config.json: \"" << key << "\" = " << v.dump() << " is out of range", "");
  return static_cast<int>(v.get<long long>());
}

int get_int(const json& j, const char* key, int fallback, bool required) {
  const json* v = find_key(j, key);
  if (!v) {
    ODMOE_CHECK(!required, kConfig, "missing-key", "config.json has no \"" << key << "\"",
                "is this a Hugging Face config.json of a supported MoE model?");
    return fallback;
  }
  return to_int(*v, key);
}

double get_double(const json& j, const char* key, double fallback) {
  const json* v = find_key(j, key);
  if (!v) return fallback;
  ODMOE_CHECK(v->is_number(), kConfig, "bad-key",
              "config.json: \"" << key << "\" must be a number, got " << v->dump(), "");
  return v->get<double>();
}

bool get_bool(const json& j, const char* key, bool fallback) {
  const json* v = find_key(j, key);
  if (!v) return fallback;
  ODMOE_CHECK(v->is_boolean(), kConfig, "bad-key",
              "config.json: \"" << key << "\" must be true or false, got " << v->dump(), "");
  return v->get<bool>();
}

Arch parse_arch(const json& j) {
  const json* archs = find_key(j, "architectures");
  std::string name;
  if (archs && archs->is_array() && !archs->empty() && (*archs)[0].is_string()) {
    name = (*archs)[0].get<std::string>();
  } else if (const json* mt = find_key(j, "model_type"); mt && mt->is_string()) {
    const std::string t = mt->get<std::string>();
    if (t == "mixtral") name = "MixtralForCausalLM";
    if (t == "qwen3_moe") name = "Qwen3MoeForCausalLM";
    if (t == "olmoe") name = "OlmoeForCausalLM";
    if (t == "qwen2_moe") name = "Qwen2MoeForCausalLM";
  }
  for (Arch a : {Arch::kMixtral, Arch::kQwen3Moe, Arch::kOlmoe, Arch::kQwen2Moe})
    if (name == arch_hf_name(a)) return a;
  ODMOE_THROW(kConfig, "unknown-architecture",
              "unsupported architecture '" << (name.empty() ? std::string("<none>") : name) << "'",
              "odmoe supports MixtralForCausalLM, Qwen3MoeForCausalLM, OlmoeForCausalLM and "
              "Qwen2MoeForCausalLM (config.json \"architectures\")");
}

}  // namespace

const char* arch_hf_name(Arch a) {
  switch (a) {
    case Arch::kMixtral: return "MixtralForCausalLM";
    case Arch::kQwen3Moe: return "Qwen3MoeForCausalLM";
    case Arch::kOlmoe: return "OlmoeForCausalLM";
    case Arch::kQwen2Moe: return "Qwen2MoeForCausalLM";
  }
  return "?";
}

const char* qk_norm_name(QkNorm q) {
  switch (q) {
    case QkNorm::kNone: return "none";
    case QkNorm::kPerHead: return "per-head";
    case QkNorm::kFull: return "full";
  }
  return "?";
}

ModelConfig ModelConfig::from_hf_json_text(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  ODMOE_CHECK(!j.is_discarded(), kConfig, "invalid-json", "config.json is not valid JSON",
              "the file is truncated or not a Hugging Face config.json");
  return from_hf_json(j);
}

ModelConfig ModelConfig::from_hf_json(const json& j) {
  ODMOE_CHECK(j.is_object(), kConfig, "invalid-json", "config.json must be a JSON object", "");
  ModelConfig c;
  c.arch = parse_arch(j);
  c.vocab_size = get_int(j, "vocab_size", 0, true);
  c.n_embd = get_int(j, "hidden_size", 0, true);
  c.n_layer = get_int(j, "num_hidden_layers", 0, true);
  c.n_head = get_int(j, "num_attention_heads", 0, true);
  c.n_head_kv = get_int(j, "num_key_value_heads", c.n_head, false);
  c.head_dim = get_int(j, "head_dim", 0, false);
  if (c.head_dim == 0 && c.n_head > 0) {  // no head_dim: the heads split the width evenly
    ODMOE_CHECK(c.n_embd % c.n_head == 0, kConfig, "bad-config",
                "hidden_size = " << c.n_embd << " is not a multiple of num_attention_heads = " << c.n_head
                                 << " (and config.json gives no head_dim)",
                "the checkpoint's config.json is inconsistent");
    c.head_dim = c.n_embd / c.n_head;
  }
  c.n_expert_used = get_int(j, "num_experts_per_tok", 0, true);
  c.rms_norm_eps = get_double(j, "rms_norm_eps", 1e-6);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", 0, true);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false);
  c.bos_token_id = get_int(j, "bos_token_id", -1, false);
  if (const json* eos = find_key(j, "eos_token_id")) {
    if (eos->is_array()) {
      for (const auto& e : *eos) c.eos_token_ids.push_back(to_int(e, "eos_token_id"));
    } else {
      c.eos_token_ids.push_back(get_int(j, "eos_token_id", -1, true));
    }
  }
  if (const json* d = find_key(j, "torch_dtype"); d && d->is_string()) c.source_dtype = d->get<std::string>();
  if (const json* d = find_key(j, "dtype"); d && d->is_string()) c.source_dtype = d->get<std::string>();

  // RoPE: transformers < 5 writes rope_theta/rope_scaling, 5.x writes rope_parameters.
  c.rope_theta = get_double(j, "rope_theta", 10000.0);
  if (const json* rp = find_key(j, "rope_parameters"); rp && rp->is_object()) {
    c.rope_theta = get_double(*rp, "rope_theta", c.rope_theta);
    const json* type = find_key(*rp, "rope_type");
    if (type && type->is_string() && type->get<std::string>() != "default") c.rope_scaling = *rp;
  }
  if (const json* rs = find_key(j, "rope_scaling"); rs && rs->is_object()) {
    const json* type = find_key(*rs, "rope_type");
    if (!type) type = find_key(*rs, "type");
    if (!(type && type->is_string() && type->get<std::string>() == "default")) c.rope_scaling = *rs;
  }

  // Layers that are not MoE (dense MLP) are not part of this engine's model.
  if (const json* only = find_key(j, "mlp_only_layers")) {
    ODMOE_CHECK(only->is_array() && only->empty(), kConfig, "unsupported",
                "config.json: mlp_only_layers = " << only->dump() << " (dense MLP layers) is not supported",
                "odmoe runs models whose every layer is a MoE layer");
  }
  if (find_key(j, "decoder_sparse_step")) {
    const int step = get_int(j, "decoder_sparse_step", 1, false);
    ODMOE_CHECK(step == 1, kConfig, "unsupported",
                "config.json: decoder_sparse_step = " << step << " (dense MLP layers) is not supported",
                "odmoe runs models whose every layer is a MoE layer");
  }

  // Sliding-window attention: Mixtral and Qwen3-MoE apply `sliding_window` when it is set;
  // Qwen2-MoE only with use_sliding_window (its per-layer windows are not supported).
  if (c.arch == Arch::kMixtral || c.arch == Arch::kQwen3Moe) c.sliding_window = get_int(j, "sliding_window", 0, false);
  if (c.arch == Arch::kQwen2Moe)
    ODMOE_CHECK(!get_bool(j, "use_sliding_window", false), kConfig, "unsupported",
                "config.json: use_sliding_window = true is not supported for Qwen2-MoE", "");
  switch (c.arch) {
    case Arch::kMixtral:
      c.n_expert = get_int(j, "num_local_experts", 0, true);
      c.n_ff_expert = get_int(j, "intermediate_size", 0, true);
      c.norm_topk_prob = true;  // Mixtral always renormalises the top-k weights
      break;
    case Arch::kQwen3Moe:
      // The Hub writes num_experts; transformers 5 writes num_local_experts.
      c.n_expert = get_int(j, "num_experts", get_int(j, "num_local_experts", 0, false), !find_key(j, "num_local_experts"));
      c.n_ff_expert = get_int(j, "moe_intermediate_size", 0, true);
      c.norm_topk_prob = get_bool(j, "norm_topk_prob", false);
      c.attn_qkv_bias = c.attn_o_bias = get_bool(j, "attention_bias", false);
      c.qk_norm = QkNorm::kPerHead;
      break;
    case Arch::kOlmoe:
      c.n_expert = get_int(j, "num_experts", 0, true);
      c.n_ff_expert = get_int(j, "intermediate_size", 0, true);
      c.norm_topk_prob = get_bool(j, "norm_topk_prob", false);
      c.attn_qkv_bias = c.attn_o_bias = get_bool(j, "attention_bias", false);
      c.clip_qkv = get_double(j, "clip_qkv", 0.0);
      c.qk_norm = QkNorm::kFull;
      break;
    case Arch::kQwen2Moe:
      c.n_expert = get_int(j, "num_experts", 0, true);
      c.n_ff_expert = get_int(j, "moe_intermediate_size", 0, true);
      c.n_ff_shared = get_int(j, "shared_expert_intermediate_size", 0, false);
      c.shared_expert_gate = c.n_ff_shared > 0;
      c.norm_topk_prob = get_bool(j, "norm_topk_prob", false);
      c.attn_qkv_bias = get_bool(j, "qkv_bias", true);  // Qwen2 attention always has q/k/v bias
      break;
  }
  c.validate();
  return c;
}

void ModelConfig::validate() const {
  auto positive = [](int v, const char* name) {
    ODMOE_CHECK(v > 0, kConfig, "bad-config", name << " must be positive, got " << v, "check config.json");
  };
  positive(vocab_size, "vocab_size");
  positive(n_embd, "hidden_size");
  positive(n_layer, "num_hidden_layers");
  positive(n_head, "num_attention_heads");
  positive(n_head_kv, "num_key_value_heads");
  positive(head_dim, "head_dim");
  positive(n_expert, "the number of experts");
  positive(n_expert_used, "num_experts_per_tok");
  positive(n_ff_expert, "the expert intermediate size");
  positive(max_position_embeddings, "max_position_embeddings");
  ODMOE_CHECK(sliding_window >= 0, kConfig, "bad-config", "sliding_window must not be negative", "");
  ODMOE_CHECK(n_expert_used <= n_expert, kConfig, "bad-config",
              "num_experts_per_tok = " << n_expert_used << " is larger than the number of experts " << n_expert,
              "check config.json");
  ODMOE_CHECK(n_head % n_head_kv == 0, kConfig, "bad-config",
              "num_attention_heads = " << n_head << " is not a multiple of num_key_value_heads = " << n_head_kv,
              "GQA needs every key/value head to serve the same number of query heads");
  ODMOE_CHECK(head_dim % 2 == 0, kConfig, "bad-config", "head_dim = " << head_dim << " must be even for RoPE", "");
  ODMOE_CHECK(rms_norm_eps > 0 && rope_theta > 0, kConfig, "bad-config",
              "rms_norm_eps and rope_theta must be positive", "check config.json");
  ODMOE_CHECK(n_ff_shared >= 0, kConfig, "bad-config", "shared_expert_intermediate_size must not be negative", "");
}

size_t ModelConfig::total_params() const {
  const size_t attn = static_cast<size_t>(n_embd) * head_dim * (2ull * n_head + 2ull * n_head_kv);
  const size_t shared = 3ull * n_ff_shared * n_embd + (shared_expert_gate ? n_embd : 0);
  const size_t layer = attn + expert_params() * n_expert + static_cast<size_t>(n_expert) * n_embd + shared;
  const size_t embed = static_cast<size_t>(vocab_size) * n_embd * (tie_word_embeddings ? 1 : 2);
  return layer * n_layer + embed;
}

size_t ModelConfig::active_params() const {
  const size_t attn = static_cast<size_t>(n_embd) * head_dim * (2ull * n_head + 2ull * n_head_kv);
  const size_t shared = 3ull * n_ff_shared * n_embd + (shared_expert_gate ? n_embd : 0);
  const size_t layer = attn + expert_params() * n_expert_used + static_cast<size_t>(n_expert) * n_embd + shared;
  return layer * n_layer + static_cast<size_t>(vocab_size) * n_embd * (tie_word_embeddings ? 1 : 2);
}

std::string ModelConfig::to_string() const {
  std::ostringstream os;
  os << arch_hf_name(arch) << " layers=" << n_layer << " embd=" << n_embd << " heads=" << n_head << "/" << n_head_kv
     << " head_dim=" << head_dim << " experts=" << n_expert << " top" << n_expert_used << " ff=" << n_ff_expert;
  if (n_ff_shared > 0) os << " shared_ff=" << n_ff_shared << (shared_expert_gate ? "+gate" : "");
  os << " vocab=" << vocab_size << " qk_norm=" << qk_norm_name(qk_norm) << " norm_topk=" << norm_topk_prob
     << " qkv_bias=" << attn_qkv_bias << " rope_theta=" << rope_theta << " ctx=" << max_position_embeddings;
  if (!rope_scaling.is_null()) os << " rope_scaling=" << rope_scaling.dump();
  return os.str();
}

}  // namespace odmoe
