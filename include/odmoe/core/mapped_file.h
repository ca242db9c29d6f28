// A whole file mapped read-only into memory. The expert store serves these pages through
// MPI RMA windows; `validate` and the tests read expert byte ranges through them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace odmoe {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // throws odmoe::Error (kIo)
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  ~MappedFile();

  const uint8_t* data() const { return static_cast<const uint8_t*>(addr_); }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  void* addr_ = nullptr;
  size_t size_ = 0;
};

// Size of a file in bytes; throws if it cannot be stat'ed.
uint64_t file_size(const std::string& path);

}  // namespace odmoe
