// Main's executor at the ends of a run's life: a failed expert rank's recovery
// (--on-worker-failure degrade) and finish(), which stops the expert ranks and gathers the
// run's statistics and trace. The steady state (loads, computes, results) is executor.cpp.
#include <algorithm>
#include <cstdio>

#include "odmoe/core/error.h"
#include "odmoe/core/json_file.h"
#include "odmoe/exec/executor.h"

namespace odmoe {

// --on-worker-failure degrade. `why` is the timeout that gave the failure away. Every live
// expert rank is asked for a sign of life (its earlier answers are drained); those that give
// none within the bound are dead. The survivors finish what they were doing (SYNC), get a
// new schedule over themselves (RESCHEDULE: fewer ranks, as many groups as still divide
// them), and main forgets every load and the cache, then sends `layer` again. Later layers
// follow the new schedule; tokens are those of the undisturbed run, since results never
// depend on which rank computed them.
void DistributedExpertExecutor::recover(int layer, const Error& why) {
  const double t0 = now_s();
  const double bound = std::min(opts_.timeout_s, 5.0);
  const int W = sched_.n_workers();
  std::vector<int> alive, dead;
  for (int r = 1; r <= W; ++r) {
    MsgHeader h;
    h.op = Op::kClock;
    h.seq = ++seq_;
    out_.send(phys(r), kTagCmd, h);
  }
  for (int r = 1; r <= W; ++r) {
    bool answered = false;
    try {
      for (;;) {  // RESULTs it still owed come first
        const Message m = comm_.recv(phys(r), kTagReply, [&] { return "a sign of life from " + comm_.where(phys(r)); },
                                     [&] { out_.reap(); }, bound);
        if (m.header.op == Op::kClock) break;
      }
      answered = true;
    } catch (const Error&) {
    }
    (answered ? alive : dead).push_back(r);
  }
  if (dead.empty()) throw why;  // everyone answers: not a failure this can route around
  std::string names;
  for (int r : dead) names += (names.empty() ? "" : ", ") + comm_.where(phys(r));
  for (int r : dead)
    for (int s : store_.store_ranks())
      ODMOE_CHECK(s != phys(r), kMpi, "rank-failed",
                  comm_.where(s) << " died, and it holds expert shards other ranks pull from (a store rank): "
                                 << "--on-worker-failure degrade cannot carry on without it",
                  "use --store-ranks all with --placement sharded --replicas 2 or more, or restart the job");
  ODMOE_CHECK(!alive.empty(), kMpi, "rank-failed", "every expert rank failed (" << names << ")", "restart the job");

  // The survivors finish their pulls; then the new schedule.
  for (int r : alive) {
    MsgHeader h;
    h.op = Op::kSync;
    h.seq = ++seq_;
    out_.send(phys(r), kTagCmd, h);
  }
  for (int r : alive)
    for (;;) {
      const Message m = comm_.recv(phys(r), kTagReply, [&] { return "READY from " + comm_.where(phys(r)); });
      if (m.header.op == Op::kReady) break;
    }
  const int W2 = static_cast<int>(alive.size());
  const int G2 = Schedule::default_groups(W2, sched_.top_k(), sched_.n_groups());
  Schedule next(n_layer_, n_expert_, sched_.top_k(), W2, G2, sched_.lookahead(), opts_.predict_extra);
  std::vector<int> phys2 = {0};
  for (int r : alive) phys2.push_back(phys(r));
  for (int i = 1; i <= W2; ++i) {
    const int32_t v[5] = {W2, G2, sched_.lookahead(), opts_.predict_extra, i};
    MsgHeader h;
    h.op = Op::kReschedule;
    h.seq = ++seq_;
    out_.send(phys2[static_cast<size_t>(i)], kTagCmd, h, v, sizeof v);
  }
  for (int r : dead) {
    out_.abandon(phys(r));
    failures_.push_back({{"rank", phys(r)},
                         {"host", comm_.host(phys(r))},
                         {"step", step_},
                         {"layer", layer},
                         {"detected_after_seconds", opts_.timeout_s},
                         {"expert_ranks_after", W2},
                         {"groups_after", G2},
                         {"error", why.what()}});
    dead_ranks_.push_back(phys(r));
  }
  phys_ = phys2;
  sched_ = next;
  n_slots_ = worker_slots(sched_, opts_);
  n_cache_ = cache_slots(sched_, opts_);
  cache_.clear(comm_.size(), n_cache_);
  for (auto& plan : plan_) plan.clear();
  std::fill(dispatched_.begin(), dispatched_.end(), false);
  pending_.clear();
  // Where each group's next layer is, from this layer on.
  group_next_.assign(static_cast<size_t>(G2), 0);
  for (int g = 0; g < G2; ++g) {
    int l = layer;
    while (l < n_layer_ && l % G2 != g) ++l;
    group_next_[static_cast<size_t>(g)] = l < n_layer_ ? global(step_, l) : global(step_ + 1, g);
  }
  std::fprintf(stderr,
               "[odmoe] %s stopped answering (step %d, layer %d): carrying on with %d expert ranks in %d group%s "
               "(--on-worker-failure degrade; %.1f s to recover)\n",
               names.c_str(), step_, layer, W2, G2, G2 > 1 ? "s" : "", now_s() - t0);
  if (prefill_) {
    dispatch_prefill_layer(layer);
    dispatch_prefill_layer(layer + 1);
  }
  resending_ = true;
  send_layer(layer, cur_h_.data(), cur_k_, users_of(cur_ids_.data(), cur_ids_.size()));
  resending_ = false;
  pump();
}

nlohmann::json DistributedExpertExecutor::finish(const std::string& trace_path, const nlohmann::json& main_rank_stats) {
  finished_ = true;
  const int W = sched_.n_workers();
  for (int r = 1; r <= W; ++r) {
    MsgHeader h;
    h.op = Op::kStop;
    h.seq = ++seq_;
    h.flags = dead_ranks_.empty() ? 0 : kFlagDegraded;
    out_.send(phys(r), kTagCmd, h);
  }
  std::vector<nlohmann::json> worker(static_cast<size_t>(W + 1));  // by index among the live ranks
  for (int got = 0; got < W; ++got) {
    Message m = comm_.recv(MPI_ANY_SOURCE, kTagReply, [&] { return std::string("statistics from every expert rank"); });
    ODMOE_CHECK(m.header.op == Op::kStats, kMpi, "protocol",
                "expected STATS, got " << op_name(m.header.op) << " from " << comm_.where(m.source), "");
    const auto at = std::find(phys_.begin(), phys_.end(), m.source);
    ODMOE_CHECK(at != phys_.end() && at != phys_.begin(), kMpi, "protocol", "STATS from " << comm_.where(m.source), "");
    worker[static_cast<size_t>(at - phys_.begin())] = nlohmann::json::parse(m.payload.begin(), m.payload.end());
  }
  if (!dead_ranks_.empty()) set_job_degraded();
  out_.drain("the expert ranks to take STOP");
  predictor_->finish();

  nlohmann::json j;
  nlohmann::json ranks = nlohmann::json::array();
  nlohmann::json m0 = main_rank_stats;
  m0["compute_seconds"] = dense_s_;             // decode: attention, routers, shared experts, sampling
  m0["message_wait_seconds"] = expert_wait_s_;  // decode: waiting for the expert ranks' results
  m0["loads_sent"] = loads_;
  m0["computes_sent"] = computes_;
  m0["misses_computed_on_store_ranks"] = host_computes_;
  ranks.push_back(m0);
  double stall = 0, load = 0, compute = 0;
  uint64_t bytes = 0;
  for (int r = 1; r <= W; ++r) {
    nlohmann::json w = worker[static_cast<size_t>(r)];
    w["clock_offset_seconds"] = clock_offset_[static_cast<size_t>(phys(r))];
    w["clock_rtt_seconds"] = rtt_[static_cast<size_t>(phys(r))];
    stall += w["stall_seconds"].get<double>();
    load += w["load_seconds"].get<double>();
    compute += w["compute_seconds"].get<double>();
    bytes += w["bytes_pulled"].get<uint64_t>();
    nlohmann::json copy = w;
    copy.erase("trace_events");
    ranks.push_back(copy);
  }
  for (int r : dead_ranks_) ranks.push_back({{"rank", r}, {"role", "worker"}, {"host", comm_.host(r)}, {"failed", true}});
  j["ranks"] = ranks;
  if (!failures_.empty()) j["failures"] = failures_;
  if (caching()) {
    j["cache"] = {{"slots_per_rank", n_cache_},
                  {"policy", eviction_policy_name(cache_.policy())},
                  {"substitute_alpha", opts_.substitute},
                  {"substitutions", substitutions_},
                  {"decode_experts_needed", cache_needed_},
                  {"loaded_after_routing", cache_misses_},
                  {"hit_rate", cache_needed_ ? 1.0 - static_cast<double>(cache_misses_) / static_cast<double>(cache_needed_) : 0.0},
                  {"prefetch_loads", cache_prefetches_},
                  {"evictions", cache_evictions_}};
  }
  j["schedule"] = {{"mode", mode_name(opts_.mode)},
                   {"groups", sched_.n_groups()},
                   {"lookahead", sched_.lookahead()},
                   {"group_size", sched_.group_size()},
                   {"workers", sched_.n_workers()},
                   {"slots_per_worker", n_slots_},
                   {"placement", store_placement_name(opts_.store.placement)},
                   {"replicas", opts_.store.replicas},
                   {"nodes", comm_.n_nodes()},
                   {"load_gbps_emulated", opts_.load_gbps},
                   {"prefill_batch", opts_.prefill_batch},
                   {"description", sched_.to_string()}};
  // Eq. 1 of the paper: the time a group has to load its next layer while the others work.
  const double t_main = decode_layers_ ? dense_s_ / static_cast<double>(decode_layers_) : 0.0;
  const double t_worker = decode_layers_ ? expert_wait_s_ / static_cast<double>(decode_layers_) : 0.0;
  const int G = sched_.n_groups();
  j["timing"] = {{"decode_layers", decode_layers_},
                 {"t_main_seconds_per_layer", t_main},
                 {"t_worker_seconds_per_layer", t_worker},
                 {"t_maxload_seconds", G * t_main + (G - 1) * t_worker},
                 {"workers_load_seconds", load},
                 {"workers_stall_seconds", stall},
                 {"workers_compute_seconds", compute},
                 {"workers_bytes_pulled", bytes},
                 {"load_hidden_fraction", load > 0 ? std::max(0.0, 1.0 - stall / load) : 1.0},
                 {"loads", loads_},
                 {"computes", computes_}};
  nlohmann::json pj = ledger_.to_json();
  pj["name"] = predictor_->name();
  pj["wasted_loads"] = wasted_loads_;
  const nlohmann::json ps = predictor_->stats();
  for (const auto& [key, value] : ps.items()) pj[key] = value;
  j["predictor"] = pj;

  if (!trace_path.empty()) {
    nlohmann::json events = nlohmann::json::array();
    const double origin = origin_;
    TraceRecorder::append_names(0, "rank 0: main (" + comm_.host(0) + ")", &events);
    TraceRecorder::append_events(trace_.to_json(), 0, 0.0, origin, &events);
    for (int r = 1; r <= W; ++r) {
      const int pr = phys(r);
      TraceRecorder::append_names(pr, "rank " + std::to_string(pr) + ": expert rank, group " +
                                          std::to_string(sched_.group_of_rank(r)) + " (" + comm_.host(pr) + ")",
                                  &events);
      TraceRecorder::append_events(worker[static_cast<size_t>(r)]["trace_events"], pr,
                                   clock_offset_[static_cast<size_t>(pr)], origin, &events);
    }
    write_json_file(trace_path, {{"traceEvents", events}, {"displayTimeUnit", "ms"}}, -1, "--trace");
  }
  return j;
}

}  // namespace odmoe
