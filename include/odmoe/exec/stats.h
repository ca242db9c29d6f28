// The statistics of a distributed run, as structs that serialise themselves. Their JSON
// keys are a contract with the files runs have written (`--stats-json`, `odmoe bench
// --json`), the simulator (`odmoe simulate --from-stats`) and the tests: to_json() writes
// exactly these keys, from_json() reads them back (a key missing from an older file reads
// as its default).
//
// A run's statistics (ExecStats::to_json) are
//   {"ranks": [main, expert ranks..., failed ranks...], "failures": [...] (after a failure),
//    "cache": {...} (cache mode), "schedule": {...}, "timing": {...}, "predictor": {...}}
// and the commands add their own figures (tokens, seconds) at the top level.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace odmoe {

// The memory of a rank at one of main's marks (batch generation): {"mark", "rss_bytes",
// "peak_rss_bytes"}.
struct MemoryMark {
  int64_t mark = 0;
  uint64_t rss_bytes = 0, peak_rss_bytes = 0;
  static MemoryMark now(int64_t mark);  // this process's resident set now and its peak
  nlohmann::json to_json() const;
  static MemoryMark from_json(const nlohmann::json& j);
};

// An expert rank's statistics (it sends them to main as its STATS message).
struct WorkerStats {
  int rank = -1;
  std::string host;
  int group = 0;
  int reschedules = 0;
  int slots = 0;
  uint64_t slot_bytes = 0, store_bytes = 0;
  bool progress_thread = false;
  uint64_t pulls = 0, host_computes = 0, pulls_from_own_window = 0, pulls_from_other_nodes = 0, bytes_pulled = 0,
           pulls_verified = 0;
  double load_seconds = 0;
  uint64_t computes = 0;
  double compute_seconds = 0, stall_seconds = 0, message_wait_seconds = 0;
  uint64_t peak_host_bytes = 0;
  std::vector<MemoryMark> memory_marks;
  std::string device;
  nlohmann::json trace_events;  // the rank's trace events (an array) on the wire; null once main has taken them
  // Added by main: the rank's clock offset from main's and the best ping-pong round trip.
  std::optional<double> clock_offset_seconds, clock_rtt_seconds;
  // A rank that died during the run (--on-worker-failure degrade): only rank, host, role
  // and "failed" are written.
  bool failed = false;

  nlohmann::json to_json() const;  // "role": "worker"
  static WorkerStats from_json(const nlohmann::json& j);
};

// Main's rank: what the engine reports of the process (`base`: rank, role, host, device,
// memory...; kept as given, so figures the engine adds pass through) and the executor's
// own counts.
struct MainRankStats {
  nlohmann::json base = nlohmann::json::object();
  double compute_seconds = 0;       // decode: attention, routers, shared experts, sampling
  double message_wait_seconds = 0;  // decode: waiting for the expert ranks' results
  uint64_t loads_sent = 0, computes_sent = 0, misses_computed_on_store_ranks = 0;

  nlohmann::json to_json() const;
  static MainRankStats from_json(const nlohmann::json& j);
};

// A rank lost during the run (--on-worker-failure degrade), and what main did about it.
struct FailureRecord {
  int rank = -1;
  std::string host;
  int step = 0, layer = 0;
  double detected_after_seconds = 0;
  int expert_ranks_after = 0, groups_after = 0;
  std::string error;
  nlohmann::json to_json() const;
  static FailureRecord from_json(const nlohmann::json& j);
};

// Cache mode's figures.
struct CacheStats {
  int slots_per_rank = 0;
  std::string policy;
  double substitute_alpha = -1;
  uint64_t substitutions = 0, decode_experts_needed = 0, loaded_after_routing = 0, prefetch_loads = 0, evictions = 0;
  double hit_rate() const;  // 1 - loaded_after_routing / decode_experts_needed (0 when none were needed)
  nlohmann::json to_json() const;
  static CacheStats from_json(const nlohmann::json& j);
};

// The schedule the run ended with.
struct ScheduleStats {
  std::string mode;
  int groups = 0, lookahead = 1, group_size = 0, workers = 0, slots_per_worker = 0;
  std::string placement;
  int replicas = 1, nodes = 1;
  double load_gbps_emulated = 0;
  int prefill_batch = 0;
  std::string description;
  nlohmann::json to_json() const;
  static ScheduleStats from_json(const nlohmann::json& j);
};

// Decode timing, Eq. 1 of the paper: the time a group has to load its next layer while the
// others work (t_maxload = G t_main + (G - 1) t_worker).
struct TimingStats {
  uint64_t decode_layers = 0;
  double t_main_seconds_per_layer = 0, t_worker_seconds_per_layer = 0, t_maxload_seconds = 0;
  double workers_load_seconds = 0, workers_stall_seconds = 0, workers_compute_seconds = 0;
  uint64_t workers_bytes_pulled = 0;
  double load_hidden_fraction = 1;
  uint64_t loads = 0, computes = 0;
  nlohmann::json to_json() const;
  static TimingStats from_json(const nlohmann::json& j);
};

// Everything main's executor reports at the end of a run.
struct ExecStats {
  MainRankStats main;
  std::vector<WorkerStats> workers;  // the live expert ranks, then the failed ones
  std::vector<FailureRecord> failures;
  std::optional<CacheStats> cache;
  ScheduleStats schedule;
  TimingStats timing;
  nlohmann::json predictor = nlohmann::json::object();  // the prediction ledger's and the predictor's figures
  nlohmann::json to_json() const;
  static ExecStats from_json(const nlohmann::json& j);
};

}  // namespace odmoe
