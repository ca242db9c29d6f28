#include "odmoe/weights/model_files.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>

#include "odmoe/core/checksum.h"
#include "odmoe/core/error.h"
#include "odmoe/core/mapped_file.h"

namespace odmoe {
namespace fs = std::filesystem;
using layout::TensorSpec;

namespace {

// HDF5 type a dtype's data is stored as (no conversion on read: memory type = file type).
hid_t stored_h5_type(DType t) {
  switch (t) {
    case DType::kF32: return H5T_IEEE_F32LE;
    case DType::kBF16:
    case DType::kF16: return H5T_STD_U16LE;  // bit patterns; the dtype attribute says which
    case DType::kInt8: return H5T_STD_I8LE;
    case DType::kInt4: return H5T_STD_U8LE;  // two values per byte
  }
  return H5T_STD_U8LE;
}

std::vector<uint64_t> stored_dims(DType t, const std::vector<size_t>& shape) {
  if (t == DType::kInt4) return {shape[0], int4_groups(shape[1]) * (kInt4Group / 2)};
  return {shape.begin(), shape.end()};
}

std::vector<uint64_t> scale_dims(DType t, const std::vector<size_t>& shape) {
  const size_t rows = shape.size() == 2 ? shape[0] : 1;
  if (t == DType::kInt8) return {rows};
  return {rows, int4_groups(shape.back())};
}

bool type_matches(const h5::DatasetInfo& info, hid_t expected) {
  const H5T_class_t cls = H5Tget_class(expected);
  if (info.type_class != cls || info.type_size != H5Tget_size(expected)) return false;
  if (info.order != H5T_ORDER_LE && info.type_size > 1) return false;
  if (cls == H5T_INTEGER && info.sign != H5Tget_sign(expected)) return false;
  return true;
}

std::string dims_str(const std::vector<uint64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

std::string shape_str(const std::vector<size_t>& d) { return dims_str({d.begin(), d.end()}); }

// Opens `path` in `file` and checks its type and stored dims. Returns the dataset.
h5::Handle open_checked(hid_t file, const std::string& file_path, const std::string& path, DType dtype,
                        const std::vector<uint64_t>& dims, h5::DatasetInfo* info) {
  ODMOE_CHECK(h5::exists(file, path), kHdf5, "missing-tensor", file_path << ": dataset " << path << " is missing",
              "the file is incomplete or belongs to another model; re-run the conversion");
  h5::Handle d = h5::open_dataset(file, path);
  *info = h5::dataset_info(d.get());
  ODMOE_CHECK(type_matches(*info, stored_h5_type(dtype)), kHdf5, "bad-type",
              file_path << ": " << path << " has the wrong HDF5 type for dtype " << dtype_name(dtype), "");
  ODMOE_CHECK(info->dims == dims, kHdf5, "bad-shape",
              file_path << ": " << path << " is stored as " << dims_str(info->dims) << ", expected "
                        << dims_str(dims),
              "the model does not match its config.json; re-run the conversion");
  // The dims come from the file (and the config): a reader allocates them only if the file
  // really stores that many bytes.
  uint64_t bytes = info->type_size;
  for (uint64_t x : info->dims) bytes *= x;
  ODMOE_CHECK(info->storage_bytes == bytes, kHdf5, "not-stored",
              file_path << ": " << path << " stores " << info->storage_bytes << " of its " << bytes << " bytes",
              "the file is truncated or corrupted; re-run the conversion");
  return d;
}

template <typename T>
void read_checked(hid_t dset, const std::string& file_path, const std::string& path, T* out, size_t bytes) {
  h5::read_dataset_raw(dset, out, bytes);
  const auto want = h5::get_attr_int(dset, layout::kAttrChecksum);
  ODMOE_CHECK(want.has_value(), kHdf5, "no-checksum", file_path << ": " << path << " has no checksum attribute", "");
  const uint32_t got = crc32c(0, out, bytes);
  ODMOE_CHECK(got == static_cast<uint32_t>(*want), kHdf5, "checksum",
              file_path << ": checksum mismatch in " << path << " (stored " << *want << ", computed " << got << ")",
              "the file is corrupted; re-run the conversion or copy it again");
}

}  // namespace

// ---------------------------------------------------------------------------------------
// ShardWriter

ShardWriter::ShardWriter(const std::string& dir, const std::string& final_name, const FileHeader& header,
                         bool aligned)
    : temp_path_((fs::path(dir) / layout::temp_name(final_name)).string()),
      final_path_((fs::path(dir) / final_name).string()) {
  file_ = h5::create_file(temp_path_, aligned ? layout::kAlignment : 0);
  const hid_t root = file_.get();
  h5::set_attr_i32(root, layout::kAttrFormatVersion, layout::kFormatVersion);
  h5::set_attr_string(root, layout::kAttrFileKind, header.kind);
  h5::set_attr_u64(root, layout::kAttrModelUid, header.model_uid);
  h5::set_attr_string(root, layout::kAttrArchitecture, header.architecture);
  h5::set_attr_string(root, layout::kAttrWeightDtype, dtype_name(header.weight_dtype));
  if (header.shard_idx >= 0) h5::set_attr_i32(root, layout::kAttrShardIndex, header.shard_idx);
  if (header.n_shard > 0) h5::set_attr_i32(root, layout::kAttrShardCount, header.n_shard);
  h5::set_attr_string(root, layout::kAttrCreatedBy, "odmoe-weights 0.1");
}

ShardWriter::~ShardWriter() {
  if (!committed_) {
    file_.reset();
    std::remove(temp_path_.c_str());
  }
}

void ShardWriter::write_tensors(const std::vector<const TensorSpec*>& specs, const std::vector<const EncodedTensor*>& ts) {
  // Phase 1: every header and attribute (metadata); phase 2: the data, back to back.
  std::vector<std::pair<h5::Handle, const void*>> pending;
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& spec = *specs[i];
    const EncodedTensor& t = *ts[i];
    ODMOE_CHECK(t.rows * t.cols == spec.numel(), kConvert, "shape", spec.path << ": encoded tensor has the wrong size",
                "");
    h5::Handle d = h5::create_dataset(file_.get(), spec.path, stored_h5_type(t.dtype), stored_dims(t.dtype, spec.shape));
    h5::set_attr_string(d.get(), layout::kAttrDtype, dtype_name(t.dtype));
    h5::set_attr_u64_array(d.get(), layout::kAttrShape, {spec.shape.begin(), spec.shape.end()});
    h5::set_attr_u32(d.get(), layout::kAttrChecksum, crc32c(0, t.data.data(), t.data.size()));
    if (t.dtype == DType::kInt4) h5::set_attr_i32(d.get(), layout::kAttrGroupSize, kInt4Group);
    pending.emplace_back(std::move(d), t.data.data());
    bytes_written_ += t.data.size();
    if (is_quantized(t.dtype)) {
      h5::Handle s = h5::create_dataset(file_.get(), spec.scale_path(), H5T_IEEE_F32LE, scale_dims(t.dtype, spec.shape));
      h5::set_attr_string(s.get(), layout::kAttrDtype, dtype_name(DType::kF32));
      h5::set_attr_u32(s.get(), layout::kAttrChecksum, crc32c(0, t.scales.data(), t.scales.size() * 4));
      pending.emplace_back(std::move(s), t.scales.data());
      bytes_written_ += t.scales.size() * 4;
    }
  }
  for (auto& [d, data] : pending) h5::write_dataset_raw(d.get(), data);
}

void ShardWriter::write_bytes(const std::string& path, std::string_view bytes) {
  h5::Handle d = h5::create_dataset(file_.get(), path, H5T_STD_U8LE, {bytes.size()});
  h5::write_dataset_raw(d.get(), bytes.data());
  h5::set_attr_u32(d.get(), layout::kAttrChecksum, crc32c(0, bytes.data(), bytes.size()));
  bytes_written_ += bytes.size();
}

void ShardWriter::commit() {
  file_.close_checked(temp_path_);
  ODMOE_CHECK(std::rename(temp_path_.c_str(), final_path_.c_str()) == 0, kIo, "rename",
              "cannot rename " << temp_path_ << " to " << final_path_ << ": " << std::strerror(errno), "");
  committed_ = true;
}

// ---------------------------------------------------------------------------------------
// Reading

FileHeader read_file_header(hid_t file, const std::string& path) {
  const auto version = h5::get_attr_int(file, layout::kAttrFormatVersion);
  ODMOE_CHECK(version.has_value(), kHdf5, "not-odmoe", path << " has no " << layout::kAttrFormatVersion
                                                            << " attribute: it is not an odmoe weight file",
              "convert a Hugging Face checkpoint with `odmoe-weights convert HF_DIR OUT_DIR`");
  ODMOE_CHECK(*version == layout::kFormatVersion, kHdf5, "version",
              path << " has weight format version " << *version << ", this build reads version "
                   << layout::kFormatVersion,
              "re-convert the checkpoint with the odmoe-weights of this build");
  FileHeader h;
  auto kind = h5::get_attr_string(file, layout::kAttrFileKind);
  auto uid = h5::get_attr_int(file, layout::kAttrModelUid);
  auto arch = h5::get_attr_string(file, layout::kAttrArchitecture);
  auto dt = h5::get_attr_string(file, layout::kAttrWeightDtype);
  ODMOE_CHECK(kind && uid && arch && dt, kHdf5, "bad-header", path << " lacks one of the root attributes "
                                                                   << layout::kAttrFileKind << ", "
                                                                   << layout::kAttrModelUid << ", "
                                                                   << layout::kAttrArchitecture << ", "
                                                                   << layout::kAttrWeightDtype,
              "re-run the conversion");
  h.kind = *kind;
  h.model_uid = static_cast<uint64_t>(*uid);
  h.architecture = *arch;
  const auto parsed = parse_dtype(*dt);
  ODMOE_CHECK(parsed.has_value(), kHdf5, "bad-header", path << ": unknown weight dtype '" << *dt << "'", "");
  h.weight_dtype = *parsed;
  // At most 99999 shards (the five digits of their file names); checked before anything is
  // sized by the count.
  const int64_t shard_idx = h5::get_attr_int(file, layout::kAttrShardIndex).value_or(-1);
  const int64_t n_shard = h5::get_attr_int(file, layout::kAttrShardCount).value_or(0);
  ODMOE_CHECK(n_shard >= 0 && n_shard <= 99999 && shard_idx >= -1 && shard_idx < 99999, kHdf5, "bad-header",
              path << " has " << layout::kAttrShardIndex << " " << shard_idx << " and " << layout::kAttrShardCount
                   << " " << n_shard << "; a model has 1 to 99999 expert shards",
              "the file is corrupted or was not written by odmoe-weights; re-run the conversion");
  h.shard_idx = static_cast<int>(shard_idx);
  h.n_shard = static_cast<int>(n_shard);
  return h;
}

std::string read_bytes(hid_t file, const std::string& path) {
  ODMOE_CHECK(h5::exists(file, path), kHdf5, "missing", "dataset " << path << " is missing", "re-run the conversion");
  h5::Handle d = h5::open_dataset(file, path);
  const h5::DatasetInfo info = h5::dataset_info(d.get());
  ODMOE_CHECK(info.dims.size() == 1 && info.type_size == 1, kHdf5, "bad-type", path << " is not a byte dataset", "");
  // Its size comes from the file: allocate only what the file really stores.
  ODMOE_CHECK(info.dims[0] <= info.storage_bytes, kHdf5, "not-stored",
              path << " claims " << info.dims[0] << " bytes but stores " << info.storage_bytes,
              "the file is truncated or corrupted; re-run the conversion");
  std::string s(info.dims[0], '\0');
  read_checked(d.get(), "", path, s.data(), s.size());
  return s;
}

DType check_tensor_meta(hid_t file, const std::string& file_path, const TensorSpec& spec) {
  ODMOE_CHECK(h5::exists(file, spec.path), kHdf5, "missing-tensor",
              file_path << ": dataset " << spec.path << " is missing", "re-run the conversion");
  DType dtype;
  {
    h5::Handle d = h5::open_dataset(file, spec.path);
    const auto name = h5::get_attr_string(d.get(), layout::kAttrDtype);
    ODMOE_CHECK(name.has_value(), kHdf5, "no-dtype", file_path << ": " << spec.path << " has no dtype attribute", "");
    const auto parsed = parse_dtype(*name);
    ODMOE_CHECK(parsed.has_value(), kHdf5, "bad-dtype", file_path << ": " << spec.path << " has unknown dtype '"
                                                                  << *name << "'", "");
    dtype = *parsed;
    ODMOE_CHECK(!(dtype == DType::kInt4 && spec.shape.size() != 2), kHdf5, "bad-dtype",
                file_path << ": " << spec.path << " is int4 but not a matrix", "");
    const auto shape = h5::get_attr_u64_array(d.get(), layout::kAttrShape);
    ODMOE_CHECK(shape.has_value() && *shape == std::vector<uint64_t>(spec.shape.begin(), spec.shape.end()), kHdf5,
                "bad-shape",
                file_path << ": " << spec.path << " has shape " << (shape ? dims_str(*shape) : "<none>")
                          << ", the config wants " << shape_str(spec.shape),
                "the weights do not match config.json; re-run the conversion");
  }
  h5::DatasetInfo info;
  open_checked(file, file_path, spec.path, dtype, stored_dims(dtype, spec.shape), &info);
  if (is_quantized(dtype))
    open_checked(file, file_path, spec.scale_path(), DType::kF32, scale_dims(dtype, spec.shape), &info);
  return dtype;
}

EncodedTensor read_stored_tensor(hid_t file, const std::string& file_path, const TensorSpec& spec) {
  EncodedTensor t;
  t.dtype = check_tensor_meta(file, file_path, spec);
  t.rows = spec.rows();
  t.cols = spec.cols();
  t.data.resize(dtype_data_bytes(t.dtype, t.rows, t.cols));
  read_checked(h5::open_dataset(file, spec.path).get(), file_path, spec.path, t.data.data(), t.data.size());
  if (is_quantized(t.dtype)) {
    t.scales.resize(dtype_scale_count(t.dtype, t.rows, t.cols));
    read_checked(h5::open_dataset(file, spec.scale_path()).get(), file_path, spec.scale_path(), t.scales.data(),
                 t.scales.size() * 4);
  }
  return t;
}

ModelFiles::ModelFiles(const std::string& dir) : dir_(dir) {
  ODMOE_CHECK(fs::is_directory(dir), kIo, "no-model", "model directory " << dir << " does not exist",
              "convert a checkpoint first: odmoe-weights convert HF_DIR " << dir);
  ODMOE_CHECK(fs::exists(model_path()), kIo, "no-model",
              dir << " holds no " << layout::kModelFile << " (not a converted model, or the conversion did not finish)",
              "convert a checkpoint first: odmoe-weights convert HF_DIR " << dir);
  model_ = h5::open_file(model_path());
  header_ = read_file_header(model_.get(), model_path());
  ODMOE_CHECK(header_.kind == layout::kKindModel, kHdf5, "bad-kind",
              model_path() << " is a '" << header_.kind << "' file, not a model file", "");
  ODMOE_CHECK(header_.n_shard > 0, kHdf5, "bad-header", model_path() << " has no expert shard count", "");
  hf_config_json_ = read_bytes(model_.get(), layout::kHfConfigPath);
  tokenizer_json_ = read_bytes(model_.get(), layout::kTokenizerPath);
  config_ = ModelConfig::from_hf_json_text(hf_config_json_);
  // Lists and loops everywhere are sized by the layer count (tensor specs, validation, the
  // expert directory): it must be what the file holds before anything uses it.
  ODMOE_CHECK(h5::exists(model_.get(), layout::layer_group_path(config_.n_layer - 1)) &&
                  !h5::exists(model_.get(), layout::layer_group_path(config_.n_layer)),
              kHdf5, "bad-config",
              model_path() << ": its config.json says num_hidden_layers = " << config_.n_layer
                           << ", but the file does not hold layers 0 to " << config_.n_layer - 1 << " and no more",
              "the file is corrupted, or its config.json was edited; re-run the conversion");
  shards_.resize(static_cast<size_t>(header_.n_shard));
}

ModelFiles::~ModelFiles() = default;

std::string ModelFiles::model_path() const { return (fs::path(dir_) / layout::kModelFile).string(); }
std::string ModelFiles::shard_path(int i) const {
  return (fs::path(dir_) / layout::expert_shard_file(i, header_.n_shard)).string();
}
std::string ModelFiles::shadow_path() const { return (fs::path(dir_) / layout::kShadowFile).string(); }
bool ModelFiles::has_shadow() const { return fs::exists(shadow_path()); }

hid_t ModelFiles::shard_file(int i) const {
  ODMOE_CHECK(i >= 0 && i < header_.n_shard, kCore, "range", "shard index " << i << " out of range", "");
  auto& h = shards_[static_cast<size_t>(i)];
  if (!h.valid()) {
    const std::string p = shard_path(i);
    ODMOE_CHECK(fs::exists(p), kIo, "missing-shard", "expert shard " << p << " is missing",
                "copy the whole model directory, or re-run the conversion");
    h5::Handle f = h5::open_file(p);
    const FileHeader fh = read_file_header(f.get(), p);
    ODMOE_CHECK(fh.kind == layout::kKindExperts && fh.shard_idx == i && fh.n_shard == header_.n_shard, kHdf5,
                "bad-shard", p << " is not expert shard " << i << " of " << header_.n_shard, "");
    ODMOE_CHECK(fh.model_uid == header_.model_uid, kHdf5, "uid-mismatch",
                p << " belongs to another conversion than " << model_path() << " (model_uid differs)",
                "all files of a model directory must come from the same conversion; re-run it");
    h = std::move(f);
  }
  return h.get();
}

hid_t ModelFiles::shadow_file() const {
  if (!shadow_.valid()) {
    ODMOE_CHECK(has_shadow(), kIo, "no-shadow", dir_ << " has no " << layout::kShadowFile,
                "convert with --shadow int8|int4|f16 to write one");
    h5::Handle f = h5::open_file(shadow_path());
    const FileHeader fh = read_file_header(f.get(), shadow_path());
    ODMOE_CHECK(fh.kind == layout::kKindShadow && fh.model_uid == header_.model_uid, kHdf5, "uid-mismatch",
                shadow_path() << " is not the shadow of this model", "re-run the conversion");
    shadow_ = std::move(f);
  }
  return shadow_.get();
}

EncodedTensor ModelFiles::read_tensor(const TensorSpec& spec) const {
  if (spec.is_expert()) {
    const int s = layout::expert_shard_of(config_, spec.layer_idx, spec.expert_idx, header_.n_shard);
    return read_stored_tensor(shard_file(s), shard_path(s), spec);
  }
  return read_stored_tensor(model_.get(), model_path(), spec);
}

EncodedTensor ModelFiles::read_shadow_tensor(const TensorSpec& spec) const {
  return read_stored_tensor(shadow_file(), shadow_path(), spec);
}

ExpertExtent ModelFiles::expert_extent(int l, int e) const {
  ODMOE_CHECK(l >= 0 && l < config_.n_layer && e >= 0 && e < config_.n_expert, kCore, "range",
              "expert (" << l << ", " << e << ") out of range", "");
  ExpertExtent x;
  x.shard_idx = layout::expert_shard_of(config_, l, e, header_.n_shard);
  const hid_t f = shard_file(x.shard_idx);
  const auto specs = layout::expert_tensor_specs(config_, l, e);
  uint64_t lo = UINT64_MAX, hi = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    h5::Handle d = h5::open_dataset(f, specs[i].path);
    const auto dt = parse_dtype(h5::get_attr_string(d.get(), layout::kAttrDtype).value_or(""));
    ODMOE_CHECK(dt.has_value(), kHdf5, "bad-dtype", specs[i].path << " has no valid dtype attribute", "");
    x.dtype = *dt;
    const std::pair<const std::string, DatasetExtent*> parts[2] = {{specs[i].path, &x.data[i]},
                                                                   {specs[i].scale_path(), &x.scales[i]}};
    for (const auto& [path, out] : parts) {
      if (out == &x.scales[i] && !is_quantized(x.dtype)) continue;
      h5::Handle ds = h5::open_dataset(f, path);
      const h5::DatasetInfo info = h5::dataset_info(ds.get());
      ODMOE_CHECK(info.contiguous && info.offset != HADDR_UNDEF, kHdf5, "layout",
                  shard_path(x.shard_idx) << ": " << path << " is not a contiguous, allocated dataset",
                  "expert shards must be written by odmoe-weights");
      *out = {info.offset, info.storage_bytes};
      lo = std::min<uint64_t>(lo, info.offset);
      hi = std::max<uint64_t>(hi, info.offset + info.storage_bytes);
    }
  }
  x.offset = lo;
  x.bytes = hi - lo;
  return x;
}

// ---------------------------------------------------------------------------------------
// Validation

namespace {

class Problems {
 public:
  explicit Problems(size_t max) : max_(max) {}
  template <typename F>
  void check(F&& f) {
    if (full()) return;
    try {
      f();
    } catch (const Error& e) {
      add(e.hint().empty() ? e.message() : e.message() + "\n    HINT: " + e.hint());
    }
  }
  void add(std::string s) {
    if (!full()) list_.push_back(std::move(s));
  }
  bool full() const { return list_.size() >= max_; }
  std::vector<std::string> take() { return std::move(list_); }

 private:
  size_t max_;
  std::vector<std::string> list_;
};

uint32_t range_crc(const MappedFile& m, const DatasetExtent& x) { return crc32c(0, m.data() + x.offset, x.bytes); }

}  // namespace

std::vector<std::string> validate_model_dir(const std::string& dir, const ValidateOptions& opts) {
  Problems p(opts.max_problems);
  std::unique_ptr<ModelFiles> mf;
  p.check([&] { mf = std::make_unique<ModelFiles>(dir); });
  if (!mf) return p.take();
  const ModelConfig& cfg = mf->config();
  const DType wdt = mf->header().weight_dtype;
  if (mf->header().architecture != arch_hf_name(cfg.arch))
    p.add("model.h5 says architecture " + mf->header().architecture + " but its config.json says " +
          arch_hf_name(cfg.arch));

  auto check_dtype = [&](const std::string& where, const TensorSpec& s, DType got, DType file_dtype) {
    const DType want = layout::stored_dtype(s, file_dtype);
    if (got != want)
      p.add(where + ": " + s.path + " is " + dtype_name(got) + ", expected " + dtype_name(want));
  };

  for (const TensorSpec& s : layout::dense_tensor_specs(cfg)) {
    if (p.full()) break;
    p.check([&] {
      const EncodedTensor t = read_stored_tensor(mf->model_file(), mf->model_path(), s);
      check_dtype(mf->model_path(), s, t.dtype, wdt);
    });
  }

  // Expert shards: header, dtype, layout, alignment, one byte range per expert, checksums
  // over the memory-mapped range (the bytes RMA will serve).
  std::vector<std::unique_ptr<MappedFile>> maps(static_cast<size_t>(mf->n_shard()));
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> ranges(maps.size());
  for (int i = 0; i < mf->n_shard(); ++i)
    p.check([&] {
      mf->shard_file(i);
      maps[static_cast<size_t>(i)] = std::make_unique<MappedFile>(mf->shard_path(i));
    });
  for (int l = 0; l < cfg.n_layer && !p.full(); ++l) {
    for (int e = 0; e < cfg.n_expert && !p.full(); ++e) {
      p.check([&] {
        const ExpertExtent x = mf->expert_extent(l, e);
        const MappedFile* m = maps[static_cast<size_t>(x.shard_idx)].get();
        if (!m) return;  // shard problem already reported
        const std::string where = "expert (" + std::to_string(l) + ", " + std::to_string(e) + ") in " + m->path();
        const auto specs = layout::expert_tensor_specs(cfg, l, e);
        if (x.dtype != wdt) p.add(where + ": dtype " + dtype_name(x.dtype) + ", the model's is " + dtype_name(wdt));
        if (x.offset % layout::kAlignment != 0)
          p.add(where + ": byte range starts at " + std::to_string(x.offset) + ", not 4096-aligned");
        if (x.offset + x.bytes > m->size()) {
          p.add(where + ": byte range ends past the end of the file (truncated shard?)");
          return;
        }
        // Adjacent: the range holds these datasets and alignment padding only.
        uint64_t payload = 0;
        for (int t = 0; t < 3; ++t) payload += x.data[t].bytes + x.scales[t].bytes;
        const int n_parts = is_quantized(x.dtype) ? 6 : 3;
        if (x.bytes > payload + static_cast<uint64_t>(n_parts - 1) * layout::kAlignment)
          p.add(where + ": its tensors are not adjacent (range " + std::to_string(x.bytes) + " bytes for " +
                std::to_string(payload) + " bytes of data)");
        ranges[static_cast<size_t>(x.shard_idx)].push_back({x.offset, x.offset + x.bytes});
        // Attributes, shapes and stored sizes through HDF5; every byte of the mapped range
        // (what RMA will serve) against the checksums.
        const hid_t f = mf->shard_file(x.shard_idx);
        for (int t = 0; t < 3; ++t) {
          const TensorSpec& s = specs[static_cast<size_t>(t)];
          check_tensor_meta(f, m->path(), s);
          if (!opts.checksums) continue;
          const std::string paths[2] = {s.path, s.scale_path()};
          const DatasetExtent parts[2] = {x.data[t], x.scales[t]};
          for (int k = 0; k < (is_quantized(x.dtype) ? 2 : 1); ++k) {
            const auto want = h5::get_attr_int(h5::open_dataset(f, paths[k]).get(), layout::kAttrChecksum);
            if (!want || static_cast<uint32_t>(*want) != range_crc(*m, parts[k]))
              p.add(m->path() + ": checksum mismatch in " + paths[k] + " (the file is corrupted)");
          }
        }
      });
    }
  }
  for (auto& r : ranges) {
    std::sort(r.begin(), r.end());
    for (size_t i = 1; i < r.size(); ++i)
      if (r[i].first < r[i - 1].second) p.add("two experts' byte ranges overlap in one shard");
  }

  if (mf->has_shadow()) {
    p.check([&] {
      const hid_t f = mf->shadow_file();
      const FileHeader sh = read_file_header(f, mf->shadow_path());
      for (const TensorSpec& s : layout::dense_tensor_specs(cfg)) {
        if (p.full()) return;
        p.check([&] { check_dtype(mf->shadow_path(), s, read_stored_tensor(f, mf->shadow_path(), s).dtype, sh.weight_dtype); });
      }
      for (int l = 0; l < cfg.n_layer; ++l)
        for (int e = 0; e < cfg.n_expert; ++e)
          for (const TensorSpec& s : layout::expert_tensor_specs(cfg, l, e)) {
            if (p.full()) return;
            p.check([&] { check_dtype(mf->shadow_path(), s, read_stored_tensor(f, mf->shadow_path(), s).dtype, sh.weight_dtype); });
          }
    });
  }
  return p.take();
}

}  // namespace odmoe
