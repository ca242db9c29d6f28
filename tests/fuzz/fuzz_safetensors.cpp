// Fuzz target: a .safetensors file as the converter meets it in a Hugging Face checkpoint.
//
// Input: the whole file image: an 8-byte little-endian header length, the JSON header, the
// data section. It goes through parse_safetensors_header directly (header text, data size)
// and through SafetensorsFile from an in-memory file (memfd), as `odmoe-weights convert`
// opens it, and every tensor the header accepts is read with read_f32 (its first and last
// elements), so offsets that the header check lets through are really dereferenced.
// Expected failures: odmoe::Error only.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "odmoe/core/error.h"
#include "odmoe/weights/safetensors.h"

namespace {

// One memory file for the whole run, rewritten for each input: no disk I/O.
int memory_file() {
  static const int fd = memfd_create("odmoe-fuzz-safetensors", MFD_CLOEXEC);
  ODMOE_FUZZ_REQUIRE(fd >= 0, "memfd_create failed");
  return fd;
}

void write_image(int fd, const uint8_t* data, size_t size) {
  ODMOE_FUZZ_REQUIRE(ftruncate(fd, 0) == 0, "ftruncate failed");
  size_t done = 0;
  while (done < size) {
    const ssize_t n = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    ODMOE_FUZZ_REQUIRE(n > 0, "pwrite failed");
    done += static_cast<size_t>(n);
  }
}

bool readable_as_f32(const std::string& dtype) { return dtype == "F32" || dtype == "BF16" || dtype == "F16"; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // 1. The header parser on its own, with the data size the file would give it.
  if (size >= 8) {
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
    if (header_len <= size - 8) {
      const std::string_view header(reinterpret_cast<const char*>(data) + 8, header_len);
      try {
        const auto entries = odmoe::parse_safetensors_header(header, size - 8 - header_len);
        for (const auto& [name, e] : entries) {
          ODMOE_FUZZ_REQUIRE(e.begin <= e.end && e.end <= size - 8 - header_len, "accepted offsets outside the data");
          ODMOE_FUZZ_REQUIRE(e.end - e.begin == e.numel() * odmoe::safetensors_dtype_size(e.dtype),
                             "accepted a span that does not match shape and dtype");
        }
      } catch (const odmoe::Error&) {
      }
    }
  }

  // 2. The file reader, as the converter uses it.
  const int fd = memory_file();
  write_image(fd, data, size);
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  try {
    odmoe::SafetensorsFile file(path);
    std::vector<float> buf;
    for (const auto& [name, e] : file.entries()) {
      const uint64_t n = e.numel();
      const uint64_t k = std::min<uint64_t>(n, 64);
      buf.assign(static_cast<size_t>(k) + 1, 0.0f);
      try {
        file.read_f32(e, 0, k, buf.data());
        file.read_f32(e, n - k, k, buf.data());
        ODMOE_FUZZ_REQUIRE(readable_as_f32(e.dtype) || k == 0, "read_f32 accepted a dtype it cannot widen");
      } catch (const odmoe::Error&) {
        ODMOE_FUZZ_REQUIRE(!readable_as_f32(e.dtype), "read_f32 failed on a tensor the header accepted");
      }
    }
  } catch (const odmoe::Error&) {
  }
  return 0;
}
