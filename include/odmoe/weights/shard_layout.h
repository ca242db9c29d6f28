// The weight format, version 1: the only code that knows file names, HDF5 paths,
// attribute names and the version number. The converter, `validate`, `inspect` and the
// runtime all go through here.
//
//   model.h5                      config (HF config.json verbatim), tokenizer.json bytes,
//                                 embeddings, attention, norms, routers, shared experts, LM head
//   experts-00000-of-0000N.h5 ... /layers/{l}/experts/{e}/{gate,up,down}[_scale]
//   shadow.h5                     optional: the whole model (dense + experts) in a quantized dtype
//
// Every dataset has a `dtype` attribute (f32|bf16|f16|int8|int4), its logical `shape`
// (int4 is stored packed), and a `crc32c` of its stored bytes. Quantized tensors have a
// sibling `<name>_scale` f32 dataset ([rows] for int8, [rows, groups] for int4). Expert
// datasets are contiguous and 4096-aligned, and one expert's datasets are written back to
// back, so a single byte range [first offset, end of last) holds exactly one expert.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "odmoe/core/dtype.h"
#include "odmoe/arch/model_config.h"

namespace odmoe::layout {

inline constexpr int kFormatVersion = 1;
inline constexpr size_t kAlignment = 4096;  // alignment of every raw-data block in expert shards

inline constexpr const char* kModelFile = "model.h5";
inline constexpr const char* kShadowFile = "shadow.h5";
std::string expert_shard_file(int shard_idx, int n_shard);  // "experts-00001-of-00004.h5"
// Parses "experts-00001-of-00004.h5"; false if the name is not an expert shard.
bool parse_expert_shard_file(const std::string& name, int* shard_idx, int* n_shard);
// Name a file gets while it is being written: it appears under its final name only when complete.
std::string temp_name(const std::string& final_name);

// Root attributes (every file).
inline constexpr const char* kAttrFormatVersion = "odmoe_format_version";  // int32
inline constexpr const char* kAttrFileKind = "file_kind";                  // "model" | "experts" | "shadow"
inline constexpr const char* kAttrModelUid = "model_uid";                  // uint64, same in every file of a model
inline constexpr const char* kAttrArchitecture = "architecture";           // e.g. "MixtralForCausalLM"
inline constexpr const char* kAttrWeightDtype = "weight_dtype";            // dtype of the matrices in this file
inline constexpr const char* kAttrShardIndex = "shard_index";              // experts files: int32
inline constexpr const char* kAttrShardCount = "shard_count";              // model and experts files: int32
inline constexpr const char* kAttrCreatedBy = "created_by";                // free text: tool and version

inline constexpr const char* kKindModel = "model";
inline constexpr const char* kKindExperts = "experts";
inline constexpr const char* kKindShadow = "shadow";

// Dataset attributes.
inline constexpr const char* kAttrDtype = "dtype";            // string
inline constexpr const char* kAttrShape = "shape";            // uint64[ndim], logical shape
inline constexpr const char* kAttrChecksum = "crc32c";        // uint32 over the stored bytes
inline constexpr const char* kAttrGroupSize = "group_size";   // int32, int4 only

// Byte datasets in model.h5 (uint8, verbatim file contents).
inline constexpr const char* kHfConfigPath = "/hf_config.json";
inline constexpr const char* kTokenizerPath = "/tokenizer.json";
inline constexpr const char* kTokenizerConfigPath = "/tokenizer_config.json";    // optional
inline constexpr const char* kGenerationConfigPath = "/generation_config.json";  // optional

enum class TensorKind {
  kEmbed, kFinalNorm, kLmHead,
  kAttnNorm, kFfnNorm,
  kWq, kWk, kWv, kWo, kBq, kBk, kBv, kBo, kQNorm, kKNorm,
  kRouter,
  kSharedGate, kSharedUp, kSharedDown, kSharedExpertGate,
  kExpertGate, kExpertUp, kExpertDown,
};

const char* tensor_kind_name(TensorKind k);

struct TensorSpec {
  TensorKind kind;
  int layer_idx = -1;   // -1 for model-level tensors
  int expert_idx = -1;  // -1 unless a routed expert's tensor
  std::vector<size_t> shape;  // logical shape: [n] or [rows, cols] (HF Linear: [out, in])
  std::string path;           // HDF5 dataset path

  size_t rows() const { return shape.size() == 2 ? shape[0] : 1; }
  size_t cols() const { return shape.empty() ? 0 : shape.back(); }
  size_t numel() const { return rows() * cols(); }
  bool is_expert() const { return expert_idx >= 0; }
  std::string scale_path() const { return path + "_scale"; }
};

// Tensors of model.h5 for this config, in file order (LM head only when not tied).
std::vector<TensorSpec> dense_tensor_specs(const ModelConfig& cfg);
// gate [n_ff, n_embd], up [n_ff, n_embd], down [n_embd, n_ff] of one routed expert, in file order.
std::vector<TensorSpec> expert_tensor_specs(const ModelConfig& cfg, int layer_idx, int expert_idx);
std::string expert_group_path(int layer_idx, int expert_idx);  // "/layers/3/experts/5"
std::string layer_group_path(int layer_idx);                   // "/layers/3" (in model.h5 and shadow.h5)

// Shard holding expert (l, e): round-robin over the global expert index, so the experts of
// one layer are spread over all shards (and over all store ranks in sharded placement).
int expert_shard_of(const ModelConfig& cfg, int layer_idx, int expert_idx, int n_shard);

// Dtype a tensor is stored in when the model's matrices are `weight_dtype`. Norms, biases,
// routers and the shared-expert gate stay f32: they are tiny and routing is sensitive to them.
DType stored_dtype(const TensorSpec& spec, DType weight_dtype);
// Bytes the tensor is stored in (data and quantization scales) in that dtype.
uint64_t stored_bytes(const TensorSpec& spec, DType weight_dtype);

}  // namespace odmoe::layout
