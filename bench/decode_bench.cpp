// odmoe-bench-decode: single-process prefill and decode speed of the CPU backend on a `synth`
// model, and the weight bandwidth decode achieves, printed next to the memory bandwidth this
// machine measures in the same run. In the style of nccl-tests: warm-up, timed iterations,
// min/avg/max, a table on stdout and --json FILE.
//
//   odmoe-bench-decode --work-dir DIR [--arch olmoe-1b-7b] [--layers 2] [--dtypes bf16,int8,int4]
//                      [--prompt-tokens 64] [--tokens 32] [--threads 0] [--isa auto]
//                      [--iters 5] [--prefill-iters 3] [--warmup 1] [--mem-mib 1024]
//                      [--kernel-mib 256] [--seed 1234] [--json FILE] [--keep]
//
// In one run, on one machine:
//   [1] memory bandwidth   STREAM-style copy and read-only sum, 1 and N threads (bench_common),
//                          and the read-only sum with the widest vector loads (sum_words_wide)
//   [2] matmul kernel      CpuBackend::matmul with one token (the decode path) per dtype and ISA:
//                          over a matrix of --kernel-mib (from memory) with 1 and N threads, each
//                          matmul followed by read-only sums over the same bytes (paired), and
//                          over a matrix that fits in L2 with 1 thread (the kernel's compute
//                          ceiling per core)
//   [3] decode, per dtype  writes the model (write_model_dir(synth_source(...))), loads it
//                          (ModelFiles, CpuBackend, LocalExpertExecutor, Model), times a prefill
//                          of --prompt-tokens ids, then --tokens decode steps one at a time
//                          (greedy: the argmax is fed back). Counts the weight bytes each step
//                          reads (attention, routers, the experts the router picked, shared
//                          expert, norms, LM head, one embedding row), follows each step with
//                          read-only sums over as many bytes (the read bandwidth at that moment),
//                          and splits the step time by op with a timing Backend that forwards to
//                          CpuBackend.
// At the end: the CPU time other processes used during the run (a busy machine is flagged).
//
// Everything is written under DIR/odmoe-bench-decode.PID, removed at the end.
// Exit status: 0 success, 1 error, 2 bad command line.
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "bench_common.h"
#include "odmoe/backend/cpu_backend.h"
#include "odmoe/backend/cpu_device.h"
#include "odmoe/core/dtype.h"
#include "odmoe/core/error.h"
#include "odmoe/core/memory_stats.h"
#include "odmoe/model/model.h"
#include "odmoe/weights/model_files.h"
#include "odmoe/weights/model_writer.h"
#include "odmoe/weights/shard_layout.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace odmoe;
using namespace odmoe::bench;
using layout::TensorKind;
using layout::TensorSpec;

namespace {

constexpr const char* kName = "odmoe-bench-decode";
constexpr double kTarget = 0.85;  // issue 18: decode reads weights at >= 85% of the paired read bandwidth, every dtype

std::vector<CpuIsa> available_isas() {
  std::vector<CpuIsa> v{CpuIsa::kScalar};
  if (detect_cpu_isa() >= CpuIsa::kAvx2) v.push_back(CpuIsa::kAvx2);
  if (detect_cpu_isa() >= CpuIsa::kAvx512) v.push_back(CpuIsa::kAvx512);
  return v;
}

double mb(double bytes) { return bytes / kMB; }

// What decode's weight bandwidth is compared with: [1]'s N-thread figures.
struct Limits {
  int threads = 1;
  double read_sum = 0;   // read-only sum (bench_common's sum_words, SSE2 loads), N threads
  double read_wide = 0;  // the same with the widest vector loads (sum_words_wide), N threads
  double copy = 0;       // STREAM copy (read + write bytes), N threads
  std::string wide_isa;
};

void print_read_wide(const WideReadResult& w) {
  auto row = [&](int threads, const Stats& s) {
    const Bandwidth b = bandwidth(s, static_cast<double>(w.bytes));
    std::printf("   %-22s %7d %12.0f %10.2f %10.2f %10.2f\n", ("read (" + w.isa + " sum)").c_str(), threads,
                static_cast<double>(w.bytes), b.best, b.avg, b.worst);
  };
  row(1, w.read_1);
  if (w.threads > 1) row(w.threads, w.read_n);
  std::printf("#  'read (%s sum)': the same read-only sum with %s loads (one 64-byte load per cache line with avx512), "
              "as the matmul kernels load weights\n",
              w.isa.c_str(), w.isa.c_str());
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------------------
// [2] The matmul kernel alone

struct KernelRow {
  DType dtype = DType::kBF16;
  CpuIsa isa = CpuIsa::kScalar;
  int threads = 1;
  std::string where;  // "memory" | "L2"
  size_t rows = 0, cols = 0;
  double bytes = 0;  // weight bytes read per timed iteration
  Stats t;
  Paired paired;  // "memory" rows: read probes over the matrix's own data after each iteration
  double GBps() const { return bandwidth(t, bytes).best; }
};

struct KernelResult {
  uint64_t matrix_bytes = 0;
  std::vector<KernelRow> rows;
  // The row from memory for a dtype, thread count and ISA; null if not measured.
  const KernelRow* memory_row(DType d, int threads, CpuIsa isa) const {
    for (const auto& r : rows)
      if (r.dtype == d && r.where == "memory" && r.threads == threads && r.isa == isa) return &r;
    return nullptr;
  }
  double best_memory_GBps(DType d, int threads, CpuIsa isa) const {
    const KernelRow* r = memory_row(d, threads, isa);
    return r ? r->GBps() : 0;
  }
  double memory_ratio_sum(DType d, int threads, CpuIsa isa) const {
    const KernelRow* r = memory_row(d, threads, isa);
    return r ? r->paired.ratio_sum() : 0;
  }
};

KernelResult bench_kernel(const std::vector<DType>& dtypes, size_t cols, uint64_t matrix_bytes, int threads,
                          int warmup, int iters, uint64_t seed) {
  KernelResult r;
  r.matrix_bytes = matrix_bytes;
  const std::vector<CpuIsa> isas = available_isas();
  for (const DType d : dtypes) {
    const double row_bytes = static_cast<double>(WeightView{d, 1, cols, nullptr, nullptr}.bytes());
    // From memory: a matrix of matrix_bytes (several times the LLC), one matmul per iteration.
    {
      const auto rows = static_cast<size_t>(static_cast<double>(matrix_bytes) / row_bytes);
      const TestMatrix m(d, rows, cols, seed);
      std::vector<float> x(cols, 0.5f), y(rows);
      for (const CpuIsa isa : isas) {
        std::vector<int> ths{threads};
        if (threads > 1 && isa == isas.back()) ths.insert(ths.begin(), 1);
        for (const int th : ths) {
          CpuBackend be(isa, th);
          KernelRow row{d, isa, th, "memory", rows, cols, static_cast<double>(m.view.bytes()), {}, {}};
          const size_t data_bytes = dtype_data_bytes(d, rows, cols);
          int calls = 0;
          row.t = repeat(warmup, iters, [&] {
            const bool timed = calls++ >= warmup;
            const auto t0 = Clock::now();
            be.matmul(m.view, x.data(), 1, y.data());
            const double t = since(t0);
            const double ts = read_probe(m.data->data(), data_bytes, th, false);
            const double tw = read_probe(m.data->data(), data_bytes, th, true);
            if (timed) row.paired.add(row.bytes / t / kGB, data_bytes / ts / kGB, data_bytes / tw / kGB);
            return t;
          });
          sink(static_cast<uint64_t>(y[rows / 2] * 1e6f));
          r.rows.push_back(row);
        }
      }
    }
    // From L2: a matrix of ~256 KiB, one thread, as many matmuls as fill ~20 ms per iteration.
    {
      const auto rows = std::max<size_t>(1, static_cast<size_t>(256.0 * 1024 / row_bytes));
      const TestMatrix m(d, rows, cols, seed);
      std::vector<float> x(cols, 0.5f), y(rows);
      for (const CpuIsa isa : isas) {
        CpuBackend be(isa, 1);
        auto t0 = Clock::now();
        int reps = 0;
        while (since(t0) < 0.005 || reps < 4) {
          be.matmul(m.view, x.data(), 1, y.data());
          ++reps;
        }
        reps = std::max(4, static_cast<int>(reps * 0.020 / since(t0)));
        KernelRow row{d, isa, 1, "L2", rows, cols, static_cast<double>(m.view.bytes()) * reps, {}, {}};
        row.t = repeat(warmup, iters, [&] {
          const auto t1 = Clock::now();
          for (int i = 0; i < reps; ++i) be.matmul(m.view, x.data(), 1, y.data());
          return since(t1);
        });
        sink(static_cast<uint64_t>(y[rows / 2] * 1e6f));
        r.rows.push_back(row);
      }
    }
  }
  return r;
}

void print_kernel(const KernelResult& r, const MemoryResult& mem, const WideReadResult& wide) {
  std::printf("#\n# [2] matmul kernel alone: CpuBackend::matmul with 1 token (the decode path), best of the timed "
              "iterations\n");
  std::printf("#   memory: one matmul over a %s matrix (weights come from DRAM); L2: repeated matmuls over a 256 KiB "
              "matrix, 1 thread\n#   (the kernel's compute ceiling per core). GB/s = stored weight bytes (data + "
              "scales) / time\n",
              human_bytes(static_cast<double>(r.matrix_bytes)).c_str());
  std::printf("#   paired: after each timed matmul, read-only sums over the same matrix with the same threads; "
              "median GB/s,\n#   and in () the median over the iterations of matmul GB/s / read GB/s\n");
  std::printf("#  %-5s %-7s %-6s %7s %14s %10s %10s %10s   %s\n", "dtype", "isa", "from", "threads", "matrix",
              "best GB/s", "avg GB/s", "worst GB/s", "limit (same threads)");
  for (const auto& row : r.rows) {
    const Bandwidth b = bandwidth(row.t, row.bytes);
    char shape[64];
    std::snprintf(shape, sizeof shape, "[%zu, %zu]", row.rows, row.cols);
    char limit[256];
    if (row.where == "memory") {
      std::snprintf(limit, sizeof limit, "paired: read-only sum %.2f GB/s (%s), %s sum %.2f GB/s (%s)",
                    row.paired.sum_p50(), pct(row.paired.ratio_sum(), 1).c_str(), wide.isa.c_str(),
                    row.paired.wide_p50(), pct(row.paired.ratio_wide(), 1).c_str());
    } else {
      const double cores = b.best * mem.threads, wd = wide.read_n_GBps();
      std::snprintf(limit, sizeof limit, "x %d cores = %.1f GB/s: %s the %d-thread %s read (%.2f GB/s)", mem.threads,
                    cores, cores >= wd ? "above" : "BELOW", mem.threads, wide.isa.c_str(), wd);
    }
    std::printf("   %-5s %-7s %-6s %7d %14s %10.2f %10.2f %10.2f   %s\n", dtype_name(row.dtype), cpu_isa_name(row.isa),
                row.where.c_str(), row.threads, shape, b.best, b.avg, b.worst, limit);
  }
  std::fflush(stdout);
}

json kernel_json(const KernelResult& r) {
  json rows = json::array();
  for (const auto& row : r.rows)
    rows.push_back({{"dtype", dtype_name(row.dtype)},
                    {"isa", cpu_isa_name(row.isa)},
                    {"threads", row.threads},
                    {"from", row.where},
                    {"rows", row.rows},
                    {"cols", row.cols},
                    {"bandwidth", bandwidth_json(row.t, row.bytes)},
                    {"paired_read", row.where == "memory" ? row.paired.to_json() : json()}});
  return {{"note", "CpuBackend::matmul with n_tokens = 1; 'memory': one matmul over a matrix of matrix_bytes, each "
                   "followed by read-only sums over the same data with the same threads (paired_read); 'L2': "
                   "repeated matmuls over a ~256 KiB matrix with 1 thread"},
          {"matrix_bytes", r.matrix_bytes},
          {"rows", rows}};
}

// ---------------------------------------------------------------------------------------
// [3] Decode: a timing Backend and ExpertExecutor

enum OpClass { kOpAttention, kOpRouter, kOpExperts, kOpShared, kOpLmHead, kOpNorm, kOpSwiglu, kNumOps };
const char* op_name(int c) {
  switch (c) {
    case kOpAttention: return "matmul attention (wq,wk,wv,wo)";
    case kOpRouter: return "matmul router";
    case kOpExperts: return "matmul routed experts";
    case kOpShared: return "matmul shared expert";
    case kOpLmHead: return "matmul LM head";
    case kOpNorm: return "rms_norm";
    case kOpSwiglu: return "swiglu";
    default: return "?";
  }
}
const char* op_key(int c) {
  switch (c) {
    case kOpAttention: return "matmul_attention";
    case kOpRouter: return "matmul_router";
    case kOpExperts: return "matmul_routed_experts";
    case kOpShared: return "matmul_shared_expert";
    case kOpLmHead: return "matmul_lm_head";
    case kOpNorm: return "rms_norm";
    case kOpSwiglu: return "swiglu";
    default: return "?";
  }
}

struct OpAcc {
  uint64_t calls = 0;
  double seconds = 0;
  double bytes = 0;  // weight bytes (matmuls)
};

struct OpTimes {
  OpAcc op[kNumOps];
  OpAcc executor;  // ExpertExecutor::submit + collect, wall time (its matmuls and swiglu included)
  double matmul_seconds() const {
    double s = 0;
    for (int c : {kOpAttention, kOpRouter, kOpExperts, kOpShared, kOpLmHead}) s += op[c].seconds;
    return s;
  }
  double matmul_bytes() const {
    double b = 0;
    for (int c : {kOpAttention, kOpRouter, kOpExperts, kOpShared, kOpLmHead}) b += op[c].bytes;
    return b;
  }
  double backend_seconds() const {
    double s = 0;
    for (const auto& o : op) s += o.seconds;
    return s;
  }
};

// Forwards every op to the real backend and accumulates its time (and, for matmuls, the
// weight bytes) per class. A matmul is classified by who calls it: inside ExpertExecutor::submit
// it belongs to a routed expert; otherwise by its shape.
class TimingBackend final : public Backend {
 public:
  TimingBackend(Backend& inner, const ModelConfig& c) : inner_(inner), c_(c) {}
  const char* name() const override { return inner_.name(); }

  void matmul(const WeightView& w, const float* x, size_t n_tokens, float* y) override {
    const int cls = classify(w);
    const auto t0 = Clock::now();
    inner_.matmul(w, x, n_tokens, y);
    add(cls, since(t0), static_cast<double>(w.bytes()));
  }
  void rms_norm(const float* x, const float* weight, size_t n_rows, size_t dim, float eps, float* y) override {
    const auto t0 = Clock::now();
    inner_.rms_norm(x, weight, n_rows, dim, eps, y);
    add(kOpNorm, since(t0), 0);
  }
  void swiglu(const float* gate, const float* up, size_t n, float* out) override {
    const auto t0 = Clock::now();
    inner_.swiglu(gate, up, n, out);
    add(kOpSwiglu, since(t0), 0);
  }

  bool in_experts = false;
  OpTimes times;

 private:
  void add(int c, double s, double bytes) {
    auto& a = times.op[c];
    ++a.calls;
    a.seconds += s;
    a.bytes += bytes;
  }
  int classify(const WeightView& w) const {
    const auto E = static_cast<size_t>(c_.n_expert), d = static_cast<size_t>(c_.n_embd),
               sh = static_cast<size_t>(c_.n_ff_shared);
    if (in_experts) return kOpExperts;
    if (w.rows == static_cast<size_t>(c_.vocab_size) && w.cols == d) return kOpLmHead;
    if (w.dtype == DType::kF32 && w.rows == E && w.cols == d) return kOpRouter;
    if (sh > 0 && ((w.rows == sh && w.cols == d) || (w.rows == d && w.cols == sh) || (w.rows == 1 && w.cols == d)))
      return kOpShared;
    return kOpAttention;
  }

  Backend& inner_;
  const ModelConfig& c_;
};

class TimingExecutor final : public ExpertExecutor {
 public:
  TimingExecutor(ExpertExecutor& inner, TimingBackend& be) : inner_(inner), be_(be) {}
  void submit(int layer_idx, const float* h, size_t n, size_t k, const int32_t* ids, const float* weights) override {
    be_.in_experts = true;
    const auto t0 = Clock::now();
    inner_.submit(layer_idx, h, n, k, ids, weights);
    be_.times.executor.seconds += since(t0);
    be_.in_experts = false;
  }
  void collect(float* out) override {
    const auto t0 = Clock::now();
    inner_.collect(out);
    be_.times.executor.seconds += since(t0);
    ++be_.times.executor.calls;
  }

 private:
  ExpertExecutor& inner_;
  TimingBackend& be_;
};

// Weight bytes one decode step reads, by part.
struct TokenBytes {
  double attention = 0, router = 0, experts = 0, shared = 0, lm_head = 0, embed_row = 0, norms = 0;
  double total() const { return attention + router + experts + shared + lm_head + embed_row + norms; }
  double matmul() const { return attention + router + experts + shared + lm_head; }
};

// The parts of TokenBytes that do not depend on the routing, from the tensor specs.
TokenBytes static_token_bytes(const ModelConfig& c, DType dt) {
  TokenBytes b;
  for (const TensorSpec& s : layout::dense_tensor_specs(c)) {
    const auto by = static_cast<double>(layout::stored_bytes(s, dt));
    switch (s.kind) {
      case TensorKind::kEmbed: {
        // One row of the table (data + that row's scales), decoded by decode_rows; the
        // whole table when the LM head is tied to it.
        const DType d = layout::stored_dtype(s, dt);
        b.embed_row += static_cast<double>(WeightView{d, 1, s.cols(), nullptr, nullptr}.bytes());
        if (c.tie_word_embeddings) b.lm_head += by;
        break;
      }
      case TensorKind::kLmHead: b.lm_head += by; break;
      case TensorKind::kWq:
      case TensorKind::kWk:
      case TensorKind::kWv:
      case TensorKind::kWo: b.attention += by; break;
      case TensorKind::kRouter: b.router += by; break;
      case TensorKind::kSharedGate:
      case TensorKind::kSharedUp:
      case TensorKind::kSharedDown:
      case TensorKind::kSharedExpertGate: b.shared += by; break;
      default: b.norms += by; break;  // norms, q/k norms, biases
    }
  }
  return b;
}

uint64_t expert_bytes(const ModelConfig& c, DType dt, int layer, int expert) {
  uint64_t b = 0;
  for (const TensorSpec& s : layout::expert_tensor_specs(c, layer, expert)) b += layout::stored_bytes(s, dt);
  return b;
}

struct DecodeRun {
  DType dtype = DType::kBF16;
  std::string backend;
  uint64_t stored_bytes = 0, file_bytes = 0, params = 0;
  double write_s = 0, load_s = 0;
  uint64_t rss_loaded = 0;
  int prompt_tokens = 0;
  Stats prefill;  // seconds per prefill
  OpTimes prefill_ops;  // of the last timed prefill
  double prefill_last_s = 0;
  std::vector<double> step_s;
  std::vector<double> step_bytes;  // weight bytes per step
  Stats steps;
  TokenBytes bytes;  // per step, averaged over the steps
  double kv_bytes = 0;  // K and V cache bytes read per step, averaged
  OpTimes decode_ops;   // summed over the timed steps
  double decode_seconds = 0;
  std::vector<int32_t> generated;
  int distinct_experts_seen = 0;  // over all layers and steps
  Paired paired;  // per step: weight GB/s of the step, then read probes of as many bytes right after it

  double median_step_GBps() const { return steps.p50 > 0 ? median_bytes() / steps.p50 / kGB : 0; }
  double median_bytes() const {
    std::vector<double> v = step_bytes;
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[(v.size() + 1) / 2 - 1];
  }
  double decode_tps_p50() const { return steps.p50 > 0 ? 1.0 / steps.p50 : 0; }
  double decode_tps_avg() const { return steps.avg > 0 ? 1.0 / steps.avg : 0; }
  double prefill_tps_best() const { return prefill.min > 0 ? prompt_tokens / prefill.min : 0; }
  double prefill_tps_avg() const { return prefill.avg > 0 ? prompt_tokens / prefill.avg : 0; }
};

int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

struct DecodeOptions {
  int prompt_tokens = 64, tokens = 32, threads = 1, prefill_iters = 3, warmup = 1;
  CpuIsa isa = CpuIsa::kScalar;
  uint64_t seed = 1234;
  bool keep = false;
};

DecodeRun bench_decode(const ModelSource& src, DType dt, const std::string& dir, const DecodeOptions& o,
                       bench::Buffer& probe) {
  DecodeRun r;
  r.dtype = dt;
  r.prompt_tokens = o.prompt_tokens;
  {
    WriteOptions w;
    w.dtype = dt;
    w.overwrite = true;
    const auto t0 = Clock::now();
    const WriteStats ws = write_model_dir(src, dir, w);
    r.write_s = since(t0);
    r.stored_bytes = ws.bytes_written;
    r.params = ws.params;
    for (const auto& f : ws.files) r.file_bytes += fs::file_size(f);
  }
  const auto t_load = Clock::now();
  auto files = std::make_unique<ModelFiles>(dir);
  const ModelConfig& c = files->config();
  CpuBackend cpu(o.isa, o.threads);
  r.backend = cpu.to_string();
  TimingBackend be(cpu, c);
  LocalExpertExecutor local(*files, be);
  TimingExecutor experts(local, be);
  const int n_ctx = o.prompt_tokens + o.tokens;
  CpuDevice device(be, cpu.n_threads());  // the model's matmul/rms_norm/swiglu go through the timing wrapper
  Model model(*files, device, experts, n_ctx);
  r.load_s = since(t_load);
  r.rss_loaded = current_rss_bytes();

  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int32_t> tok(0, c.vocab_size - 1);
  std::vector<int32_t> prompt(static_cast<size_t>(o.prompt_tokens));
  for (auto& t : prompt) t = tok(rng);
  std::vector<float> logits;

  // Warm-up: prefill and a few decode steps, untimed.
  for (int i = 0; i < o.warmup; ++i) {
    model.reset();
    model.forward(prompt.data(), prompt.size(), false, &logits);
    int32_t next = argmax(logits);
    for (int s = 0; s < std::min(o.tokens, 4); ++s) {
      model.forward(&next, 1, false, &logits);
      next = argmax(logits);
    }
  }
  // Prefill, timed; the decode continues from the last one.
  std::vector<double> pf;
  for (int i = 0; i < o.prefill_iters; ++i) {
    model.reset();
    be.times = OpTimes{};
    const auto t0 = Clock::now();
    model.forward(prompt.data(), prompt.size(), false, &logits);
    pf.push_back(since(t0));
    r.prefill_ops = be.times;
    r.prefill_last_s = pf.back();
  }
  r.prefill = summarize(pf);

  // Decode, one step at a time.
  const TokenBytes fixed = static_token_bytes(c, dt);
  const size_t kv_dim = static_cast<size_t>(c.n_head_kv) * static_cast<size_t>(c.head_dim);
  std::set<std::pair<int, int>> seen;
  int32_t next = argmax(logits);
  be.times = OpTimes{};
  TokenBytes sum;
  for (int s = 0; s < o.tokens; ++s) {
    const int pos = model.position();
    const auto t0 = Clock::now();
    model.forward(&next, 1, false, &logits);
    const double t = since(t0);
    r.step_s.push_back(t);
    r.generated.push_back(next);
    TokenBytes b = fixed;
    for (int l = 0; l < c.n_layer; ++l) {
      const std::set<int32_t> ids(model.last_routing(l).begin(), model.last_routing(l).end());
      for (const int32_t e : ids) {
        b.experts += static_cast<double>(expert_bytes(c, dt, l, e));
        seen.insert({l, e});
      }
    }
    r.step_bytes.push_back(b.total());
    // The read bandwidth right now: read-only sums over as many bytes (at least 128 MiB, 4 x
    // this machine's LLC), with the same threads.
    const size_t pb = std::min(probe.size(), std::max<size_t>(static_cast<size_t>(b.total()), 128 * kMiB)) / kPage * kPage;
    const double ts = read_probe(probe.data(), pb, o.threads, false);
    const double tw = read_probe(probe.data(), pb, o.threads, true);
    r.paired.add(b.total() / t / kGB, static_cast<double>(pb) / ts / kGB, static_cast<double>(pb) / tw / kGB);
    sum.attention += b.attention;
    sum.router += b.router;
    sum.experts += b.experts;
    sum.shared += b.shared;
    sum.lm_head += b.lm_head;
    sum.embed_row += b.embed_row;
    sum.norms += b.norms;
    // Attention reads K and V of the positions it attends to, in every layer.
    const int start = c.sliding_window > 0 ? std::max(0, pos - c.sliding_window + 1) : 0;
    r.kv_bytes += 2.0 * c.n_layer * (pos - start + 1) * static_cast<double>(kv_dim) * 4;
    next = argmax(logits);
  }
  const double n = std::max(1, o.tokens);
  r.bytes = {sum.attention / n, sum.router / n, sum.experts / n, sum.shared / n,
             sum.lm_head / n,   sum.embed_row / n, sum.norms / n};
  r.kv_bytes /= n;
  r.decode_ops = be.times;
  r.steps = summarize(r.step_s);
  for (double t : r.step_s) r.decode_seconds += t;
  r.distinct_experts_seen = static_cast<int>(seen.size());
  return r;
}

void print_decode(const DecodeRun& r, const ModelConfig& c, const Limits& lim, const KernelResult& kr,
                  const DecodeOptions& o, int index) {
  const double read_lim = lim.read_sum, copy_lim = lim.copy;
  std::printf("#\n# [3.%d] decode, %s weights: %s\n", index, dtype_name(r.dtype), r.backend.c_str());
  std::printf("#  model: %.1f M parameters, %.1f MB stored (%.1f MB of files), written in %.1f s, loaded in %.1f s; "
              "RSS after load %.0f MB\n",
              static_cast<double>(r.params) / 1e6, mb(static_cast<double>(r.stored_bytes)),
              mb(static_cast<double>(r.file_bytes)), r.write_s, r.load_s, mb(static_cast<double>(r.rss_loaded)));
  std::printf("#  %-28s %6s %9s %9s %9s %9s %11s %11s\n", "phase", "n", "min ms", "avg ms", "p50 ms", "max ms",
              "best tok/s", "avg tok/s");
  std::printf("   %-28s %6zu %9.2f %9.2f %9.2f %9.2f %11.1f %11.1f\n",
              ("prefill of " + std::to_string(r.prompt_tokens) + " tokens").c_str(), r.prefill.n, r.prefill.min * 1e3,
              r.prefill.avg * 1e3, r.prefill.p50 * 1e3, r.prefill.max * 1e3, r.prefill_tps_best(), r.prefill_tps_avg());
  std::printf("   %-28s %6zu %9.2f %9.2f %9.2f %9.2f %11.1f %11.1f   decode tok/s = 1 / median step: %.2f\n",
              "decode step (1 token)", r.steps.n, r.steps.min * 1e3, r.steps.avg * 1e3, r.steps.p50 * 1e3,
              r.steps.max * 1e3, r.steps.min > 0 ? 1 / r.steps.min : 0, r.decode_tps_avg(), r.decode_tps_p50());

  const double total = r.bytes.total();
  std::printf("#  weight bytes read per decode step (exact, from the stored dtypes and the experts the router picked; "
              "average over the steps):\n");
  std::printf("#  %-44s %12s %7s\n", "part", "MB/token", "share");
  auto part = [&](const std::string& name, double b) {
    if (b > 0) std::printf("   %-44s %12.2f %7s\n", name.c_str(), mb(b), pct(b, total).c_str());
  };
  part("attention wq,wk,wv,wo (" + std::to_string(c.n_layer) + " layers)", r.bytes.attention);
  part("routers (f32)", r.bytes.router);
  part("routed experts (" + std::to_string(c.n_expert_used) + " of " + std::to_string(c.n_expert) +
           " per layer, gate+up+down)",
       r.bytes.experts);
  part("shared expert", r.bytes.shared);
  part(std::string("LM head [") + std::to_string(c.vocab_size) + ", " + std::to_string(c.n_embd) + "]" +
           (c.tie_word_embeddings ? " (tied)" : ""),
       r.bytes.lm_head);
  part("norms, biases (f32)", r.bytes.norms);
  part("one embedding row", r.bytes.embed_row);
  part("total weights", total);
  std::printf("#  + %.2f MB/token of K/V cache read by attention (not counted above); %d distinct (layer, expert) pairs "
              "used over the %zu steps\n",
              mb(r.kv_bytes), r.distinct_experts_seen, r.steps.n);
  const double gbps = r.median_step_GBps();
  const double kern = kr.best_memory_GBps(r.dtype, o.threads, o.isa);
  const double frac = r.paired.ratio_sum();
  std::printf("#  weight bandwidth at the median step: %.2f GB/s\n", gbps);
  std::printf("#    read probes after each step (as many bytes, %d threads): read-only sum %.2f GB/s (median): the "
              "steps reach %s of it (median of per-step ratios);\n#      %s sum %.2f GB/s: %s of it\n",
              o.threads, r.paired.sum_p50(), pct(frac, 1).c_str(), lim.wide_isa.c_str(), r.paired.wide_p50(),
              pct(r.paired.ratio_wide(), 1).c_str());
  std::printf("#    [1] at the start of the run (%d threads): %s of the read-only sum (%.2f GB/s), %s of the %s sum "
              "(%.2f GB/s), %s of STREAM copy (%.2f GB/s)\n",
              lim.threads, pct(gbps, read_lim).c_str(), read_lim, pct(gbps, lim.read_wide).c_str(),
              lim.wide_isa.c_str(), lim.read_wide, pct(gbps, copy_lim).c_str(), copy_lim);
  std::printf("#    target >= %.0f%% of the read-only sum (paired): %s.", 100 * kTarget, frac >= kTarget ? "met" : "NOT met");
  if (kr.memory_row(r.dtype, o.threads, o.isa))
    std::printf(" The matmul kernel alone ([2], %s, %d threads) reaches %.2f GB/s, %s of its paired read-only sum",
                cpu_isa_name(o.isa), o.threads, kern, pct(kr.memory_ratio_sum(r.dtype, o.threads, o.isa), 1).c_str());
  std::printf("\n");

  // Time split.
  const OpTimes& t = r.decode_ops;
  const double steps = std::max<double>(1, static_cast<double>(r.steps.n));
  const double per_step = r.decode_seconds / steps;
  std::printf("#  time per decode step by op (average over the %zu steps; timing wrapper around CpuBackend):\n",
              r.steps.n);
  std::printf("#  %-44s %9s %9s %7s %11s %9s\n", "op", "calls", "ms", "share", "MB", "GB/s");
  for (int cidx = 0; cidx < kNumOps; ++cidx) {
    const OpAcc& a = t.op[cidx];
    if (a.calls == 0) continue;
    const double s = a.seconds / steps;
    if (a.bytes > 0)
      std::printf("   %-44s %9.1f %9.3f %7s %11.2f %9.2f\n", op_name(cidx), static_cast<double>(a.calls) / steps,
                  s * 1e3, pct(s, per_step).c_str(), mb(a.bytes / steps), a.seconds > 0 ? a.bytes / a.seconds / kGB : 0);
    else
      std::printf("   %-44s %9.1f %9.3f %7s %11s %9s\n", op_name(cidx), static_cast<double>(a.calls) / steps, s * 1e3,
                  pct(s, per_step).c_str(), "", "");
  }
  const double exec_other =
      std::max(0.0, t.executor.seconds - t.op[kOpExperts].seconds - t.op[kOpSwiglu].seconds) / steps;
  const double rest = std::max(0.0, per_step - t.backend_seconds() / steps - exec_other);
  std::printf("   %-44s %9.1f %9.3f %7s\n", "expert executor: gather, combine (no matmul)",
              static_cast<double>(t.executor.calls) / steps, exec_other * 1e3, pct(exec_other, per_step).c_str());
  std::printf("   %-44s %9s %9.3f %7s   attention over the K/V cache, RoPE, routing, embedding, residuals\n", "rest",
              "", rest * 1e3, pct(rest, per_step).c_str());
  std::printf("   %-44s %9s %9.3f %7s %11.2f %9.2f   all matmuls: %.3f ms (%s), %.2f GB/s\n", "step", "", per_step * 1e3,
              "100%", mb(t.matmul_bytes() / steps), t.matmul_bytes() / r.decode_seconds / kGB,
              t.matmul_seconds() / steps * 1e3, pct(t.matmul_seconds(), r.decode_seconds).c_str(),
              t.matmul_seconds() > 0 ? t.matmul_bytes() / t.matmul_seconds() / kGB : 0);
  const double mm_bytes = t.matmul_bytes() / steps;
  if (std::abs(mm_bytes - r.bytes.matmul()) > 0.001 * r.bytes.matmul())
    std::printf("#  WARNING: the matmuls read %.3f MB/step, the count above says %.3f MB\n", mb(mm_bytes),
                mb(r.bytes.matmul()));
  const OpTimes& p = r.prefill_ops;
  std::printf("#  prefill (last timed run): %.1f ms, of which matmul %.1f ms (%s): attention %.1f, router %.1f, "
              "routed experts %.1f, LM head %.1f\n",
              r.prefill_last_s * 1e3, p.matmul_seconds() * 1e3, pct(p.matmul_seconds(), r.prefill_last_s).c_str(), p.op[kOpAttention].seconds * 1e3,
              p.op[kOpRouter].seconds * 1e3, p.op[kOpExperts].seconds * 1e3, p.op[kOpLmHead].seconds * 1e3);
  std::fflush(stdout);
}

json ops_json(const OpTimes& t, double steps) {
  json j = json::object();
  for (int c = 0; c < kNumOps; ++c) {
    const OpAcc& a = t.op[c];
    j[op_key(c)] = {{"calls", static_cast<double>(a.calls) / steps},
                    {"seconds", a.seconds / steps},
                    {"weight_bytes", a.bytes / steps},
                    {"GBps", a.seconds > 0 && a.bytes > 0 ? a.bytes / a.seconds / kGB : 0}};
  }
  j["expert_executor_total"] = {{"calls", static_cast<double>(t.executor.calls) / steps},
                                {"seconds", t.executor.seconds / steps}};
  j["matmul_total"] = {{"seconds", t.matmul_seconds() / steps}, {"weight_bytes", t.matmul_bytes() / steps}};
  return j;
}

json decode_json(const DecodeRun& r, const Limits& lim, const KernelResult& kr, const DecodeOptions& o) {
  const double steps = std::max<double>(1, static_cast<double>(r.steps.n));
  const double per_step = r.decode_seconds / steps;
  const OpTimes& t = r.decode_ops;
  const double exec_other =
      std::max(0.0, t.executor.seconds - t.op[kOpExperts].seconds - t.op[kOpSwiglu].seconds) / steps;
  json split = ops_json(t, steps);
  split["expert_executor_other_seconds"] = exec_other;
  split["rest_seconds"] = std::max(0.0, per_step - t.backend_seconds() / steps - exec_other);
  split["step_seconds"] = per_step;
  const double gbps = r.median_step_GBps();
  return {{"dtype", dtype_name(r.dtype)},
          {"backend", r.backend},
          {"model", {{"params", r.params},
                     {"stored_bytes", r.stored_bytes},
                     {"file_bytes", r.file_bytes},
                     {"write_seconds", r.write_s},
                     {"load_seconds", r.load_s},
                     {"rss_after_load_bytes", r.rss_loaded}}},
          {"prefill", {{"prompt_tokens", r.prompt_tokens},
                       {"time", stats_json(r.prefill)},
                       {"tokens_per_second_best", r.prefill_tps_best()},
                       {"tokens_per_second_avg", r.prefill_tps_avg()},
                       {"split_last_run", ops_json(r.prefill_ops, 1)}}},
          {"decode", {{"steps", r.steps.n},
                      {"step_time", stats_json(r.steps)},
                      {"step_seconds", r.step_s},
                      {"tokens_per_second_at_median_step", r.decode_tps_p50()},
                      {"tokens_per_second_avg", r.decode_tps_avg()},
                      {"generated_ids", r.generated},
                      {"weight_bytes_per_token",
                       {{"attention", r.bytes.attention},
                        {"routers", r.bytes.router},
                        {"routed_experts", r.bytes.experts},
                        {"shared_expert", r.bytes.shared},
                        {"lm_head", r.bytes.lm_head},
                        {"norms_biases", r.bytes.norms},
                        {"embedding_row", r.bytes.embed_row},
                        {"total", r.bytes.total()},
                        {"median_over_steps", r.median_bytes()}}},
                      {"kv_cache_bytes_per_token", r.kv_bytes},
                      {"distinct_layer_expert_pairs", r.distinct_experts_seen},
                      {"weight_GBps_at_median_step", gbps},
                      {"limits_GBps", {{"read_only_sum_n_threads", lim.read_sum},
                                       {"read_only_sum_wide_loads_n_threads", lim.read_wide},
                                       {"stream_copy_n_threads", lim.copy},
                                       {"matmul_kernel_alone_n_threads", kr.memory_row(r.dtype, o.threads, o.isa)
                                                                             ? json(kr.best_memory_GBps(r.dtype, o.threads, o.isa))
                                                                             : json()}}},
                      {"fraction_of_read_bandwidth", lim.read_sum > 0 ? gbps / lim.read_sum : 0},
                      {"fraction_of_wide_read_bandwidth", lim.read_wide > 0 ? gbps / lim.read_wide : 0},
                      {"fraction_of_stream_copy", lim.copy > 0 ? gbps / lim.copy : 0},
                      {"target_fraction_of_read_bandwidth", kTarget},
                      {"kernel_alone_fraction_of_paired_read_sum",
                       kr.memory_row(r.dtype, o.threads, o.isa) ? json(kr.memory_ratio_sum(r.dtype, o.threads, o.isa)) : json()},
                      {"paired_read_probes", r.paired.to_json()},
                      {"target_met", r.paired.ratio_sum() >= kTarget},
                      {"target_basis", "median over the steps of step GB/s / read-only sum GB/s measured right after it"},
                      {"time_split_per_step", split}}}};
}

// ---------------------------------------------------------------------------------------
// Command line and main

struct Options {
  std::string arch = "olmoe-1b-7b";
  int layers = 2;
  std::vector<DType> dtypes{DType::kBF16, DType::kInt8, DType::kInt4};
  std::string dtypes_s = "bf16,int8,int4";
  std::string isa_s = "auto";
  DecodeOptions d;
  std::string work_dir;
  int iters = 5;
  uint64_t mem_mib = 1024;
  uint64_t kernel_mib = 256;
  std::string json_path;
};

// Returns false if --help was printed.
bool parse_options(int argc, char** argv, Options* o) {
  std::string arch_names;
  for (const auto& n : synth_arch_names()) arch_names += (arch_names.empty() ? "" : ", ") + n;
  const std::string arch_help = "built-in model: " + arch_names;
  int threads = 0;
  po::options_description d("options");
  d.add_options()("help,h", "show this help")(
      "work-dir", po::value(&o->work_dir)->required(),
      "directory for the bench's files (it makes and removes its own subdirectory there)")(
      "arch", po::value(&o->arch)->default_value(o->arch), arch_help.c_str())(
      "layers", po::value(&o->layers)->default_value(o->layers), "keep the first N layers of the model")(
      "dtypes", po::value(&o->dtypes_s)->default_value(o->dtypes_s),
      "comma-separated weight dtypes to run: f32|bf16|f16|int8|int4")(
      "prompt-tokens", po::value(&o->d.prompt_tokens)->default_value(o->d.prompt_tokens), "tokens in the prefill")(
      "tokens", po::value(&o->d.tokens)->default_value(o->d.tokens), "timed decode steps (one token each)")(
      "threads", po::value(&threads)->default_value(0), "CPU backend threads (0: all cores)")(
      "isa", po::value(&o->isa_s)->default_value(o->isa_s), "CPU kernels for [3]: auto|scalar|avx2|avx512")(
      "iters", po::value(&o->iters)->default_value(o->iters), "timed iterations of the memory and kernel tests")(
      "prefill-iters", po::value(&o->d.prefill_iters)->default_value(o->d.prefill_iters), "timed prefills")(
      "warmup", po::value(&o->d.warmup)->default_value(o->d.warmup),
      "untimed iterations before each test (decode: prefill + 4 steps)")(
      "mem-mib", po::value(&o->mem_mib)->default_value(o->mem_mib), "size of each memory-bandwidth buffer (MiB)")(
      "kernel-mib", po::value(&o->kernel_mib)->default_value(o->kernel_mib),
      "size of the matrix of the kernel test from memory (MiB; 0: skip [2])")(
      "seed", po::value(&o->d.seed)->default_value(o->d.seed), "seed of the synthetic weights and the prompt")(
      "json", po::value(&o->json_path), "also write the results to this JSON file")(
      "keep", po::bool_switch(&o->d.keep), "keep the written models in the bench's subdirectory");
  if (!parse_bench_options(argc, argv, d, kName, "--work-dir DIR [options]",
                           "Measures prefill and decode speed of the CPU backend on a synth model per weight dtype, counts the\n"
                           "weight bytes each decode step reads, and prints the bandwidth achieved next to the machine's."))
    return false;
  o->dtypes = parse_dtype_list(o->dtypes_s);
  if (!synth_arch_config_json(o->arch)) throw UsageError("--arch must be one of: " + arch_names + " (got '" + o->arch + "')");
  if (o->layers < 1) throw UsageError("--layers must be >= 1");
  if (o->d.prompt_tokens < 1) throw UsageError("--prompt-tokens must be >= 1");
  if (o->d.tokens < 1) throw UsageError("--tokens must be >= 1");
  if (threads < 0) throw UsageError("--threads must be >= 0");
  o->d.threads = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (o->isa_s == "auto") o->d.isa = detect_cpu_isa();
  else if (o->isa_s == "scalar") o->d.isa = CpuIsa::kScalar;
  else if (o->isa_s == "avx2") o->d.isa = CpuIsa::kAvx2;
  else if (o->isa_s == "avx512") o->d.isa = CpuIsa::kAvx512;
  else throw UsageError("--isa must be auto, scalar, avx2 or avx512 (got '" + o->isa_s + "')");
  if (o->d.isa > detect_cpu_isa())
    throw UsageError(std::string("--isa ") + o->isa_s + ": this CPU has at most " + cpu_isa_name(detect_cpu_isa()));
  if (o->iters < 1) throw UsageError("--iters must be >= 1");
  if (o->d.prefill_iters < 1) throw UsageError("--prefill-iters must be >= 1");
  if (o->d.warmup < 0) throw UsageError("--warmup must be >= 0");
  if (o->mem_mib < 64) throw UsageError("--mem-mib must be >= 64");
  return true;
}

int run(const Options& o, const std::string& command_line) {
  const auto t_start = Clock::now();
  const CpuSnapshot cpu_start = cpu_snapshot();
  json cfg_j = json::parse(*synth_arch_config_json(o.arch));
  const int all_layers = cfg_j.at("num_hidden_layers").get<int>();
  ODMOE_CHECK(o.layers <= all_layers, kCli, "bad-option",
              "--layers " << o.layers << " is more than " << o.arch << "'s " << all_layers, "");
  cfg_j["num_hidden_layers"] = o.layers;
  const ModelSource src = synth_source(cfg_j.dump(2), 0, o.d.seed);
  const ModelConfig& cfg = src.config;
  ODMOE_CHECK(o.d.prompt_tokens + o.d.tokens <= cfg.max_position_embeddings, kCli, "bad-option",
              "--prompt-tokens + --tokens is more than the model's " << cfg.max_position_embeddings << " positions", "");

  const Machine m = probe_machine(o.work_dir);
  const uint64_t mem_bytes = o.mem_mib * kMiB;
  uint64_t largest = 0;
  for (const DType dt : o.dtypes) {
    uint64_t b = 0;
    for (const auto& s : layout::dense_tensor_specs(cfg)) b += layout::stored_bytes(s, dt);
    for (int l = 0; l < cfg.n_layer; ++l)
      for (int e = 0; e < cfg.n_expert; ++e) b += expert_bytes(cfg, dt, l, e);
    largest = std::max(largest, b);
  }
  ODMOE_CHECK(m.ram_bytes == 0 || std::max(2 * mem_bytes, largest) < m.ram_bytes * 3 / 4, kCli, "bad-option",
              "the model (" << human_bytes(static_cast<double>(largest)) << " in its largest dtype) or the memory test ("
                            << human_bytes(2.0 * static_cast<double>(mem_bytes)) << ") needs more than this machine's memory allows",
              "lower --layers or --mem-mib");
  ScratchDir scratch(kName, o.work_dir, o.d.keep);
  std::error_code ec;
  const auto space = fs::space(scratch.path(), ec);
  ODMOE_CHECK(ec || space.available >= largest + 64 * kMiB, kIo, "disk-full",
              "the bench needs " << human_bytes(static_cast<double>(largest + 64 * kMiB)) << " under " << o.work_dir
                                 << ", only " << human_bytes(static_cast<double>(space.available)) << " are free",
              "free some space, lower --layers, or pick another --work-dir");

  std::printf("# %s %s: %s, %d of %d layers, dtypes %s; prompt %d tokens, %d decode steps; %d threads, isa %s\n", kName,
              ODMOE_VERSION, o.arch.c_str(), o.layers, all_layers, o.dtypes_s.c_str(), o.d.prompt_tokens, o.d.tokens,
              o.d.threads, cpu_isa_name(o.d.isa));
  std::printf("# command: %s\n", command_line.c_str());
  std::printf("# machine: %s\n", describe_machine(m).c_str());
  std::printf("# work dir: %s on %s\n", scratch.path().c_str(), m.work_fs.c_str());
  std::printf("# model: %s\n", cfg.to_string().c_str());
  std::fflush(stdout);

  const MemoryResult mem = bench_memory(mem_bytes, o.d.threads, o.d.warmup, o.iters);
  print_memory(mem, m);
  const WideReadResult wide = bench_read_wide(mem_bytes, o.d.threads, o.d.warmup, o.iters);
  print_read_wide(wide);
  const Limits lim{mem.threads, mem.read_n_GBps(), wide.read_n_GBps(), mem.copy_n_GBps(), wide.isa};
  KernelResult kr;
  if (o.kernel_mib > 0) {
    kr = bench_kernel(o.dtypes, static_cast<size_t>(cfg.n_embd), o.kernel_mib * kMiB, o.d.threads, o.d.warmup,
                      o.iters, o.d.seed);
    print_kernel(kr, mem, wide);
  }

  // The buffer of the read probes between decode steps: as large as the most one step reads.
  uint64_t step_max = 0;
  for (const DType dt : o.dtypes) {
    const TokenBytes fixed = static_token_bytes(cfg, dt);
    step_max = std::max<uint64_t>(step_max, static_cast<uint64_t>(fixed.total()) +
                                                static_cast<uint64_t>(cfg.n_layer) * cfg.n_expert_used *
                                                    expert_bytes(cfg, dt, 0, 0));
  }
  bench::Buffer probe(std::max<uint64_t>(step_max, 128 * kMiB));
  std::memset(probe.data(), 0x5a, probe.size());
  std::vector<DecodeRun> runs;
  int index = 0;
  for (const DType dt : o.dtypes) {
    const std::string dir = scratch.sub(std::string("model-") + dtype_name(dt));
    runs.push_back(bench_decode(src, dt, dir, o.d, probe));
    print_decode(runs.back(), cfg, lim, kr, o.d, ++index);
    if (!o.d.keep) fs::remove_all(dir, ec);
  }

  std::printf("#\n# summary: %s, %d layers, prompt %d, %d decode steps, %d threads, isa %s; [1] at the start (%d threads): "
              "read-only sum %.2f GB/s, %s read-only sum %.2f GB/s, STREAM copy %.2f GB/s\n",
              o.arch.c_str(), o.layers, o.d.prompt_tokens, o.d.tokens, o.d.threads, cpu_isa_name(o.d.isa), lim.threads,
              lim.read_sum, lim.wide_isa.c_str(), lim.read_wide, lim.copy);
  std::printf("#  %-5s %8s %8s %8s %8s %7s %9s %7s %7s %9s %9s %9s %7s\n", "dtype", "prefill", "decode", "ms/tok",
              "MB/tok", "GB/s", "read GB/s", "% read", ("% " + lim.wide_isa).c_str(), "% [1]read", "% [1]copy",
              "% kernel", "target");
  for (const auto& r : runs) {
    const double g = r.median_step_GBps();
    std::printf("   %-5s %8.1f %8.2f %8.2f %8.1f %7.2f %9.2f %7s %7s %9s %9s %9s %7s\n", dtype_name(r.dtype),
                r.prefill_tps_best(), r.decode_tps_p50(), r.steps.p50 * 1e3, mb(r.median_bytes()), g,
                r.paired.sum_p50(), pct(r.paired.ratio_sum(), 1).c_str(), pct(r.paired.ratio_wide(), 1).c_str(),
                pct(g, lim.read_sum).c_str(), pct(g, lim.copy).c_str(),
                kr.memory_row(r.dtype, o.d.threads, o.d.isa) ? pct(kr.memory_ratio_sum(r.dtype, o.d.threads, o.d.isa), 1).c_str() : "-",
                r.paired.ratio_sum() >= kTarget ? "met" : "no");
  }
  std::printf("#  prefill: tok/s, best of %d prefills of %d tokens; decode: tok/s at the median of %d steps; GB/s: weight "
              "bytes / median step;\n#  read GB/s: read-only sum (%d threads) measured right after each step, median; "
              "%% read, %% %s: median of the per-step ratios to it\n#  (target >= %.0f%% of the read-only sum); "
              "%% [1]read, %% [1]copy: of [1]'s figures from the start of the run; %% kernel: [2]'s matmul alone\n"
              "#  from memory, as a fraction of its own paired read-only sum\n",
              o.d.prefill_iters, o.d.prompt_tokens, o.d.tokens, o.d.threads, lim.wide_isa.c_str(), 100 * kTarget);
  json out = finish_run(kName, command_line, t_start, &cpu_start, m);
  if (!o.json_path.empty()) {
    out["units"] = "GBps = 1e9 bytes/s, MB = 1e6 bytes, times in seconds";
    json dts = json::array();
    for (const DType dt : o.dtypes) dts.push_back(dtype_name(dt));
    out["options"] = {{"arch", o.arch},
                      {"layers", o.layers},
                      {"dtypes", dts},
                      {"prompt_tokens", o.d.prompt_tokens},
                      {"tokens", o.d.tokens},
                      {"threads", o.d.threads},
                      {"isa", cpu_isa_name(o.d.isa)},
                      {"iters", o.iters},
                      {"prefill_iters", o.d.prefill_iters},
                      {"warmup", o.d.warmup},
                      {"mem_mib", o.mem_mib},
                      {"kernel_mib", o.kernel_mib},
                      {"seed", o.d.seed}};
    out["model"] = {{"config", cfg.to_string()},
                    {"architecture", arch_hf_name(cfg.arch)},
                    {"n_layer", cfg.n_layer},
                    {"n_expert", cfg.n_expert},
                    {"n_expert_used", cfg.n_expert_used},
                    {"n_embd", cfg.n_embd},
                    {"vocab_size", cfg.vocab_size}};
    out["memory"] = memory_json(mem);
    out["memory_wide_loads"] = read_wide_json(wide);
    out["kernel"] = kernel_json(kr);
    json jr = json::array();
    for (const auto& r : runs) jr.push_back(decode_json(r, lim, kr, o.d));
    out["runs"] = jr;
    out["target"] = "decode weight bandwidth >= 85% of the paired read-only sum bandwidth (N threads) for every dtype";
    write_json(o.json_path, out);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return bench_main<Options>(kName, argc, argv, parse_options, run); }
