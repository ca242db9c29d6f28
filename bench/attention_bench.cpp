// odmoe-bench-attention: decode attention (one query token over a KV cache of `ctx` positions,
// one layer) before and after the vectorised kernel, next to the read bandwidth of the same
// bytes. In the style of nccl-tests: warm-up, timed iterations, min/avg/max, a table on stdout
// and --json FILE.
//
//   odmoe-bench-attention [--contexts 128,512,2048] [--tokens 1] [--threads 0] [--iters 15]
//                         [--warmup 2] [--seed 1234] [--json FILE]
//
// For each shape (OLMoE: 16 query heads over 16 KV heads; Qwen3-MoE: 32 over 4; head_dim 128)
// and context, one interleaved run of:
//   before  the decoder's scalar attention loop as it was (a score vector per (token, head) by
//           `omp simd` dot products, std::exp, a weighted V sum; KV layout [pos][n_head_kv * hd],
//           OpenMP over (token, head))
//   after   cpu::attention_f32 (head-major KV [n_head_kv][ctx][hd], the ISA this CPU has)
// each sample followed by a read-only sum over the same K/V bytes with the same threads (the
// limit: attention must read every K and V row once). GB/s = K/V bytes / time.
// Exit status: 0 success, 1 error, 2 bad command line.
#include <omp.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench_common.h"
#include "cpu_kernels.h"
#include "odmoe/backend/cpu_backend.h"

namespace po = boost::program_options;
using namespace odmoe;
using namespace odmoe::bench;

namespace {

constexpr const char* kName = "odmoe-bench-attention";

struct Options {
  std::string contexts_s = "128,512,2048";
  std::vector<int> contexts;
  size_t tokens = 1;
  int threads = 1, iters = 15, warmup = 2;
  uint64_t seed = 1234;
  std::string json_path;
};

struct ModelShape {
  const char* name;
  int n_head, n_head_kv, hd;
};
constexpr ModelShape kShapes[] = {{"olmoe", 16, 16, 128}, {"qwen3-moe", 32, 4, 128}};

// The decoder's attention loop before the kernel (kept here as the baseline): kc, vc
// [pos][n_head_kv * hd] f32; att [n][n_head * hd].
void attention_before(const float* q, size_t n, int pos0, int nh_i, int nkv_i, int hd_i, const float* kc,
                      const float* vc, int window, float scale, float* att, int threads) {
  const size_t hd = static_cast<size_t>(hd_i), nh = static_cast<size_t>(nh_i), nkv = static_cast<size_t>(nkv_i);
  const size_t q_dim = nh * hd, kv_dim = nkv * hd, group = nh / nkv;
  std::fill(att, att + n * q_dim, 0.0f);
  const long n_jobs = static_cast<long>(n * nh);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (n_jobs * (pos0 + static_cast<long>(n)) * static_cast<long>(hd) >= (1L << 15))
  for (long job = 0; job < n_jobs; ++job) {
    const size_t t = static_cast<size_t>(job) / nh, hh = static_cast<size_t>(job) % nh;
    const int pos = pos0 + static_cast<int>(t);
    const int start = window > 0 ? std::max(0, pos - window + 1) : 0;
    const float* qr = q + t * q_dim + hh * hd;
    const size_t kvh = hh / group;
    std::vector<float> sc(static_cast<size_t>(pos - start + 1));
    float mx = -INFINITY;
    for (int j = start; j <= pos; ++j) {
      const float* kr = kc + static_cast<size_t>(j) * kv_dim + kvh * hd;
      float s = 0;
#pragma omp simd reduction(+ : s)
      for (size_t i = 0; i < hd; ++i) s += qr[i] * kr[i];
      s *= scale;
      sc[static_cast<size_t>(j - start)] = s;
      mx = std::max(mx, s);
    }
    float sum = 0;
    for (float& s : sc) sum += (s = std::exp(s - mx));
    float* o = att + t * q_dim + hh * hd;
    for (int j = start; j <= pos; ++j) {
      const float w = sc[static_cast<size_t>(j - start)] / sum;
      const float* vr = vc + static_cast<size_t>(j) * kv_dim + kvh * hd;
#pragma omp simd
      for (size_t i = 0; i < hd; ++i) o[i] += w * vr[i];
    }
  }
}

struct Row {
  std::string model;
  int n_head = 0, n_head_kv = 0, hd = 0, ctx = 0, reps = 1;
  double kv_bytes = 0;          // K and V bytes one call reads
  Stats before, after;          // seconds per call
  Paired before_p, after_p;     // GB/s and the paired read probes
  double max_abs_diff = 0;      // |after - before| over the outputs
};

// K and V of one layer in both layouts, and a query.
struct Cache {
  Buffer head_major;  // [2][n_head_kv][ctx][hd]: K then V
  Buffer pos_major;   // [2][ctx][n_head_kv * hd]: K then V
  std::vector<float> q;
  Cache(const ModelShape& s, int ctx, size_t tokens, uint64_t seed)
      : head_major(2 * static_cast<size_t>(s.n_head_kv) * static_cast<size_t>(ctx) * static_cast<size_t>(s.hd) * 4),
        pos_major(head_major.size()) {
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const size_t hd = static_cast<size_t>(s.hd), nkv = static_cast<size_t>(s.n_head_kv), n = static_cast<size_t>(ctx);
    auto* hm = reinterpret_cast<float*>(head_major.data());
    auto* pm = reinterpret_cast<float*>(pos_major.data());
    for (size_t kv = 0; kv < 2; ++kv)
      for (size_t h = 0; h < nkv; ++h)
        for (size_t p = 0; p < n; ++p)
          for (size_t c = 0; c < hd; ++c) {
            const float x = u(rng);
            hm[((kv * nkv + h) * n + p) * hd + c] = x;
            pm[(kv * n + p) * nkv * hd + h * hd + c] = x;
          }
    q.resize(tokens * static_cast<size_t>(s.n_head) * hd);
    for (float& x : q) x = u(rng);
  }
};

Row run_case(const Options& o, const ModelShape& s, int ctx) {
  Row r;
  r.model = s.name;
  r.n_head = s.n_head;
  r.n_head_kv = s.n_head_kv;
  r.hd = s.hd;
  r.ctx = ctx;
  const Cache c(s, ctx, o.tokens, o.seed + static_cast<uint64_t>(ctx));
  const size_t half = c.head_major.size() / 8;  // floats of K (or V)
  r.kv_bytes = static_cast<double>(c.head_major.size());
  // Enough calls per sample for ~8 ms of reading at 20 GB/s.
  r.reps = std::max(1, static_cast<int>(160e6 / r.kv_bytes));
  const int pos0 = ctx - static_cast<int>(o.tokens);
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.hd));
  std::vector<float> out_before(c.q.size()), out_after(c.q.size());
  const auto* hm = reinterpret_cast<const float*>(c.head_major.data());
  const auto* pm = reinterpret_cast<const float*>(c.pos_major.data());
  auto before = [&] {
    const auto t0 = Clock::now();
    for (int i = 0; i < r.reps; ++i)
      attention_before(c.q.data(), o.tokens, pos0, s.n_head, s.n_head_kv, s.hd, pm, pm + half, 0, scale,
                       out_before.data(), o.threads);
    return since(t0) / r.reps;
  };
  auto after = [&] {
    const auto t0 = Clock::now();
    for (int i = 0; i < r.reps; ++i)
      cpu::attention_f32(c.q.data(), o.tokens, pos0, s.n_head, s.n_head_kv, s.hd, hm, hm + half,
                         static_cast<size_t>(ctx), 0, scale, out_after.data(), o.threads);
    return since(t0) / r.reps;
  };
  auto probe = [&](const Buffer& b) {
    const double ts = read_probe(b.data(), b.size(), o.threads, false);
    const double tw = read_probe(b.data(), b.size(), o.threads, true);
    return std::pair{r.kv_bytes / ts / kGB, r.kv_bytes / tw / kGB};
  };
  for (int i = 0; i < o.warmup; ++i) {
    before();
    after();
  }
  std::vector<double> tb, ta;
  for (int i = 0; i < o.iters; ++i) {  // interleaved: the machine's drift hits both alike
    tb.push_back(before());
    const auto pb = probe(c.pos_major);
    r.before_p.add(r.kv_bytes / tb.back() / kGB, pb.first, pb.second);
    ta.push_back(after());
    const auto pa = probe(c.head_major);
    r.after_p.add(r.kv_bytes / ta.back() / kGB, pa.first, pa.second);
  }
  r.before = summarize(tb);
  r.after = summarize(ta);
  for (size_t i = 0; i < out_after.size(); ++i)
    r.max_abs_diff = std::max(r.max_abs_diff, static_cast<double>(std::fabs(out_after[i] - out_before[i])));
  return r;
}

bool parse_options(int argc, char** argv, Options* o) {
  po::options_description d("options");
  int threads = 0;
  d.add_options()("help,h", "show this help")(
      "contexts", po::value(&o->contexts_s)->default_value(o->contexts_s), "comma-separated KV cache lengths")(
      "tokens", po::value(&o->tokens)->default_value(o->tokens), "query tokens per call (1: decode; more: prefill)")(
      "threads", po::value(&threads)->default_value(0), "OpenMP threads (0: all cores)")(
      "iters", po::value(&o->iters)->default_value(o->iters), "timed samples of each kernel (interleaved)")(
      "warmup", po::value(&o->warmup)->default_value(o->warmup), "untimed samples before them")(
      "seed", po::value(&o->seed)->default_value(o->seed), "seed of q, K and V")(
      "json", po::value(&o->json_path), "also write the results to this JSON file");
  if (!parse_bench_options(argc, argv, d, kName, "[options]",
                           "Decode attention over one layer's KV cache: the former scalar loop against the "
                           "vectorised kernel, next to a read-only pass over the same bytes."))
    return false;
  std::stringstream ss(o->contexts_s);
  for (std::string item; std::getline(ss, item, ',');) {
    int ctx = 0;
    try {
      ctx = std::stoi(trim(item));
    } catch (const std::exception&) {
      throw UsageError("--contexts: '" + item + "' is no number");
    }
    o->contexts.push_back(ctx);
  }
  if (o->tokens < 1) throw UsageError("--tokens must be >= 1");
  for (int ctx : o->contexts)
    if (ctx < static_cast<int>(o->tokens)) throw UsageError("--contexts: each must be >= --tokens");
  if (o->contexts.empty()) throw UsageError("--contexts is empty");
  if (threads < 0) throw UsageError("--threads must be >= 0");
  o->threads = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (o->iters < 1) throw UsageError("--iters must be >= 1");
  if (o->warmup < 0) throw UsageError("--warmup must be >= 0");
  return true;
}

json row_json(const Row& r) {
  return {{"model", r.model},
          {"n_head", r.n_head},
          {"n_head_kv", r.n_head_kv},
          {"head_dim", r.hd},
          {"ctx", r.ctx},
          {"calls_per_sample", r.reps},
          {"kv_bytes", r.kv_bytes},
          {"before", bandwidth_json(r.before, r.kv_bytes)},
          {"after", bandwidth_json(r.after, r.kv_bytes)},
          {"before_paired_read", r.before_p.to_json()},
          {"after_paired_read", r.after_p.to_json()},
          {"speedup_p50", r.before.p50 / r.after.p50},
          {"max_abs_diff", r.max_abs_diff}};
}

int run(const Options& o, const std::string& command_line) {
  const auto t_start = Clock::now();
  const CpuSnapshot cpu_start = cpu_snapshot();
  const Machine m = probe_machine(".");
  std::printf("# %s %s: attention of %zu token(s) over one layer's KV cache, %d threads, %d interleaved samples "
              "after %d warm-up; kernel isa %s\n",
              kName, ODMOE_VERSION, o.tokens, o.threads, o.iters, o.warmup, cpu_isa_name(detect_cpu_isa()));
  std::printf("# command: %s\n# machine: %s\n", command_line.c_str(), describe_machine(m).c_str());
  std::fflush(stdout);
  std::vector<Row> rows;
  for (const ModelShape& s : kShapes)
    for (int ctx : o.contexts) rows.push_back(run_case(o, s, ctx));
  std::printf("#\n# GB/s = K/V bytes read per call / time (median of the samples); read GB/s: the paired read-only\n"
              "#   sum over the same bytes (median); %% read: median over samples of kernel GB/s / paired read GB/s\n");
  std::printf("#  %-10s %7s %6s %10s %10s %10s %9s %10s %10s %9s %8s %9s\n", "model", "heads", "ctx", "K/V",
              "before us", "before GB/s", "% read", "after us", "after GB/s", "% read", "speedup", "max diff");
  for (const Row& r : rows) {
    const std::string heads = std::to_string(r.n_head) + "/" + std::to_string(r.n_head_kv);
    std::printf("   %-10s %7s %6d %10s %10.1f %10.2f %9s %10.1f %10.2f %9s %7.2fx %9.1e\n", r.model.c_str(),
                heads.c_str(), r.ctx, human_bytes(r.kv_bytes).c_str(), r.before.p50 * 1e6, r.kv_bytes / r.before.p50 / kGB,
                pct(r.before_p.ratio_sum(), 1).c_str(), r.after.p50 * 1e6, r.kv_bytes / r.after.p50 / kGB,
                pct(r.after_p.ratio_sum(), 1).c_str(), r.before.p50 / r.after.p50, r.max_abs_diff);
  }
  json out = finish_run(kName, command_line, t_start, &cpu_start, m);
  if (!o.json_path.empty()) {
    out["options"] = {{"contexts", o.contexts}, {"tokens", o.tokens}, {"threads", o.threads},
                      {"iters", o.iters},       {"warmup", o.warmup}, {"seed", o.seed},
                      {"isa", cpu_isa_name(detect_cpu_isa())}};
    json jr = json::array();
    for (const Row& r : rows) jr.push_back(row_json(r));
    out["rows"] = jr;
    write_json(o.json_path, out);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return bench_main<Options>(kName, argc, argv, parse_options, run); }
