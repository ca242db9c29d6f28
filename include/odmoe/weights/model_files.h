// Reading and writing model directories in the weight format (shard_layout.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "odmoe/core/dtype.h"
#include "odmoe/arch/model_config.h"
#include "odmoe/weights/h5_file.h"
#include "odmoe/weights/shard_layout.h"
#include "odmoe/core/tensor_codec.h"

namespace odmoe {

// Root attributes of one file of a model directory.
struct FileHeader {
  std::string kind;  // layout::kKindModel | kKindExperts | kKindShadow
  uint64_t model_uid = 0;
  std::string architecture;
  DType weight_dtype = DType::kF32;
  int shard_idx = -1;  // experts files
  int n_shard = 0;     // model and experts files
};

// Writes one file under a temporary name in `dir`; commit() renames it to its final name.
// Destroying an uncommitted writer removes the temporary file, so an interrupted or failed
// conversion leaves nothing behind under a final name.
class ShardWriter {
 public:
  ShardWriter(const std::string& dir, const std::string& final_name, const FileHeader& header, bool aligned);
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;
  ~ShardWriter();

  // Writes tensors' data (and scales) with dtype, shape and checksum attributes. All
  // datasets are created first and their data written afterwards, in order, so the data of
  // one call forms a single byte range (one routed expert: gate, up, down).
  void write_tensors(const std::vector<const layout::TensorSpec*>& specs, const std::vector<const EncodedTensor*>& ts);
  void write_tensor(const layout::TensorSpec& spec, const EncodedTensor& t) { write_tensors({&spec}, {&t}); }
  // Writes raw file contents (config.json, tokenizer.json) as a uint8 dataset.
  void write_bytes(const std::string& path, std::string_view bytes);
  // Closes the file and renames it to its final name.
  void commit();

  uint64_t bytes_written() const { return bytes_written_; }
  const std::string& final_path() const { return final_path_; }

 private:
  std::string temp_path_, final_path_;
  h5::Handle file_;
  uint64_t bytes_written_ = 0;
  bool committed_ = false;
};

// Where one stored dataset lies in its file.
struct DatasetExtent {
  uint64_t offset = 0;
  uint64_t bytes = 0;
};

// One routed expert's bytes in its shard: a single range holding gate, up, down (and their
// scales). This is what an expert rank pulls with one RMA get.
struct ExpertExtent {
  int shard_idx = -1;
  uint64_t offset = 0;  // of the first dataset, 4096-aligned
  uint64_t bytes = 0;   // up to the end of the last dataset
  DType dtype = DType::kF32;
  DatasetExtent data[3];    // gate, up, down: absolute file offsets
  DatasetExtent scales[3];  // bytes == 0 for float dtypes
};

// An opened model directory. Checks the format version and file kinds on open.
class ModelFiles {
 public:
  explicit ModelFiles(const std::string& dir);
  ModelFiles(const ModelFiles&) = delete;
  ModelFiles& operator=(const ModelFiles&) = delete;
  ~ModelFiles();

  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  const FileHeader& header() const { return header_; }
  const std::string& hf_config_json() const { return hf_config_json_; }
  const std::string& tokenizer_json() const { return tokenizer_json_; }
  int n_shard() const { return header_.n_shard; }
  std::string model_path() const;
  std::string shard_path(int shard_idx) const;
  std::string shadow_path() const;
  bool has_shadow() const;

  // Reads a stored tensor (dense, or a routed expert's) with H5Dread, no conversion.
  EncodedTensor read_tensor(const layout::TensorSpec& spec) const;
  // Reads a tensor of shadow.h5 (throws if there is none).
  EncodedTensor read_shadow_tensor(const layout::TensorSpec& spec) const;
  // Byte range of expert (l, e) in its shard, from H5Dget_offset.
  ExpertExtent expert_extent(int layer_idx, int expert_idx) const;

  hid_t model_file() const { return model_.get(); }
  hid_t shard_file(int shard_idx) const;  // opened on first use
  hid_t shadow_file() const;              // opened on first use

 private:
  std::string dir_;
  FileHeader header_;
  ModelConfig config_;
  std::string hf_config_json_, tokenizer_json_;
  h5::Handle model_;
  mutable std::vector<h5::Handle> shards_;
  mutable h5::Handle shadow_;
};

// Reads a file's root attributes; throws a clear error on a wrong version or missing attribute.
FileHeader read_file_header(hid_t file, const std::string& path);
// Reads a byte dataset written by write_bytes.
std::string read_bytes(hid_t file, const std::string& path);
// Checks a stored tensor's attributes, HDF5 type and stored dims against `spec`; returns its dtype.
DType check_tensor_meta(hid_t file, const std::string& file_path, const layout::TensorSpec& spec);
// Reads a stored tensor from an open file, checking its attributes and checksum against `spec`.
EncodedTensor read_stored_tensor(hid_t file, const std::string& file_path, const layout::TensorSpec& spec);

// Full check of a model directory: version, uids, config, every tensor's presence, shape,
// dtype, layout, alignment, byte ranges and checksum. Returns the problems found (empty: valid).
struct ValidateOptions {
  bool checksums = true;
  size_t max_problems = 50;
};
std::vector<std::string> validate_model_dir(const std::string& dir, const ValidateOptions& opts = {});

}  // namespace odmoe
