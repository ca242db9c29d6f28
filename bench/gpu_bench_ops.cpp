// odmoe-bench-gpu-ops: the CUDA op layer's decode GEMV per dtype next to the GPU's peak memory
// bandwidth, the prefill GEMM through cuBLAS, decode attention over the KV cache, and the
// host->device copy (pinned and pageable) the expert load path is measured against. In the
// style of nccl-tests: warm-up, timed iterations (CUDA events), min/avg/max, a table on stdout
// and --json FILE.
//
//   odmoe-bench-gpu-ops [--dtypes f32,bf16,f16,int8,int4] [--stream-mib 1024] [--iters 20]
//                       [--warmup 3] [--copy-mib 256] [--json FILE]
//
// GEMV shapes are OLMoE-1B-7B's (n_embd 2048, expert n_ff 1024): expert gate/up [1024, 2048],
// expert down [2048, 1024], attention [2048, 2048]. One matrix fits in L2 (50 MiB on an H100),
// so an iteration walks over enough copies to stream --stream-mib (at least 4x the L2) from
// memory, as decode walks over many experts. GB/s = stored bytes (data + scales) / time; the
// roofline is the peak DRAM bandwidth, 2 x memory clock x bus width (DDR).
// Exit status: 0 success, 1 error (no GPU included), 2 bad command line.
#include <cuda_runtime.h>

#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_common.h"
#include "cuda_ops.h"
#include "odmoe/backend/cuda_check.h"
#include "odmoe/core/dtype.h"
#include "odmoe/core/error.h"

namespace po = boost::program_options;
using namespace odmoe;
using namespace odmoe::bench;

namespace {

constexpr const char* kName = "odmoe-bench-gpu-ops";

struct Options {
  std::string dtypes_s = "f32,bf16,f16,int8,int4";
  std::vector<DType> dtypes;
  size_t stream_mib = 1024, copy_mib = 256;
  int iters = 20, warmup = 3;
  std::string json_path;
};

bool parse_options(int argc, char** argv, Options* o) {
  po::options_description d("options");
  d.add_options()("help,h", "show this help")("dtypes", po::value(&o->dtypes_s), "weight dtypes (default all)")(
      "stream-mib", po::value(&o->stream_mib), "MiB of weights one GEMV iteration streams (default 1024)")(
      "copy-mib", po::value(&o->copy_mib), "MiB of the host->device copies (default 256)")(
      "iters", po::value(&o->iters), "timed iterations (default 20)")("warmup", po::value(&o->warmup),
                                                                       "warm-up iterations (default 3)")(
      "json", po::value(&o->json_path), "write the results as JSON to FILE");
  if (!parse_bench_options(argc, argv, d, kName, "[options]",
                           "Decode GEMV, prefill GEMM and decode attention of the CUDA op layer, host->device copies."))
    return false;
  o->dtypes = parse_dtype_list(o->dtypes_s);
  if (o->iters < 1 || o->warmup < 0 || o->stream_mib < 1 || o->copy_mib < 1)
    throw UsageError("--iters, --stream-mib and --copy-mib must be >= 1, --warmup >= 0");
  return true;
}

struct Gpu {
  cudaDeviceProp prop{};
  int cc_major = 0, cc_minor = 0, mem_clock_khz = 0, bus_bits = 0, l2_bytes = 0, sms = 0;
  double peak_GBps() const { return 2.0 * mem_clock_khz * 1e3 * (bus_bits / 8.0) / kGB; }
};

Gpu probe_gpu() {
  int n = 0;
  ODMOE_CUDA_CHECK(cudaGetDeviceCount(&n));
  ODMOE_CHECK(n > 0, kCuda, "no-gpu", "no GPU found", "run on a machine with an NVIDIA GPU");
  Gpu g;
  ODMOE_CUDA_CHECK(cudaGetDeviceProperties(&g.prop, 0));
  ODMOE_CUDA_CHECK(cudaDeviceGetAttribute(&g.cc_major, cudaDevAttrComputeCapabilityMajor, 0));
  ODMOE_CUDA_CHECK(cudaDeviceGetAttribute(&g.cc_minor, cudaDevAttrComputeCapabilityMinor, 0));
  ODMOE_CUDA_CHECK(cudaDeviceGetAttribute(&g.mem_clock_khz, cudaDevAttrMemoryClockRate, 0));
  ODMOE_CUDA_CHECK(cudaDeviceGetAttribute(&g.bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0));
  ODMOE_CUDA_CHECK(cudaDeviceGetAttribute(&g.l2_bytes, cudaDevAttrL2CacheSize, 0));
  ODMOE_CUDA_CHECK(cudaDeviceGetAttribute(&g.sms, cudaDevAttrMultiProcessorCount, 0));
  return g;
}

// Device memory, owned.
struct DevMem {
  void* p = nullptr;
  explicit DevMem(size_t bytes) { ODMOE_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 1))); }
  DevMem(const DevMem&) = delete;
  DevMem& operator=(const DevMem&) = delete;
  ~DevMem() { cudaFree(p); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

struct Events {
  cudaEvent_t a = nullptr, b = nullptr;
  Events() {
    ODMOE_CUDA_CHECK(cudaEventCreate(&a));
    ODMOE_CUDA_CHECK(cudaEventCreate(&b));
  }
  ~Events() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  // Seconds of f() enqueued on `s`, timed by events around it.
  template <typename F>
  double time(cudaStream_t s, F f) {
    ODMOE_CUDA_CHECK(cudaEventRecord(a, s));
    f();
    ODMOE_CUDA_CHECK(cudaEventRecord(b, s));
    ODMOE_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    ODMOE_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    return ms * 1e-3;
  }
};

struct Row {
  std::string op, shape;
  DType dtype = DType::kBF16;
  size_t tokens = 1;
  double bytes = 0, flops = 0;  // per iteration
  Stats s;
};

// `copies` copies of one test matrix back to back (data, then scales), as the device sees them.
struct MatrixSet {
  size_t copies, data_bytes, scale_count;
  DevMem data, scales;
  MatrixSet(DType dt, size_t rows, size_t cols, size_t copies_in)
      : copies(copies_in), data_bytes(dtype_data_bytes(dt, rows, cols)), scale_count(dtype_scale_count(dt, rows, cols)),
        data(copies * round_up(data_bytes, 256)), scales(copies * std::max<size_t>(scale_count, 1) * 4) {
    const TestMatrix m(dt, rows, cols, 7);
    for (size_t i = 0; i < copies; ++i) {
      ODMOE_CUDA_CHECK(cudaMemcpy(data.as<uint8_t>() + i * round_up(data_bytes, 256), m.data->data(), data_bytes,
                                  cudaMemcpyHostToDevice));
      if (scale_count > 0)
        ODMOE_CUDA_CHECK(cudaMemcpy(scales.as<float>() + i * scale_count, m.scales.data(), scale_count * 4,
                                    cudaMemcpyHostToDevice));
    }
  }
  cuda::DeviceMatrix view(DType dt, size_t rows, size_t cols, size_t i) const {
    return {dt, rows, cols, data.as<uint8_t>() + i * round_up(data_bytes, 256), scales.as<float>() + i * scale_count};
  }
  double bytes_each() const { return static_cast<double>(data_bytes + scale_count * 4); }
};

void bench_matmuls(const Options& o, const Gpu& g, cudaStream_t st, std::vector<Row>* rows) {
  struct Shape { const char* name; size_t rows, cols; };
  const Shape shapes[] = {{"expert gate/up 1024x2048", 1024, 2048}, {"expert down 2048x1024", 2048, 1024},
                          {"attention 2048x2048", 2048, 2048}};
  const double want = std::max(static_cast<double>(o.stream_mib * kMiB), 4.0 * g.l2_bytes);
  cuda::GemmContext ctx;
  Events ev;
  for (const Shape& sh : shapes)
    for (DType dt : o.dtypes) {
      const double one = static_cast<double>(dtype_data_bytes(dt, sh.rows, sh.cols) + dtype_scale_count(dt, sh.rows, sh.cols) * 4);
      const auto copies = static_cast<size_t>(std::ceil(want / one));
      MatrixSet set(dt, sh.rows, sh.cols, copies);
      const size_t max_n = 256;
      DevMem x(max_n * sh.cols * 4), y(max_n * sh.rows * 4);
      ODMOE_CUDA_CHECK(cudaMemset(x.p, 0, max_n * sh.cols * 4));
      for (size_t n : {size_t{1}, size_t{8}}) {  // decode GEMV: every copy once per iteration
        Row r{"gemv", sh.name, dt, n, set.bytes_each() * static_cast<double>(copies),
              2.0 * static_cast<double>(n * sh.rows * sh.cols * copies), {}};
        r.s = repeat(o.warmup, o.iters, [&] {
          return ev.time(st, [&] {
            for (size_t i = 0; i < copies; ++i)
              cuda::gemv(set.view(dt, sh.rows, sh.cols, i), x.as<float>(), n, y.as<float>(), st);
          });
        });
        rows->push_back(r);
      }
      // Prefill GEMM on one copy (compute-bound: TFLOP/s is the figure).
      Row r{"gemm", sh.name, dt, max_n, set.bytes_each(), 2.0 * static_cast<double>(max_n * sh.rows * sh.cols), {}};
      r.s = repeat(o.warmup, o.iters, [&] {
        return ev.time(st, [&] { cuda::gemm(ctx, set.view(dt, sh.rows, sh.cols, 0), x.as<float>(), max_n, y.as<float>(), st); });
      });
      rows->push_back(r);
    }
}

// Decode attention of OLMoE-1B-7B (16 heads, no GQA, head_dim 128) at growing contexts: bytes
// are the K and V rows read.
void bench_attention(const Options& o, cudaStream_t st, std::vector<Row>* rows) {
  const int n_head = 16, n_kv = 16, hd = 128;
  Events ev;
  for (size_t ctx : {size_t{512}, size_t{4096}, size_t{32768}}) {
    const size_t cache = static_cast<size_t>(n_kv) * ctx * hd;
    DevMem k(cache * 4), v(cache * 4), q(static_cast<size_t>(n_head) * hd * 4), out(static_cast<size_t>(n_head) * hd * 4);
    ODMOE_CUDA_CHECK(cudaMemset(k.p, 0, cache * 4));
    ODMOE_CUDA_CHECK(cudaMemset(v.p, 0, cache * 4));
    ODMOE_CUDA_CHECK(cudaMemset(q.p, 0, static_cast<size_t>(n_head) * hd * 4));
    const size_t ws_bytes = cuda::attention_workspace_bytes(n_head, hd, ctx);
    DevMem ws(ws_bytes);
    const int pos = static_cast<int>(ctx) - 1;
    Row r{"attention decode", "16 heads x 128, context " + std::to_string(ctx), DType::kF32, 1,
          2.0 * static_cast<double>(cache) * 4, 4.0 * static_cast<double>(n_head) * hd * static_cast<double>(ctx), {}};
    r.s = repeat(o.warmup, o.iters, [&] {
      return ev.time(st, [&] {
        cuda::attention(q.as<float>(), 1, pos, n_head, n_kv, hd, k.as<float>(), v.as<float>(), ctx, 0,
                        1.0f / std::sqrt(static_cast<float>(hd)), out.as<float>(), ws.p, ws_bytes, st);
      });
    });
    rows->push_back(r);
  }
}

// Host->device cudaMemcpyAsync from pinned and from pageable memory.
void bench_copies(const Options& o, cudaStream_t st, std::vector<Row>* rows) {
  const size_t bytes = o.copy_mib * kMiB;
  DevMem dst(bytes);
  void* pinned = nullptr;
  ODMOE_CUDA_CHECK(cudaMallocHost(&pinned, bytes));
  std::memset(pinned, 1, bytes);
  std::vector<uint8_t> pageable(bytes, 1);
  Events ev;
  for (const bool pin : {true, false}) {
    const void* src = pin ? pinned : pageable.data();
    Row r{pin ? "h2d pinned" : "h2d pageable", human_bytes(static_cast<double>(bytes)), DType::kF32, 0,
          static_cast<double>(bytes), 0, {}};
    r.s = repeat(o.warmup, o.iters, [&] {
      return ev.time(st, [&] { ODMOE_CUDA_CHECK(cudaMemcpyAsync(dst.p, src, bytes, cudaMemcpyHostToDevice, st)); });
    });
    rows->push_back(r);
  }
  cudaFreeHost(pinned);
}

int run(const Options& o, const std::string& command_line) {
  const auto t_start = Clock::now();
  const Machine m = probe_machine(".");
  const Gpu g = probe_gpu();
  std::printf("# %s %s: dtypes %s, %d timed iterations after %d warm-up\n# command: %s\n# machine: %s\n", kName,
              ODMOE_VERSION, o.dtypes_s.c_str(), o.iters, o.warmup, command_line.c_str(), describe_machine(m).c_str());
  std::printf("# gpu: %s, sm_%d%d, %d SMs, L2 %s, memory %s; peak DRAM bandwidth %.0f GB/s (2 x %d MHz x %d bits)\n",
              g.prop.name, g.cc_major, g.cc_minor, g.sms, human_bytes(g.l2_bytes).c_str(),
              human_bytes(static_cast<double>(g.prop.totalGlobalMem)).c_str(), g.peak_GBps(), g.mem_clock_khz / 1000,
              g.bus_bits);
  std::fflush(stdout);
  cudaStream_t st = nullptr;
  ODMOE_CUDA_CHECK(cudaStreamCreate(&st));
  std::vector<Row> rows;
  bench_matmuls(o, g, st, &rows);
  bench_attention(o, st, &rows);
  bench_copies(o, st, &rows);
  ODMOE_CUDA_CHECK(cudaStreamDestroy(st));

  std::printf("#  %-17s %-26s %-5s %6s %10s %10s %10s %8s %9s\n", "op", "shape", "dtype", "tokens", "GB/s best",
              "GB/s avg", "GB/s worst", "% peak", "TFLOP/s");
  for (const Row& r : rows) {
    const Bandwidth b = bandwidth(r.s, r.bytes);
    std::printf("   %-17s %-26s %-5s %6zu %10.1f %10.1f %10.1f %8s %9.2f\n", r.op.c_str(), r.shape.c_str(),
                dtype_name(r.dtype), r.tokens, b.best, b.avg, b.worst, pct(b.best, g.peak_GBps()).c_str(),
                r.flops / r.s.min / 1e12);
  }
  std::printf("#  GB/s: stored weight bytes (data + scales), K+V bytes or copied bytes / time; %% peak: best against "
              "the DRAM peak\n#  (for h2d the link, not DRAM, is the limit: PCIe 5.0 x16 ~ 64 GB/s, NVLink-C2C more)\n");
  json out = finish_run(kName, command_line, t_start, nullptr, m);
  if (!o.json_path.empty()) {
    out["gpu"] = {{"name", g.prop.name},          {"compute_capability", std::to_string(g.cc_major) + "." + std::to_string(g.cc_minor)},
                  {"sms", g.sms},                 {"l2_bytes", g.l2_bytes},
                  {"memory_bytes", g.prop.totalGlobalMem}, {"memory_clock_khz", g.mem_clock_khz},
                  {"bus_width_bits", g.bus_bits}, {"peak_dram_GBps", g.peak_GBps()}};
    out["options"] = {{"dtypes", o.dtypes_s}, {"stream_mib", o.stream_mib}, {"copy_mib", o.copy_mib},
                      {"iters", o.iters},     {"warmup", o.warmup}};
    json jr = json::array();
    for (const Row& r : rows)
      jr.push_back({{"op", r.op},
                    {"shape", r.shape},
                    {"dtype", dtype_name(r.dtype)},
                    {"tokens", r.tokens},
                    {"bandwidth", bandwidth_json(r.s, r.bytes)},
                    {"fraction_of_peak_dram", bandwidth(r.s, r.bytes).best / g.peak_GBps()},
                    {"tflops_best", r.flops / r.s.min / 1e12}});
    out["rows"] = jr;
    write_json(o.json_path, out);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return bench_main<Options>(kName, argc, argv, parse_options, run); }
