#include "odmoe/weights/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <utility>

#include "odmoe/core/dtype.h"
#include "odmoe/core/error.h"

namespace odmoe {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the format's own limit is 100 MB

void pread_all(int fd, void* buf, uint64_t n, uint64_t off, const std::string& path) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, std::min<uint64_t>(n, 1ull << 30), static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    ODMOE_CHECK(r > 0, kSafetensors, "read",
                "cannot read " << path << " at byte " << off << ": " << (r == 0 ? "unexpected end of file" : std::strerror(errno)),
                "the file is truncated; download it again");
    p += r;
    n -= static_cast<uint64_t>(r);
    off += static_cast<uint64_t>(r);
  }
}

}  // namespace

uint64_t SafetensorsEntry::numel() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

size_t safetensors_dtype_size(std::string_view d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "I8" || d == "U8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
  return 0;
}

std::map<std::string, SafetensorsEntry> parse_safetensors_header(std::string_view header_json, uint64_t data_bytes) {
  using nlohmann::json;
  const json j = json::parse(header_json.begin(), header_json.end(), nullptr, /*allow_exceptions=*/false);
  ODMOE_CHECK(!j.is_discarded(), kSafetensors, "header-json", "the header is not valid JSON",
              "the file is corrupted or not a safetensors file");
  ODMOE_CHECK(j.is_object(), kSafetensors, "header-json", "the header is not a JSON object", "");
  std::map<std::string, SafetensorsEntry> out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      ODMOE_CHECK(v.is_object(), kSafetensors, "header", "__metadata__ is not an object", "");
      continue;
    }
    ODMOE_CHECK(v.is_object(), kSafetensors, "header", "entry '" << name << "' is not an object", "");
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    ODMOE_CHECK(dt != v.end() && dt->is_string() && sh != v.end() && sh->is_array() && off != v.end() &&
                    off->is_array() && off->size() == 2,
                kSafetensors, "header", "entry '" << name << "' needs dtype, shape and data_offsets [begin, end]", "");
    SafetensorsEntry e;
    e.name = name;
    e.dtype = dt->get<std::string>();
    const size_t el = safetensors_dtype_size(e.dtype);
    ODMOE_CHECK(el > 0, kSafetensors, "dtype", "entry '" << name << "' has unknown dtype '" << e.dtype << "'", "");
    uint64_t numel = 1;
    for (const json& d : *sh) {
      ODMOE_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<long long>() >= 0), kSafetensors, "shape",
                  "entry '" << name << "' has a shape that is not a list of non-negative integers", "");
      const auto x = d.get<uint64_t>();
      ODMOE_CHECK(x == 0 || numel <= UINT64_MAX / 16 / x, kSafetensors, "shape",
                  "entry '" << name << "' has an impossibly large shape", "");
      e.shape.push_back(x);
      numel *= x;
    }
    for (const json& o : *off)
      ODMOE_CHECK(o.is_number_unsigned() || (o.is_number_integer() && o.get<long long>() >= 0), kSafetensors,
                  "offsets", "entry '" << name << "' has data_offsets that are not non-negative integers", "");
    e.begin = (*off)[0].get<uint64_t>();
    e.end = (*off)[1].get<uint64_t>();
    ODMOE_CHECK(e.begin <= e.end && e.end <= data_bytes, kSafetensors, "offsets",
                "entry '" << name << "' has data_offsets [" << e.begin << ", " << e.end
                          << ") outside the data section of " << data_bytes << " bytes",
                "the file is truncated or its header lies; download it again");
    ODMOE_CHECK(e.end - e.begin == numel * el, kSafetensors, "offsets",
                "entry '" << name << "' spans " << (e.end - e.begin) << " bytes but its shape and dtype need "
                          << numel * el,
                "the file is corrupted");
    out.emplace(name, std::move(e));
  }
  // Tensors must not overlap.
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto& [n, e] : out)
    if (e.end > e.begin) spans.emplace_back(e.begin, e.end);
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    ODMOE_CHECK(spans[i].first >= spans[i - 1].second, kSafetensors, "overlap",
                "two tensors overlap in the data section at byte " << spans[i].first, "the file is corrupted");
  return out;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ODMOE_CHECK(fd_ >= 0, kSafetensors, "open", "cannot open " << path << ": " << std::strerror(errno),
              "check the checkpoint directory");
  struct stat st {};
  fstat(fd_, &st);
  file_bytes_ = static_cast<uint64_t>(st.st_size);
  try {
    ODMOE_CHECK(file_bytes_ >= 8, kSafetensors, "truncated",
                path << " is " << file_bytes_ << " bytes, too short for a safetensors header",
                "the file is truncated; download it again");
    uint8_t len_bytes[8];
    pread_all(fd_, len_bytes, 8, 0, path);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
    ODMOE_CHECK(header_len <= kMaxHeaderBytes && header_len <= file_bytes_ - 8, kSafetensors, "header-length",
                path << ": header length " << header_len << " is larger than the file (" << file_bytes_
                     << " bytes) or the 100 MB limit",
                "the file is truncated or not a safetensors file");
    std::string header(header_len, '\0');
    pread_all(fd_, header.data(), header_len, 8, path);
    data_start_ = 8 + header_len;
    try {
      entries_ = parse_safetensors_header(header, file_bytes_ - data_start_);
    } catch (const Error& e) {
      ODMOE_THROW(kSafetensors, "header", path << ": " << e.message(), e.hint());
    }
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& o) noexcept
    : path_(std::move(o.path_)),
      fd_(std::exchange(o.fd_, -1)),
      file_bytes_(o.file_bytes_),
      data_start_(o.data_start_),
      entries_(std::move(o.entries_)) {}

SafetensorsFile::~SafetensorsFile() {
  if (fd_ >= 0) ::close(fd_);
}

void SafetensorsFile::read_f32(const SafetensorsEntry& e, uint64_t first, uint64_t count, float* out) const {
  ODMOE_CHECK(first + count <= e.numel(), kSafetensors, "range", "read past the end of " << e.name, "");
  const size_t el = safetensors_dtype_size(e.dtype);
  const uint64_t off = data_start_ + e.begin + first * el;
  if (e.dtype == "F32") {
    pread_all(fd_, out, count * 4, off, path_);
    return;
  }
  ODMOE_CHECK(e.dtype == "BF16" || e.dtype == "F16", kSafetensors, "dtype",
              path_ << ": tensor " << e.name << " has dtype " << e.dtype << "; odmoe converts F32, BF16 and F16",
              "convert the checkpoint to bf16 or f32 with transformers first");
  // Widen in chunks so the scratch buffer stays small whatever the tensor's size.
  const bool bf = e.dtype == "BF16";
  constexpr uint64_t kChunk = 1ull << 22;
  std::vector<uint16_t> tmp(std::min(count, kChunk));
  for (uint64_t done = 0; done < count; done += kChunk) {
    const uint64_t n = std::min(kChunk, count - done);
    pread_all(fd_, tmp.data(), n * 2, off + done * 2, path_);
    for (uint64_t i = 0; i < n; ++i) out[done + i] = bf ? bf16_to_f32(tmp[i]) : f16_to_f32(tmp[i]);
  }
}

}  // namespace odmoe
