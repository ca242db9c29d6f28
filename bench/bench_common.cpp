#include "bench_common.h"

#include <iostream>

#include <omp.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <numeric>
#include <random>

#include "odmoe/core/checksum.h"
#include "odmoe/core/error.h"
#include "odmoe/core/json_file.h"

namespace fs = std::filesystem;

namespace odmoe::bench {

// ---------------------------------------------------------------------------------------
// Timing and statistics

Stats summarize(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.n = v.size();
  s.min = v.front();
  s.max = v.back();
  s.avg = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  auto rank = [&v](double q) {
    const auto k = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
    return v[std::clamp<size_t>(k, 1, v.size()) - 1];
  };
  s.p50 = rank(0.50);
  s.p99 = rank(0.99);
  return s;
}

Stats repeat(int warmup, int iters, const std::function<double()>& f) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) t.push_back(f());
  return summarize(std::move(t));
}

json stats_json(const Stats& s) {
  return {{"n", s.n}, {"min_s", s.min}, {"avg_s", s.avg}, {"max_s", s.max}, {"p50_s", s.p50}, {"p99_s", s.p99}};
}

Bandwidth bandwidth(const Stats& s, double bytes) {
  auto bw = [bytes](double t) { return t > 0 ? bytes / t / kGB : 0.0; };
  return {bw(s.min), bw(s.avg), bw(s.max)};
}

json bandwidth_json(const Stats& s, double bytes) {
  const Bandwidth b = bandwidth(s, bytes);
  return {{"bytes", bytes}, {"best_GBps", b.best}, {"avg_GBps", b.avg}, {"worst_GBps", b.worst},
          {"time", stats_json(s)}};
}

namespace {
std::atomic<uint64_t> g_sink{0};
}  // namespace

void sink(uint64_t v) { g_sink.fetch_xor(v, std::memory_order_relaxed); }

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%.0f %s", b, units[u]);
  else
    std::snprintf(buf, sizeof buf, "%.2f %s", b, units[u]);
  return buf;
}

std::string pct(double part, double whole) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f%%", whole > 0 ? 100.0 * part / whole : 0.0);
  return buf;
}

// ---------------------------------------------------------------------------------------
// Memory

Buffer::Buffer(size_t bytes) : size_(round_up(std::max<size_t>(bytes, 1), kPage)) {
  data_ = static_cast<uint8_t*>(std::aligned_alloc(kPage, size_));
  ODMOE_CHECK(data_ != nullptr, kCore, "oom", "cannot allocate " << human_bytes(static_cast<double>(size_)),
              "lower --mem-mib, or run on a machine with more memory");
}

Buffer::~Buffer() { std::free(data_); }

// ---------------------------------------------------------------------------------------
// The machine

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  const auto e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::map<std::string, std::string> lscpu_fields() {
  std::map<std::string, std::string> m;
  FILE* p = ::popen("LC_ALL=C lscpu 2>/dev/null", "r");
  if (!p) return m;
  char line[1024];
  while (std::fgets(line, sizeof line, p)) {
    const std::string s(line);
    const auto c = s.find(':');
    if (c != std::string::npos) m[trim(s.substr(0, c))] = trim(s.substr(c + 1));
  }
  ::pclose(p);
  return m;
}

Machine probe_machine(const std::string& work_dir) {
  Machine m;
  auto ls = lscpu_fields();
  m.cpu_model = ls["Model name"];
  m.hypervisor = ls["Hypervisor vendor"];
  if (m.cpu_model.empty()) {  // no lscpu: /proc/cpuinfo
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line))
      if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
        m.cpu_model = trim(line.substr(line.find(':') + 1));
        break;
      }
  }
  m.threads = std::max(1u, std::thread::hardware_concurrency());
  struct sysinfo si {};
  if (::sysinfo(&si) == 0) m.ram_bytes = static_cast<uint64_t>(si.totalram) * si.mem_unit;
  for (int i = 0; i < 8; ++i) {  // the highest cache level sysfs lists
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i);
    std::ifstream lv(dir + "/level"), sz(dir + "/size");
    std::string level, size;
    if (!(lv >> level) || !(sz >> size)) continue;
    m.llc = "L" + level + " " + size;
    char* end = nullptr;
    m.llc_bytes = std::strtoull(size.c_str(), &end, 10);
    if (*end == 'K') m.llc_bytes <<= 10;
    if (*end == 'M') m.llc_bytes <<= 20;
  }
  utsname u{};
  if (::uname(&u) == 0) m.kernel = std::string(u.sysname) + " " + u.release + " " + u.machine;
  // Filesystem of the work dir: the longest mount point that is a prefix of its path.
  std::error_code ec;
  const std::string canon = fs::canonical(work_dir, ec).string();
  std::ifstream mounts("/proc/mounts");
  std::string dev, mnt, type, rest;
  size_t best = 0;
  while (mounts >> dev >> mnt >> type && std::getline(mounts, rest)) {
    const bool prefix = canon.rfind(mnt, 0) == 0 && (mnt == "/" || canon.size() == mnt.size() || canon[mnt.size()] == '/');
    if (prefix && mnt.size() >= best) {
      best = mnt.size();
      m.work_fs = type + " on " + dev + " (mounted at " + mnt + ")";
    }
  }
  return m;
}

std::string describe_machine(const Machine& m) {
  char buf[1024];
  std::snprintf(buf, sizeof buf, "%s%s%s, %u hardware threads, %s RAM, %s cache, %s", m.cpu_model.c_str(),
                m.hypervisor.empty() ? "" : ", guest of ", m.hypervisor.c_str(), m.threads,
                human_bytes(static_cast<double>(m.ram_bytes)).c_str(), m.llc.empty() ? "?" : m.llc.c_str(),
                m.kernel.c_str());
  return buf;
}

json machine_json(const Machine& m) {
  return {{"cpu_model_lscpu", m.cpu_model}, {"hypervisor", m.hypervisor},
          {"hardware_threads", m.threads},  {"ram_bytes", m.ram_bytes},
          {"last_level_cache", m.llc},      {"kernel", m.kernel},
          {"work_dir_filesystem", m.work_fs}};
}

CpuSnapshot cpu_snapshot() {
  CpuSnapshot c;
  c.t = Clock::now();
  const double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
  std::ifstream f("/proc/stat");
  std::string cpu;
  double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  if (f >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal && cpu == "cpu" && hz > 0) {
    c.busy_s = (user + nice + system + irq + softirq) / hz;
    c.steal_s = steal / hz;
  }
  rusage ru{};
  if (::getrusage(RUSAGE_SELF, &ru) == 0)
    c.self_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
               static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
  return c;
}

CpuLoad cpu_load_since(const CpuSnapshot& start) {
  const CpuSnapshot now = cpu_snapshot();
  CpuLoad l;
  l.wall_s = std::chrono::duration<double>(now.t - start.t).count();
  if (l.wall_s > 0) {
    l.others_cores = std::max(0.0, ((now.busy_s - start.busy_s) - (now.self_s - start.self_s)) / l.wall_s);
    l.steal_cores = std::max(0.0, (now.steal_s - start.steal_s) / l.wall_s);
  }
  return l;
}

void print_cpu_load(const CpuLoad& l) {
  std::printf("# other processes used %.2f cores on average during the run, the hypervisor stole %.2f (/proc/stat, "
              "%.1f s)\n",
              l.others_cores, l.steal_cores, l.wall_s);
  if (!l.quiet())
    std::printf("# WARNING: the machine was not quiet: the figures above compete with other work; run again when it "
                "is idle\n");
  std::fflush(stdout);
}

json cpu_load_json(const CpuLoad& l) {
  return {{"wall_seconds", l.wall_s}, {"other_processes_cores", l.others_cores}, {"steal_cores", l.steal_cores},
          {"quiet", l.quiet()}, {"source", "/proc/stat busy time minus this process's getrusage, over the run"}};
}

// ---------------------------------------------------------------------------------------
// Memory bandwidth

uint64_t sum_words(const uint8_t* p, size_t n) {
  const auto* w = reinterpret_cast<const uint64_t*>(p);
  const size_t nw = n / 8;
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= nw; i += 4) {
    s0 += w[i];
    s1 += w[i + 1];
    s2 += w[i + 2];
    s3 += w[i + 3];
  }
  for (; i < nw; ++i) s0 += w[i];
  return s0 + s1 + s2 + s3;
}

#if defined(__x86_64__)
namespace {
__attribute__((target("avx512f"))) uint64_t sum_words_avx512(const uint8_t* p, size_t n) {
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
  size_t i = 0;
  for (; i + 256 <= n; i += 256) {
    s0 = _mm512_add_epi64(s0, _mm512_loadu_si512(p + i));
    s1 = _mm512_add_epi64(s1, _mm512_loadu_si512(p + i + 64));
    s2 = _mm512_add_epi64(s2, _mm512_loadu_si512(p + i + 128));
    s3 = _mm512_add_epi64(s3, _mm512_loadu_si512(p + i + 192));
  }
  // (Not _mm512_reduce_add_epi64: GCC 12's version warns about an uninitialized value.)
  alignas(64) uint64_t w[8];
  _mm512_store_si512(w, _mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)));
  uint64_t s = 0;
  for (const uint64_t v : w) s += v;
  return s + sum_words(p + i, n - i);
}

__attribute__((target("avx2"))) uint64_t sum_words_avx2(const uint8_t* p, size_t n) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
  size_t i = 0;
  for (; i + 128 <= n; i += 128) {
    s0 = _mm256_add_epi64(s0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    s1 = _mm256_add_epi64(s1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    s2 = _mm256_add_epi64(s2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    s3 = _mm256_add_epi64(s3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  alignas(32) uint64_t w[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(w), _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3)));
  return w[0] + w[1] + w[2] + w[3] + sum_words(p + i, n - i);
}
}  // namespace
#endif

const char* sum_words_wide_isa() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "avx512";
  if (__builtin_cpu_supports("avx2")) return "avx2";
#endif
  return "sse2";
}

uint64_t sum_words_wide(const uint8_t* p, size_t n) {
#if defined(__x86_64__)
  static const std::string isa = sum_words_wide_isa();
  if (isa == "avx512") return sum_words_avx512(p, n);
  if (isa == "avx2") return sum_words_avx2(p, n);
#endif
  return sum_words(p, n);
}

WideReadResult bench_read_wide(uint64_t bytes, int threads, int warmup, int iters) {
  WideReadResult r;
  r.bytes = bytes;
  r.threads = threads;
  r.isa = sum_words_wide_isa();
  Buffer src(bytes);
  timed_parallel(threads, bytes, [&](size_t b, size_t e) { std::memset(src.data() + b, 0x5a, e - b); });
  auto read = [&](int n) {
    return timed_parallel(n, bytes, [&](size_t b, size_t e) { sink(sum_words_wide(src.data() + b, e - b)); });
  };
  r.read_1 = repeat(warmup, iters, [&] { return read(1); });
  r.read_n = threads > 1 ? repeat(warmup, iters, [&] { return read(threads); }) : r.read_1;
  return r;
}

json read_wide_json(const WideReadResult& r) {
  return {{"buffer_bytes", r.bytes},
          {"threads", r.threads},
          {"isa", r.isa},
          {"note", "read-only sum of 64-bit words with the widest vector loads (sum_words_wide)"},
          {"read_1_thread", bandwidth_json(r.read_1, static_cast<double>(r.bytes))},
          {"read_n_threads", bandwidth_json(r.read_n, static_cast<double>(r.bytes))}};
}

double read_probe(const uint8_t* p, size_t n, int threads, bool wide) {
  uint64_t total = 0;
  const auto t0 = Clock::now();
#pragma omp parallel num_threads(threads) reduction(^ : total)
  {
    const auto t = static_cast<size_t>(omp_get_thread_num()), nt = static_cast<size_t>(omp_get_num_threads());
    const size_t per = n / nt / 64 * 64;
    const size_t b = per * t, e = t + 1 == nt ? n : b + per;
    total ^= wide ? sum_words_wide(p + b, e - b) : sum_words(p + b, e - b);
  }
  const double s = since(t0);
  sink(total);
  return s;
}

void Paired::add(double x_GBps, double sum_GBps, double wide_GBps) {
  x.push_back(x_GBps);
  sum.push_back(sum_GBps);
  wide.push_back(wide_GBps);
}
double Paired::sum_p50() const { return summarize(sum).p50; }
double Paired::wide_p50() const { return summarize(wide).p50; }
double Paired::ratio(const std::vector<double>& probe) const {
  std::vector<double> r;
  for (size_t i = 0; i < x.size() && i < probe.size(); ++i)
    if (probe[i] > 0) r.push_back(x[i] / probe[i]);
  return summarize(std::move(r)).p50;
}
json Paired::to_json() const {
  return {{"x_GBps", x},
          {"read_sum_GBps", sum},
          {"read_wide_GBps", wide},
          {"read_sum_GBps_p50", sum_p50()},
          {"read_wide_GBps_p50", wide_p50()},
          {"fraction_of_read_sum_p50", ratio_sum()},
          {"fraction_of_read_wide_p50", ratio_wide()}};
}

MemoryResult bench_memory(uint64_t bytes, int threads, int warmup, int iters) {
  MemoryResult r;
  r.bytes = bytes;
  r.threads = threads;
  Buffer src(bytes), dst(bytes);
  // First touch outside the timed loops (page faults are not memory bandwidth), timed on its
  // own: it is what writing into fresh memory costs (new page-cache pages included).
  r.first_touch_s = timed_parallel(threads, bytes, [&](size_t b, size_t e) {
    std::memset(src.data() + b, 0x5a, e - b);
    std::memset(dst.data() + b, 0xa5, e - b);
  });
  auto copy = [&](int n) {
    return timed_parallel(n, bytes, [&](size_t b, size_t e) { std::memcpy(dst.data() + b, src.data() + b, e - b); });
  };
  auto read = [&](int n) {
    return timed_parallel(n, bytes, [&](size_t b, size_t e) { sink(sum_words(src.data() + b, e - b)); });
  };
  r.copy_1 = repeat(warmup, iters, [&] { return copy(1); });
  r.copy_n = threads > 1 ? repeat(warmup, iters, [&] { return copy(threads); }) : r.copy_1;
  r.read_1 = repeat(warmup, iters, [&] { return read(1); });
  r.read_n = threads > 1 ? repeat(warmup, iters, [&] { return read(threads); }) : r.read_1;
  r.crc_bytes = std::min<uint64_t>(bytes, 256 * kMiB);
  r.crc_1 = repeat(warmup, iters, [&] {
    const auto t0 = Clock::now();
    sink(crc32c(0, src.data(), r.crc_bytes));
    return since(t0);
  });
  return r;
}

void print_memory(const MemoryResult& r, const Machine& m, const std::string& section) {
  std::printf("#\n# [%s] memory bandwidth: STREAM-style over %s buffers (LLC %s), best of the timed iterations\n",
              section.c_str(), human_bytes(static_cast<double>(r.bytes)).c_str(), m.llc.empty() ? "?" : m.llc.c_str());
  std::printf("#   copy counts read + write bytes (as STREAM does); read = sum of 64-bit words; crc32c = odmoe::crc32c\n");
  std::printf("#  %-22s %7s %12s %10s %10s %10s\n", "test", "threads", "bytes/iter", "best GB/s", "avg GB/s",
              "worst GB/s");
  auto row = [](const char* name, int threads, const Stats& s, double bytes) {
    const Bandwidth b = bandwidth(s, bytes);
    std::printf("   %-22s %7d %12.0f %10.2f %10.2f %10.2f\n", name, threads, bytes, b.best, b.avg, b.worst);
  };
  row("copy (memcpy)", 1, r.copy_1, r.copy_bytes());
  if (r.threads > 1) row("copy (memcpy)", r.threads, r.copy_n, r.copy_bytes());
  row("read (sum)", 1, r.read_1, static_cast<double>(r.bytes));
  if (r.threads > 1) row("read (sum)", r.threads, r.read_n, static_cast<double>(r.bytes));
  row("crc32c", 1, r.crc_1, static_cast<double>(r.crc_bytes));
  std::printf("   %-22s %7d %12.0f %10.2f %10s %10s   (once: page faults of fresh memory, both buffers)\n",
              "first touch (memset)", r.threads, 2.0 * static_cast<double>(r.bytes),
              2.0 * static_cast<double>(r.bytes) / r.first_touch_s / kGB, "-", "-");
  std::printf("#  one thread copies %.2f GB/s of payload (half the STREAM figure): the limit of a warm expert copy\n",
              r.memcpy_1_GBps());
  std::fflush(stdout);
}

json memory_json(const MemoryResult& r) {
  return {{"buffer_bytes", r.bytes},
          {"threads", r.threads},
          {"note", "copy counts read + write bytes (STREAM convention); best = bytes / min time"},
          {"copy_1_thread", bandwidth_json(r.copy_1, r.copy_bytes())},
          {"copy_n_threads", bandwidth_json(r.copy_n, r.copy_bytes())},
          {"read_1_thread", bandwidth_json(r.read_1, static_cast<double>(r.bytes))},
          {"read_n_threads", bandwidth_json(r.read_n, static_cast<double>(r.bytes))},
          {"crc32c_1_thread", bandwidth_json(r.crc_1, static_cast<double>(r.crc_bytes))},
          {"first_touch_memset", {{"bytes", 2 * r.bytes}, {"threads", r.threads}, {"seconds", r.first_touch_s},
                                  {"GBps", 2.0 * static_cast<double>(r.bytes) / r.first_touch_s / kGB}}},
          {"memcpy_1_thread_payload_GBps", r.memcpy_1_GBps()}};
}

// ---------------------------------------------------------------------------------------
// Weights for kernel tests

TestMatrix::TestMatrix(DType dtype, size_t rows, size_t cols, uint64_t seed) {
  const size_t n = dtype_data_bytes(dtype, rows, cols);
  data = std::make_unique<Buffer>(n);
  std::mt19937_64 rng(seed);
  const size_t pat_bytes = std::min<size_t>(data->size(), 4 * kMiB);
  std::vector<uint8_t> pat(pat_bytes);
  std::uniform_real_distribution<float> u(-0.05f, 0.05f);
  switch (dtype) {
    case DType::kF32:
      for (size_t i = 0; i + 4 <= pat_bytes; i += 4) {
        const float f = u(rng);
        std::memcpy(&pat[i], &f, 4);
      }
      break;
    case DType::kBF16:
    case DType::kF16:
      for (size_t i = 0; i + 2 <= pat_bytes; i += 2) {
        const uint16_t h = dtype == DType::kBF16 ? f32_to_bf16(u(rng)) : f32_to_f16(u(rng));
        std::memcpy(&pat[i], &h, 2);
      }
      break;
    case DType::kInt8:
    case DType::kInt4:
      for (auto& b : pat) b = static_cast<uint8_t>(rng());
      break;
  }
  for (size_t off = 0; off < data->size(); off += pat_bytes)
    std::memcpy(data->data() + off, pat.data(), std::min(pat_bytes, data->size() - off));
  scales.assign(dtype_scale_count(dtype, rows, cols), 0.01f);
  view = WeightView{dtype, rows, cols, data->data(), scales.empty() ? nullptr : scales.data()};
}

bool parse_bench_options(int argc, char** argv, const boost::program_options::options_description& d,
                         const char* name, const char* usage_args, const char* about) {
  namespace po = boost::program_options;
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(d).run(), vm);
  if (vm.count("help")) {
    std::printf("usage: %s %s\n\n%s\n", name, usage_args, about);
    std::cout << d << "\n";
    return false;
  }
  po::notify(vm);
  return true;
}

json finish_run(const char* name, const std::string& command_line, Clock::time_point t_start,
                const CpuSnapshot* cpu_start, const Machine& m) {
  const double total_s = since(t_start);
  json out;
  out["bench"] = name;
  out["version"] = ODMOE_VERSION;
  out["command"] = command_line;
  out["seconds"] = total_s;
  std::printf("#\n");
  if (cpu_start) {
    const CpuLoad load = cpu_load_since(*cpu_start);
    print_cpu_load(load);
    out["cpu_load"] = cpu_load_json(load);
  }
  std::printf("# done in %.1f s\n", total_s);
  std::fflush(stdout);
  out["machine"] = machine_json(m);
  return out;
}

int guarded_main(const char* name, const std::function<int()>& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\n(see %s --help)\n", name, e.what(), name);
    return 2;
  } catch (const boost::program_options::error& e) {
    std::fprintf(stderr, "%s: %s\n(see %s --help)\n", name, e.what(), name);
    return 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.to_string().c_str());
    return e.subsystem() == Subsystem::kCli ? 2 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", name, e.what());
    return 1;
  }
}

void write_json(const std::string& path, const json& j) {
  write_json_file(path, j, 2, "--json");
  std::printf("# wrote %s\n", path.c_str());
}

std::vector<DType> parse_dtype_list(const std::string& csv) {
  std::vector<DType> out;
  std::stringstream ss(csv);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto dt = parse_dtype(trim(item));
    if (!dt) throw UsageError("--dtypes: '" + item + "' is not one of f32, bf16, f16, int8, int4");
    out.push_back(*dt);
  }
  if (out.empty()) throw UsageError("--dtypes is empty");
  return out;
}

ScratchDir::ScratchDir(const std::string& name, const std::string& parent, bool keep) : keep_(keep) {
  namespace fs = std::filesystem;
  ODMOE_CHECK(fs::is_directory(parent), kCli, "work-dir", "--work-dir " << parent << " is not a directory",
              "create it first; the bench makes (and removes) its own subdirectory in it");
  path_ = (fs::path(parent) / (name + "." + std::to_string(::getpid()))).string();
  std::error_code ec;
  ODMOE_CHECK(fs::create_directory(path_, ec) && !ec, kIo, "work-dir",
              "cannot create " << path_ << (ec ? ": " + ec.message() : ": it already exists"), "");
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  if (!keep_) std::filesystem::remove_all(path_, ec);
}

std::string ScratchDir::sub(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }

}  // namespace odmoe::bench
