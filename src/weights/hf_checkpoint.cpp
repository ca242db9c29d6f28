#include "odmoe/weights/hf_checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "odmoe/core/error.h"

namespace odmoe {
namespace fs = std::filesystem;
using layout::TensorKind;
using layout::TensorSpec;

namespace {

std::string read_text(const fs::path& p, bool required, const char* hint) {
  if (!fs::exists(p)) {
    ODMOE_CHECK(!required, kIo, "missing-file", "checkpoint has no " << p.filename().string() << " (" << p.string() << ")",
                hint);
    return "";
  }
  std::ifstream in(p, std::ios::binary);
  ODMOE_CHECK(in.good(), kIo, "open", "cannot read " << p.string(), "check the file's permissions");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string layer_prefix(int l) { return "model.layers." + std::to_string(l) + "."; }

// The Hugging Face name of a non-expert tensor.
std::string hf_dense_name(const ModelConfig& c, const TensorSpec& s) {
  const std::string lp = layer_prefix(s.layer_idx);
  const std::string moe = c.arch == Arch::kMixtral ? "block_sparse_moe." : "mlp.";
  switch (s.kind) {
    case TensorKind::kEmbed: return "model.embed_tokens.weight";
    case TensorKind::kFinalNorm: return "model.norm.weight";
    case TensorKind::kLmHead: return "lm_head.weight";
    case TensorKind::kAttnNorm: return lp + "input_layernorm.weight";
    case TensorKind::kFfnNorm: return lp + "post_attention_layernorm.weight";
    case TensorKind::kWq: return lp + "self_attn.q_proj.weight";
    case TensorKind::kWk: return lp + "self_attn.k_proj.weight";
    case TensorKind::kWv: return lp + "self_attn.v_proj.weight";
    case TensorKind::kWo: return lp + "self_attn.o_proj.weight";
    case TensorKind::kBq: return lp + "self_attn.q_proj.bias";
    case TensorKind::kBk: return lp + "self_attn.k_proj.bias";
    case TensorKind::kBv: return lp + "self_attn.v_proj.bias";
    case TensorKind::kBo: return lp + "self_attn.o_proj.bias";
    case TensorKind::kQNorm: return lp + "self_attn.q_norm.weight";
    case TensorKind::kKNorm: return lp + "self_attn.k_norm.weight";
    case TensorKind::kRouter: return lp + moe + "gate.weight";
    case TensorKind::kSharedGate: return lp + "mlp.shared_expert.gate_proj.weight";
    case TensorKind::kSharedUp: return lp + "mlp.shared_expert.up_proj.weight";
    case TensorKind::kSharedDown: return lp + "mlp.shared_expert.down_proj.weight";
    case TensorKind::kSharedExpertGate: return lp + "mlp.shared_expert_gate.weight";
    default: return "";
  }
}

// Per-expert (Hub) name of a routed expert's tensor.
std::string hf_expert_name(const ModelConfig& c, const TensorSpec& s) {
  const std::string base = layer_prefix(s.layer_idx) + (c.arch == Arch::kMixtral ? "block_sparse_moe" : "mlp") +
                           ".experts." + std::to_string(s.expert_idx) + ".";
  const bool mix = c.arch == Arch::kMixtral;
  switch (s.kind) {
    case TensorKind::kExpertGate: return base + (mix ? "w1" : "gate_proj") + ".weight";
    case TensorKind::kExpertUp: return base + (mix ? "w3" : "up_proj") + ".weight";
    case TensorKind::kExpertDown: return base + (mix ? "w2" : "down_proj") + ".weight";
    default: return "";
  }
}

std::string shape_str(const std::vector<uint64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

}  // namespace

std::string hf_hub_tensor_name(const ModelConfig& c, const TensorSpec& s) {
  std::string name = s.expert_idx >= 0 ? hf_expert_name(c, s) : hf_dense_name(c, s);
  ODMOE_CHECK(!name.empty(), kCore, "bad-kind", "no Hugging Face name for tensor " << s.path, "");
  return name;
}

HfCheckpoint::HfCheckpoint(const std::string& dir) : dir_(dir) {
  const fs::path d(dir);
  ODMOE_CHECK(fs::is_directory(d), kIo, "no-checkpoint", "checkpoint directory " << dir << " does not exist",
              "pass a directory holding config.json, tokenizer.json and *.safetensors");
  config_json_ = read_text(d / "config.json", true, "a Hugging Face checkpoint directory has a config.json");
  try {
    config_ = ModelConfig::from_hf_json_text(config_json_);
  } catch (const Error& e) {
    ODMOE_THROW(kConfig, e.code().c_str(), (d / "config.json").string() << ": " << e.message(), e.hint());
  }
  tokenizer_json_ = read_text(d / "tokenizer.json", true,
                              "the engine needs the fast tokenizer file tokenizer.json next to config.json");
  {
    const auto j = nlohmann::json::parse(tokenizer_json_, nullptr, false);
    ODMOE_CHECK(!j.is_discarded() && j.is_object(), kConfig, "invalid-json",
                (d / "tokenizer.json").string() << " is not valid JSON", "the file is truncated or corrupted");
  }
  tokenizer_config_json_ = read_text(d / "tokenizer_config.json", false, "");
  generation_config_json_ = read_text(d / "generation_config.json", false, "");

  // Which safetensors files: the index's weight_map, else model.safetensors, else all of them.
  std::vector<std::string> names;
  const fs::path index = d / "model.safetensors.index.json";
  if (fs::exists(index)) {
    const auto j = nlohmann::json::parse(read_text(index, true, ""), nullptr, false);
    ODMOE_CHECK(!j.is_discarded() && j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), kConfig,
                "invalid-json", index.string() << " is not valid JSON with a \"weight_map\" object",
                "the file is truncated or corrupted");
    std::set<std::string> uniq;
    for (const auto& [k, v] : j["weight_map"].items()) {
      ODMOE_CHECK(v.is_string(), kConfig, "invalid-json", index.string() << ": weight_map values must be file names",
                  "");
      const std::string f = v.get<std::string>();
      ODMOE_CHECK(f.find('/') == std::string::npos && f != ".." && !f.empty(), kConfig, "invalid-json",
                  index.string() << ": weight_map names a file outside the checkpoint: " << f, "");
      uniq.insert(f);
    }
    names.assign(uniq.begin(), uniq.end());
  } else if (fs::exists(d / "model.safetensors")) {
    names.push_back("model.safetensors");
  } else {
    for (const auto& ent : fs::directory_iterator(d))
      if (ent.path().extension() == ".safetensors") names.push_back(ent.path().filename().string());
    std::sort(names.begin(), names.end());
  }
  ODMOE_CHECK(!names.empty(), kIo, "no-weights", dir << " holds no .safetensors file",
              "odmoe converts safetensors checkpoints; save the model with save_pretrained(safe_serialization=True)");
  for (const auto& n : names) {
    const fs::path p = d / n;
    ODMOE_CHECK(fs::exists(p), kIo, "missing-file", "weight file " << p.string() << " is missing",
                "download the whole checkpoint");
    files_.push_back(std::make_unique<SafetensorsFile>(p.string()));
    const SafetensorsFile* f = files_.back().get();
    for (const auto& [name, entry] : f->entries()) {
      ODMOE_CHECK(!index_.count(name), kSafetensors, "duplicate",
                  "tensor " << name << " appears in two files (" << index_[name].file->path() << ", " << f->path()
                            << ")",
                  "");
      index_[name] = Located{f, &entry};
    }
  }
}

HfCheckpoint::~HfCheckpoint() = default;

uint64_t HfCheckpoint::total_bytes() const {
  uint64_t n = 0;
  for (const auto& f : files_) n += f->file_bytes();
  return n;
}

const HfCheckpoint::Located* HfCheckpoint::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &it->second;
}

void HfCheckpoint::read(const TensorSpec& spec, std::vector<float>* out) const {
  out->resize(spec.numel());
  const std::vector<uint64_t> want(spec.shape.begin(), spec.shape.end());
  auto check_shape = [&](const Located& loc, const std::vector<uint64_t>& expected) {
    ODMOE_CHECK(loc.entry->shape == expected, kConvert, "shape",
                loc.file->path() << ": tensor " << loc.entry->name << " has shape " << shape_str(loc.entry->shape)
                                 << " but config.json implies " << shape_str(expected),
                "config.json and the weights disagree: is it the right config for these weights?");
  };
  if (!spec.is_expert()) {
    std::string name = hf_dense_name(config_, spec);
    const Located* loc = find(name);
    if (!loc && spec.kind == TensorKind::kRouter) {  // transformers 5 names Mixtral's block `mlp` too
      const std::string fused = layer_prefix(spec.layer_idx) + "mlp.gate.weight";
      if ((loc = find(fused))) name = fused;
    }
    ODMOE_CHECK(loc, kConvert, "missing-tensor", "checkpoint " << dir_ << " has no tensor " << name,
                "the checkpoint is incomplete or not a " << arch_hf_name(config_.arch));
    std::vector<uint64_t> expected = want;
    if (spec.kind == TensorKind::kSharedExpertGate && loc->entry->shape.size() == 2) expected = {1, want[1]};
    check_shape(*loc, expected);
    loc->file->read_f32(*loc->entry, 0, spec.numel(), out->data());
    return;
  }
  if (const Located* loc = find(hf_expert_name(config_, spec))) {
    check_shape(*loc, want);
    loc->file->read_f32(*loc->entry, 0, spec.numel(), out->data());
    return;
  }
  // Fused layout: slice expert e out of the per-layer 3-D tensor.
  const std::string base = layer_prefix(spec.layer_idx) + "mlp.experts.";
  const uint64_t E = static_cast<uint64_t>(config_.n_expert), f = config_.n_ff_expert, d = config_.n_embd;
  const uint64_t e = static_cast<uint64_t>(spec.expert_idx);
  if (spec.kind == TensorKind::kExpertDown) {
    const Located* loc = find(base + "down_proj");
    ODMOE_CHECK(loc, kConvert, "missing-tensor",
                "checkpoint " << dir_ << " has neither " << hf_expert_name(config_, spec) << " nor " << base
                              << "down_proj",
                "the checkpoint is incomplete or not a " << arch_hf_name(config_.arch));
    check_shape(*loc, {E, d, f});
    loc->file->read_f32(*loc->entry, e * d * f, d * f, out->data());
    return;
  }
  const Located* loc = find(base + "gate_up_proj");
  ODMOE_CHECK(loc, kConvert, "missing-tensor",
              "checkpoint " << dir_ << " has neither " << hf_expert_name(config_, spec) << " nor " << base
                            << "gate_up_proj",
              "the checkpoint is incomplete or not a " << arch_hf_name(config_.arch));
  check_shape(*loc, {E, 2 * f, d});
  const uint64_t half = spec.kind == TensorKind::kExpertGate ? 0 : 1;  // gate rows first, then up
  loc->file->read_f32(*loc->entry, (e * 2 * f + half * f) * d, f * d, out->data());
}

}  // namespace odmoe
