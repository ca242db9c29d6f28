// Main's side of the distributed runtime: turns predictions and routing decisions into
// LOAD/COMPUTE/DROP commands, collects RESULTs and combines them in routing order.
//
// Life cycle of one generation (G groups; layer l is served by group l mod G):
//
//   start()          resident: LOAD every expert once; SYNC; clock ping-pong per rank
//   begin_forward()  prefill (n > 1): clear both rings, dispatch layers 0 and 1 (every expert
//                    of a layer, spread over all expert ranks: expert-parallel prefill)
//                    decode  (n = 1): clear the ring of step - 1, then pump()
//   submit(l)        routing known: drop mispredicted loads, LOAD what is missing (cache:
//                    admit/evict via ExpertCache), COMPUTE per expert in mini-batches
//   collect(l)       RESULTs in any order, combined in routing order; the layer's slots are
//                    freed by the last COMPUTE; prefill dispatches layer l + 2; decode moves
//                    the group's next layer on (next_of_group) and pump()s
//   pump()           for every group, its next --lookahead layers whose prediction is in the
//                    ledger get their loads (dispatch), across the step boundary too
//   publish(p)       a prediction arrives (any thread's result, polled): into the ledger; a
//                    layer already dispatched follows it (loads dropped or added)
//   recover()        a timed-out rank (--on-worker-failure degrade): re-plan over survivors
//   finish()         STOP, STATS from every rank, trace file      (executor_end.cpp)
//
// Which load goes where and when is the planner's (sched/load_planner.h); this file sends.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <thread>

#include "odmoe/core/error.h"
#include "odmoe/core/json_file.h"
#include "odmoe/core/softmax.h"
#include "odmoe/exec/executor.h"

namespace odmoe {

DistributedExpertExecutor::DistributedExpertExecutor(const Comm& comm, const ModelFiles& files,
                                                     const ExpertStore& store, const Schedule& sched,
                                                     const DistOptions& opts, std::unique_ptr<Predictor> predictor)
    : comm_(comm), store_(store), opts_(opts), predictor_(std::move(predictor)), out_(comm), trace_(opts.trace),
      n_embd_(files.config().n_embd), n_layer_(files.config().n_layer), n_expert_(files.config().n_expert),
      ledger_(files.config().n_layer, files.config().n_expert, sched.n_groups() - 1),
      planner_(sched, opts.mode, cache_slots(sched, opts), comm.size(),
               opts.cache_by_score ? EvictionPolicy::kScore
               : opts.cache_lfu    ? EvictionPolicy::kLfu
                                   : EvictionPolicy::kLru) {
  n_slots_ = worker_slots(sched, opts);
  norm_topk_ = files.config().norm_topk_prob;
  clock_offset_.assign(static_cast<size_t>(comm.size()), 0.0);
  rtt_.assign(static_cast<size_t>(comm.size()), 0.0);
  for (int r = 0; r <= sched.n_workers(); ++r) phys_.push_back(r);
}

DistributedExpertExecutor::~DistributedExpertExecutor() {
  // Main is failing with --on-worker-failure degrade: the launcher keeps the job alive after
  // a failure (mpirun --enable-recovery), so MPI_Abort would not end the other ranks. Tell
  // the live expert ranks to exit now rather than leave them to their timeouts.
  if (finished_ || !opts_.degrade) return;
  try {
    for (int r = 1; r <= sched().n_workers(); ++r) out_.send(phys(r), kTagCmd, msg::Abort{++seq_}.encode());
    const double until = now_s() + 1.0;  // a moment for the sends; a dead rank never takes one
    while (out_.in_flight() > 0 && now_s() < until) {
      out_.reap();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  } catch (...) {
  }
  set_job_degraded();  // no MPI_Finalize with a dead rank, nor MPI_Abort (it ends nothing here)
}

void DistributedExpertExecutor::send_load(int layer, int expert, Placement p) {
  out_.send(phys(p.rank), kTagCmd, msg::Load{layer, expert, p.slot, ++seq_}.encode());
  ++loads_;
}

void DistributedExpertExecutor::send_drop(Placement p) {
  out_.send(phys(p.rank), kTagCmd, msg::Drop{p.slot, ++seq_}.encode());
}

void DistributedExpertExecutor::send(const PlanActions& actions) {
  for (const PlanAction& a : actions) {
    if (a.kind == PlanAction::kLoad) send_load(a.layer, a.expert, a.at);
    else send_drop(a.at);
  }
}

void DistributedExpertExecutor::mark_memory(int64_t mark) {
  for (int r = 1; r <= sched().n_workers(); ++r) out_.send(phys(r), kTagCmd, msg::Mark{mark}.encode());
  out_.reap();
}

void DistributedExpertExecutor::keep_alive() {
  // An expert rank may have nothing to do for long stretches (a group larger than top-k in
  // decode, a long prefill elsewhere); it waits for main only up to --timeout.
  const double now = now_s(), quiet = opts_.timeout_s / 4;
  for (int r = 1; r <= sched().n_workers(); ++r)
    if (now - out_.last_send_s(phys(r)) > quiet) out_.send(phys(r), kTagCmd, msg::KeepAlive{++seq_}.encode());
}

void DistributedExpertExecutor::start() {
  const double t0 = now_s();
  send(planner_.resident_loads());
  const int W = sched().n_workers();
  for (int r = 1; r <= W; ++r) out_.send(r, kTagCmd, msg::Sync{++seq_}.encode());
  for (int r = 1; r <= W; ++r)
    msg::Ready::decode(comm_.recv(r, kTagReply, [&] { return "READY after the initial loads from " + comm_.where(r); },
                                  {}, std::max(opts_.timeout_s, opts_.startup_timeout_s)));
  trace_.add("initial loads", "load", kStreamStep, t0, now_s());
  // Clock offsets (for the trace): the ping-pong with the smallest round trip wins.
  for (int r = 1; r <= W; ++r) {
    double best = 1e30;
    for (int i = 0; i < 8; ++i) {
      const double a = now_s();
      out_.send(r, kTagCmd, msg::Clock{++seq_, 0.0}.encode());
      const msg::Clock reply =
          msg::Clock::decode(comm_.recv(r, kTagReply, [&] { return "a clock reply from " + comm_.where(r); }));
      const double b = now_s();
      if (b - a < best) {
        best = b - a;
        clock_offset_[static_cast<size_t>(r)] = reply.time - 0.5 * (a + b);
      }
    }
    rtt_[static_cast<size_t>(r)] = best;
  }
  out_.reap();
}

void DistributedExpertExecutor::publish(const Prediction& p) {
  if (!loads_on_demand()) return;
  if (p.step == step_ && (prefill_ || p.layer < layers_done_)) return;  // moot or too late
  if (p.step == step_ && p.layer == cur_layer_) return;                    // routed already
  if (!ledger_.publish(p, sched().decode_capacity())) return;
  if (trace_.enabled())  // (the arguments cost a JSON array per prediction)
    trace_.add("prediction S" + std::to_string(p.step) + " L" + std::to_string(p.layer), "predict", kStreamStep, p.time,
               p.time, {{"experts", p.experts}});
  // Loads already out for this layer follow the new prediction.
  send(planner_.follow(p.step, p.layer, ledger_.predicted(p.step, p.layer)));
  pump();
}

void DistributedExpertExecutor::poll_predictor() { predictor_->poll(*this); }

// Dispatches the loads of every group's next layers whose prediction is known: a group
// starts loading its next layer as soon as it has finished its previous one (with
// --lookahead D, its next D layers), across the boundary between forward steps too.
void DistributedExpertExecutor::pump() {
  if (prefill_ || !loads_on_demand() || step_ < 0) return;
  send(planner_.pump(step_, [&](int step, int layer) {
    return ledger_.has_prediction(step, layer) ? &ledger_.predicted(step, layer) : nullptr;
  }));
}

void DistributedExpertExecutor::adjust_routing(int layer, const float* logits, size_t n, size_t k, int32_t* ids,
                                               float* weights) {
  if (!caching() || prefill_ || n != 1) return;
  const size_t E = static_cast<size_t>(n_expert_);
  probs_.resize(E);
  softmax(logits, E, probs_.data());
  planner_.cache().observe_scores(layer, probs_.data());
  if (opts_.substitute < 0) return;
  substitutions_ += static_cast<uint64_t>(
      substitute_experts(probs_.data(), E, k, static_cast<float>(opts_.substitute), norm_topk_,
                         [&](int c) { return planner_.is_cached(step_, layer, c); }, ids, weights));
}

void DistributedExpertExecutor::begin_forward(const int32_t* tokens, size_t n, int pos) {
  ++step_;
  prefill_ = n > 1;
  layers_done_ = 0;
  t_step_ = t_last_ = now_s();
  ledger_.begin_step(step_, !prefill_);
  // Expert-parallel prefill: every expert of a layer, spread over all workers; two layers
  // in flight.
  send(planner_.begin_step(step_, prefill_));
  predictor_->begin_step(step_, pos, tokens, n, *this);
  pump();
  keep_alive();
}

void DistributedExpertExecutor::submit(int layer, const float* h, size_t n, size_t k, const int32_t* ids,
                                       const float* weights) {
  const double t_sub = now_s();
  if (!prefill_) dense_s_ += t_sub - t_last_;
  trace_.add("dense L" + std::to_string(layer), "main", kStreamCompute, t_last_, t_sub);
  cur_layer_ = layer;
  cur_n_ = n;
  cur_k_ = k;
  cur_w_ = weights;
  poll_predictor();  // the latest predictions first: they may still change this layer's loads
  const Users users = users_of(ids, n * k);
  std::vector<int32_t> used;
  for (const auto& [e, _] : users) used.push_back(e);
  ledger_.routed(layer, used);  // predictor accounting (decode steps)
  if (opts_.degrade) {  // kept until collect(): a rank's failure sends the layer again
    const size_t d = static_cast<size_t>(n_embd_);
    cur_h_.assign(h, h + n * d);
    cur_ids_.assign(ids, ids + n * k);
  }
  send_layer(layer, h, k, users);
  keep_alive();
  t_submit_ = now_s();
  // A look-ahead predictor works while the workers compute.
  predictor_->after_routing(step_, layer, h, n, ids, k, *this);
}

DistributedExpertExecutor::Users DistributedExpertExecutor::users_of(const int32_t* ids, size_t pairs) {
  Users users;
  for (size_t i = 0; i < pairs; ++i) users[ids[i]].push_back(i);
  return users;
}

void DistributedExpertExecutor::send_layer(int layer, const float* h, size_t k, const Users& users) {
  const size_t d = static_cast<size_t>(n_embd_);
  std::vector<int> experts;
  for (const auto& [e, _] : users) experts.push_back(e);
  PlanActions loads;
  const RoutedLayer routed =
      planner_.route(step_, layer, prefill_, experts, opts_.miss_on_host, resending_, &loads);
  send(loads);
  std::map<int, int> host;  // expert -> store rank computing it (--miss-policy cpu)
  for (const auto& [e, near] : routed.on_host_near) host[e] = store_.source_of(layer, e, comm_.node_of(phys(near)));

  // COMPUTE: each expert's tokens in mini-batches, in expert order.
  pair_out_.assign(cur_n_ * k * d, 0.0f);
  pending_.clear();
  for (const auto& [e, pairs] : users) {
    const auto hs = host.find(e);
    const Placement p = hs != host.end() ? Placement{hs->second, -1} : routed.at.at(e);
    const auto chunks = expert_chunks(pairs.size(), static_cast<size_t>(opts_.prefill_batch));
    size_t at = 0;
    for (size_t c = 0; c < chunks.size(); ++c) {
      const size_t m = chunks[c];
      // (A miss computed on a store rank names that rank itself.)
      const int dest = hs != host.end() ? p.rank : phys(p.rank);
      Pending pend{dest, e, {}};
      msg::Compute cmd;
      cmd.layer = layer;
      cmd.expert = e;
      cmd.slot = p.slot;
      cmd.n_tokens = static_cast<int32_t>(m);
      cmd.hidden.resize(m * d);
      for (size_t q = 0; q < m; ++q) {
        pend.pairs.push_back(pairs[at + q]);
        std::memcpy(&cmd.hidden[q * d], h + (pairs[at + q] / k) * d, d * 4);
      }
      at += m;
      // On demand (and a prompt's experts in cache mode) the last chunk evicts.
      cmd.host = hs != host.end();
      cmd.last = !cmd.host && loads_on_demand() && (!caching() || prefill_) && c + 1 == chunks.size();
      host_computes_ += cmd.host;
      cmd.seq = ++seq_;
      out_.send(dest, kTagCmd, cmd.encode());
      pending_[cmd.seq] = std::move(pend);
      ++computes_;
    }
  }
}

void DistributedExpertExecutor::collect(float* out) {
  const size_t d = static_cast<size_t>(n_embd_);
  const int layer = cur_layer_;
  while (!pending_.empty()) {
    Message m;
    try {
      m = comm_.recv(MPI_ANY_SOURCE, kTagReply, [&] {
        std::set<int> ranks;
        for (const auto& [_, p] : pending_) ranks.insert(p.rank);
        std::string who;
        for (int r : ranks) who += (who.empty() ? "" : ", ") + comm_.where(r);
        return "the results of layer " + std::to_string(layer) + " from " + who;
      }, [&] { out_.reap(); poll_predictor(); });
    } catch (const Error& e) {
      if (!opts_.degrade || e.code() != "timeout") throw;
      recover(layer, e);  // re-plans over the ranks still alive and sends the layer again
      continue;
    }
    const msg::Result res = msg::Result::decode(m);
    const auto it = pending_.find(res.seq);
    ODMOE_CHECK(it != pending_.end() && it->second.rank == m.source, kMpi, "protocol",
                "unexpected RESULT #" << res.seq << " from " << comm_.where(m.source), "");
    const Pending& p = it->second;
    ODMOE_CHECK(res.out.size() == p.pairs.size() * d, kMpi, "protocol",
                "RESULT from " << comm_.where(m.source) << " has " << res.out.size() << " values, expected "
                               << p.pairs.size() * d, "");
    const float* y = res.out.data();
    for (size_t q = 0; q < p.pairs.size(); ++q) std::memcpy(&pair_out_[p.pairs[q] * d], y + q * d, d * 4);
    pending_.erase(it);
  }
  combine_expert_outputs(pair_out_.data(), cur_w_, cur_n_, cur_k_, d, out);
  const double t = now_s();
  trace_.add("experts L" + std::to_string(layer), "main", kStreamWait, t_submit_, t);
  if (!prefill_) {
    expert_wait_s_ += t - t_submit_;
    ++decode_layers_;
  }
  t_last_ = t;
  ++layers_done_;
  cur_layer_ = -1;
  ledger_.layer_done(t);
  send(planner_.layer_done(step_, layer, prefill_));
  if (layer + 1 == n_layer_) trace_.add("step " + std::to_string(step_), "step", kStreamStep, t_step_, t);
  // The prompt is done: predictions for the first decode step may be dispatched now.
  if (layer + 1 == n_layer_) prefill_ = false;
  poll_predictor();
  pump();
}

}  // namespace odmoe
