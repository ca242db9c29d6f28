// Reader of Hugging Face .safetensors files: an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets: [begin, end)}, "__metadata__": {...}}, then the
// data. The header is validated completely before any data is touched (it is outside data:
// see the fuzz target), and tensors are read with pread one at a time so converting a
// model never holds more than one tensor in memory.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace odmoe {

struct SafetensorsEntry {
  std::string name;
  std::string dtype;           // "F32", "BF16", "F16", ... as written
  std::vector<uint64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets relative to the start of the data section

  uint64_t numel() const;
};

// Bytes per element of a safetensors dtype name, 0 if unknown.
size_t safetensors_dtype_size(std::string_view dtype);

// Parses and validates a header against a data section of `data_bytes` bytes. Throws
// odmoe::Error (kSafetensors) naming the problem. Exposed for tests and fuzzing.
std::map<std::string, SafetensorsEntry> parse_safetensors_header(std::string_view header_json, uint64_t data_bytes);

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  SafetensorsFile(SafetensorsFile&& o) noexcept;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorsEntry>& entries() const { return entries_; }
  uint64_t file_bytes() const { return file_bytes_; }

  // Reads `count` elements starting at element `first` of a tensor, converted to f32.
  // Supported element types: F32, BF16, F16.
  void read_f32(const SafetensorsEntry& e, uint64_t first, uint64_t count, float* out) const;

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t file_bytes_ = 0;
  uint64_t data_start_ = 0;
  std::map<std::string, SafetensorsEntry> entries_;
};

}  // namespace odmoe
