// What every benchmark in bench/ shares: timing and statistics (warm-up, timed iterations,
// min/avg/max, nearest-rank percentiles), a probe of the machine (lscpu, RAM, LLC, kernel,
// the work dir's filesystem), and the memory-bandwidth test (STREAM-style memcpy and a
// read-only sum, 1 and n threads, plus crc32c) that the benchmarks print their figures next to.
#pragma once

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "odmoe/backend/backend.h"
#include "odmoe/cli/cli.h"
#include "odmoe/core/dtype.h"

namespace odmoe::bench {

using nlohmann::json;

constexpr double kGB = 1e9;  // bandwidths are decimal: GB/s = 1e9 bytes/s, MB/s = 1e6 bytes/s
constexpr double kMB = 1e6;
constexpr uint64_t kMiB = 1ull << 20;
constexpr size_t kPage = 4096;

// A bad command line (exit status 2).
using cli::UsageError;

// Runs a benchmark's body and maps failures to an exit status and one message:
// 2 for a bad command line, 1 for any other error.
int guarded_main(const char* name, const std::function<int()>& body);
// A benchmark's main: records the command line, parses Options (`parse` returns false
// after --help) and runs `run(options, command_line)` under guarded_main.
template <typename Options, typename Parse, typename Run>
int bench_main(const char* name, int argc, char** argv, Parse parse, Run run) {
  std::string command_line = name;
  for (int i = 1; i < argc; ++i) command_line += std::string(" ") + argv[i];
  return guarded_main(name, [&] {
    Options o;
    if (!parse(argc, argv, &o)) return 0;
    return run(o, command_line);
  });
}
// Parses argv into `d`'s options. On --help prints "usage: NAME USAGE_ARGS", `about` and
// the options, and returns false.
bool parse_bench_options(int argc, char** argv, const boost::program_options::options_description& d,
                         const char* name, const char* usage_args, const char* about);
// Writes `j` (indented) to `path` and says so on stdout; throws odmoe::Error if the file
// cannot be written.
void write_json(const std::string& path, const json& j);

// ---------------------------------------------------------------------------------------
// Timing and statistics

using Clock = std::chrono::steady_clock;
inline double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Seconds of a set of timed iterations; percentiles are nearest-rank.
struct Stats {
  size_t n = 0;
  double min = 0, avg = 0, max = 0, p50 = 0, p99 = 0;
};

Stats summarize(std::vector<double> v);
// Runs f `warmup` times untimed, then `iters` times; f returns the seconds of one iteration.
Stats repeat(int warmup, int iters, const std::function<double()>& f);
json stats_json(const Stats& s);

// Bandwidth of moving `bytes` per iteration: best (min time), average, worst (max time).
struct Bandwidth {
  double best = 0, avg = 0, worst = 0;  // GB/s
};
Bandwidth bandwidth(const Stats& s, double bytes);
json bandwidth_json(const Stats& s, double bytes);

// Keeps the result of a measured loop alive.
void sink(uint64_t v);

std::string human_bytes(double b);          // "12.00 MiB"
std::string pct(double part, double whole);  // "75%"

// ---------------------------------------------------------------------------------------
// Memory

inline size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// A page-aligned heap buffer.
class Buffer {
 public:
  explicit Buffer(size_t bytes);
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer();

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  size_t size_;
  uint8_t* data_ = nullptr;
};

// ---------------------------------------------------------------------------------------
// The machine

struct Machine {
  std::string cpu_model;   // lscpu "Model name"
  std::string hypervisor;  // lscpu "Hypervisor vendor", "" on bare metal
  unsigned threads = 1;    // std::thread::hardware_concurrency
  uint64_t ram_bytes = 0;
  std::string llc;  // "L3 32768K" from sysfs
  uint64_t llc_bytes = 0;
  std::string kernel;
  std::string work_fs;  // "ext4 on /dev/vda"
};

std::string trim(std::string s);
// "bf16,int8" -> dtypes; throws UsageError naming a bad item or an empty list.
std::vector<DType> parse_dtype_list(const std::string& csv);

// The bench's own directory `<parent>/<name>.<pid>`; removed (with everything in it) at the
// end unless `keep`. Throws if `parent` is not a directory.
class ScratchDir {
 public:
  ScratchDir(const std::string& name, const std::string& parent, bool keep);
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir();
  const std::string& path() const { return path_; }
  std::string sub(const std::string& name) const;

 private:
  std::string path_;
  bool keep_ = false;
};
std::map<std::string, std::string> lscpu_fields();
Machine probe_machine(const std::string& work_dir);
// "AMD EPYC, guest of KVM, 2 hardware threads, 23.47 GiB RAM, L3 32768K cache, Linux ..."
std::string describe_machine(const Machine& m);
json machine_json(const Machine& m);

// CPU time used on this machine by other processes while a benchmark runs (/proc/stat minus
// this process's getrusage): on a shared machine, a busy neighbour explains odd figures.
struct CpuSnapshot {
  double busy_s = 0;   // all CPUs: user + nice + system + irq + softirq
  double steal_s = 0;  // time the hypervisor ran something else on our vCPUs
  double self_s = 0;   // this process: user + system
  Clock::time_point t;
};
CpuSnapshot cpu_snapshot();
struct CpuLoad {
  double wall_s = 0;
  double others_cores = 0;  // average number of cores busy with other processes
  double steal_cores = 0;   // average number of vCPUs stolen by the hypervisor
  bool quiet() const { return others_cores < 0.1 && steal_cores < 0.1; }
};
CpuLoad cpu_load_since(const CpuSnapshot& start);
// "# other processes: 0.01 cores on average, steal 0.00 cores over 31.2 s" (+ a warning line).
void print_cpu_load(const CpuLoad& l);
json cpu_load_json(const CpuLoad& l);

// The end of a run that started at `t_start`: prints the footer (the CPU load since
// `cpu_start` when given, and the total time) and returns the fields every benchmark's JSON
// starts with: bench, version, command, seconds, (cpu_load,) machine.
json finish_run(const char* name, const std::string& command_line, Clock::time_point t_start,
                const CpuSnapshot* cpu_start, const Machine& m);

// ---------------------------------------------------------------------------------------
// Memory bandwidth

struct MemoryResult {
  uint64_t bytes = 0;  // per buffer
  int threads = 1;
  Stats copy_1, copy_n, read_1, read_n, crc_1;
  uint64_t crc_bytes = 0;
  double first_touch_s = 0;  // memset of both buffers right after allocation: page faults included
  // Bytes moved per iteration, counted as STREAM does (copy: read + write).
  double copy_bytes() const { return 2.0 * static_cast<double>(bytes); }
  // What one thread copying B bytes achieves, in bytes copied per second (half of STREAM's figure).
  double memcpy_1_GBps() const { return bandwidth(copy_1, copy_bytes()).best / 2; }
  // STREAM copy with all threads (read + write bytes).
  double copy_n_GBps() const { return bandwidth(copy_n, copy_bytes()).best; }
  double read_n_GBps() const { return bandwidth(read_n, static_cast<double>(bytes)).best; }
  double read_1_GBps() const { return bandwidth(read_1, static_cast<double>(bytes)).best; }
  double crc_GBps() const { return bandwidth(crc_1, static_cast<double>(crc_bytes)).best; }
};

// Splits [0, bytes) into n_threads page-aligned slices, runs body(begin, end) on each in its
// own std::thread, and returns the seconds until all have finished.
template <typename Body>
double timed_parallel(int n_threads, size_t bytes, const Body& body) {
  const size_t per = bytes / static_cast<size_t>(n_threads) / kPage * kPage;
  std::vector<std::thread> pool;
  const auto t0 = Clock::now();
  for (int i = 0; i < n_threads; ++i) {
    const size_t b = per * static_cast<size_t>(i);
    const size_t e = i + 1 == n_threads ? bytes : b + per;
    pool.emplace_back([&body, b, e] { body(b, e); });
  }
  for (auto& t : pool) t.join();
  return since(t0);
}

// Sum of the 64-bit words of [p, p + n): a read-only pass over memory.
uint64_t sum_words(const uint8_t* p, size_t n);

// STREAM-style memcpy and read-only sum over two `bytes` buffers, with 1 and `threads`
// threads, best of `iters` after `warmup`; crc32c over up to 256 MiB with one thread.
MemoryResult bench_memory(uint64_t bytes, int threads, int warmup, int iters);
// A read-only pass like sum_words, with the widest vector loads this CPU has (AVX-512: one
// 64-byte load per cache line, else AVX2, else sum_words), 4 independent accumulators. Streaming
// weights with 512-bit loads, as the matmul kernels do, can reach more than sum_words' SSE loop.
uint64_t sum_words_wide(const uint8_t* p, size_t n);
const char* sum_words_wide_isa();  // "avx512", "avx2" or "sse2"

// The read-only pass with sum_words_wide over one `bytes` buffer, 1 and `threads` threads.
struct WideReadResult {
  uint64_t bytes = 0;
  int threads = 1;
  std::string isa;
  Stats read_1, read_n;
  double read_1_GBps() const { return bandwidth(read_1, static_cast<double>(bytes)).best; }
  double read_n_GBps() const { return bandwidth(read_n, static_cast<double>(bytes)).best; }
};
WideReadResult bench_read_wide(uint64_t bytes, int threads, int warmup, int iters);
json read_wide_json(const WideReadResult& r);

// A read-only pass over [p, p + n) by `threads` OpenMP threads (the thread pool the CPU
// backend's matmuls use), with sum_words (SSE2 loads, as bench_memory's "read (sum)") or
// sum_words_wide; returns seconds. Interleaved with timed kernels or decode steps, it measures
// the read bandwidth at the same moment: on a shared VM the memory bandwidth drifts by tens of
// percent within minutes.
double read_probe(const uint8_t* p, size_t n, int threads, bool wide);

// Paired samples: a figure under test (GB/s) and read probes taken right after it (GB/s).
struct Paired {
  std::vector<double> x, sum, wide;
  void add(double x_GBps, double sum_GBps, double wide_GBps);
  double sum_p50() const;
  double wide_p50() const;
  // Median over the samples of x / probe: robust to the drift of the machine's bandwidth.
  double ratio_sum() const { return ratio(sum); }
  double ratio_wide() const { return ratio(wide); }
  double ratio(const std::vector<double>& probe) const;
  json to_json() const;
};

// Prints the table under the heading "# [<section>] memory bandwidth: ...".
void print_memory(const MemoryResult& r, const Machine& m, const std::string& section = "1");
json memory_json(const MemoryResult& r);

// ---------------------------------------------------------------------------------------
// Weights for kernel tests

// A weight matrix [rows, cols] in `dtype` with plausible values (no NaN, no denormals; int8
// and int4 random, scales 0.01): a 4 MiB pattern repeated, so filling a large matrix costs a
// memcpy. view() is what the kernels take.
struct TestMatrix {
  TestMatrix(DType dtype, size_t rows, size_t cols, uint64_t seed);
  std::unique_ptr<Buffer> data;
  std::vector<float> scales;
  WeightView view;
  size_t data_bytes() const { return dtype_data_bytes(view.dtype, view.rows, view.cols); }
};

}  // namespace odmoe::bench
