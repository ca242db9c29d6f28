// The typed statistics (exec/stats.h): a run's statistics as the executor has always
// written them read back into the structs and written again, key for key and type for type
// (integers stay integers), so existing files and `odmoe simulate --from-stats` keep working.
#include <gtest/gtest.h>

#include "odmoe/core/error.h"
#include "odmoe/exec/stats.h"

namespace odmoe {
namespace {

// A cache-mode run that lost rank 3: every key the executor writes.
const char* kRun = R"json({
  "ranks": [
    {"rank": 0, "role": "main", "host": "a", "device": "cpu (avx2, 4 threads)", "peak_host_bytes": 123456,
     "memory_marks": [{"mark": 1, "rss_bytes": 10, "peak_rss_bytes": 20}],
     "compute_seconds": 0.5, "message_wait_seconds": 0.25, "loads_sent": 40, "computes_sent": 80,
     "misses_computed_on_store_ranks": 0},
    {"rank": 1, "host": "a", "role": "worker", "group": 0, "reschedules": 1, "slots": 6, "slot_bytes": 8192,
     "store_bytes": 65536, "progress_thread": false, "pulls": 20, "host_computes": 0, "pulls_from_own_window": 5,
     "pulls_from_other_nodes": 0, "bytes_pulled": 163840, "pulls_verified": 0, "load_seconds": 0.125,
     "computes": 40, "compute_seconds": 0.0625, "stall_seconds": 0.03125, "message_wait_seconds": 0.5,
     "peak_host_bytes": 999, "memory_marks": [], "device": "cpu", "clock_offset_seconds": -0.001,
     "clock_rtt_seconds": 0.0002},
    {"rank": 3, "role": "worker", "host": "b", "failed": true}
  ],
  "failures": [{"rank": 3, "host": "b", "step": 4, "layer": 1, "detected_after_seconds": 5.0,
                "expert_ranks_after": 1, "groups_after": 1, "error": "timed out"}],
  "cache": {"slots_per_rank": 4, "policy": "lru", "substitute_alpha": -1.0, "substitutions": 0,
            "decode_experts_needed": 16, "loaded_after_routing": 4, "hit_rate": 0.75, "prefetch_loads": 3,
            "evictions": 2},
  "schedule": {"mode": "cache", "groups": 1, "lookahead": 1, "group_size": 1, "workers": 1, "slots_per_worker": 6,
               "placement": "replicated", "replicas": 1, "nodes": 1, "load_gbps_emulated": 0.0,
               "prefill_batch": 64, "description": "1 worker in 1 group of 1, top-2 of 8 experts"},
  "timing": {"decode_layers": 8, "t_main_seconds_per_layer": 0.0625, "t_worker_seconds_per_layer": 0.03125,
             "t_maxload_seconds": 0.0625, "workers_load_seconds": 0.125, "workers_stall_seconds": 0.03125,
             "workers_compute_seconds": 0.0625, "workers_bytes_pulled": 163840, "load_hidden_fraction": 0.75,
             "loads": 40, "computes": 80},
  "predictor": {"name": "none", "wasted_loads": 0, "recall": 0.0}
})json";

TEST(Stats, ARunsStatisticsRoundTripKeyForKey) {
  const nlohmann::json in = nlohmann::json::parse(kRun);
  const ExecStats s = ExecStats::from_json(in);
  EXPECT_EQ(s.workers.size(), 2u);
  EXPECT_TRUE(s.workers[1].failed);
  ASSERT_TRUE(s.cache);
  EXPECT_DOUBLE_EQ(s.cache->hit_rate(), 0.75);
  EXPECT_EQ(s.main.loads_sent, 40u);
  EXPECT_EQ(s.main.base["device"], "cpu (avx2, 4 threads)");  // the engine's figures pass through
  const nlohmann::json out = s.to_json();
  EXPECT_EQ(out, in) << out.dump(1);
  EXPECT_EQ(out.dump(), in.dump());  // integers stay integers, reals stay reals
}

TEST(Stats, AWorkersMessageCarriesItsTraceAndNoClock) {
  WorkerStats w;
  w.rank = 2;
  w.host = "n";
  w.trace_events = nlohmann::json::array({{{"name", "load L0 E1"}}});
  w.memory_marks = {MemoryMark{3, 100, 200}};
  const nlohmann::json j = w.to_json();
  EXPECT_TRUE(j.contains("trace_events"));
  EXPECT_FALSE(j.contains("clock_offset_seconds"));
  EXPECT_EQ(j["role"], "worker");
  EXPECT_EQ(j["memory_marks"][0]["peak_rss_bytes"], 200);
  const WorkerStats back = WorkerStats::from_json(j);
  EXPECT_EQ(back.to_json(), j);
  EXPECT_FALSE(j.contains("peak_device_bytes"));
}

TEST(Stats, OlderFilesReadWithDefaultsAndBadTypesAreNamed) {
  const ExecStats s = ExecStats::from_json(nlohmann::json::parse(R"({"ranks": [{"rank": 0, "role": "main"},
      {"rank": 1, "role": "worker", "computes": 3}], "timing": {"decode_layers": 2}})"));
  EXPECT_EQ(s.workers[0].computes, 3u);
  EXPECT_EQ(s.workers[0].reschedules, 0);
  EXPECT_EQ(s.timing.decode_layers, 2u);
  EXPECT_FALSE(s.cache);
  try {
    ExecStats::from_json(nlohmann::json::parse(R"({"ranks": [{"rank": 0}, {"rank": 1, "computes": "many"}]})"));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("\"computes\""), std::string::npos) << e.message();
  }
  EXPECT_THROW(ExecStats::from_json(nlohmann::json::parse(R"({"ranks": []})")), Error);
}

}  // namespace
}  // namespace odmoe
