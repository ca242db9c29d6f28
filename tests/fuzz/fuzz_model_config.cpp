// Fuzz target: a Hugging Face config.json, as `odmoe-weights convert` reads it from a
// checkpoint and every command reads it back from model.h5.
//
// Input: the JSON text. ModelConfig::from_hf_json_text parses and validates it; an accepted
// config is validated again, printed, and its parameter counts computed (what `inspect` and
// the converter do with it), and its integers are compared with the JSON's: a value out of
// range must be refused, not wrapped. Expected failures: odmoe::Error only.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "fuzz_check.h"
#include "odmoe/core/error.h"
#include "odmoe/arch/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  odmoe::ModelConfig cfg;
  try {
    cfg = odmoe::ModelConfig::from_hf_json_text(text);
  } catch (const odmoe::Error&) {
    return 0;
  }
  cfg.validate();  // accepted once: must stay accepted (throws nothing)
  // What was accepted must be what the file says: an integer is taken exactly or refused.
  const nlohmann::json j = nlohmann::json::parse(text);
  auto same = [&](const char* key, long long got) {
    const auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer()) return true;
    return it->is_number_unsigned() ? it->get<uint64_t>() == static_cast<uint64_t>(got) && got >= 0
                                    : it->get<int64_t>() == got;
  };
  ODMOE_FUZZ_REQUIRE(same("vocab_size", cfg.vocab_size) && same("hidden_size", cfg.n_embd) &&
                         same("num_hidden_layers", cfg.n_layer) && same("num_attention_heads", cfg.n_head) &&
                         same("num_experts_per_tok", cfg.n_expert_used) &&
                         same("max_position_embeddings", cfg.max_position_embeddings) &&
                         same("bos_token_id", cfg.bos_token_id),
                     "an integer in config.json was accepted as another value");
  if (const auto eos = j.find("eos_token_id"); eos != j.end() && eos->is_array()) {
    ODMOE_FUZZ_REQUIRE(eos->size() == cfg.eos_token_ids.size(), "eos_token_id lost entries");
    for (size_t i = 0; i < eos->size(); ++i)
      ODMOE_FUZZ_REQUIRE((*eos)[i].get<int64_t>() == cfg.eos_token_ids[i] && (*eos)[i].get<int64_t>() >= -1 &&
                             !((*eos)[i].is_number_unsigned() && (*eos)[i].get<uint64_t>() > INT32_MAX),
                         "an eos_token_id was accepted as another value");
  }
  ODMOE_FUZZ_REQUIRE(cfg.n_expert_used <= cfg.n_expert && cfg.n_head % cfg.n_head_kv == 0,
                     "validate() accepted an inconsistent config");
  volatile size_t sink = cfg.total_params() + cfg.active_params() + cfg.expert_params() + cfg.to_string().size();
  (void)sink;
  return 0;
}
