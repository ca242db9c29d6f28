// odmoe-bench-weights-io: how fast the weight format moves bytes on this machine, printed
// next to what the machine itself can do. In the style of nccl-tests: warm-up, timed
// iterations, min/avg/max (p50/p99 for latencies), a table on stdout and --json FILE.
//
//   odmoe-bench-weights-io --work-dir DIR [--arch olmoe-1b-7b] [--layers 1] [--dtype bf16]
//                          [--iters 5] [--warmup 1] [--experts 0] [--mem-mib 1024]
//                          [--disk-mib 2048] [--seed 1234] [--json FILE] [--keep]
//
// In one run, on one machine:
//   [1] memory bandwidth   STREAM-style copy (read + write bytes) and read-only sum, crc32c
//   [2] disk bandwidth     write (page cache, + fsync), sequential cold read (page cache dropped,
//                          checked with mincore), warm read
//   [3] conversion         a Hugging Face checkpoint (BF16 model.safetensors with Hub tensor
//                          names, written here from `synth` weights) through HfCheckpoint +
//                          write_model_dir, input cold then warm; validate_model_dir cold and
//                          warm; peak RSS of the conversion
//   [4] expert reads       per-expert latency of pread, mmap copy, ModelFiles::read_tensor
//                          (H5Dread + crc32c) and raw H5Dread, cold and warm
//
// Everything is written under DIR/odmoe-bench-weights-io.PID, removed at the end.
// Exit status: 0 success, 1 error, 2 bad command line.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/program_options.hpp>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "odmoe/core/checksum.h"
#include "odmoe/core/dtype.h"
#include "odmoe/core/error.h"
#include "odmoe/core/mapped_file.h"
#include "odmoe/weights/h5_file.h"
#include "odmoe/weights/hf_checkpoint.h"
#include "odmoe/weights/model_files.h"
#include "odmoe/weights/model_writer.h"
#include "odmoe/weights/shard_layout.h"

#include "bench_common.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace odmoe;
using namespace odmoe::bench;
using layout::TensorKind;
using layout::TensorSpec;
using nlohmann::json;

namespace {

constexpr const char* kName = "odmoe-bench-weights-io";

// ---------------------------------------------------------------------------------------
// Memory and files

class Fd {
 public:
  Fd(const std::string& path, int flags) : path_(path), fd_(::open(path.c_str(), flags | O_CLOEXEC, 0644)) {
    ODMOE_CHECK(fd_ >= 0, kIo, "open", "cannot open " << path << ": " << std::strerror(errno),
                "check that --work-dir is writable");
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_;
};

void pread_full(const Fd& f, void* buf, size_t n, uint64_t off) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    const ssize_t r = ::pread(f.get(), p, n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    ODMOE_CHECK(r > 0, kIo, "read",
                "cannot read " << f.path() << " at byte " << off << ": "
                               << (r == 0 ? "unexpected end of file" : std::strerror(errno)),
                "");
    p += r;
    n -= static_cast<size_t>(r);
    off += static_cast<uint64_t>(r);
  }
}

void pwrite_full(const Fd& f, const void* buf, size_t n, uint64_t off) {
  const auto* p = static_cast<const uint8_t*>(buf);
  while (n > 0) {
    const ssize_t r = ::pwrite(f.get(), p, n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    ODMOE_CHECK(r > 0, kIo, "write", "cannot write " << f.path() << " at byte " << off << ": " << std::strerror(errno),
                "is the disk under --work-dir full?");
    p += r;
    n -= static_cast<size_t>(r);
    off += static_cast<uint64_t>(r);
  }
}

void fsync_checked(const Fd& f) {
  ODMOE_CHECK(::fsync(f.get()) == 0, kIo, "fsync", "fsync " << f.path() << ": " << std::strerror(errno), "");
}

// Asks the kernel to drop the file's clean pages from the page cache (dirty pages stay: fsync first).
void drop_page_cache(const Fd& f) {
  const int rc = ::posix_fadvise(f.get(), 0, 0, POSIX_FADV_DONTNEED);
  ODMOE_CHECK(rc == 0, kIo, "fadvise", "posix_fadvise(DONTNEED) on " << f.path() << ": " << std::strerror(rc), "");
}
void drop_page_cache(const std::string& path) { drop_page_cache(Fd(path, O_RDONLY)); }

// Fraction of [addr, addr + len) of a file mapping that is in the page cache (mincore).
double resident_fraction(const uint8_t* addr, size_t len) {
  if (len == 0) return 0;
  const auto base = reinterpret_cast<uintptr_t>(addr) & ~uintptr_t{kPage - 1};
  const size_t span = reinterpret_cast<uintptr_t>(addr) + len - base;
  std::vector<unsigned char> vec((span + kPage - 1) / kPage);
  ODMOE_CHECK(::mincore(reinterpret_cast<void*>(base), span, vec.data()) == 0, kIo, "mincore",
              "mincore: " << std::strerror(errno), "");
  size_t n = 0;
  for (unsigned char c : vec) n += c & 1u;
  return static_cast<double>(n) / static_cast<double>(vec.size());
}
double resident_fraction(const MappedFile& m) { return resident_fraction(m.data(), m.size()); }
double resident_fraction(const std::string& path) {
  const MappedFile m(path);  // mapping alone touches no page
  return resident_fraction(m);
}

// Unmaps the pages of a whole mapping from this process (they stay in the page cache), so a
// following fadvise(DONTNEED) can drop them and the next access faults them in from disk.
void unmap_pages(const MappedFile& m) {
  if (m.size() == 0) return;
  ODMOE_CHECK(::madvise(const_cast<uint8_t*>(m.data()), m.size(), MADV_DONTNEED) == 0, kIo, "madvise",
              "madvise(DONTNEED) on " << m.path() << ": " << std::strerror(errno), "");
}

// Drops a file from the page cache until `resident()` reports nothing left: pages still under
// I/O (the tail of an earlier read's asynchronous readahead) are skipped by one fadvise, so
// it is repeated for up to ~0.5 s. Returns the fraction still resident at the end.
double drop_until_cold(const std::function<void()>& drop, const std::function<double()>& resident) {
  double left = 1;
  for (int attempt = 0; attempt < 250; ++attempt) {
    drop();
    left = resident();
    if (left == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return left;
}

void write_text_file(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary);
  f << text;
  f.close();
  ODMOE_CHECK(f.good(), kIo, "write", "cannot write " << p.string(), "");
}


// Resident set size figures of /proc/self/status in KiB ("VmRSS", "VmHWM"); 0 if unreadable.
uint64_t proc_status_kib(const std::string& key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key + ":", 0) == 0) return std::strtoull(line.c_str() + key.size() + 1, nullptr, 10);
  return 0;
}

// Resets VmHWM (the peak RSS) to the current RSS (Linux >= 4.0); false if not possible.
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.close();
  return f.good();
}

uint64_t ru_maxrss_kib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_maxrss);
}

// ---------------------------------------------------------------------------------------
// [2] Disk bandwidth

struct DiskResult {
  uint64_t bytes = 0, block = 0, ring = 0;
  double write_cache_s = 0;  // pwrite of the whole file (into the page cache)
  double write_s = 0;        // the same + fsync
  Stats cold, warm;
  double resident_after_drop = 0;  // worst over the cold iterations
  double resident_warm = 0;
  bool dropped = false;       // the kernel's page cache no longer held the file
  bool cold_slower = false;   // and reading it was measurably slower than from the page cache
  std::string verdict;

  double write_GBps() const { return write_s > 0 ? static_cast<double>(bytes) / write_s / kGB : 0; }
  double write_cache_GBps() const {
    return write_cache_s > 0 ? static_cast<double>(bytes) / write_cache_s / kGB : 0;
  }
  double cold_GBps() const { return bandwidth(cold, static_cast<double>(bytes)).best; }
  double warm_GBps() const { return bandwidth(warm, static_cast<double>(bytes)).best; }
};

// Reads a file front to back with preads of `block` bytes, into successive slots of `ring`
// (larger than the LLC, so the destination is memory, not cache, as for a real load).
double read_sequential(const Fd& f, uint64_t bytes, Buffer& ring, size_t block) {
  const size_t slots = std::max<size_t>(ring.size() / block, 1);
  const auto t0 = Clock::now();
  size_t k = 0;
  for (uint64_t off = 0; off < bytes; ++k) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(block, bytes - off));
    pread_full(f, ring.data() + (k % slots) * block, n, off);
    off += n;
  }
  return since(t0);
}

DiskResult bench_disk(const std::string& path, uint64_t bytes, int warmup, int iters, uint64_t llc_bytes) {
  DiskResult r;
  r.block = 16 * kMiB;
  r.bytes = std::max<uint64_t>(bytes / r.block, 1) * r.block;
  r.ring = round_up(std::max<uint64_t>(4 * llc_bytes, 128 * kMiB), r.block);
  Buffer buf(r.block), ring(r.ring);
  std::memset(ring.data(), 0, ring.size());
  // Incompressible data, each block stamped with its offset (no dedup below us).
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  auto* w = reinterpret_cast<uint64_t*>(buf.data());
  for (size_t i = 0; i < buf.size() / 8; ++i) {
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    w[i] = seed;
  }
  {
    const Fd f(path, O_WRONLY | O_CREAT | O_TRUNC);
    const auto t0 = Clock::now();
    for (uint64_t off = 0; off < r.bytes; off += r.block) {
      w[0] = off;
      pwrite_full(f, buf.data(), r.block, off);
    }
    r.write_cache_s = since(t0);
    fsync_checked(f);
    r.write_s = since(t0);
  }
  const Fd f(path, O_RDONLY);
  const MappedFile map(path);  // for mincore only: never touched
  std::vector<double> cold;
  for (int i = 0; i < iters; ++i) {
    const double left = drop_until_cold([&] { drop_page_cache(f); }, [&] { return resident_fraction(map); });
    r.resident_after_drop = std::max(r.resident_after_drop, left);
    cold.push_back(read_sequential(f, r.bytes, ring, r.block));
  }
  r.cold = summarize(cold);
  r.warm = repeat(std::max(warmup, 1), iters, [&] { return read_sequential(f, r.bytes, ring, r.block); });
  r.resident_warm = resident_fraction(map);
  r.dropped = r.resident_after_drop < 0.01;
  r.cold_slower = r.cold.avg > 1.25 * r.warm.avg;
  char v[512];
  if (!r.dropped)
    std::snprintf(v, sizeof v,
                  "the page cache could NOT be dropped: %.1f%% of the file stayed resident after "
                  "POSIX_FADV_DONTNEED, so 'cold' figures are page-cache reads",
                  100 * r.resident_after_drop);
  else if (!r.cold_slower)
    std::snprintf(v, sizeof v,
                  "pages were dropped (%.1f%% resident after POSIX_FADV_DONTNEED) but the cold read is as fast as a "
                  "warm one: a cache below this kernel (e.g. the hypervisor's) still holds the file",
                  100 * r.resident_after_drop);
  else
    std::snprintf(v, sizeof v,
                  "worked: %.1f%% of the file resident after POSIX_FADV_DONTNEED (mincore), cold read %.1fx slower "
                  "than warm",
                  100 * r.resident_after_drop, r.cold.avg / r.warm.avg);
  r.verdict = v;
  std::remove(path.c_str());
  return r;
}

void print_disk(const DiskResult& r, const MemoryResult& mem) {
  std::printf("#\n# [2] disk bandwidth: %s file, %s preads into a %s ring buffer, %zu timed iterations\n",
              human_bytes(static_cast<double>(r.bytes)).c_str(), human_bytes(static_cast<double>(r.block)).c_str(),
              human_bytes(static_cast<double>(r.ring)).c_str(), r.cold.n);
  std::printf("#  %-26s %10s %10s %10s   %s\n", "test", "best GB/s", "avg GB/s", "worst GB/s", "limit");
  std::printf("   %-26s %10.2f %10s %10s   (once; buffered pwrite of a new file)\n", "write (into page cache)",
              r.write_cache_GBps(), "-", "-");
  std::printf("   %-26s %10.2f %10s %10s   (once; the same write, then fsync)\n", "write + fsync", r.write_GBps(), "-",
              "-");
  const Bandwidth c = bandwidth(r.cold, static_cast<double>(r.bytes));
  const Bandwidth w = bandwidth(r.warm, static_cast<double>(r.bytes));
  std::printf("   %-26s %10.2f %10.2f %10.2f   warm read %.2f GB/s (%s of it)\n", "read cold (cache dropped)", c.best,
              c.avg, c.worst, w.best, pct(c.best, w.best).c_str());
  std::printf("   %-26s %10.2f %10.2f %10.2f   memcpy 1 thread %.2f GB/s (%s of it)\n", "read warm (page cache)",
              w.best, w.avg, w.worst, mem.memcpy_1_GBps(), pct(w.best, mem.memcpy_1_GBps()).c_str());
  std::printf("#  page-cache drop %s\n", r.verdict.c_str());
  std::fflush(stdout);
}

json disk_json(const DiskResult& r) {
  return {{"file_bytes", r.bytes},
          {"pread_bytes", r.block},
          {"ring_buffer_bytes", r.ring},
          {"write_page_cache", {{"seconds", r.write_cache_s}, {"GBps", r.write_cache_GBps()}}},
          {"write_fsync", {{"seconds", r.write_s}, {"GBps", r.write_GBps()}}},
          {"read_cold", bandwidth_json(r.cold, static_cast<double>(r.bytes))},
          {"read_warm", bandwidth_json(r.warm, static_cast<double>(r.bytes))},
          {"resident_fraction_after_drop", r.resident_after_drop},
          {"resident_fraction_warm", r.resident_warm},
          {"page_cache_dropped", r.dropped},
          {"cold_slower_than_warm", r.cold_slower},
          {"verdict", r.verdict}};
}

// ---------------------------------------------------------------------------------------
// [3] A Hugging Face checkpoint, its conversion and validation

std::vector<TensorSpec> all_tensor_specs(const ModelConfig& c) {
  std::vector<TensorSpec> v = layout::dense_tensor_specs(c);
  for (int l = 0; l < c.n_layer; ++l)
    for (int e = 0; e < c.n_expert; ++e)
      for (auto& s : layout::expert_tensor_specs(c, l, e)) v.push_back(std::move(s));
  return v;
}

struct CheckpointResult {
  std::string dir;
  uint64_t file_bytes = 0;  // model.safetensors
  size_t tensors = 0;
  TensorSpec largest{};      // the tensor with the most values
  double seconds = 0;        // synth + BF16 encode + write
  double fsync_seconds = 0;  // then fsync
};

// Writes config.json, tokenizer.json and a BF16 model.safetensors with the Hub's tensor names,
// one tensor at a time. The data section is in name order, as the safetensors library writes it.
CheckpointResult write_hub_checkpoint(const ModelSource& src, const std::string& dir) {
  CheckpointResult r;
  r.dir = dir;
  fs::create_directories(dir);
  write_text_file(fs::path(dir) / "config.json", src.config_json);
  write_text_file(fs::path(dir) / "tokenizer.json", src.tokenizer_json);

  const std::vector<TensorSpec> specs = all_tensor_specs(src.config);
  std::vector<std::pair<std::string, const TensorSpec*>> order;
  for (const auto& s : specs) order.emplace_back(hf_hub_tensor_name(src.config, s), &s);
  std::sort(order.begin(), order.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  json header = {{"__metadata__", {{"format", "pt"}}}};
  uint64_t off = 0;
  for (const auto& [name, s] : order) {
    const uint64_t n = s->numel() * 2;
    header[name] = {{"dtype", "BF16"}, {"shape", s->shape}, {"data_offsets", {off, off + n}}};
    off += n;
    if (r.largest.shape.empty() || s->numel() > r.largest.numel()) r.largest = *s;
  }
  std::string h = header.dump();
  h.resize(round_up(h.size(), 8), ' ');  // the safetensors library pads the header to 8 bytes
  r.tensors = order.size();

  const auto t0 = Clock::now();
  const Fd f((fs::path(dir) / "model.safetensors").string(), O_WRONLY | O_CREAT | O_TRUNC);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(h.size()) >> (8 * i));
  pwrite_full(f, len, 8, 0);
  pwrite_full(f, h.data(), h.size(), 8);
  uint64_t pos = 8 + h.size();
  std::vector<float> values;
  std::vector<uint16_t> bf16;
  for (const auto& [name, s] : order) {
    src.read(*s, &values);
    ODMOE_CHECK(values.size() == s->numel(), kCore, "shape", "synth gave " << values.size() << " values for " << name,
                "");
    bf16.resize(values.size());
    for (size_t i = 0; i < values.size(); ++i) bf16[i] = f32_to_bf16(values[i]);
    pwrite_full(f, bf16.data(), bf16.size() * 2, pos);
    pos += bf16.size() * 2;
  }
  r.seconds = since(t0);
  const auto t1 = Clock::now();
  fsync_checked(f);
  r.fsync_seconds = since(t1);
  r.file_bytes = pos;
  return r;
}

struct ConvertResult {
  DType dtype = DType::kBF16;
  bool cold_input = true;
  uint64_t in_bytes = 0;        // safetensors bytes
  uint64_t out_bytes = 0;       // stored bytes (WriteStats::bytes_written)
  uint64_t out_file_bytes = 0;  // sizes of the written files
  uint64_t params = 0;
  double input_resident = 0;  // page-cache fraction of the input before the conversion
  double seconds = 0;         // HfCheckpoint + write_model_dir
  double source_read_seconds = 0;  // of which in HfCheckpoint::read (pread + BF16 -> f32)
  double fsync_seconds = 0;        // fsync of every output file afterwards
  bool peak_reset = false;
  uint64_t rss_before_kib = 0, peak_kib = 0, maxrss_before_kib = 0, maxrss_after_kib = 0;
  uint64_t largest_tensor_f32 = 0;      // bytes of the largest tensor as f32 (what ModelSource::read fills)
  uint64_t largest_tensor_encoded = 0;  // and stored
  std::vector<std::string> files;

  double in_MBps() const { return static_cast<double>(in_bytes) / seconds / kMB; }
  double out_MBps() const { return static_cast<double>(out_bytes) / seconds / kMB; }
  double out_fsync_MBps() const { return static_cast<double>(out_bytes) / (seconds + fsync_seconds) / kMB; }
};

// One conversion. Cold input: the checkpoint is dropped from the page cache first, as after a
// download; warm: it is read into the page cache first.
ConvertResult bench_convert(const CheckpointResult& ck, const std::string& out_dir, DType dtype, bool cold_input) {
  ConvertResult r;
  r.dtype = dtype;
  r.cold_input = cold_input;
  r.largest_tensor_f32 = ck.largest.numel() * 4;
  const DType ld = layout::stored_dtype(ck.largest, dtype);
  r.largest_tensor_encoded = dtype_data_bytes(ld, ck.largest.rows(), ck.largest.cols()) +
                             dtype_scale_count(ld, ck.largest.rows(), ck.largest.cols()) * 4;
  const std::string st = (fs::path(ck.dir) / "model.safetensors").string();
  if (cold_input) {
    drop_page_cache(st);
  } else {
    Buffer buf(16 * kMiB);
    read_sequential(Fd(st, O_RDONLY), file_size(st), buf, buf.size());
  }
  r.input_resident = resident_fraction(st);

  r.peak_reset = reset_peak_rss();
  r.rss_before_kib = proc_status_kib("VmRSS");
  r.maxrss_before_kib = ru_maxrss_kib();
  const auto t0 = Clock::now();
  WriteStats ws;
  {
    HfCheckpoint ckpt(ck.dir);
    r.in_bytes = ckpt.total_bytes();
    WriteOptions w;
    w.dtype = dtype;
    w.progress = false;
    double& read_s = r.source_read_seconds;
    ModelSource src{ckpt.config(), ckpt.config_json(), ckpt.tokenizer_json(), ckpt.tokenizer_config_json(),
                    ckpt.generation_config_json(), [&ckpt, &read_s](const TensorSpec& s, std::vector<float>* v) {
                      const auto t = Clock::now();
                      ckpt.read(s, v);
                      read_s += since(t);
                    }};
    ws = write_model_dir(src, out_dir, w);
  }
  r.seconds = since(t0);
  r.peak_kib = proc_status_kib("VmHWM");
  r.maxrss_after_kib = ru_maxrss_kib();
  r.out_bytes = ws.bytes_written;
  r.params = ws.params;
  r.files = ws.files;
  const auto t1 = Clock::now();
  for (const auto& p : ws.files) fsync_checked(Fd(p, O_RDONLY));
  r.fsync_seconds = since(t1);
  for (const auto& p : ws.files) r.out_file_bytes += file_size(p);
  return r;
}

struct ValidateResult {
  uint64_t bytes = 0;  // all files of the model directory
  double resident_after_drop = 0;
  Stats cold, warm;
};

ValidateResult bench_validate(const std::string& model_dir, const std::vector<std::string>& files, int iters) {
  ValidateResult r;
  for (const auto& p : files) r.bytes += file_size(p);
  auto run = [&] {
    const auto t0 = Clock::now();
    const auto problems = validate_model_dir(model_dir);
    const double t = since(t0);
    ODMOE_CHECK(problems.empty(), kConvert, "invalid",
                "validate_model_dir found " << problems.size() << " problem(s) in the converted model, first: "
                                            << problems.front(),
                "the converter or the validator is broken");
    return t;
  };
  std::vector<double> cold;
  const int n_cold = std::min(iters, 3);  // each cold pass re-reads the whole model from disk
  for (int i = 0; i < n_cold; ++i) {
    double resident = 0;
    for (const auto& p : files) {
      const Fd f(p, O_RDONLY);
      const MappedFile m(p);
      resident = std::max(resident, drop_until_cold([&] { drop_page_cache(f); }, [&] { return resident_fraction(m); }));
    }
    r.resident_after_drop = std::max(r.resident_after_drop, resident);
    cold.push_back(run());
  }
  r.cold = summarize(cold);
  r.warm = repeat(1, n_cold, run);
  return r;
}

// ---------------------------------------------------------------------------------------
// [4] Expert reads

enum class Method { kPread, kMmap, kReadTensor, kH5Raw };

struct ExpertRow {
  std::string method, cache, what;
  Stats t;          // seconds per expert
  double bytes = 0;  // per expert (average)
  double resident_after_drop = 0;  // worst fraction of the expert's range resident right before a cold read
  double resident_before_warm = 1; // lowest fraction resident right before a warm read
};

struct ExpertResult {
  size_t n = 0;         // reads per row
  uint64_t extent_bytes = 0, payload_bytes = 0;
  int total_experts = 0;
  std::string selection;
  std::vector<ExpertRow> rows;
  Stats crc_cold, crc_warm;  // crc32c of read_tensor's bytes, measured right after it
};

struct Pick {
  int layer = 0, expert = 0;
  ExpertExtent x;
  std::vector<TensorSpec> specs;
  uint64_t payload = 0;  // data + scales bytes
};

ExpertResult bench_experts(const std::string& model_dir, int n_pick, uint64_t seed, uint64_t llc_bytes) {
  ExpertResult r;
  ModelFiles mf(model_dir);
  const ModelConfig& c = mf.config();
  r.total_experts = c.n_layer * c.n_expert;
  std::mt19937_64 rng(seed);
  std::vector<std::pair<int, int>> ids;
  if (n_pick <= 0) {
    for (int l = 0; l < c.n_layer; ++l)
      for (int e = 0; e < c.n_expert; ++e) ids.emplace_back(l, e);
    std::shuffle(ids.begin(), ids.end(), rng);
    r.selection = "every expert once, in random order";
  } else {
    std::uniform_int_distribution<int> pick(0, r.total_experts - 1);
    for (int i = 0; i < n_pick; ++i) {
      const int g = pick(rng);
      ids.emplace_back(g / c.n_expert, g % c.n_expert);
    }
    r.selection = std::to_string(n_pick) + " drawn at random with replacement";
  }
  std::vector<Pick> picks;
  uint64_t max_bytes = 0;
  for (const auto& [l, e] : ids) {
    Pick p;
    p.layer = l;
    p.expert = e;
    p.x = mf.expert_extent(l, e);
    p.specs = layout::expert_tensor_specs(c, l, e);
    for (int t = 0; t < 3; ++t) p.payload += p.x.data[t].bytes + p.x.scales[t].bytes;
    max_bytes = std::max(max_bytes, p.x.bytes);
    picks.push_back(std::move(p));
  }
  r.n = picks.size();
  r.extent_bytes = picks.front().x.bytes;
  r.payload_bytes = picks.front().payload;

  std::vector<std::unique_ptr<MappedFile>> maps;
  std::vector<std::unique_ptr<Fd>> fds;
  for (int i = 0; i < mf.n_shard(); ++i) {
    maps.push_back(std::make_unique<MappedFile>(mf.shard_path(i)));
    fds.push_back(std::make_unique<Fd>(mf.shard_path(i), O_RDONLY));
  }
  Buffer buf(max_bytes);
  std::memset(buf.data(), 0, buf.size());  // pre-faulted: its page faults are not the read's
  // Read between a warm-up read and the timed one, so a warm expert comes from the page cache
  // in DRAM, not from the CPU caches (an expert of a few MiB fits in the LLC). Read, not
  // written: glibc's memset of a large buffer uses non-temporal stores, which evict nothing.
  Buffer evict(std::max<uint64_t>(4 * llc_bytes, 128 * kMiB));
  std::memset(evict.data(), 0x3c, evict.size());
  auto evict_cpu_caches = [&evict] { sink(sum_words(evict.data(), evict.size())); };

  auto range_resident = [&](const Pick& p) {
    const MappedFile& m = *maps[static_cast<size_t>(p.x.shard_idx)];
    return resident_fraction(m.data() + p.x.offset, static_cast<size_t>(p.x.bytes));
  };
  auto drop = [&](const Pick& p) {
    return drop_until_cold(
        [&] {
          unmap_pages(*maps[static_cast<size_t>(p.x.shard_idx)]);
          drop_page_cache(*fds[static_cast<size_t>(p.x.shard_idx)]);
        },
        [&] { return range_resident(p); });
  };

  // One read of one expert by `method`; returns its seconds. For read_tensor, *crc_s gets the
  // seconds crc32c takes over the same bytes right afterwards (read_tensor computes that too).
  auto read_once = [&](Method method, const Pick& p, double* crc_s) -> double {
    switch (method) {
      case Method::kPread: {
        const auto t0 = Clock::now();
        pread_full(*fds[static_cast<size_t>(p.x.shard_idx)], buf.data(), static_cast<size_t>(p.x.bytes), p.x.offset);
        return since(t0);
      }
      case Method::kMmap: {
        const MappedFile& m = *maps[static_cast<size_t>(p.x.shard_idx)];
        const auto t0 = Clock::now();
        std::memcpy(buf.data(), m.data() + p.x.offset, static_cast<size_t>(p.x.bytes));
        return since(t0);
      }
      case Method::kReadTensor: {
        std::array<EncodedTensor, 3> ts;  // freed after the timed region
        const auto t0 = Clock::now();
        for (size_t i = 0; i < 3; ++i) ts[i] = mf.read_tensor(p.specs[i]);
        const double t = since(t0);
        const auto t1 = Clock::now();
        uint32_t crc = 0;
        for (const auto& et : ts) {
          crc ^= crc32c(0, et.data.data(), et.data.size());
          if (!et.scales.empty()) crc ^= crc32c(0, et.scales.data(), et.scales.size() * 4);
        }
        *crc_s = since(t1);
        sink(crc);
        return t;
      }
      case Method::kH5Raw: {
        const hid_t file = mf.shard_file(p.x.shard_idx);
        const auto t0 = Clock::now();
        size_t pos = 0;
        for (size_t i = 0; i < 3; ++i) {
          const std::string paths[2] = {p.specs[i].path, p.specs[i].scale_path()};
          const DatasetExtent parts[2] = {p.x.data[i], p.x.scales[i]};
          for (int k = 0; k < 2; ++k) {
            if (parts[k].bytes == 0) continue;
            const h5::Handle d = h5::open_dataset(file, paths[k]);
            h5::read_dataset_raw(d.get(), buf.data() + pos, static_cast<size_t>(parts[k].bytes));
            pos += static_cast<size_t>(parts[k].bytes);
          }
        }
        return since(t0);
      }
    }
    return 0;
  };

  struct MethodInfo {
    Method m;
    const char* name;
    const char* what;
  };
  const MethodInfo methods[] = {
      {Method::kPread, "pread", "one pread of the expert's byte range (reference)"},
      {Method::kMmap, "mmap copy", "memcpy of the byte range out of a MappedFile of the shard"},
      {Method::kReadTensor, "read_tensor", "ModelFiles::read_tensor x3: H5Dread + crc32c + metadata checks"},
      {Method::kH5Raw, "H5Dread raw", "h5::open_dataset + read_dataset_raw x3 into a preallocated buffer"},
  };
  for (const bool cold : {true, false}) {
    for (const auto& mi : methods) {
      ExpertRow row;
      row.method = mi.name;
      row.cache = cold ? "cold" : "warm";
      row.what = mi.what;
      std::vector<double> t, t_crc;
      double bytes = 0;
      for (const Pick& p : picks) {
        double crc_s = 0;
        if (cold) {
          row.resident_after_drop = std::max(row.resident_after_drop, drop(p));
        } else {
          read_once(mi.m, p, &crc_s);  // warm-up: into the page cache (and page tables)
          row.resident_before_warm = std::min(row.resident_before_warm, range_resident(p));
          evict_cpu_caches();
        }
        t.push_back(read_once(mi.m, p, &crc_s));
        if (mi.m == Method::kReadTensor) t_crc.push_back(crc_s);
        bytes += static_cast<double>(mi.m == Method::kPread || mi.m == Method::kMmap ? p.x.bytes : p.payload);
      }
      row.t = summarize(t);
      row.bytes = bytes / static_cast<double>(picks.size());
      r.rows.push_back(row);
      if (mi.m == Method::kReadTensor) {
        // One crc32c sample is as noisy as one read; subtract their median from every read.
        const Stats crc = summarize(t_crc);
        (cold ? r.crc_cold : r.crc_warm) = crc;
        for (double& x : t) x = std::max(x - crc.p50, 0.0);
        ExpertRow sub = row;
        sub.method = "read_tensor-crc";
        sub.what = "read_tensor minus the median time of crc32c over the same bytes (measured right after each read)";
        sub.t = summarize(t);
        r.rows.push_back(sub);
      }
    }
  }
  return r;
}

// ---------------------------------------------------------------------------------------
// Report

json convert_json(const ConvertResult& c) {
  return {{"input_resident_fraction", c.input_resident},
          {"input_bytes", c.in_bytes},
          {"output_stored_bytes", c.out_bytes},
          {"output_file_bytes", c.out_file_bytes},
          {"seconds", c.seconds},
          {"source_read_seconds", c.source_read_seconds},
          {"fsync_seconds", c.fsync_seconds},
          {"input_MBps", c.in_MBps()},
          {"output_MBps", c.out_MBps()},
          {"output_MBps_with_fsync", c.out_fsync_MBps()}};
}

void print_convert(const CheckpointResult& ck, const ConvertResult& cv, const ConvertResult& cv_warm,
                   const ValidateResult& va, const DiskResult& disk, const MemoryResult& mem) {
  std::printf("#\n# [3] conversion: Hugging Face checkpoint -> odmoe %s, 1 expert shard; run 1 reads its input cold, "
              "run 2 warm\n",
              dtype_name(cv.dtype));
  std::printf("#  input  model.safetensors, BF16, %zu tensors with Hub names in name order, %.1f MB, with config.json "
              "and tokenizer.json\n",
              ck.tensors, static_cast<double>(ck.file_bytes) / kMB);
  std::printf("#         written by this bench from synth weights in %.2f s + %.2f s fsync (not part of the figures)\n",
              ck.seconds, ck.fsync_seconds);
  std::printf("#  output %zu files, %.1f MB stored (%.1f MB on disk), %.1f M parameters\n", cv.files.size(),
              static_cast<double>(cv.out_bytes) / kMB, static_cast<double>(cv.out_file_bytes) / kMB,
              static_cast<double>(cv.params) / 1e6);
  const double disk_cold = disk.cold_GBps() * 1e3, disk_warm = disk.warm_GBps() * 1e3;
  const double disk_write = disk.write_GBps() * 1e3, cache_write = disk.write_cache_GBps() * 1e3;
  const double crc = mem.crc_GBps() * 1e3;
  std::printf("#  %-34s %8s %9s %9s   %s\n", "step", "seconds", "in MB/s", "out MB/s", "limit (MB/s)");
  for (const ConvertResult* c : {&cv, &cv_warm}) {
    const double in_lim = c->cold_input ? disk_cold : disk_warm;
    std::printf("   %-34s %8.2f %9.1f %9.1f   in: %s %.0f (%s); out: page-cache write %.0f (%s)\n",
                c->cold_input ? "convert, input cold (run 1)" : "convert, input warm (run 2)", c->seconds,
                c->in_MBps(), c->out_MBps(), c->cold_input ? "disk cold read" : "page-cache read", in_lim,
                pct(c->in_MBps(), in_lim).c_str(), cache_write, pct(c->out_MBps(), cache_write).c_str());
    std::printf("   %-34s %8.2f %9s %9s   (%s of the run: pread + BF16 -> f32 in HfCheckpoint::read)\n",
                "  of which reading the source", c->source_read_seconds, "", "",
                pct(c->source_read_seconds, c->seconds).c_str());
    std::printf("   %-34s %8.2f %9.1f %9.1f   out: disk write + fsync %.0f (%s)\n", "  + fsync of the outputs",
                c->seconds + c->fsync_seconds,
                static_cast<double>(c->in_bytes) / (c->seconds + c->fsync_seconds) / kMB, c->out_fsync_MBps(),
                disk_write, pct(c->out_fsync_MBps(), disk_write).c_str());
  }
  const double vb = static_cast<double>(va.bytes);
  const Bandwidth vc = bandwidth(va.cold, vb), vw = bandwidth(va.warm, vb);
  std::printf("   %-34s %8.2f %9.1f %9s   disk cold read %.0f (%s), crc32c 1 thread %.0f (%s)\n",
              "validate_model_dir cold (best)", va.cold.min, vc.best * 1e3, "", disk_cold,
              pct(vc.best * 1e3, disk_cold).c_str(), crc, pct(vc.best * 1e3, crc).c_str());
  std::printf("   %-34s %8.2f %9.1f %9s   crc32c 1 thread %.0f (%s)\n", "validate_model_dir warm (best)", va.warm.min,
              vw.best * 1e3, "", crc, pct(vw.best * 1e3, crc).c_str());
  std::printf("#  input in the page cache when the runs started: %.1f%% (run 1), %.1f%% (run 2)\n",
              100 * cv.input_resident, 100 * cv_warm.input_resident);
  std::printf("#  validate reads every byte of the %.1f MB model once and checks its crc32c; %zu cold + %zu warm runs, "
              "%.1f%% resident after the drop\n",
              vb / kMB, va.cold.n, va.warm.n, 100 * va.resident_after_drop);
  const double model_mb = static_cast<double>(cv.in_bytes) / kMB;
  const double peak_mb = static_cast<double>(cv.peak_reset ? cv.peak_kib : cv.maxrss_after_kib) * 1024 / kMB;
  if (cv.peak_reset)
    std::printf("#  peak RSS of the process during conversion run 1: %.0f MB (VmHWM, reset right before it; RSS was %.0f MB)\n",
                peak_mb, static_cast<double>(cv.rss_before_kib) * 1024 / kMB);
  else
    std::printf("#  peak RSS of the process (getrusage ru_maxrss, its whole life): %.0f MB before the conversion, "
                "%.0f MB after\n",
                static_cast<double>(cv.maxrss_before_kib) * 1024 / kMB, peak_mb);
  std::printf("#    = %s of the %.0f MB model; its largest tensor (%s, %.1f M values) takes %.0f MB as f32 + %.0f MB "
              "encoded:\n#    the conversion holds one tensor at a time, so its peak follows the largest tensor, not "
              "the model\n",
              pct(peak_mb, model_mb).c_str(), model_mb, ck.largest.path.c_str(),
              static_cast<double>(ck.largest.numel()) / 1e6, static_cast<double>(cv.largest_tensor_f32) / kMB,
              static_cast<double>(cv.largest_tensor_encoded) / kMB);
  std::fflush(stdout);
}

void print_experts(const ExpertResult& r, const DiskResult& disk, const MemoryResult& mem, const ModelConfig& c,
                   DType dtype) {
  std::printf("#\n# [4] expert reads: %zu reads per row (of the %d experts: %s); one expert = 3 x [%d, %d] %s = %s in "
              "one byte range (%s of data)\n",
              r.n, r.total_experts, r.selection.c_str(), c.n_ff_expert, c.n_embd, dtype_name(dtype),
              human_bytes(static_cast<double>(r.extent_bytes)).c_str(),
              human_bytes(static_cast<double>(r.payload_bytes)).c_str());
  std::printf("#  cold: madvise(MADV_DONTNEED) on the shard's mapping + posix_fadvise(DONTNEED) on the shard before each "
              "read;\n#        warm: the same read once untimed first, then the CPU caches flushed (4 x LLC read)\n");
  std::printf("#  limit: cold = the expert's bytes at the disk's sequential cold read (%.2f GB/s); warm = at one thread's "
              "memcpy (%.2f GB/s)\n",
              disk.cold_GBps(), mem.memcpy_1_GBps());
  std::printf("#  %-16s %-5s %8s %8s %8s %8s %8s %9s %11s %9s %8s\n", "method", "cache", "p50 ms", "p99 ms", "min ms",
              "avg ms", "max ms", "GB/s@p50", "limit GB/s", "limit ms", "of limit");
  for (const auto& row : r.rows) {
    const double lim = row.cache == "cold" ? disk.cold_GBps() : mem.memcpy_1_GBps();
    const double gbps = row.t.p50 > 0 ? row.bytes / row.t.p50 / kGB : 0;
    const double lim_ms = lim > 0 ? row.bytes / (lim * kGB) * 1e3 : 0;
    std::printf("   %-16s %-5s %8.2f %8.2f %8.2f %8.2f %8.2f %9.2f %11.2f %9.2f %8s\n", row.method.c_str(),
                row.cache.c_str(), row.t.p50 * 1e3, row.t.p99 * 1e3, row.t.min * 1e3, row.t.avg * 1e3, row.t.max * 1e3,
                gbps, lim, lim_ms, pct(gbps, lim).c_str());
  }
  double worst_cold = 0, worst_warm = 1;
  for (const auto& row : r.rows) {
    if (row.cache == "cold") worst_cold = std::max(worst_cold, row.resident_after_drop);
    else worst_warm = std::min(worst_warm, row.resident_before_warm);
  }
  std::printf("#  crc32c of read_tensor's bytes (subtracted above): p50 %.2f ms after a cold read, %.2f ms after a warm "
              "one (%.2f GB/s)\n",
              r.crc_cold.p50 * 1e3, r.crc_warm.p50 * 1e3,
              r.crc_warm.p50 > 0 ? static_cast<double>(r.payload_bytes) / r.crc_warm.p50 / kGB : 0);
  std::printf("#  page cache (mincore): at most %.1f%% of an expert's range resident before a cold read, at least %.1f%% "
              "before a warm one\n",
              100 * worst_cold, 100 * worst_warm);
  std::printf("#  GB/s counts the expert's range for pread/mmap, its data (+ scales) for the H5Dread rows; HDF5's "
              "metadata cache stays warm in 'cold' rows\n");
  std::fflush(stdout);
}

json experts_json(const ExpertResult& r, const DiskResult& disk, const MemoryResult& mem) {
  json rows = json::array();
  for (const auto& row : r.rows) {
    const double lim = row.cache == "cold" ? disk.cold_GBps() : mem.memcpy_1_GBps();
    rows.push_back({{"method", row.method},
                    {"cache", row.cache},
                    {"what", row.what},
                    {"bytes_per_expert", row.bytes},
                    {"latency", stats_json(row.t)},
                    {"p50_ms", row.t.p50 * 1e3},
                    {"p99_ms", row.t.p99 * 1e3},
                    {"GBps_at_p50", row.t.p50 > 0 ? row.bytes / row.t.p50 / kGB : 0},
                    {"limit_GBps", lim},
                    {"limit_ms", lim > 0 ? row.bytes / (lim * kGB) * 1e3 : 0},
                    {"resident_fraction_after_drop", row.cache == "cold" ? json(row.resident_after_drop) : json()},
                    {"resident_fraction_before_warm", row.cache == "warm" ? json(row.resident_before_warm) : json()}});
  }
  return {{"reads_per_row", r.n},
          {"selection", r.selection},
          {"total_experts", r.total_experts},
          {"extent_bytes", r.extent_bytes},
          {"payload_bytes", r.payload_bytes},
          {"limits", {{"cold", "disk sequential cold read, best GB/s"}, {"warm", "memcpy 1 thread, payload GB/s"}}},
          {"crc32c_after_cold_read", stats_json(r.crc_cold)},
          {"crc32c_after_warm_read", stats_json(r.crc_warm)},
          {"rows", rows}};
}

// ---------------------------------------------------------------------------------------
// Command line and main

struct Options {
  std::string arch = "olmoe-1b-7b";
  int layers = 1;
  DType dtype = DType::kBF16;
  std::string work_dir;
  int iters = 5;
  int warmup = 1;
  int experts = 0;
  uint64_t mem_mib = 1024;
  uint64_t disk_mib = 2048;
  std::string json_path;
  uint64_t seed = 1234;
  bool keep = false;
};

// Returns false if --help was printed.
bool parse_options(int argc, char** argv, Options* o) {
  std::string arch_names;
  for (const auto& n : synth_arch_names()) arch_names += (arch_names.empty() ? "" : ", ") + n;
  const std::string arch_help = "built-in model: " + arch_names;
  std::string dtype_s = "bf16";
  po::options_description d("options");
  d.add_options()("help,h", "show this help")(
      "work-dir", po::value(&o->work_dir)->required(),
      "directory for the bench's files (it makes and removes its own subdirectory there)")(
      "arch", po::value(&o->arch)->default_value(o->arch), arch_help.c_str())(
      "layers", po::value(&o->layers)->default_value(o->layers), "keep the first N layers of the model")(
      "dtype", po::value(&dtype_s)->default_value(dtype_s), "converted weight dtype: f32|bf16|f16|int8|int4")(
      "iters", po::value(&o->iters)->default_value(o->iters), "timed iterations of each bandwidth test")(
      "warmup", po::value(&o->warmup)->default_value(o->warmup), "untimed iterations before them")(
      "experts", po::value(&o->experts)->default_value(o->experts),
      "expert reads per latency row: 0 = every expert once, N = N random experts")(
      "mem-mib", po::value(&o->mem_mib)->default_value(o->mem_mib), "size of each memory-bandwidth buffer (MiB)")(
      "disk-mib", po::value(&o->disk_mib)->default_value(o->disk_mib), "size of the disk-bandwidth file (MiB)")(
      "seed", po::value(&o->seed)->default_value(o->seed), "seed of the synthetic weights and the expert order")(
      "json", po::value(&o->json_path), "also write the results to this JSON file")(
      "keep", po::bool_switch(&o->keep), "keep the bench's subdirectory (checkpoint, model) for inspection");
  if (!parse_bench_options(argc, argv, d, kName, "--work-dir DIR [options]",
                           "Measures memory and disk bandwidth, HF -> odmoe conversion throughput and per-expert read latency\n"
                           "in one run, and prints each figure next to the limit it could reach."))
    return false;
  const auto dt = parse_dtype(dtype_s);
  if (!dt) throw UsageError("--dtype must be one of f32, bf16, f16, int8, int4 (got '" + dtype_s + "')");
  o->dtype = *dt;
  if (!synth_arch_config_json(o->arch)) throw UsageError("--arch must be one of: " + arch_names + " (got '" + o->arch + "')");
  if (o->layers < 1) throw UsageError("--layers must be >= 1");
  if (o->iters < 1) throw UsageError("--iters must be >= 1");
  if (o->warmup < 0) throw UsageError("--warmup must be >= 0");
  if (o->experts < 0) throw UsageError("--experts must be >= 0");
  if (o->mem_mib < 64) throw UsageError("--mem-mib must be >= 64");
  if (o->disk_mib < 64) throw UsageError("--disk-mib must be >= 64");
  return true;
}

int run(const Options& o, const std::string& command_line) {
  const auto t_start = Clock::now();
  // The model: a built-in config cut to --layers, and synth weights for it.
  json cfg_j = json::parse(*synth_arch_config_json(o.arch));
  const int all_layers = cfg_j.at("num_hidden_layers").get<int>();
  ODMOE_CHECK(o.layers <= all_layers, kCli, "bad-option",
              "--layers " << o.layers << " is more than " << o.arch << "'s " << all_layers, "");
  cfg_j["num_hidden_layers"] = o.layers;
  const ModelSource src = synth_source(cfg_j.dump(2), 0, o.seed);
  const ModelConfig& cfg = src.config;

  uint64_t st_bytes = 0, conv_bytes = 0;
  for (const auto& s : all_tensor_specs(cfg)) {
    st_bytes += s.numel() * 2;
    const DType sd = layout::stored_dtype(s, o.dtype);
    conv_bytes += dtype_data_bytes(sd, s.rows(), s.cols()) + dtype_scale_count(sd, s.rows(), s.cols()) * 4;
  }
  const Machine m = probe_machine(o.work_dir);
  const uint64_t mem_bytes = o.mem_mib * kMiB;
  ODMOE_CHECK(m.ram_bytes == 0 || 2 * mem_bytes < m.ram_bytes * 3 / 4, kCli, "bad-option",
              "--mem-mib " << o.mem_mib << " needs 2 buffers of " << human_bytes(static_cast<double>(mem_bytes))
                           << ", more than this machine's memory allows",
              "lower --mem-mib");
  ScratchDir scratch(kName, o.work_dir, o.keep);
  // At most at once: the disk test's file, or the checkpoint with two conversions of it.
  const uint64_t need = std::max(o.disk_mib * kMiB, st_bytes + 2 * conv_bytes) + 64 * kMiB;
  std::error_code ec;
  const auto space = fs::space(scratch.path(), ec);
  ODMOE_CHECK(ec || space.available >= need, kIo, "disk-full",
              "the bench needs " << human_bytes(static_cast<double>(need)) << " under " << o.work_dir << ", only "
                                 << human_bytes(static_cast<double>(space.available)) << " are free",
              "free some space, lower --disk-mib or --layers, or pick another --work-dir");

  std::printf("# %s %s: %s, %d of %d layers, converted to %s; %d timed iterations after %d warm-up\n", kName,
              ODMOE_VERSION, o.arch.c_str(), o.layers, all_layers, dtype_name(o.dtype), o.iters, o.warmup);
  std::printf("# command: %s\n", command_line.c_str());
  std::printf("# machine: %s\n", describe_machine(m).c_str());
  std::printf("# work dir: %s on %s\n", scratch.path().c_str(), m.work_fs.c_str());
  std::printf("# model: %s\n", cfg.to_string().c_str());
  std::printf("#   %.1f MB as BF16 safetensors, %.1f MB converted to %s; %d x %d experts of 3 x [%d, %d]\n",
              static_cast<double>(st_bytes) / kMB, static_cast<double>(conv_bytes) / kMB, dtype_name(o.dtype),
              cfg.n_layer, cfg.n_expert, cfg.n_ff_expert, cfg.n_embd);
  std::fflush(stdout);

  const int threads = static_cast<int>(m.threads);
  const MemoryResult mem = bench_memory(mem_bytes, threads, o.warmup, o.iters);
  print_memory(mem, m);
  const DiskResult disk =
      bench_disk(scratch.sub("disk-bandwidth.bin"), o.disk_mib * kMiB, o.warmup, o.iters, m.llc_bytes);
  print_disk(disk, mem);

  const CheckpointResult ck = write_hub_checkpoint(src, scratch.sub("hf-checkpoint"));
  const std::string model_dir = scratch.sub("odmoe-model");
  const ConvertResult cv = bench_convert(ck, model_dir, o.dtype, true);
  const std::string model_dir_2 = scratch.sub("odmoe-model-run2");
  const ConvertResult cv_warm = bench_convert(ck, model_dir_2, o.dtype, false);
  fs::remove_all(model_dir_2, ec);
  const ValidateResult va = bench_validate(model_dir, cv.files, o.iters);
  print_convert(ck, cv, cv_warm, va, disk, mem);
  if (!o.keep) fs::remove_all(ck.dir, ec);  // the input is no longer needed

  const ExpertResult ex = bench_experts(model_dir, o.experts, o.seed, m.llc_bytes);
  print_experts(ex, disk, mem, cfg, o.dtype);

  json out = finish_run(kName, command_line, t_start, nullptr, m);
  if (!o.json_path.empty()) {
    out["units"] = "GBps = 1e9 bytes/s, MBps = 1e6 bytes/s, times in seconds unless named _ms";
    out["options"] = {{"arch", o.arch},       {"layers", o.layers},   {"dtype", dtype_name(o.dtype)},
                      {"iters", o.iters},     {"warmup", o.warmup},   {"experts", o.experts},
                      {"mem_mib", o.mem_mib}, {"disk_mib", o.disk_mib}, {"seed", o.seed}};
    out["model"] = {{"config", cfg.to_string()},
                    {"architecture", arch_hf_name(cfg.arch)},
                    {"n_layer", cfg.n_layer},
                    {"n_expert", cfg.n_expert},
                    {"safetensors_bytes", ck.file_bytes},
                    {"converted_stored_bytes", cv.out_bytes},
                    {"converted_file_bytes", cv.out_file_bytes},
                    {"params", cv.params}};
    out["memory"] = memory_json(mem);
    out["disk"] = disk_json(disk);
    const double vb = static_cast<double>(va.bytes);
    out["conversion"] = {
        {"checkpoint", {{"tensors", ck.tensors}, {"bytes", ck.file_bytes}, {"write_seconds", ck.seconds},
                        {"fsync_seconds", ck.fsync_seconds}, {"layout", "BF16, Hub names, data in name order"}}},
        {"run1_input_cold", convert_json(cv)},
        {"run2_input_warm", convert_json(cv_warm)},
        {"limits_MBps",
         {{"disk_cold_read", disk.cold_GBps() * 1e3},
          {"page_cache_read", disk.warm_GBps() * 1e3},
          {"disk_write_fsync", disk.write_GBps() * 1e3},
          {"page_cache_write", disk.write_cache_GBps() * 1e3},
          {"memcpy_1_thread", mem.memcpy_1_GBps() * 1e3},
          {"crc32c_1_thread", mem.crc_GBps() * 1e3}}},
        {"peak_rss",
         {{"vmhwm_reset_before", cv.peak_reset},
          {"peak_bytes", cv.peak_kib * 1024},
          {"rss_before_bytes", cv.rss_before_kib * 1024},
          {"ru_maxrss_before_bytes", cv.maxrss_before_kib * 1024},
          {"ru_maxrss_after_bytes", cv.maxrss_after_kib * 1024},
          {"largest_tensor", ck.largest.path},
          {"largest_tensor_f32_bytes", cv.largest_tensor_f32},
          {"largest_tensor_encoded_bytes", cv.largest_tensor_encoded},
          {"note", "process-wide peak: VmHWM reset via /proc/self/clear_refs just before the conversion; "
                   "ru_maxrss is the lifetime peak and includes the memory test's buffers"}}},
        {"validate",
         {{"bytes", va.bytes},
          {"resident_fraction_after_drop", va.resident_after_drop},
          {"cold", bandwidth_json(va.cold, vb)},
          {"warm", bandwidth_json(va.warm, vb)}}}};
    out["expert_read"] = experts_json(ex, disk, mem);
    write_json(o.json_path, out);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return bench_main<Options>(kName, argc, argv, parse_options, run); }
