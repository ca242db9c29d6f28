#include "odmoe/weights/h5_file.h"

#include <mutex>

#include "odmoe/core/error.h"

namespace odmoe::h5 {
namespace {

herr_t walk_cb(unsigned n, const H5E_error2_t* err, void* client) {
  auto* out = static_cast<std::string*>(client);
  if (n == 0 && err && err->desc) *out = err->desc;  // innermost: the most specific reason
  return 0;
}

[[noreturn]] void fail(const std::string& what) {
  const std::string why = last_error();
  ODMOE_THROW(kHdf5, "hdf5", what << (why.empty() ? "" : ": ") << why,
              "the file may be truncated, corrupted, or not an odmoe HDF5 file; `odmoe-weights validate` "
              "checks a model directory");
}

Handle attr_create(hid_t obj, const char* name, hid_t type, hid_t space) {
  if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
  hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  if (a < 0) fail(std::string("cannot create attribute ") + name);
  return Handle(a, H5Aclose);
}

void set_scalar(hid_t obj, const char* name, hid_t file_type, hid_t mem_type, const void* v) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle a = attr_create(obj, name, file_type, space.get());
  if (H5Awrite(a.get(), mem_type, v) < 0) fail(std::string("cannot write attribute ") + name);
}

std::optional<Handle> attr_open(hid_t obj, const char* name) {
  const htri_t e = H5Aexists(obj, name);
  if (e < 0) fail(std::string("cannot look up attribute ") + name);
  if (e == 0) return std::nullopt;
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  if (a < 0) fail(std::string("cannot open attribute ") + name);
  return Handle(a, H5Aclose);
}

}  // namespace

Handle& Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    reset();
    id_ = o.id_;
    closer_ = o.closer_;
    o.id_ = H5I_INVALID_HID;
  }
  return *this;
}

void Handle::reset() {
  if (id_ >= 0 && closer_) closer_(id_);
  id_ = H5I_INVALID_HID;
}

void Handle::close_checked(const std::string& what) {
  if (id_ < 0) return;
  const herr_t rc = closer_(id_);
  id_ = H5I_INVALID_HID;
  if (rc < 0) fail("cannot close " + what);
}

void quiet_errors() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

std::string last_error() {
  std::string out;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, &out);
  H5Eclear2(H5E_DEFAULT);
  return out;
}

Handle create_file(const std::string& path, size_t align) {
  quiet_errors();
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (align > 0) {
    // threshold 1: every allocation is aligned, raw data included. Metadata is gathered in
    // big blocks so alignment does not pad each small object header.
    if (H5Pset_alignment(fapl.get(), 1, align) < 0) fail("cannot set alignment");
    if (H5Pset_meta_block_size(fapl.get(), 256 << 10) < 0) fail("cannot set metadata block size");
    if (H5Pset_small_data_block_size(fapl.get(), 0) < 0) fail("cannot set small data block size");
  }
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  if (f < 0) fail("cannot create " + path);
  return Handle(f, H5Fclose);
}

Handle open_file(const std::string& path) {
  quiet_errors();
  const htri_t is_h5 = H5Fis_hdf5(path.c_str());
  if (is_h5 <= 0) {
    H5Eclear2(H5E_DEFAULT);
    ODMOE_THROW(kHdf5, "not-hdf5", path << " is not an HDF5 file (or cannot be read)",
                "the file is missing, truncated or was not written by odmoe-weights; re-run the conversion");
  }
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) fail("cannot open " + path);
  return Handle(f, H5Fclose);
}

bool exists(hid_t loc, const std::string& path) {
  // H5Lexists fails (rather than returning 0) when an intermediate group is missing.
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    const std::string prefix = path.substr(0, pos);
    if (prefix.empty() || prefix == "/") continue;
    const htri_t e = H5Lexists(loc, prefix.c_str(), H5P_DEFAULT);
    if (e <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
  }
  return true;
}

Handle open_dataset(hid_t file, const std::string& path) {
  hid_t d = H5Dopen2(file, path.c_str(), H5P_DEFAULT);
  if (d < 0) fail("cannot open dataset " + path);
  return Handle(d, H5Dclose);
}

DatasetInfo dataset_info(hid_t dset) {
  DatasetInfo info;
  Handle space(H5Dget_space(dset), H5Sclose);
  if (!space.valid()) fail("cannot get dataspace");
  const int nd = H5Sget_simple_extent_ndims(space.get());
  if (nd < 0) fail("cannot get rank");
  std::vector<hsize_t> dims(static_cast<size_t>(nd));
  if (nd > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  info.dims.assign(dims.begin(), dims.end());
  Handle type(H5Dget_type(dset), H5Tclose);
  if (!type.valid()) fail("cannot get datatype");
  info.type_class = H5Tget_class(type.get());
  info.type_size = H5Tget_size(type.get());
  if (info.type_class == H5T_INTEGER) info.sign = H5Tget_sign(type.get());
  info.order = H5Tget_order(type.get());
  Handle dcpl(H5Dget_create_plist(dset), H5Pclose);
  info.contiguous = dcpl.valid() && H5Pget_layout(dcpl.get()) == H5D_CONTIGUOUS;
  info.offset = H5Dget_offset(dset);
  if (info.offset == HADDR_UNDEF) H5Eclear2(H5E_DEFAULT);
  info.storage_bytes = H5Dget_storage_size(dset);
  return info;
}

Handle create_dataset(hid_t file, const std::string& path, hid_t file_type, const std::vector<uint64_t>& dims) {
  std::vector<hsize_t> hd(dims.begin(), dims.end());
  Handle space(H5Screate_simple(static_cast<int>(hd.size()), hd.data(), nullptr), H5Sclose);
  if (!space.valid()) fail("cannot create dataspace for " + path);
  Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  H5Pset_layout(dcpl.get(), H5D_CONTIGUOUS);
  // File space for the data is taken at the first write, so datasets written one after the
  // other get adjacent blocks (headers and attributes live in separate metadata blocks).
  H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_LATE);
  H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER);
  hid_t d = H5Dcreate2(file, path.c_str(), file_type, space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT);
  if (d < 0) fail("cannot create dataset " + path);
  return Handle(d, H5Dclose);
}

void write_dataset_raw(hid_t dset, const void* data) {
  Handle type(H5Dget_type(dset), H5Tclose);
  if (H5Dwrite(dset, type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) fail("cannot write dataset");
}

void read_dataset_raw(hid_t dset, void* out, size_t bytes) {
  Handle type(H5Dget_type(dset), H5Tclose);
  Handle space(H5Dget_space(dset), H5Sclose);
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  if (n < 0 || static_cast<size_t>(n) * H5Tget_size(type.get()) != bytes)
    ODMOE_THROW(kHdf5, "size", "dataset holds " << n << " elements of " << H5Tget_size(type.get())
                                                << " bytes, expected " << bytes << " bytes", "");
  if (H5Dread(dset, type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) fail("cannot read dataset");
}

void set_attr_string(hid_t obj, const char* name, const std::string& v) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), v.empty() ? 1 : v.size());
  H5Tset_strpad(type.get(), H5T_STR_NULLPAD);
  set_scalar(obj, name, type.get(), type.get(), v.empty() ? "" : v.data());
}

void set_attr_i32(hid_t obj, const char* name, int32_t v) { set_scalar(obj, name, H5T_STD_I32LE, H5T_NATIVE_INT32, &v); }
void set_attr_u32(hid_t obj, const char* name, uint32_t v) {
  set_scalar(obj, name, H5T_STD_U32LE, H5T_NATIVE_UINT32, &v);
}
void set_attr_u64(hid_t obj, const char* name, uint64_t v) {
  set_scalar(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &v);
}

void set_attr_u64_array(hid_t obj, const char* name, const std::vector<uint64_t>& v) {
  const hsize_t n = v.size();
  Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose);
  Handle a = attr_create(obj, name, H5T_STD_U64LE, space.get());
  if (H5Awrite(a.get(), H5T_NATIVE_UINT64, v.data()) < 0) fail(std::string("cannot write attribute ") + name);
}

std::optional<std::string> get_attr_string(hid_t obj, const char* name) {
  auto a = attr_open(obj, name);
  if (!a) return std::nullopt;
  Handle type(H5Aget_type(a->get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING || H5Tis_variable_str(type.get()) > 0)
    ODMOE_THROW(kHdf5, "attr-type", "attribute " << name << " is not a fixed-length string", "");
  const size_t n = H5Tget_size(type.get());
  if (n > (1u << 20)) ODMOE_THROW(kHdf5, "attr-type", "attribute " << name << " is implausibly long", "");
  std::string s(n, '\0');
  if (H5Aread(a->get(), type.get(), s.data()) < 0) fail(std::string("cannot read attribute ") + name);
  s.resize(s.find('\0') == std::string::npos ? n : s.find('\0'));
  return s;
}

std::optional<int64_t> get_attr_int(hid_t obj, const char* name) {
  auto a = attr_open(obj, name);
  if (!a) return std::nullopt;
  Handle type(H5Aget_type(a->get()), H5Tclose);
  Handle space(H5Aget_space(a->get()), H5Sclose);
  if (H5Tget_class(type.get()) != H5T_INTEGER || H5Sget_simple_extent_npoints(space.get()) != 1)
    ODMOE_THROW(kHdf5, "attr-type", "attribute " << name << " is not a scalar integer", "");
  if (H5Tget_sign(type.get()) == H5T_SGN_NONE) {
    uint64_t v = 0;
    if (H5Aread(a->get(), H5T_NATIVE_UINT64, &v) < 0) fail(std::string("cannot read attribute ") + name);
    return static_cast<int64_t>(v);
  }
  int64_t v = 0;
  if (H5Aread(a->get(), H5T_NATIVE_INT64, &v) < 0) fail(std::string("cannot read attribute ") + name);
  return v;
}

std::optional<std::vector<uint64_t>> get_attr_u64_array(hid_t obj, const char* name) {
  auto a = attr_open(obj, name);
  if (!a) return std::nullopt;
  Handle type(H5Aget_type(a->get()), H5Tclose);
  Handle space(H5Aget_space(a->get()), H5Sclose);
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  if (H5Tget_class(type.get()) != H5T_INTEGER || n < 0 || n > 8)
    ODMOE_THROW(kHdf5, "attr-type", "attribute " << name << " is not a short integer array", "");
  std::vector<uint64_t> v(static_cast<size_t>(n));
  if (n > 0 && H5Aread(a->get(), H5T_NATIVE_UINT64, v.data()) < 0) fail(std::string("cannot read attribute ") + name);
  return v;
}

}  // namespace odmoe::h5
