// odmoe-bench-rowdot: the CPU backend's decode matmul (one token: one row dot product per
// output row, src/backend/cpu) for each ISA, next to the memory bandwidth. It answers "is
// decode at dtype X memory-bound or compute-bound". In the style of nccl-tests: warm-up,
// timed iterations, min/avg/max, a table on stdout and --json FILE.
//
//   odmoe-bench-rowdot [--cols 2048] [--mem-mib 256] [--dtypes bf16,int8,int4] [--threads 0]
//                      [--iters 5] [--warmup 1] [--seed 1234] [--json FILE]
//
// For every kernel and dtype:
//   L2      one thread, repeated matmuls over a ~256 KiB matrix: the kernel's compute ceiling
//           per core (GB/s of stored weight bytes), and that ceiling x the cores used; the
//           kernels of a dtype take turns within each timed iteration
//   memory  one matmul over a --mem-mib matrix with --threads threads (OpenMP over rows, static
//           schedule, as CpuBackend::matmul), each followed by a read-only sum over the same
//           bytes with the same threads (the paired read bandwidth at that moment)
//   error   max |y - y_library| / max |y_library| against the library's best ISA
//
// The library's decode of int8/int4 weights quantises x to int8 per block of 32 (integer
// kernels). Candidates, int8/int4 only:
//   f32x avx2, f32x avx512   the library's f32-activation row dot (cpu_row_dot) of that ISA:
//                 the arithmetic decode had before the integer kernels (its err column is the
//                 effect of quantising the activations)
// Exit status: 0 success, 1 error, 2 bad command line.
#include <omp.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "bench_common.h"
#include "odmoe/backend/cpu_backend.h"
#include "odmoe/core/dtype.h"
#include "odmoe/core/error.h"

namespace po = boost::program_options;
using namespace odmoe;
using namespace odmoe::bench;

namespace {

constexpr const char* kName = "odmoe-bench-rowdot";

// Candidate kernels: the library's own row dot products (cpu_row_dot, cpu_row_dot_q8) under
// another schedule or with other arithmetic than CpuBackend::matmul's.
float f32x_avx2_dot(const WeightView& w, size_t row, const float* x) { return cpu_row_dot(CpuIsa::kAvx2, w, row, x); }
float f32x_avx512_dot(const WeightView& w, size_t row, const float* x) { return cpu_row_dot(CpuIsa::kAvx512, w, row, x); }

// ---------------------------------------------------------------------------------------
// Kernels under test: a decode matmul y = W x.

using RowDot = float (*)(const WeightView&, size_t, const float*);

struct Kernel {
  std::string name;
  std::string kind;  // "library" | "candidate"
  CpuIsa isa = CpuIsa::kScalar;
  RowDot dot = nullptr;       // candidates
  std::vector<DType> dtypes;  // candidates: the dtypes they implement
};

// One matmul with one token, `threads` threads; the library through CpuBackend::matmul,
// candidates as a row dot under OpenMP's static schedule (as CpuBackend::matmul).
class Runner {
 public:
  Runner(const Kernel& k, int threads) : k_(k), threads_(threads), be_(k.isa, threads) {}
  void operator()(const WeightView& w, const float* x, float* y) { rows(w, x, y); }
  void rows(const WeightView& w, const float* x, float* y) {
    if (k_.kind == "library") {
      be_.matmul(w, x, 1, y);
      return;
    }
    const auto n_rows = static_cast<long>(w.rows);
    const RowDot dot = k_.dot;
#pragma omp parallel for num_threads(threads_) schedule(static) if (threads_ > 1)
    for (long r = 0; r < n_rows; ++r) y[r] = dot(w, static_cast<size_t>(r), x);
  }

 private:
  const Kernel& k_;
  int threads_;
  CpuBackend be_;
};

struct Row {
  std::string kernel, kind;
  DType dtype = DType::kBF16;
  size_t cols = 0;
  double l2_bytes = 0, mem_bytes = 0;
  size_t mem_rows = 0;
  int threads = 1;
  Stats l2, mem;
  Paired paired;
  double rel_err = 0;
  double l2_GBps() const { return bandwidth(l2, l2_bytes).best; }
  double mem_GBps() const { return bandwidth(mem, mem_bytes).best; }
};

struct Options {
  size_t cols = 2048;
  uint64_t mem_mib = 256;
  std::vector<DType> dtypes{DType::kBF16, DType::kInt8, DType::kInt4};
  std::string dtypes_s = "bf16,int8,int4";
  int threads = 1, iters = 5, warmup = 1;
  uint64_t seed = 1234;
  std::string json_path;
};

std::vector<Kernel> kernels() {
  std::vector<Kernel> v;
  const CpuIsa best = detect_cpu_isa();
  const std::vector<DType> ints{DType::kInt8, DType::kInt4};
  v.push_back({"library scalar", "library", CpuIsa::kScalar, nullptr, {}});
  if (best >= CpuIsa::kAvx2) {
    v.push_back({"library avx2", "library", CpuIsa::kAvx2, nullptr, {}});
    v.push_back({"f32x avx2", "candidate", CpuIsa::kAvx2, f32x_avx2_dot, ints});
  }
  if (best >= CpuIsa::kAvx512) {
    v.push_back({"library avx512", "library", CpuIsa::kAvx512, nullptr, {}});
    v.push_back({"f32x avx512", "candidate", CpuIsa::kAvx512, f32x_avx512_dot, ints});
  }
  return v;
}

std::vector<Row> run_all(const Options& o) {
  std::vector<Row> out;
  const std::vector<Kernel> ks = kernels();
  for (const DType d : o.dtypes) {
    const double row_bytes = static_cast<double>(WeightView{d, 1, o.cols, nullptr, nullptr}.bytes());
    const auto mem_rows = static_cast<size_t>(static_cast<double>(o.mem_mib * kMiB) / row_bytes);
    const auto l2_rows = std::max<size_t>(1, static_cast<size_t>(256.0 * 1024 / row_bytes));
    const TestMatrix big(d, mem_rows, o.cols, o.seed), small(d, l2_rows, o.cols, o.seed);
    std::vector<float> x(o.cols);
    for (size_t i = 0; i < o.cols; ++i) x[i] = std::sin(static_cast<float>(i) * 0.37f);
    // The reference: the library's best ISA.
    std::vector<float> ref(mem_rows), y(mem_rows);
    CpuBackend(detect_cpu_isa(), o.threads).matmul(big.view, x.data(), 1, ref.data());
    float ref_max = 0;
    for (float v : ref) ref_max = std::max(ref_max, std::abs(v));
    std::vector<const Kernel*> active;
    for (const Kernel& k : ks)
      if (k.kind == "library" || std::find(k.dtypes.begin(), k.dtypes.end(), d) != k.dtypes.end()) active.push_back(&k);
    // L2, one thread: each timed iteration runs as many matmuls as fill ~20 ms. The kernels take
    // turns within every iteration (A, B, C, A, B, C, ...), so a slow phase of the machine
    // (a busy SMT sibling on the host) hits all of them alike.
    std::vector<std::unique_ptr<Runner>> l2_runs;
    std::vector<int> reps;
    std::vector<std::vector<double>> l2_t(active.size());
    std::vector<float> ys(l2_rows);
    for (const Kernel* k : active) {
      l2_runs.push_back(std::make_unique<Runner>(*k, 1));
      Runner& run1 = *l2_runs.back();
      const auto t0 = Clock::now();
      int n = 0;
      while (since(t0) < 0.005 || n < 4) {
        run1.rows(small.view, x.data(), ys.data());
        ++n;
      }
      reps.push_back(std::max(4, static_cast<int>(n * 0.020 / since(t0))));
    }
    for (int it = 0; it < o.warmup + o.iters; ++it)
      for (size_t i = 0; i < active.size(); ++i) {
        const auto t1 = Clock::now();
        for (int r = 0; r < reps[i]; ++r) l2_runs[i]->rows(small.view, x.data(), ys.data());
        if (it >= o.warmup) l2_t[i].push_back(since(t1));
      }
    for (size_t ki = 0; ki < active.size(); ++ki) {
      const Kernel& k = *active[ki];
      Row row;
      row.kernel = k.name;
      row.kind = k.kind;
      row.dtype = d;
      row.cols = o.cols;
      row.threads = o.threads;
      row.mem_rows = mem_rows;
      row.l2_bytes = static_cast<double>(small.view.bytes()) * reps[ki];
      row.l2 = summarize(l2_t[ki]);
      // From memory, N threads, each matmul followed by read probes over the same bytes.
      {
        Runner run(k, o.threads);
        row.mem_bytes = static_cast<double>(big.view.bytes());
        int calls = 0;
        row.mem = repeat(o.warmup, o.iters, [&] {
          const bool timed = calls++ >= o.warmup;
          const auto t0 = Clock::now();
          run(big.view, x.data(), y.data());
          const double t = since(t0);
          const double db = static_cast<double>(big.data_bytes());
          const double ts = read_probe(big.data->data(), big.data_bytes(), o.threads, false);
          const double tw = read_probe(big.data->data(), big.data_bytes(), o.threads, true);
          if (timed) row.paired.add(row.mem_bytes / t / kGB, db / ts / kGB, db / tw / kGB);
          return t;
        });
      }
      float err = 0;
      for (size_t i = 0; i < mem_rows; ++i) err = std::max(err, std::abs(y[i] - ref[i]));
      row.rel_err = ref_max > 0 ? err / ref_max : 0;
      out.push_back(row);
      std::fprintf(stderr, ".");
    }
  }
  std::fprintf(stderr, "\n");
  return out;
}

bool parse_options(int argc, char** argv, Options* o) {
  int threads = 0;
  po::options_description d("options");
  d.add_options()("help,h", "show this help")("cols", po::value(&o->cols)->default_value(o->cols),
                                               "row length (the model's hidden size: olmoe/qwen3 2048, mixtral 4096)")(
      "mem-mib", po::value(&o->mem_mib)->default_value(o->mem_mib), "size of the matrix read from memory (MiB)")(
      "dtypes", po::value(&o->dtypes_s)->default_value(o->dtypes_s), "comma-separated: f32|bf16|f16|int8|int4")(
      "threads", po::value(&threads)->default_value(0), "threads of the matmul from memory (0: all cores)")(
      "iters", po::value(&o->iters)->default_value(o->iters), "timed iterations")(
      "warmup", po::value(&o->warmup)->default_value(o->warmup), "untimed iterations before them")(
      "seed", po::value(&o->seed)->default_value(o->seed), "seed of the test matrices")(
      "json", po::value(&o->json_path), "also write the results to this JSON file");
  if (!parse_bench_options(argc, argv, d, kName, "[options]",
                           "Times the CPU backend's one-token matmul per ISA and candidate kernels, in L2 (compute ceiling)\n"
                           "and from memory next to a paired read-only sum over the same bytes."))
    return false;
  o->dtypes = parse_dtype_list(o->dtypes_s);
  if (o->cols < 32) throw UsageError("--cols must be >= 32");
  if (o->mem_mib < 16) throw UsageError("--mem-mib must be >= 16");
  if (threads < 0) throw UsageError("--threads must be >= 0");
  o->threads = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (o->iters < 1) throw UsageError("--iters must be >= 1");
  if (o->warmup < 0) throw UsageError("--warmup must be >= 0");
  return true;
}

int run(const Options& o, const std::string& command_line) {
  const auto t_start = Clock::now();
  const CpuSnapshot cpu_start = cpu_snapshot();
  const Machine m = probe_machine(".");
  std::printf("# %s %s: one-token matmul over rows of %zu, dtypes %s; %d threads from memory; %d timed iterations "
              "after %d warm-up\n",
              kName, ODMOE_VERSION, o.cols, o.dtypes_s.c_str(), o.threads, o.iters, o.warmup);
  std::printf("# command: %s\n", command_line.c_str());
  std::printf("# machine: %s\n", describe_machine(m).c_str());
  std::fflush(stdout);
  const std::vector<Row> rows = run_all(o);

  std::printf("#\n# L2: 1 thread over a ~256 KiB matrix (compute ceiling per core); memory: %d threads over a %s matrix,\n"
              "#   each matmul followed by read-only sums over the same bytes with the same threads (paired; median).\n"
              "#   GB/s = stored weight bytes (data + scales) / time. err = max |y - y_library| / max |y_library| "
              "against library %s\n",
              o.threads, human_bytes(static_cast<double>(o.mem_mib * kMiB)).c_str(), cpu_isa_name(detect_cpu_isa()));
  std::printf("#  %-5s %-16s %9s %9s %10s %10s %10s %10s %9s %9s %9s\n", "dtype", "kernel", "L2 GB/s", "x cores",
              "mem best", "mem avg", "mem worst", "read GB/s", "% read", "% wide", "err");
  for (const Row& r : rows) {
    const Bandwidth b = bandwidth(r.mem, r.mem_bytes);
    std::printf("   %-5s %-16s %9.2f %9.2f %10.2f %10.2f %10.2f %10.2f %9s %9s %9.1e\n", dtype_name(r.dtype),
                r.kernel.c_str(), r.l2_GBps(), r.l2_GBps() * r.threads, b.best, b.avg, b.worst, r.paired.sum_p50(),
                pct(r.paired.ratio_sum(), 1).c_str(), pct(r.paired.ratio_wide(), 1).c_str(), r.rel_err);
  }
  std::printf("#  x cores: the L2 figure x %d: above the read GB/s, the kernel can keep up with memory; below, it is "
              "compute-bound\n#  read GB/s: the paired read-only sum (SSE2 loads); %% read, %% wide: median over the "
              "iterations of matmul GB/s / paired read GB/s,\n#  with the read-only sum and with the %s one\n",
              o.threads, sum_words_wide_isa());
  json out = finish_run(kName, command_line, t_start, &cpu_start, m);
  if (!o.json_path.empty()) {
    json dts = json::array();
    for (const DType dt : o.dtypes) dts.push_back(dtype_name(dt));
    out["options"] = {{"cols", o.cols},       {"mem_mib", o.mem_mib}, {"dtypes", dts},     {"threads", o.threads},
                      {"iters", o.iters},     {"warmup", o.warmup},   {"seed", o.seed}};
    json jr = json::array();
    for (const Row& r : rows)
      jr.push_back({{"dtype", dtype_name(r.dtype)},
                    {"kernel", r.kernel},
                    {"kind", r.kind},
                    {"cols", r.cols},
                    {"l2_1_thread", bandwidth_json(r.l2, r.l2_bytes)},
                    {"memory", bandwidth_json(r.mem, r.mem_bytes)},
                    {"memory_rows", r.mem_rows},
                    {"threads", r.threads},
                    {"paired_read", r.paired.to_json()},
                    {"max_rel_error_vs_library", r.rel_err}});
    out["rows"] = jr;
    write_json(o.json_path, out);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return bench_main<Options>(kName, argc, argv, parse_options, run); }
