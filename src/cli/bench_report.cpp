// odmoe bench's report (bench_report.h): the runs' tokens compared, and the table.
#include "bench_report.h"

#include <cstdio>

namespace odmoe::cli {

namespace {

std::string mib(double b) {
  char s[32];
  std::snprintf(s, sizeof s, "%.1f", b / (1 << 20));
  return s;
}

}  // namespace

void compare_tokens(nlohmann::json* results) {
  for (auto& r : *results) {
    const bool exact = r["mode"] != "substitute";
    const nlohmann::json* ref = nullptr;
    for (const auto& q : *results)
      if (q["mode"] != "substitute" && q["input_len"] == r["input_len"] && q["output_len"] == r["output_len"]) {
        ref = &q;
        break;
      }
    if (!ref) continue;
    size_t same = 0, total = 0, prefix = 0;
    bool all_prefix = true;
    for (size_t p = 0; p < r["per_prompt"].size(); ++p) {
      const auto& a = r["per_prompt"][p]["tokens"];
      const auto& b = (*ref)["per_prompt"][p]["tokens"];
      bool diverged = false;
      for (size_t i = 0; i < a.size(); ++i) {
        const bool eq = a[i] == b[i];
        same += eq;
        ++total;
        if (!eq) diverged = true;
        if (!diverged) ++prefix;
      }
      all_prefix = all_prefix && !diverged;
    }
    if (r.contains("perplexity") && ref->contains("perplexity"))
      r["perplexity"]["change_vs_exact"] =
          r["perplexity"]["perplexity"].get<double>() / (*ref)["perplexity"]["perplexity"].get<double>() - 1.0;
    if (exact) r["tokens_match_reference"] = all_prefix;
    else {
      r["token_agreement"] = total ? static_cast<double>(same) / total : 0.0;
      r["tokens_before_divergence"] = static_cast<double>(prefix) / static_cast<double>(r["per_prompt"].size());
    }
  }
}

bool print_bench_table(const nlohmann::json& results, int first_in_len, int first_out_len, double load_gbps) {
  std::printf("%-22s %2s %5s %5s %9s %7s %9s %9s %10s %10s %9s %7s %8s\n", "run", "G", "in", "out", "decode/s", "%res",
              "TTFT ms", "output/s", "mem max", "mem total", "MiB/tok", "stall", "recall");
  bool mismatch = false;
  for (const auto& r : results) {
    double res = 0;
    for (const auto& q : results)
      if (q["mode"] == "resident" && q["groups"] == r["groups"] && q["input_len"] == r["input_len"] &&
          q["output_len"] == r["output_len"])
        res = q["decode_tokens_per_second"].get<double>();
    char pct[16] = "-", stall[16] = "-", rec[24] = "-";
    if (res > 0) std::snprintf(pct, sizeof pct, "%.0f%%", 100.0 * r["decode_tokens_per_second"].get<double>() / res);
    if (r.contains("stall_fraction")) std::snprintf(stall, sizeof stall, "%.1f%%", 100.0 * r["stall_fraction"].get<double>());
    if (r.contains("hit_rate")) std::snprintf(rec, sizeof rec, "hit %.0f%%", 100.0 * r["hit_rate"].get<double>());
    else if (r.contains("recall")) std::snprintf(rec, sizeof rec, "%.1f%%", 100.0 * r["recall"].get<double>());
    std::printf("%-22s %2d %5d %5d %9.1f %7s %9.2f %9.1f %10s %10s %9s %7s %8s", r["name"].get<std::string>().c_str(),
                r["groups"].get<int>(), r["input_len"].get<int>(), r["output_len"].get<int>(),
                r["decode_tokens_per_second"].get<double>(), pct, 1e3 * r["ttft_seconds"].get<double>(),
                r["output_tokens_per_second"].get<double>(), mib(r["device_bytes_max_rank"].get<double>()).c_str(),
                mib(r["device_bytes_total"].get<double>()).c_str(),
                r.contains("bytes_pulled_per_token") ? mib(r["bytes_pulled_per_token"].get<double>()).c_str() : "-",
                stall, rec);
    if (r.contains("token_agreement"))
      std::printf("  agreement %.1f%% (first %.1f tokens identical)", 100.0 * r["token_agreement"].get<double>(),
                  r["tokens_before_divergence"].get<double>());
    if (r.contains("perplexity") && r["input_len"] == first_in_len && r["output_len"] == first_out_len)
      std::printf("  ppl %.3f (%+.2f%%)", r["perplexity"]["perplexity"].get<double>(),
                  100.0 * r["perplexity"].value("change_vs_exact", 0.0));
    if (r.contains("tokens_match_reference") && !r["tokens_match_reference"].get<bool>()) {
      std::printf("  TOKENS DIFFER FROM THE FIRST EXACT RUN");
      mismatch = true;
    }
    std::printf("\n");
  }
  const bool measured_mem = !results.empty() && results[0]["device_bytes_source"] == "measured";
  std::printf("memory (MiB): per rank, %s. %%res: of resident at the same G and case, the limit of loading on demand\n",
              measured_mem ? "peak device memory"
                           : "the working set a GPU rank keeps on its device (dense weights + KV on main, slots on "
                             "expert ranks)");
  if (load_gbps > 0) std::printf("pulls capped at %g Gbit/s per expert rank (an emulated link)\n", load_gbps);
  return !mismatch;
}

}  // namespace odmoe::cli
