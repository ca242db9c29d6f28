// The options every `odmoe` command shares: the model, and how a distributed run is laid
// out (mode, predictor, groups, store, timeouts). Part of the odmoe executable only.
#pragma once

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "odmoe/cli/cli.h"
#include "odmoe/runtime/engine.h"

namespace odmoe::cli {

namespace po = boost::program_options;

// Options every command shares: the model, and how a distributed run is laid out.
struct EngineArgs {
  EngineOptions eo;
  std::string mode = "on-demand", placement = "replicated", progress = "auto", store_ranks = "node", trace;
  std::string departure = "early", miss_policy = "wait", cache_policy = "auto", on_failure = "abort", shadow_fallback = "on";

  // `per_run`: also the options `odmoe bench` varies from run to run (--mode, --predictor,
  // --groups, --substitute); bench defines its own list-valued ones instead.
  void add(po::options_description& o, bool per_run = true) {
    DistOptions& d = eo.dist;
    o.add_options()("model", po::value(&eo.model_dir)->required(), "converted model directory (odmoe-weights convert)")(
        "threads", po::value(&eo.threads)->default_value(0), "CPU threads per rank (0: the node's cores shared by its ranks)")(
        "n-ctx", po::value(&eo.n_ctx)->default_value(0), "context length (0: the model's maximum)");
    po::options_description dd("distributed options (mpirun -np N, N >= 2: rank 0 main, ranks 1..N-1 expert ranks)");
    if (per_run)
      dd.add_options()("mode", po::value(&mode)->default_value(mode),
                       "resident: experts stay in the expert ranks' memory; on-demand: loaded just before use, dropped "
                       "after; cache: each expert rank keeps --cache-slots experts, prefetched by --predictor")(
          "substitute", po::value(&d.substitute)->default_value(-1.0),
          "cache: importance-driven substitution with this alpha (0..1; arXiv 2508.18983): a selected expert that is "
          "not cached and scores below (1+alpha)*S_k+1 is replaced by a cached one scoring at least (1-alpha)*S_k+1. "
          "Changes the output; < 0: off")(
          "predictor", po::value(&d.predictor)->default_value(d.predictor),
          "on-demand: none (load after routing) | shadow (a quantized copy of the model running ahead) | oracle "
          "(replay --routing-trace) | previous (the last token's experts) | random | gate-ahead (later layers' "
          "routers on the current hidden state). In one process a predictor is only accounted (recall, lead)")(
          "groups", po::value(&d.groups)->default_value(0),
          "G groups of expert ranks; layer l served by group l mod G (0: auto)");
    dd.add_options()(
        "cache-slots", po::value(&d.cache_slots)->default_value(0),
        "cache: experts each expert rank keeps (0: a quarter of the experts its group serves)")(
        "cache-policy", po::value(&cache_policy)->default_value(cache_policy),
        "cache: evict lru | lfu | score (lowest recent average gate score); auto: score with --substitute, else lru")(
        "gate-ahead-depth", po::value(&d.gate_ahead_depth)->default_value(0),
        "gate-ahead: layers to look ahead (0: groups - 1, at least 1: what hides loads)")(
        "shadow-dtype", po::value(&d.shadow.dtype)->default_value(d.shadow.dtype),
        "shadow: auto (shadow.h5, else int8 in memory) | file (shadow.h5) | f32|bf16|f16|int8|int4 (the model "
        "re-encoded in memory unless shadow.h5 has that dtype)")(
        "align-token-period", po::value(&d.shadow.align_token_period)->default_value(1),
        "shadow: continue from the full model's token every N decode steps (0: never)")(
        "align-kv-period", po::value(&d.shadow.align_kv_period)->default_value(1),
        "shadow: overwrite its KV cache with the full model's every N decode steps (0: never)")(
        "shadow-departure", po::value(&departure)->default_value(departure),
        "shadow: early (start the next token from its own guess, redo it if the full model disagrees) | late "
        "(wait for the full model's token, as the paper does)")(
        "shadow-threads", po::value(&d.shadow.threads)->default_value(1), "shadow: CPU threads")(
        "shadow-fallback", po::value(&shadow_fallback)->default_value(shadow_fallback),
        "shadow: on (layers a lagging shadow has not predicted are filled from gate-ahead and the previous token) | "
        "off (ablation: the shadow alone)")(
        "shadow-priority", po::value(&d.shadow.priority)->default_value(d.shadow.priority),
        "shadow: lower its thread's niceness by N where the OS allows (0: leave it)")(
        "shadow-lag-ms", po::value(&d.shadow.lag_ms)->default_value(0.0),
        "TESTING: the shadow sleeps this long before each layer of a lagged decode step")(
        "shadow-lag-every", po::value(&d.shadow.lag_every)->default_value(1),
        "TESTING: lag one decode step in N (with --shadow-lag-ms)")(
        "predictor-rank", po::value(&d.predictor_rank)->default_value(-1),
        "shadow: run it on this rank (the last one; the paper's shadow node) instead of a thread of main")(
        "miss-policy", po::value(&miss_policy)->default_value(miss_policy),
        "on-demand decode, an expert nobody predicted: wait (load it, then compute) | cpu (its store rank computes "
        "it from its own copy; nothing is loaded)")(
        "predictor-sync", po::bool_switch(&d.predictor_sync),
        "one process: before each decode layer, wait for the prediction the predictor still owes it (its accuracy "
        "apart from its timing)")(
        "predict-extra", po::value(&d.predict_extra)->default_value(0),
        "shadow, gate-ahead: also load the next N most likely experts (spare decode slots are added for them)")(
        "routing-trace", po::value(&d.routing_trace), "oracle: a trace recorded with generate --save-routing")(
        "lookahead", po::value(&d.lookahead)->default_value(1),
        "on-demand decode: layers a group may load ahead (1: the paper's schedule; 2+: more slots, earlier loads)")(
        "placement", po::value(&placement)->default_value(placement),
        "expert store: replicated (every node maps every shard) | sharded (shards spread over nodes)")(
        "replicas", po::value(&d.store.replicas)->default_value(1), "sharded: store ranks holding each shard")(
        "store-ranks", po::value(&store_ranks)->default_value(store_ranks),
        "node: the first expert rank of each node holds the node's part of the store | all: every expert rank does")(
        "timeout", po::value(&d.timeout_s)->default_value(d.timeout_s), "seconds any rank waits for another before failing")(
        "on-worker-failure", po::value(&on_failure)->default_value(on_failure),
        "an expert rank that stops answering within --timeout: abort (name it, bring every rank down) | degrade "
        "(re-plan its layers onto the other expert ranks and finish with the same tokens; needs a launcher that "
        "keeps the job alive, e.g. mpirun --enable-recovery; not for a store rank)")(
        "startup-timeout", po::value(&d.startup_timeout_s)->default_value(d.startup_timeout_s),
        "seconds allowed for start-up (mapping shards, loading the model)")(
        "load-gbps", po::value(&d.load_gbps)->default_value(0.0),
        "EMULATION: cap each expert rank's pulls at this many Gbit/s (an edge device's link); 0: off")(
        "device-mib", po::value(&d.device_mib)->default_value(0.0),
        "EMULATION: the device memory of each expert rank, MiB (an edge GPU's): expert slots that do not fit fail to "
        "allocate, as they would on the device; 0: off")(
        "prefill-batch", po::value(&d.prefill_batch)->default_value(d.prefill_batch), "most tokens per expert message in prefill")(
        "verify-pulls", po::bool_switch(&d.verify_pulls), "check the checksum of every pulled expert")(
        "progress-thread", po::value(&progress)->default_value(progress),
        "expert store progress thread: auto (when the job spans nodes) | on | off")(
        "trace", po::value(&trace), "write a Chrome/Perfetto trace-event file (one track per rank)");
    o.add(dd);
  }
  // The eviction rule --cache-policy gives `d`, with d's --substitute.
  void set_cache_policy(DistOptions& d) const {
    d.cache_lfu = cache_policy == "lfu";
    d.cache_by_score = cache_policy == "score" || (cache_policy == "auto" && d.substitute >= 0);
  }
  // Checks the values and fills the enums; UsageError on a bad one.
  void finalize() {
    DistOptions& d = eo.dist;
    d.mode = parse_mode(mode);
    d.store.placement = parse_store_placement(placement);
    if (progress == "auto") d.store.progress_thread = -1;
    else if (progress == "on") d.store.progress_thread = 1;
    else if (progress == "off") d.store.progress_thread = 0;
    else throw cli::UsageError("--progress-thread must be auto, on or off");
    if (store_ranks != "node" && store_ranks != "all") throw cli::UsageError("--store-ranks must be node or all");
    d.store.every_worker_stores = store_ranks == "all";
    if (!is_predictor_name(d.predictor))
      throw cli::UsageError(std::string("--predictor must be ") + kPredictorNames);
    if (departure != "early" && departure != "late") throw cli::UsageError("--shadow-departure must be early or late");
    d.shadow.early_departure = departure == "early";
    if (miss_policy != "wait" && miss_policy != "cpu") throw cli::UsageError("--miss-policy must be wait or cpu");
    d.miss_on_host = miss_policy == "cpu";
    if (cache_policy != "auto" && cache_policy != "lru" && cache_policy != "lfu" && cache_policy != "score")
      throw cli::UsageError("--cache-policy must be auto, lru, lfu or score");
    set_cache_policy(d);
    if (d.substitute > 1) throw cli::UsageError("--substitute alpha must be at most 1");
    if (d.substitute >= 0 && d.mode != Mode::kCache)
      throw cli::UsageError("--substitute needs --mode cache (it swaps in cached experts)");
    if (d.cache_slots < 0) throw cli::UsageError("--cache-slots must be >= 0");
    if (d.shadow.align_token_period < 0 || d.shadow.align_kv_period < 0)
      throw cli::UsageError("--align-token-period and --align-kv-period must be >= 0 (0: never)");
    if (d.shadow.threads < 1) throw cli::UsageError("--shadow-threads must be at least 1");
    if (shadow_fallback != "on" && shadow_fallback != "off") throw cli::UsageError("--shadow-fallback must be on or off");
    d.shadow.fallback = shadow_fallback == "on";
    if (d.shadow.priority < 0 || d.shadow.priority > 19) throw cli::UsageError("--shadow-priority must be in 0..19");
    if (!(d.shadow.lag_ms >= 0 && d.shadow.lag_ms <= 60000))
      throw cli::UsageError("--shadow-lag-ms must be in 0..60000");
    if (d.shadow.lag_every < 1) throw cli::UsageError("--shadow-lag-every must be at least 1");
    if (d.predictor_rank < -1 || d.predictor_rank == 0)
      throw cli::UsageError("--predictor-rank must name a rank other than main (the last rank)");
    if (d.predict_extra < 0 || d.predict_extra > Schedule::kMaxExtra)
      throw cli::UsageError("--predict-extra must be in 0.." + std::to_string(Schedule::kMaxExtra));
    if (d.gate_ahead_depth < 0) throw cli::UsageError("--gate-ahead-depth must be >= 0");
    if (on_failure != "abort" && on_failure != "degrade")
      throw cli::UsageError("--on-worker-failure must be abort or degrade");
    d.degrade = on_failure == "degrade";
    if (d.degrade && d.mode == Mode::kResident)
      throw cli::UsageError("--on-worker-failure degrade re-plans loads on demand: use --mode on-demand or cache");
    if (!(d.timeout_s > 0 && d.timeout_s <= 1e6) || !(d.startup_timeout_s > 0 && d.startup_timeout_s <= 1e6))
      throw cli::UsageError("--timeout and --startup-timeout must be seconds in (0, 1e6]");
    if (eo.threads < 0 || eo.threads > 4096) throw cli::UsageError("--threads must be in 0..4096 (0: the node's cores)");
    if (eo.n_ctx < 0) throw cli::UsageError("--n-ctx must be >= 0 (0: the model's maximum)");
    if (d.lookahead < 1 || d.lookahead > Schedule::kMaxLookahead)
      throw cli::UsageError("--lookahead must be in 1.." + std::to_string(Schedule::kMaxLookahead));
    if (std::isnan(d.substitute)) throw cli::UsageError("--substitute must be a number (< 0: off)");
    check_shadow_dtype(d.shadow.dtype);
    if (!(d.load_gbps >= 0) || !std::isfinite(d.load_gbps)) throw cli::UsageError("--load-gbps must be a number >= 0");
    if (!(d.device_mib >= 0) || !std::isfinite(d.device_mib)) throw cli::UsageError("--device-mib must be a number >= 0");
    if (d.prefill_batch < 8) throw cli::UsageError("--prefill-batch must be at least 8");
    if (d.store.replicas < 1) throw cli::UsageError("--replicas must be at least 1");
    if (d.groups < 0) throw cli::UsageError("--groups must be >= 0");
    d.trace = !trace.empty();
  }
};

// Prompts from a JSON Lines file: {"prompt": "..."} (or {"text": ...}, or a bare JSON
// string) per line; at most `limit`. Bad lines are errors naming the line.
std::vector<std::string> read_prompts(const std::string& path, size_t limit);
// --prompts, or when it is empty the model's own MODEL/prompts.jsonl; a UsageError naming
// what is missing otherwise.
std::string prompts_or_default(const std::string& prompts_path, const std::string& model_dir);

}  // namespace odmoe::cli
