// Fuzz target: a model directory (model.h5, expert shards, shadow.h5) whose HDF5 content
// odmoe did not write, read the way every command reads it (ModelFiles, read_file_header,
// expert_extent, read_tensor, `odmoe-weights validate`).
//
// What is fuzzed, and why not the raw file bytes: flipping bytes of an HDF5 file mostly
// fuzzes libhdf5's own metadata decoder (superblock, object headers, B-trees), whose bugs
// odmoe can neither fix nor catch, and it almost never produces a well-formed file whose
// *content* is wrong, which is where odmoe's own parsing lives: the root attributes and the
// format version, the per-dataset dtype/shape/crc32c attributes, the HF config.json and
// tokenizer.json kept as byte datasets, the datasets' HDF5 types, dims, layouts and byte
// ranges, missing/extra/aliased objects, missing or swapped files. So a base model is
// written once with the project's own writer (a tiny synthetic Mixtral: 2 layers, 2
// experts, int8, 2 expert shards, an int4 shadow), and each input is a short program of
// edits that the target applies to a fresh copy with the HDF5 API before opening it:
//
//   FILE attr OBJ NAME TYPE VALUE   set an attribute; TYPE: str vstr i8 i16 i32 i64 u8 u16
//                                   u32 u64 f32 f64 (scalars), i32s u64s f64s (comma lists),
//                                   null (an empty dataspace)
//   FILE delattr OBJ NAME           delete an attribute
//   FILE cfg KEY JSON               set a key of model.h5's config.json (JSON, else a string)
//   FILE cfgdel KEY                 delete a key of it
//   FILE bytes DSET TEXT            replace a byte dataset (config.json, tokenizer.json) by TEXT
//   FILE dset DSET TYPE DIMS [MODE] replace a dataset by one of another type and dims (keeping
//                                   its dtype/shape/crc32c attributes); MODE: late (default:
//                                   no data stored), write, chunked, compact
//   FILE crc DSET                   recompute a dataset's crc32c from what it stores
//   FILE unlink PATH | group PATH | link SRC DST | softlink TARGET DST
//   FILE flipdata DSET INDEX        flip a byte of a dataset's stored data
//   FILE truncate N | remove | garbage TEXT | copy OTHER_FILE
//
// FILE is model, shard0, shard1 or shadow; OBJ and DSET are HDF5 paths ("/" is the root);
// TEXT may use \n, \t, \\ and \xHH. Lines that do not parse are skipped. Expected
// failures: odmoe::Error only. A base copy with no edits must validate without a problem.
#include <hdf5.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "fuzz_check.h"
#include "odmoe/core/checksum.h"
#include "odmoe/core/error.h"
#include "odmoe/tokenizer/tokenizer.h"
#include "odmoe/weights/h5_file.h"
#include "odmoe/weights/model_files.h"
#include "odmoe/weights/model_writer.h"
#include "odmoe/weights/shard_layout.h"

namespace fs = std::filesystem;
using odmoe::h5::Handle;

namespace {

constexpr size_t kMaxCommands = 32;
constexpr uint64_t kMaxWrittenBytes = 4u << 20;  // data actually written by `dset ... write`

constexpr const char* kBaseConfig = R"({
  "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
  "vocab_size": 256, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
  "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8, "num_local_experts": 2,
  "num_experts_per_tok": 2, "max_position_embeddings": 64, "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2})";

// The scratch directories: base/ holds the model as written, work/ the copy each input edits.
struct Dirs {
  fs::path root, base, work;
};

Dirs* g_dirs = nullptr;

// Registered with atexit: libFuzzer leaves through exit() when its time is up.
void remove_root() {
  if (g_dirs) {
    std::error_code ec;
    fs::remove_all(g_dirs->root, ec);
  }
}

const Dirs& dirs() {
  static Dirs d = [] {
    Dirs x;
    // Memory-backed when /dev/shm is there: each input rewrites a few hundred KiB.
    std::error_code ec;
    const fs::path parent = fs::is_directory("/dev/shm", ec) && access("/dev/shm", W_OK) == 0
                                ? fs::path("/dev/shm")
                                : fs::temp_directory_path();
    // Directories left by runs that crashed (the process is gone) are removed first.
    const std::string prefix = "odmoe-fuzz-model-dir-";
    for (const auto& ent : fs::directory_iterator(parent, ec)) {
      const std::string name = ent.path().filename().string();
      if (name.rfind(prefix, 0) != 0) continue;
      const long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
      if (pid > 0 && kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) fs::remove_all(ent.path(), ec);
    }
    x.root = parent / (prefix + std::to_string(getpid()));
    fs::remove_all(x.root, ec);
    x.base = x.root / "base";
    x.work = x.root / "work";
    fs::create_directories(x.root);
    odmoe::WriteOptions opts;
    opts.dtype = odmoe::DType::kInt8;
    opts.n_shard = 2;
    opts.shadow_dtype = odmoe::DType::kInt4;
    odmoe::write_model_dir(odmoe::synth_source(kBaseConfig, 0, 1), x.base.string(), opts);
    return x;
  }();
  if (!g_dirs) {
    g_dirs = &d;
    std::atexit(remove_root);
  }
  return d;
}

std::string file_name(const std::string& key) {
  if (key == "model") return odmoe::layout::kModelFile;
  if (key == "shard0") return odmoe::layout::expert_shard_file(0, 2);
  if (key == "shard1") return odmoe::layout::expert_shard_file(1, 2);
  if (key == "shadow") return odmoe::layout::kShadowFile;
  return "";
}

// "a\x41\n" -> bytes.
std::string unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    const char c = s[++i];
    if (c == 'n') out += '\n';
    else if (c == 't') out += '\t';
    else if (c == '0') out += '\0';
    else if (c == 'x' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
             std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else out += c;
  }
  return out;
}

// Splits off the first word of `rest` (up to a space).
std::string word(std::string_view& rest) {
  const size_t sp = rest.find(' ');
  std::string w(rest.substr(0, sp));
  rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
  return w;
}

template <typename T>
std::vector<T> number_list(const std::string& s, size_t max_n) {
  std::vector<T> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',') && out.size() < max_n) {
    if constexpr (std::is_floating_point_v<T>)
      out.push_back(static_cast<T>(std::strtod(item.c_str(), nullptr)));
    else if constexpr (std::is_signed_v<T>)
      out.push_back(static_cast<T>(std::strtoll(item.c_str(), nullptr, 0)));
    else
      out.push_back(static_cast<T>(std::strtoull(item.c_str(), nullptr, 0)));
  }
  return out;
}

struct TypeName {
  const char* name;
  hid_t file_type;
  hid_t mem_type;
};
// Read when the HDF5 library is initialised (the H5T_* names are global variables).
std::optional<TypeName> numeric_type(const std::string& n) {
  const TypeName types[] = {
      {"i8", H5T_STD_I8LE, H5T_NATIVE_INT8},       {"i16", H5T_STD_I16LE, H5T_NATIVE_INT16},
      {"i32", H5T_STD_I32LE, H5T_NATIVE_INT32},    {"i64", H5T_STD_I64LE, H5T_NATIVE_INT64},
      {"u8", H5T_STD_U8LE, H5T_NATIVE_UINT8},      {"u16", H5T_STD_U16LE, H5T_NATIVE_UINT16},
      {"u32", H5T_STD_U32LE, H5T_NATIVE_UINT32},   {"u64", H5T_STD_U64LE, H5T_NATIVE_UINT64},
      {"f32", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT},   {"f64", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE},
      {"i16be", H5T_STD_I16BE, H5T_NATIVE_INT16},  {"u16be", H5T_STD_U16BE, H5T_NATIVE_UINT16},
      {"f32be", H5T_IEEE_F32BE, H5T_NATIVE_FLOAT},
  };
  for (const TypeName& t : types)
    if (n == t.name) return t;
  return std::nullopt;
}

Handle open_object(hid_t file, const std::string& path) {
  if (path != "/" && !odmoe::h5::exists(file, path)) return Handle();
  const hid_t o = H5Oopen(file, path.c_str(), H5P_DEFAULT);
  return o < 0 ? Handle() : Handle(o, H5Oclose);
}

void write_attr(hid_t obj, const std::string& name, const std::string& type, const std::string& value) {
  if (H5Aexists(obj, name.c_str()) > 0) H5Adelete(obj, name.c_str());
  if (type == "str") {
    odmoe::h5::set_attr_string(obj, name.c_str(), unescape(value));
    return;
  }
  if (type == "vstr") {
    Handle t(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(t.get(), H5T_VARIABLE);
    Handle space(H5Screate(H5S_SCALAR), H5Sclose);
    Handle a(H5Acreate2(obj, name.c_str(), t.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    const std::string v = unescape(value);
    const char* p = v.c_str();
    if (a.valid()) H5Awrite(a.get(), t.get(), &p);
    return;
  }
  if (type == "null") {
    Handle space(H5Screate(H5S_NULL), H5Sclose);
    Handle a(H5Acreate2(obj, name.c_str(), H5T_STD_I32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    return;
  }
  const bool list = type.size() > 1 && type.back() == 's';
  const auto t = numeric_type(list ? type.substr(0, type.size() - 1) : type);
  if (!t) return;
  const size_t max_n = list ? 64 : 1;
  const bool fp = H5Tget_class(t->file_type) == H5T_FLOAT;
  // Everything goes through double or 64-bit integers; HDF5 converts to the file type.
  std::vector<double> d;
  std::vector<int64_t> i;
  std::vector<uint64_t> u;
  hid_t mem = H5T_NATIVE_DOUBLE;
  const void* buf = nullptr;
  size_t n = 0;
  if (fp) {
    d = number_list<double>(value, max_n);
    buf = d.data(), n = d.size();
  } else if (H5Tget_sign(t->file_type) == H5T_SGN_NONE) {
    u = number_list<uint64_t>(value, max_n);
    mem = H5T_NATIVE_UINT64, buf = u.data(), n = u.size();
  } else {
    i = number_list<int64_t>(value, max_n);
    mem = H5T_NATIVE_INT64, buf = i.data(), n = i.size();
  }
  if (n == 0) return;
  const hsize_t dim = n;
  Handle space(list ? H5Screate_simple(1, &dim, nullptr) : H5Screate(H5S_SCALAR), H5Sclose);
  Handle a(H5Acreate2(obj, name.c_str(), t->file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!a.valid()) return;
  // Out-of-range values are clipped by the conversion, as a foreign writer might store them.
  H5Awrite(a.get(), mem, buf);
}

std::string read_raw_bytes(hid_t file, const std::string& path) {
  if (!odmoe::h5::exists(file, path)) return "";
  Handle d(H5Dopen2(file, path.c_str(), H5P_DEFAULT), H5Dclose);
  if (!d.valid()) return "";
  Handle space(H5Dget_space(d.get()), H5Sclose);
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  if (n <= 0 || n > (1 << 24)) return "";
  std::string s(static_cast<size_t>(n), '\0');
  if (H5Dread(d.get(), H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, s.data()) < 0) return "";
  return s;
}

void write_byte_dataset(hid_t file, const std::string& path, const std::string& bytes) {
  if (odmoe::h5::exists(file, path)) H5Ldelete(file, path.c_str(), H5P_DEFAULT);
  Handle d = odmoe::h5::create_dataset(file, path, H5T_STD_U8LE, {bytes.size()});
  if (!bytes.empty()) odmoe::h5::write_dataset_raw(d.get(), bytes.data());
  odmoe::h5::set_attr_u32(d.get(), odmoe::layout::kAttrChecksum, odmoe::crc32c(0, bytes.data(), bytes.size()));
}

// The stored bytes of a dataset, read as its own file type (what the crc32c covers).
std::optional<std::vector<unsigned char>> stored_bytes(hid_t d) {
  Handle type(H5Dget_type(d), H5Tclose);
  Handle space(H5Dget_space(d), H5Sclose);
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  const size_t el = H5Tget_size(type.get());
  if (n < 0 || el == 0 || static_cast<uint64_t>(n) * el > kMaxWrittenBytes || H5Tis_variable_str(type.get()) > 0)
    return std::nullopt;
  std::vector<unsigned char> buf(static_cast<size_t>(n) * el + 1);
  if (n > 0 && H5Dread(d, type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0) return std::nullopt;
  buf.pop_back();
  return buf;
}

void replace_dataset(hid_t file, const std::string& path, const std::string& type_name, const std::string& dims_text,
                     const std::string& mode) {
  const auto t = numeric_type(type_name);
  if (!t) return;
  const std::vector<uint64_t> dims = number_list<uint64_t>(dims_text, 4);
  uint64_t bytes = H5Tget_size(t->file_type);
  for (uint64_t x : dims) bytes = x != 0 && bytes > UINT64_MAX / x ? UINT64_MAX : bytes * x;
  // The standard attributes of the old dataset, carried over (read with odmoe's own readers).
  std::optional<std::string> dtype;
  std::optional<std::vector<uint64_t>> shape;
  std::optional<int64_t> crc, group;
  if (odmoe::h5::exists(file, path)) {
    Handle old = open_object(file, path);
    if (old.valid() && H5Iget_type(old.get()) == H5I_DATASET) {
      try {
        dtype = odmoe::h5::get_attr_string(old.get(), odmoe::layout::kAttrDtype);
        shape = odmoe::h5::get_attr_u64_array(old.get(), odmoe::layout::kAttrShape);
        crc = odmoe::h5::get_attr_int(old.get(), odmoe::layout::kAttrChecksum);
        group = odmoe::h5::get_attr_int(old.get(), odmoe::layout::kAttrGroupSize);
      } catch (const odmoe::Error&) {
      }
    }
    old.reset();
    H5Ldelete(file, path.c_str(), H5P_DEFAULT);
  }
  std::vector<hsize_t> hd(dims.begin(), dims.end());
  Handle space(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(hd.size()), hd.data(), nullptr),
               H5Sclose);
  if (!space.valid()) return;
  Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  bool write = mode == "write";
  if (mode == "chunked" && !dims.empty()) {
    std::vector<hsize_t> chunk(hd.size());
    for (size_t k = 0; k < hd.size(); ++k) chunk[k] = std::clamp<hsize_t>(hd[k], 1, 64);
    H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data());
    write = true;
  } else if (mode == "compact" && bytes <= 32768) {
    H5Pset_layout(dcpl.get(), H5D_COMPACT);
    write = true;
  } else {
    H5Pset_layout(dcpl.get(), H5D_CONTIGUOUS);
    H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_LATE);
  }
  Handle d(H5Dcreate2(file, path.c_str(), t->file_type, space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT), H5Dclose);
  if (!d.valid()) return;
  if (write && bytes <= kMaxWrittenBytes) {
    std::vector<unsigned char> data(static_cast<size_t>(bytes) + 1);
    for (size_t k = 0; k < data.size(); ++k) data[k] = static_cast<unsigned char>(k * 31 + 7);
    H5Dwrite(d.get(), t->file_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data());
  }
  if (dtype) odmoe::h5::set_attr_string(d.get(), odmoe::layout::kAttrDtype, *dtype);
  if (shape) odmoe::h5::set_attr_u64_array(d.get(), odmoe::layout::kAttrShape, *shape);
  if (crc) odmoe::h5::set_attr_u32(d.get(), odmoe::layout::kAttrChecksum, static_cast<uint32_t>(*crc));
  if (group) odmoe::h5::set_attr_i32(d.get(), odmoe::layout::kAttrGroupSize, static_cast<int32_t>(*group));
}

// Applies one edit to an HDF5 file that exists. Returns without effect when it does not apply.
void edit_hdf5(const std::string& path, const std::string& op, std::string_view rest) {
  if (H5Fis_hdf5(path.c_str()) <= 0) return;
  Handle f(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose);
  if (!f.valid()) return;
  const hid_t file = f.get();
  if (op == "attr") {
    const std::string obj = word(rest), name = word(rest), type = word(rest);
    Handle o = open_object(file, obj);
    if (o.valid() && !name.empty()) write_attr(o.get(), name, type, std::string(rest));
  } else if (op == "delattr") {
    const std::string obj = word(rest), name = word(rest);
    Handle o = open_object(file, obj);
    if (o.valid() && H5Aexists(o.get(), name.c_str()) > 0) H5Adelete(o.get(), name.c_str());
  } else if (op == "cfg" || op == "cfgdel") {
    const std::string key = word(rest);
    nlohmann::json j = nlohmann::json::parse(read_raw_bytes(file, odmoe::layout::kHfConfigPath), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return;
    if (op == "cfgdel") {
      j.erase(key);
    } else {
      const std::string v = unescape(rest);
      const nlohmann::json value = nlohmann::json::parse(v, nullptr, false);
      j[key] = value.is_discarded() ? nlohmann::json(v) : value;
    }
    // Invalid UTF-8 in a string value is written as the replacement character.
    write_byte_dataset(file, odmoe::layout::kHfConfigPath, j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
  } else if (op == "bytes") {
    const std::string dset = word(rest);
    if (dset.size() > 1) write_byte_dataset(file, dset, unescape(rest));
  } else if (op == "dset") {
    const std::string dset = word(rest), type = word(rest), dims = word(rest), mode = word(rest);
    if (dset.size() > 1) replace_dataset(file, dset, type, dims, mode);
  } else if (op == "crc") {
    Handle o = open_object(file, word(rest));
    if (!o.valid() || H5Iget_type(o.get()) != H5I_DATASET) return;
    if (auto b = stored_bytes(o.get()))
      odmoe::h5::set_attr_u32(o.get(), odmoe::layout::kAttrChecksum, odmoe::crc32c(0, b->data(), b->size()));
  } else if (op == "unlink") {
    const std::string p = word(rest);
    if (p.size() > 1 && odmoe::h5::exists(file, p)) H5Ldelete(file, p.c_str(), H5P_DEFAULT);
  } else if (op == "group") {
    const std::string p = word(rest);
    if (p.size() <= 1) return;
    if (odmoe::h5::exists(file, p)) H5Ldelete(file, p.c_str(), H5P_DEFAULT);
    Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
    H5Pset_create_intermediate_group(lcpl.get(), 1);
    Handle g(H5Gcreate2(file, p.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
  } else if (op == "link" || op == "softlink") {
    const std::string src = word(rest), dst = word(rest);
    if (dst.size() <= 1 || src.empty()) return;
    if (odmoe::h5::exists(file, dst)) H5Ldelete(file, dst.c_str(), H5P_DEFAULT);
    Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
    H5Pset_create_intermediate_group(lcpl.get(), 1);
    if (op == "link")
      H5Lcreate_hard(file, src.c_str(), file, dst.c_str(), lcpl.get(), H5P_DEFAULT);
    else
      H5Lcreate_soft(src.c_str(), file, dst.c_str(), lcpl.get(), H5P_DEFAULT);
  }
}

void flip_data(const std::string& path, const std::string& dset, uint64_t index) {
  haddr_t offset = HADDR_UNDEF;
  hsize_t bytes = 0;
  {
    if (H5Fis_hdf5(path.c_str()) <= 0) return;
    Handle f(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    if (!f.valid() || !odmoe::h5::exists(f.get(), dset)) return;
    Handle d(H5Dopen2(f.get(), dset.c_str(), H5P_DEFAULT), H5Dclose);
    if (!d.valid()) return;
    offset = H5Dget_offset(d.get());
    bytes = H5Dget_storage_size(d.get());
  }
  H5Eclear2(H5E_DEFAULT);
  if (offset == HADDR_UNDEF || bytes == 0) return;
  std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
  io.seekg(static_cast<std::streamoff>(offset + index % bytes));
  char c = 0;
  if (!io.get(c)) return;
  io.seekp(static_cast<std::streamoff>(offset + index % bytes));
  io.put(static_cast<char>(c ^ 0x5a));
}

void apply(const Dirs& d, std::string_view line) {
  const std::string key = word(line), op = word(line);
  const std::string name = file_name(key);
  if (name.empty()) return;
  const std::string path = (d.work / name).string();
  std::error_code ec;
  if (op == "remove") {
    fs::remove(path, ec);
  } else if (op == "truncate") {
    const uint64_t n = std::strtoull(word(line).c_str(), nullptr, 0);
    const uint64_t size = fs::file_size(path, ec);
    if (!ec) fs::resize_file(path, n % (size + 1), ec);
  } else if (op == "garbage") {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << unescape(line);
  } else if (op == "copy") {
    const std::string other = file_name(word(line));
    if (!other.empty() && other != name) fs::copy_file(d.work / other, path, fs::copy_options::overwrite_existing, ec);
  } else if (op == "flipdata") {
    const std::string dset = word(line);
    flip_data(path, dset, std::strtoull(word(line).c_str(), nullptr, 0));
  } else if (fs::exists(path, ec)) {
    try {
      edit_hdf5(path, op, line);
    } catch (const odmoe::Error&) {
      // The edit itself did not apply (e.g. a path HDF5 refuses): the file stays as it was.
    }
  }
  H5Eclear2(H5E_DEFAULT);
}

// What odmoe does with a model directory before it computes with it: the engine opens it
// (ModelFiles: header, config, tokenizer), the expert store finds each expert's byte range,
// a local engine reads experts; `validate` then reads every dense and shadow tensor, every
// file header and every expert's range and checksum.
void read_model_dir(const Dirs& d) {
  try {
    odmoe::ModelFiles mf(d.work.string());
    const odmoe::ModelConfig& cfg = mf.config();
    (void)cfg.to_string();
    try {
      (void)odmoe::Tokenizer::from_json(mf.tokenizer_json());
    } catch (const odmoe::Error&) {
    }
    for (int l = 0; l < std::min(cfg.n_layer, 3); ++l)
      for (int e = 0; e < std::min(cfg.n_expert, 3); ++e) {
        try {
          const odmoe::ExpertExtent x = mf.expert_extent(l, e);
          (void)x;
        } catch (const odmoe::Error&) {
        }
        for (const auto& spec : odmoe::layout::expert_tensor_specs(cfg, l, e)) {
          try {
            (void)mf.read_tensor(spec);
          } catch (const odmoe::Error&) {
          }
        }
      }
  } catch (const odmoe::Error&) {
  }
  try {
    (void)odmoe::validate_model_dir(d.work.string());
  } catch (const odmoe::Error&) {
  }
}

void fresh_copy(const Dirs& d) {
  std::error_code ec;
  fs::remove_all(d.work, ec);
  fs::create_directories(d.work);
  for (const auto& ent : fs::directory_iterator(d.base)) fs::copy_file(ent.path(), d.work / ent.path().filename());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Dirs& d = dirs();
  static const bool base_ok = [&] {
    fresh_copy(d);
    const auto problems = odmoe::validate_model_dir(d.work.string());
    for (const auto& p : problems) std::fprintf(stderr, "fuzz_model_dir: base model: %s\n", p.c_str());
    return problems.empty();
  }();
  ODMOE_FUZZ_REQUIRE(base_ok, "the unedited base model does not validate");

  fresh_copy(d);
  odmoe::h5::quiet_errors();
  std::string_view program(reinterpret_cast<const char*>(data), size);
  for (size_t n = 0; !program.empty() && n < kMaxCommands; ++n) {
    const size_t nl = program.find('\n');
    apply(d, program.substr(0, nl));
    program = nl == std::string_view::npos ? std::string_view() : program.substr(nl + 1);
  }
  read_model_dir(d);
  return 0;
}
