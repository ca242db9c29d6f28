#include "odmoe/weights/shard_layout.h"

#include <unistd.h>

#include <cstdio>

namespace odmoe::layout {

std::string expert_shard_file(int shard_idx, int n_shard) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "experts-%05d-of-%05d.h5", shard_idx, n_shard);
  return buf;
}

bool parse_expert_shard_file(const std::string& name, int* shard_idx, int* n_shard) {
  int a = -1, b = -1, consumed = 0;
  if (std::sscanf(name.c_str(), "experts-%5d-of-%5d.h5%n", &a, &b, &consumed) != 2) return false;
  if (static_cast<size_t>(consumed) != name.size() || a < 0 || b <= 0 || a >= b) return false;
  if (name != expert_shard_file(a, b)) return false;
  *shard_idx = a;
  *n_shard = b;
  return true;
}

std::string temp_name(const std::string& final_name) {
  return "." + final_name + ".partial-" + std::to_string(getpid());
}

const char* tensor_kind_name(TensorKind k) {
  switch (k) {
    case TensorKind::kEmbed: return "embed_tokens";
    case TensorKind::kFinalNorm: return "final_norm";
    case TensorKind::kLmHead: return "lm_head";
    case TensorKind::kAttnNorm: return "attn_norm";
    case TensorKind::kFfnNorm: return "ffn_norm";
    case TensorKind::kWq: return "q";
    case TensorKind::kWk: return "k";
    case TensorKind::kWv: return "v";
    case TensorKind::kWo: return "o";
    case TensorKind::kBq: return "q_bias";
    case TensorKind::kBk: return "k_bias";
    case TensorKind::kBv: return "v_bias";
    case TensorKind::kBo: return "o_bias";
    case TensorKind::kQNorm: return "q_norm";
    case TensorKind::kKNorm: return "k_norm";
    case TensorKind::kRouter: return "router";
    case TensorKind::kSharedGate: return "gate";
    case TensorKind::kSharedUp: return "up";
    case TensorKind::kSharedDown: return "down";
    case TensorKind::kSharedExpertGate: return "shared_expert_gate";
    case TensorKind::kExpertGate: return "gate";
    case TensorKind::kExpertUp: return "up";
    case TensorKind::kExpertDown: return "down";
  }
  return "?";
}

namespace {

TensorSpec spec(TensorKind kind, int l, int e, std::vector<size_t> shape, std::string path) {
  TensorSpec s{kind, l, e, std::move(shape), std::move(path)};
  return s;
}

}  // namespace

std::vector<TensorSpec> dense_tensor_specs(const ModelConfig& c) {
  using K = TensorKind;
  const size_t d = c.n_embd, q = static_cast<size_t>(c.n_head) * c.head_dim;
  const size_t kv = static_cast<size_t>(c.n_head_kv) * c.head_dim;
  std::vector<TensorSpec> out;
  out.push_back(spec(K::kEmbed, -1, -1, {static_cast<size_t>(c.vocab_size), d}, "/embed_tokens"));
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string lp = layer_group_path(l), ap = lp + "/attn/";
    out.push_back(spec(K::kAttnNorm, l, -1, {d}, lp + "/attn_norm"));
    out.push_back(spec(K::kWq, l, -1, {q, d}, ap + "q"));
    out.push_back(spec(K::kWk, l, -1, {kv, d}, ap + "k"));
    out.push_back(spec(K::kWv, l, -1, {kv, d}, ap + "v"));
    out.push_back(spec(K::kWo, l, -1, {d, q}, ap + "o"));
    if (c.attn_qkv_bias) {
      out.push_back(spec(K::kBq, l, -1, {q}, ap + "q_bias"));
      out.push_back(spec(K::kBk, l, -1, {kv}, ap + "k_bias"));
      out.push_back(spec(K::kBv, l, -1, {kv}, ap + "v_bias"));
    }
    if (c.attn_o_bias) out.push_back(spec(K::kBo, l, -1, {d}, ap + "o_bias"));
    if (c.qk_norm == QkNorm::kPerHead) {
      out.push_back(spec(K::kQNorm, l, -1, {static_cast<size_t>(c.head_dim)}, ap + "q_norm"));
      out.push_back(spec(K::kKNorm, l, -1, {static_cast<size_t>(c.head_dim)}, ap + "k_norm"));
    } else if (c.qk_norm == QkNorm::kFull) {
      out.push_back(spec(K::kQNorm, l, -1, {q}, ap + "q_norm"));
      out.push_back(spec(K::kKNorm, l, -1, {kv}, ap + "k_norm"));
    }
    out.push_back(spec(K::kFfnNorm, l, -1, {d}, lp + "/ffn_norm"));
    out.push_back(spec(K::kRouter, l, -1, {static_cast<size_t>(c.n_expert), d}, lp + "/router"));
    if (c.n_ff_shared > 0) {
      const size_t f = c.n_ff_shared;
      out.push_back(spec(K::kSharedGate, l, -1, {f, d}, lp + "/shared_expert/gate"));
      out.push_back(spec(K::kSharedUp, l, -1, {f, d}, lp + "/shared_expert/up"));
      out.push_back(spec(K::kSharedDown, l, -1, {d, f}, lp + "/shared_expert/down"));
      if (c.shared_expert_gate) out.push_back(spec(K::kSharedExpertGate, l, -1, {1, d}, lp + "/shared_expert_gate"));
    }
  }
  out.push_back(spec(K::kFinalNorm, -1, -1, {d}, "/final_norm"));
  if (!c.tie_word_embeddings)
    out.push_back(spec(K::kLmHead, -1, -1, {static_cast<size_t>(c.vocab_size), d}, "/lm_head"));
  return out;
}

std::string layer_group_path(int l) { return "/layers/" + std::to_string(l); }

std::string expert_group_path(int l, int e) { return layer_group_path(l) + "/experts/" + std::to_string(e); }

std::vector<TensorSpec> expert_tensor_specs(const ModelConfig& c, int l, int e) {
  const size_t d = c.n_embd, f = c.n_ff_expert;
  const std::string g = expert_group_path(l, e) + "/";
  return {spec(TensorKind::kExpertGate, l, e, {f, d}, g + "gate"),
          spec(TensorKind::kExpertUp, l, e, {f, d}, g + "up"),
          spec(TensorKind::kExpertDown, l, e, {d, f}, g + "down")};
}

int expert_shard_of(const ModelConfig& c, int l, int e, int n_shard) {
  const long long global = static_cast<long long>(l) * c.n_expert + e;
  return static_cast<int>(global % n_shard);
}

DType stored_dtype(const TensorSpec& s, DType weight_dtype) {
  if (s.shape.size() == 1 || s.kind == TensorKind::kRouter || s.kind == TensorKind::kSharedExpertGate)
    return DType::kF32;
  return weight_dtype;
}

uint64_t stored_bytes(const TensorSpec& s, DType weight_dtype) {
  const DType d = stored_dtype(s, weight_dtype);
  return dtype_data_bytes(d, s.rows(), s.cols()) + dtype_scale_count(d, s.rows(), s.cols()) * sizeof(float);
}

}  // namespace odmoe::layout
