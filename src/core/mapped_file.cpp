#include "odmoe/core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "odmoe/core/error.h"

namespace odmoe {

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ODMOE_CHECK(fd >= 0, kIo, "open", "cannot open " << path << ": " << std::strerror(errno), "check the path");
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    ODMOE_THROW(kIo, "stat", "cannot stat " << path << ": " << std::strerror(err), "");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    addr_ = mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
    if (addr_ == MAP_FAILED) {
      const int err = errno;
      addr_ = nullptr;
      ::close(fd);
      ODMOE_THROW(kIo, "mmap", "cannot map " << path << ": " << std::strerror(err), "");
    }
  }
  ::close(fd);  // the mapping keeps the file alive
}

MappedFile::MappedFile(MappedFile&& o) noexcept
    : path_(std::move(o.path_)), addr_(std::exchange(o.addr_, nullptr)), size_(std::exchange(o.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    if (addr_) munmap(addr_, size_);
    path_ = std::move(o.path_);
    addr_ = std::exchange(o.addr_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (addr_) munmap(addr_, size_);
}

uint64_t file_size(const std::string& path) {
  struct stat st {};
  ODMOE_CHECK(::stat(path.c_str(), &st) == 0, kIo, "stat", "cannot stat " << path << ": " << std::strerror(errno),
              "check the path");
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace odmoe
