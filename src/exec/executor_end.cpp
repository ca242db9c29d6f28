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
  const int W = sched().n_workers();
  std::vector<int> alive, dead;
  for (int r = 1; r <= W; ++r) out_.send(phys(r), kTagCmd, msg::Clock{++seq_, 0.0}.encode());
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
  for (int r : alive) out_.send(phys(r), kTagCmd, msg::Sync{++seq_}.encode());
  for (int r : alive)
    for (;;) {
      const Message m = comm_.recv(phys(r), kTagReply, [&] { return "READY from " + comm_.where(phys(r)); });
      if (m.header.op == Op::kReady) break;
    }
  const int W2 = static_cast<int>(alive.size());
  const int G2 = Schedule::default_groups(W2, sched().top_k(), sched().n_groups());
  Schedule next(n_layer_, n_expert_, sched().top_k(), W2, G2, sched().lookahead(), opts_.predict_extra);
  std::vector<int> phys2 = {0};
  for (int r : alive) phys2.push_back(phys(r));
  for (int i = 1; i <= W2; ++i) {
    const msg::Reschedule rs{++seq_, W2, G2, sched().lookahead(), opts_.predict_extra, i};
    out_.send(phys2[static_cast<size_t>(i)], kTagCmd, rs.encode());
  }
  for (int r : dead) {
    out_.abandon(phys(r));
    failures_.push_back({phys(r), comm_.host(phys(r)), step_, layer, opts_.timeout_s, W2, G2, why.what()});
    dead_ranks_.push_back(phys(r));
  }
  phys_ = phys2;
  n_slots_ = worker_slots(next, opts_);
  pending_.clear();
  const PlanActions prefill_loads = planner_.replan(next, cache_slots(next, opts_), comm_.size(), step_, layer, prefill_);
  std::fprintf(stderr,
               "[odmoe] %s stopped answering (step %d, layer %d): carrying on with %d expert ranks in %d group%s "
               "(--on-worker-failure degrade; %.1f s to recover)\n",
               names.c_str(), step_, layer, W2, G2, G2 > 1 ? "s" : "", now_s() - t0);
  send(prefill_loads);
  resending_ = true;
  send_layer(layer, cur_h_.data(), cur_k_, users_of(cur_ids_.data(), cur_ids_.size()));
  resending_ = false;
  pump();
}

nlohmann::json DistributedExpertExecutor::finish(const std::string& trace_path, const nlohmann::json& main_rank_stats) {
  finished_ = true;
  const int W = sched().n_workers();
  for (int r = 1; r <= W; ++r) out_.send(phys(r), kTagCmd, msg::Stop{++seq_, !dead_ranks_.empty()}.encode());
  std::vector<WorkerStats> worker(static_cast<size_t>(W + 1));  // by index among the live ranks
  for (int got = 0; got < W; ++got) {
    Message m = comm_.recv(MPI_ANY_SOURCE, kTagReply, [&] { return std::string("statistics from every expert rank"); });
    const msg::Stats st = msg::Stats::decode(m);
    const auto at = std::find(phys_.begin(), phys_.end(), m.source);
    ODMOE_CHECK(at != phys_.end() && at != phys_.begin(), kMpi, "protocol", "STATS from " << comm_.where(m.source), "");
    worker[static_cast<size_t>(at - phys_.begin())] = WorkerStats::from_json(nlohmann::json::parse(st.json));
  }
  if (!dead_ranks_.empty()) set_job_degraded();
  out_.drain("the expert ranks to take STOP");
  predictor_->finish();

  ExecStats x;
  x.main = MainRankStats::from_json(main_rank_stats);
  x.main.compute_seconds = dense_s_;
  x.main.message_wait_seconds = expert_wait_s_;
  x.main.loads_sent = loads_;
  x.main.computes_sent = computes_;
  x.main.misses_computed_on_store_ranks = host_computes_;
  TimingStats& t = x.timing;
  for (int r = 1; r <= W; ++r) {
    WorkerStats w = worker[static_cast<size_t>(r)];
    w.clock_offset_seconds = clock_offset_[static_cast<size_t>(phys(r))];
    w.clock_rtt_seconds = rtt_[static_cast<size_t>(phys(r))];
    t.workers_stall_seconds += w.stall_seconds;
    t.workers_load_seconds += w.load_seconds;
    t.workers_compute_seconds += w.compute_seconds;
    t.workers_bytes_pulled += w.bytes_pulled;
    w.trace_events = nullptr;
    x.workers.push_back(w);
  }
  for (int r : dead_ranks_) {
    WorkerStats w;
    w.rank = r;
    w.host = comm_.host(r);
    w.failed = true;
    x.workers.push_back(w);
  }
  x.failures = failures_;
  if (caching()) {
    const PlannerCounts& n = planner_.counts();
    CacheStats c;
    c.slots_per_rank = planner_.cache_slots();
    c.policy = eviction_policy_name(planner_.cache().policy());
    c.substitute_alpha = opts_.substitute;
    c.substitutions = substitutions_;
    c.decode_experts_needed = n.cache_needed;
    c.loaded_after_routing = n.cache_misses;
    c.prefetch_loads = n.cache_prefetches;
    c.evictions = n.cache_evictions;
    x.cache = c;
  }
  ScheduleStats& sc = x.schedule;
  sc.mode = mode_name(opts_.mode);
  sc.groups = sched().n_groups();
  sc.lookahead = sched().lookahead();
  sc.group_size = sched().group_size();
  sc.workers = sched().n_workers();
  sc.slots_per_worker = n_slots_;
  sc.placement = store_placement_name(opts_.store.placement);
  sc.replicas = opts_.store.replicas;
  sc.nodes = comm_.n_nodes();
  sc.load_gbps_emulated = opts_.load_gbps;
  sc.prefill_batch = opts_.prefill_batch;
  sc.description = sched().to_string();
  // Eq. 1 of the paper: the time a group has to load its next layer while the others work.
  const double layers = static_cast<double>(decode_layers_);
  t.decode_layers = decode_layers_;
  t.t_main_seconds_per_layer = decode_layers_ ? dense_s_ / layers : 0.0;
  t.t_worker_seconds_per_layer = decode_layers_ ? expert_wait_s_ / layers : 0.0;
  const int G = sched().n_groups();
  t.t_maxload_seconds = G * t.t_main_seconds_per_layer + (G - 1) * t.t_worker_seconds_per_layer;
  t.load_hidden_fraction =
      t.workers_load_seconds > 0 ? std::max(0.0, 1.0 - t.workers_stall_seconds / t.workers_load_seconds) : 1.0;
  t.loads = loads_;
  t.computes = computes_;
  nlohmann::json pj = ledger_.to_json();
  pj["name"] = predictor_->name();
  pj["wasted_loads"] = planner_.counts().wasted_loads;
  const nlohmann::json ps = predictor_->stats();
  for (const auto& [key, value] : ps.items()) pj[key] = value;
  x.predictor = pj;

  if (!trace_path.empty()) {
    nlohmann::json events = nlohmann::json::array();
    const double origin = origin_;
    TraceRecorder::append_names(0, "rank 0: main (" + comm_.host(0) + ")", &events);
    TraceRecorder::append_events(trace_.to_json(), 0, 0.0, origin, &events);
    for (int r = 1; r <= W; ++r) {
      const int pr = phys(r);
      TraceRecorder::append_names(pr, "rank " + std::to_string(pr) + ": expert rank, group " +
                                          std::to_string(sched().group_of_rank(r)) + " (" + comm_.host(pr) + ")",
                                  &events);
      TraceRecorder::append_events(worker[static_cast<size_t>(r)].trace_events, pr,
                                   clock_offset_[static_cast<size_t>(pr)], origin, &events);
    }
    write_json_file(trace_path, {{"traceEvents", events}, {"displayTimeUnit", "ms"}}, -1, "--trace");
  }
  return x.to_json();
}

}  // namespace odmoe
