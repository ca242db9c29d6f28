// The options of a distributed run, shared by main, the expert ranks and the predictor rank
// (every rank parses the same command line and must agree on what follows from it).
#pragma once

#include <string>

#include "odmoe/predict/shadow.h"
#include "odmoe/sched/schedule.h"
#include "odmoe/store/expert_store.h"

namespace odmoe {


struct DistOptions {
  Mode mode = Mode::kOnDemand;
  std::string predictor = "none";  // none | oracle | previous | random | gate-ahead | shadow
  int gate_ahead_depth = 0;        // gate-ahead: layers looked ahead (0: G-1, at least 1)
  int predict_extra = 0;           // candidates beyond the top-k a predictor publishes (and slots for them)
  bool predictor_sync = false;     // one process: wait for each decode layer's pending prediction
  bool miss_on_host = false;       // --miss-policy cpu: a mispredicted expert runs on its store rank, unloaded
  int predictor_rank = -1;         // >= 0: the shadow runs on this rank (the last one), not on main
  int cache_slots = 0;             // cache mode: experts each expert rank keeps (0: a quarter of its share)
  bool cache_lfu = false;          // cache mode: evict the least frequently (else least recently) used
  bool cache_by_score = false;     // cache mode: evict the lowest recent average gate score (with substitution)
  double substitute = -1;          // cache mode, >= 0: importance-driven substitution with this alpha
  std::string routing_trace;       // oracle: a trace from --save-routing
  ShadowOptions shadow;            // shadow: dtype, alignment, departure
  int groups = 0;                  // 0: Schedule::default_groups
  int lookahead = 1;               // decode layers in flight per group (1: the paper's schedule)
  StoreOptions store;
  double timeout_s = 60;           // bound on every wait for another rank
  double startup_timeout_s = 600;  // bound on start-up (model loading on main, mapping shards)
  double load_gbps = 0;            // > 0: emulate a link of this many Gbit/s per expert rank
  double device_mib = 0;           // > 0: emulate a device of this many MiB per expert rank (slots)
  int prefill_batch = 64;          // most tokens per COMPUTE message in prefill
  bool verify_pulls = false;       // check every pulled expert's checksums
  bool degrade = false;            // --on-worker-failure degrade: carry on without an expert rank that died
  bool trace = false;              // record trace events
};

// Slots an expert rank allocates in `opts.mode` (main and the expert ranks agree on it). In
// cache mode: the cache's slots, then the prompt's double-buffered prefill slots.
int worker_slots(const Schedule& sched, const DistOptions& opts);
int cache_slots(const Schedule& sched, const DistOptions& opts);

}  // namespace odmoe
