// The run statistics' JSON form (stats.h). Every key here is part of the statistics files'
// format: rename none without the readers (sim/sim_inputs.cpp, the tests, bench reports).
#include "odmoe/exec/stats.h"

#include "odmoe/core/error.h"
#include "odmoe/core/memory_stats.h"

namespace odmoe {

namespace {

// Reads `key` of object `j` into *v when it is there (an older file may lack it).
template <typename T>
void read(const nlohmann::json& j, const char* key, T* v) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  try {
    *v = it->get<T>();
  } catch (const nlohmann::json::exception& e) {
    ODMOE_THROW(kConfig, "bad-field", "statistics: \"" << key << "\" has the wrong type: " << e.what(), "");
  }
}

template <typename T>
void read(const nlohmann::json& j, const char* key, std::optional<T>* v) {
  if (j.contains(key) && !j.at(key).is_null()) {
    T x{};
    read(j, key, &x);
    *v = x;
  }
}

void expect_object(const nlohmann::json& j, const char* what) {
  ODMOE_CHECK(j.is_object(), kConfig, "bad-field", "statistics: " << what << " is not a JSON object", "");
}

}  // namespace

MemoryMark MemoryMark::now(int64_t mark) { return {mark, current_rss_bytes(), ::odmoe::peak_rss_bytes()}; }

nlohmann::json MemoryMark::to_json() const {
  return {{"mark", mark}, {"rss_bytes", rss_bytes}, {"peak_rss_bytes", peak_rss_bytes}};
}

MemoryMark MemoryMark::from_json(const nlohmann::json& j) {
  expect_object(j, "a memory mark");
  MemoryMark m;
  read(j, "mark", &m.mark);
  read(j, "rss_bytes", &m.rss_bytes);
  read(j, "peak_rss_bytes", &m.peak_rss_bytes);
  return m;
}

nlohmann::json WorkerStats::to_json() const {
  if (failed) return {{"rank", rank}, {"role", "worker"}, {"host", host}, {"failed", true}};
  nlohmann::json marks = nlohmann::json::array();
  for (const MemoryMark& m : memory_marks) marks.push_back(m.to_json());
  nlohmann::json j = {{"rank", rank},
                      {"host", host},
                      {"role", "worker"},
                      {"group", group},
                      {"reschedules", reschedules},
                      {"slots", slots},
                      {"slot_bytes", slot_bytes},
                      {"store_bytes", store_bytes},
                      {"progress_thread", progress_thread},
                      {"pulls", pulls},
                      {"host_computes", host_computes},
                      {"pulls_from_own_window", pulls_from_own_window},
                      {"pulls_from_other_nodes", pulls_from_other_nodes},
                      {"bytes_pulled", bytes_pulled},
                      {"pulls_verified", pulls_verified},
                      {"load_seconds", load_seconds},
                      {"computes", computes},
                      {"compute_seconds", compute_seconds},
                      {"stall_seconds", stall_seconds},
                      {"message_wait_seconds", message_wait_seconds},
                      {"peak_host_bytes", peak_host_bytes},
                      {"memory_marks", marks},
                      {"device", device}};
  if (!trace_events.is_null()) j["trace_events"] = trace_events;
  if (clock_offset_seconds) j["clock_offset_seconds"] = *clock_offset_seconds;
  if (clock_rtt_seconds) j["clock_rtt_seconds"] = *clock_rtt_seconds;
  return j;
}

WorkerStats WorkerStats::from_json(const nlohmann::json& j) {
  expect_object(j, "an expert rank's entry");
  WorkerStats w;
  read(j, "rank", &w.rank);
  read(j, "host", &w.host);
  read(j, "failed", &w.failed);
  read(j, "group", &w.group);
  read(j, "reschedules", &w.reschedules);
  read(j, "slots", &w.slots);
  read(j, "slot_bytes", &w.slot_bytes);
  read(j, "store_bytes", &w.store_bytes);
  read(j, "progress_thread", &w.progress_thread);
  read(j, "pulls", &w.pulls);
  read(j, "host_computes", &w.host_computes);
  read(j, "pulls_from_own_window", &w.pulls_from_own_window);
  read(j, "pulls_from_other_nodes", &w.pulls_from_other_nodes);
  read(j, "bytes_pulled", &w.bytes_pulled);
  read(j, "pulls_verified", &w.pulls_verified);
  read(j, "load_seconds", &w.load_seconds);
  read(j, "computes", &w.computes);
  read(j, "compute_seconds", &w.compute_seconds);
  read(j, "stall_seconds", &w.stall_seconds);
  read(j, "message_wait_seconds", &w.message_wait_seconds);
  read(j, "peak_host_bytes", &w.peak_host_bytes);
  if (j.contains("memory_marks") && j["memory_marks"].is_array())
    for (const auto& m : j["memory_marks"]) w.memory_marks.push_back(MemoryMark::from_json(m));
  read(j, "device", &w.device);
  if (j.contains("trace_events")) w.trace_events = j["trace_events"];
  read(j, "clock_offset_seconds", &w.clock_offset_seconds);
  read(j, "clock_rtt_seconds", &w.clock_rtt_seconds);
  return w;
}

nlohmann::json MainRankStats::to_json() const {
  nlohmann::json j = base.is_object() ? base : nlohmann::json::object();
  j["compute_seconds"] = compute_seconds;
  j["message_wait_seconds"] = message_wait_seconds;
  j["loads_sent"] = loads_sent;
  j["computes_sent"] = computes_sent;
  j["misses_computed_on_store_ranks"] = misses_computed_on_store_ranks;
  return j;
}

MainRankStats MainRankStats::from_json(const nlohmann::json& j) {
  expect_object(j, "main's entry");
  MainRankStats m;
  read(j, "compute_seconds", &m.compute_seconds);
  read(j, "message_wait_seconds", &m.message_wait_seconds);
  read(j, "loads_sent", &m.loads_sent);
  read(j, "computes_sent", &m.computes_sent);
  read(j, "misses_computed_on_store_ranks", &m.misses_computed_on_store_ranks);
  m.base = j;
  for (const char* k : {"compute_seconds", "message_wait_seconds", "loads_sent", "computes_sent",
                        "misses_computed_on_store_ranks"})
    m.base.erase(k);
  return m;
}

nlohmann::json FailureRecord::to_json() const {
  return {{"rank", rank},
          {"host", host},
          {"step", step},
          {"layer", layer},
          {"detected_after_seconds", detected_after_seconds},
          {"expert_ranks_after", expert_ranks_after},
          {"groups_after", groups_after},
          {"error", error}};
}

FailureRecord FailureRecord::from_json(const nlohmann::json& j) {
  expect_object(j, "a failure");
  FailureRecord f;
  read(j, "rank", &f.rank);
  read(j, "host", &f.host);
  read(j, "step", &f.step);
  read(j, "layer", &f.layer);
  read(j, "detected_after_seconds", &f.detected_after_seconds);
  read(j, "expert_ranks_after", &f.expert_ranks_after);
  read(j, "groups_after", &f.groups_after);
  read(j, "error", &f.error);
  return f;
}

double CacheStats::hit_rate() const {
  return decode_experts_needed
             ? 1.0 - static_cast<double>(loaded_after_routing) / static_cast<double>(decode_experts_needed)
             : 0.0;
}

nlohmann::json CacheStats::to_json() const {
  return {{"slots_per_rank", slots_per_rank},
          {"policy", policy},
          {"substitute_alpha", substitute_alpha},
          {"substitutions", substitutions},
          {"decode_experts_needed", decode_experts_needed},
          {"loaded_after_routing", loaded_after_routing},
          {"hit_rate", hit_rate()},
          {"prefetch_loads", prefetch_loads},
          {"evictions", evictions}};
}

CacheStats CacheStats::from_json(const nlohmann::json& j) {
  expect_object(j, "\"cache\"");
  CacheStats c;
  read(j, "slots_per_rank", &c.slots_per_rank);
  read(j, "policy", &c.policy);
  read(j, "substitute_alpha", &c.substitute_alpha);
  read(j, "substitutions", &c.substitutions);
  read(j, "decode_experts_needed", &c.decode_experts_needed);
  read(j, "loaded_after_routing", &c.loaded_after_routing);
  read(j, "prefetch_loads", &c.prefetch_loads);
  read(j, "evictions", &c.evictions);
  return c;
}

nlohmann::json ScheduleStats::to_json() const {
  return {{"mode", mode},
          {"groups", groups},
          {"lookahead", lookahead},
          {"group_size", group_size},
          {"workers", workers},
          {"slots_per_worker", slots_per_worker},
          {"placement", placement},
          {"replicas", replicas},
          {"nodes", nodes},
          {"load_gbps_emulated", load_gbps_emulated},
          {"prefill_batch", prefill_batch},
          {"description", description}};
}

ScheduleStats ScheduleStats::from_json(const nlohmann::json& j) {
  expect_object(j, "\"schedule\"");
  ScheduleStats s;
  read(j, "mode", &s.mode);
  read(j, "groups", &s.groups);
  read(j, "lookahead", &s.lookahead);
  read(j, "group_size", &s.group_size);
  read(j, "workers", &s.workers);
  read(j, "slots_per_worker", &s.slots_per_worker);
  read(j, "placement", &s.placement);
  read(j, "replicas", &s.replicas);
  read(j, "nodes", &s.nodes);
  read(j, "load_gbps_emulated", &s.load_gbps_emulated);
  read(j, "prefill_batch", &s.prefill_batch);
  read(j, "description", &s.description);
  return s;
}

nlohmann::json TimingStats::to_json() const {
  return {{"decode_layers", decode_layers},
          {"t_main_seconds_per_layer", t_main_seconds_per_layer},
          {"t_worker_seconds_per_layer", t_worker_seconds_per_layer},
          {"t_maxload_seconds", t_maxload_seconds},
          {"workers_load_seconds", workers_load_seconds},
          {"workers_stall_seconds", workers_stall_seconds},
          {"workers_compute_seconds", workers_compute_seconds},
          {"workers_bytes_pulled", workers_bytes_pulled},
          {"load_hidden_fraction", load_hidden_fraction},
          {"loads", loads},
          {"computes", computes}};
}

TimingStats TimingStats::from_json(const nlohmann::json& j) {
  expect_object(j, "\"timing\"");
  TimingStats t;
  read(j, "decode_layers", &t.decode_layers);
  read(j, "t_main_seconds_per_layer", &t.t_main_seconds_per_layer);
  read(j, "t_worker_seconds_per_layer", &t.t_worker_seconds_per_layer);
  read(j, "t_maxload_seconds", &t.t_maxload_seconds);
  read(j, "workers_load_seconds", &t.workers_load_seconds);
  read(j, "workers_stall_seconds", &t.workers_stall_seconds);
  read(j, "workers_compute_seconds", &t.workers_compute_seconds);
  read(j, "workers_bytes_pulled", &t.workers_bytes_pulled);
  read(j, "load_hidden_fraction", &t.load_hidden_fraction);
  read(j, "loads", &t.loads);
  read(j, "computes", &t.computes);
  return t;
}

nlohmann::json ExecStats::to_json() const {
  nlohmann::json ranks = nlohmann::json::array({main.to_json()});
  for (const WorkerStats& w : workers) ranks.push_back(w.to_json());
  nlohmann::json j = {{"ranks", ranks}, {"schedule", schedule.to_json()}, {"timing", timing.to_json()},
                      {"predictor", predictor}};
  if (!failures.empty()) {
    nlohmann::json f = nlohmann::json::array();
    for (const FailureRecord& r : failures) f.push_back(r.to_json());
    j["failures"] = f;
  }
  if (cache) j["cache"] = cache->to_json();
  return j;
}

ExecStats ExecStats::from_json(const nlohmann::json& j) {
  expect_object(j, "the run's statistics");
  ExecStats s;
  ODMOE_CHECK(j.contains("ranks") && j["ranks"].is_array() && !j["ranks"].empty(), kConfig, "bad-field",
              "statistics: \"ranks\" is missing or empty", "");
  const nlohmann::json& ranks = j["ranks"];
  s.main = MainRankStats::from_json(ranks[0]);
  for (size_t r = 1; r < ranks.size(); ++r) s.workers.push_back(WorkerStats::from_json(ranks[r]));
  if (j.contains("failures") && j["failures"].is_array())
    for (const auto& f : j["failures"]) s.failures.push_back(FailureRecord::from_json(f));
  if (j.contains("cache")) s.cache = CacheStats::from_json(j["cache"]);
  if (j.contains("schedule")) s.schedule = ScheduleStats::from_json(j["schedule"]);
  if (j.contains("timing")) s.timing = TimingStats::from_json(j["timing"]);
  if (j.contains("predictor")) s.predictor = j["predictor"];
  return s;
}

}  // namespace odmoe
