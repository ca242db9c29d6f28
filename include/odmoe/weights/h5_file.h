// Small RAII layer over the HDF5 C API. Knows nothing about the weight format
// (that is shard_layout's job); it only turns handles into objects and HDF5 failures into
// odmoe::Error with the innermost message of HDF5's error stack.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace odmoe::h5 {

// Owns one hid_t and closes it with the matching H5*close.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*closer)(hid_t)) : id_(id), closer_(closer) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& o) noexcept : id_(o.id_), closer_(o.closer_) { o.id_ = H5I_INVALID_HID; }
  Handle& operator=(Handle&& o) noexcept;
  ~Handle() { reset(); }

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset();
  // Closes now and reports a failure (e.g. a file whose final flush failed).
  void close_checked(const std::string& what);

 private:
  hid_t id_ = H5I_INVALID_HID;
  herr_t (*closer_)(hid_t) = nullptr;
};

// Turns off HDF5's own printing of error stacks (we report them ourselves). Idempotent.
void quiet_errors();

// Innermost description on HDF5's current error stack ("" if none).
std::string last_error();

// Files. `align` > 0 aligns every object of at least 1 byte to `align` bytes (raw data of
// contiguous datasets included) and keeps metadata in large blocks.
Handle create_file(const std::string& path, size_t align);
Handle open_file(const std::string& path);  // read-only

bool exists(hid_t loc, const std::string& path);  // every component of `path` exists
Handle open_dataset(hid_t file, const std::string& path);

struct DatasetInfo {
  std::vector<uint64_t> dims;
  H5T_class_t type_class = H5T_NO_CLASS;
  size_t type_size = 0;
  H5T_sign_t sign = H5T_SGN_NONE;
  H5T_order_t order = H5T_ORDER_NONE;
  bool contiguous = false;
  haddr_t offset = HADDR_UNDEF;  // byte offset in the file (contiguous, allocated)
  uint64_t storage_bytes = 0;
};
DatasetInfo dataset_info(hid_t dset);

// Creates `path` (and missing parent groups) as a contiguous dataset of `file_type`. Its
// data block is allocated by the first write_dataset_raw.
Handle create_dataset(hid_t file, const std::string& path, hid_t file_type, const std::vector<uint64_t>& dims);
// Writes the whole dataset from memory laid out exactly as its file type (no conversion).
void write_dataset_raw(hid_t dset, const void* data);
// Reads the whole dataset as its own file type (no conversion) into `out` (size must match).
void read_dataset_raw(hid_t dset, void* out, size_t bytes);

// Attributes on any object.
void set_attr_string(hid_t obj, const char* name, const std::string& v);
void set_attr_i32(hid_t obj, const char* name, int32_t v);
void set_attr_u32(hid_t obj, const char* name, uint32_t v);
void set_attr_u64(hid_t obj, const char* name, uint64_t v);
void set_attr_u64_array(hid_t obj, const char* name, const std::vector<uint64_t>& v);
// Reads return nullopt if the attribute is absent and throw if it has another type or shape.
std::optional<std::string> get_attr_string(hid_t obj, const char* name);
std::optional<int64_t> get_attr_int(hid_t obj, const char* name);  // any integer attribute, scalar
std::optional<std::vector<uint64_t>> get_attr_u64_array(hid_t obj, const char* name);

}  // namespace odmoe::h5
