// The schedule simulator (schedule_sim.h): an event queue over main, the workers, their
// load paths and main's link, replaying odmoe's decode schedule. Its configuration, Eq. 1
// and the group sweep are sim_config.cpp.
#include "odmoe/sim/schedule_sim.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <queue>
#include <sstream>

#include "odmoe/core/error.h"
#include "odmoe/sched/load_planner.h"
#include "odmoe/sched/schedule.h"

namespace odmoe::sim {

namespace {

// splitmix64: a portable, seedable generator (the standard distributions are not portable).
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  int below(int n) { return static_cast<int>(uniform() * n); }
};

enum class Ev { kMainStart, kRoute, kWorkerMsg, kWorkerWake, kWorkerFree, kWorkerDone, kResult, kCollect, kLayerDone };

struct Event {
  double t;
  uint64_t seq;
  Ev type;
  int a;
  bool operator>(const Event& o) const { return t != o.t ? t > o.t : seq > o.seq; }
};

struct Cmd {
  bool load;     // LOAD (else COMPUTE)
  int idx;       // LOAD: load id; COMPUTE: MoE layer index m
  int load_id;   // COMPUTE: the load it needs (-1: none)
  double arrival;
};

struct Worker {
  std::deque<Cmd> inbox;
  bool busy = false;        // computing, or stalled on a slot
  bool waking = false;      // asleep in its poll loop with a command waiting
  int computing = -1;       // MoE layer of the COMPUTE in progress
  double last_arrival = 0;  // of the last message sent to it (MPI keeps a pair's messages in order)
  double idle_since = 0;    // when it began waiting for its next command
  double loader_post = 0;   // its loader thread: the last pull it posted
  double loader_ready = 0;  //   and when it noticed the last one it finished
  double stall = 0, compute = 0;
};

struct PlanEntry {
  int expert, worker, load_id;  // load_id -1: nothing to load (cached)
};

class Simulation {
 public:
  explicit Simulation(const SimConfig& c) : c_(c), rng_{c.seed * 0x2545f4914f6cdd1dull + 0x1234567ull} {
    G_ = c.n_groups;
    S_ = c.group_size();
    M_ = c.n_moe_layer();
    L_ = c.n_layer;
    cap_ = c.experts_per_worker() * S_;
    n_moe_total_ = static_cast<int64_t>(c.n_tokens) * M_;
    workers_.resize(static_cast<size_t>(c.n_workers));
    link_free_.assign(static_cast<size_t>((c.n_workers + c.workers_per_link - 1) / c.workers_per_link), 0.0);
    draw();
  }

  SimResult run() {
    push(0.0, Ev::kMainStart, 0);
    for (int64_t m : ready_at_start_) mark_ready(static_cast<size_t>(m));
    while (!q_.empty()) {
      const Event e = q_.top();
      q_.pop();
      now_ = e.t;
      switch (e.type) {
        case Ev::kMainStart: main_start(e.a); break;
        case Ev::kRoute: route(static_cast<size_t>(e.a)); break;
        case Ev::kWorkerMsg: arrive(e.a); break;
        case Ev::kWorkerWake:
          workers_[static_cast<size_t>(e.a)].waking = false;
          serve(e.a);
          break;
        case Ev::kWorkerFree:
          workers_[static_cast<size_t>(e.a)].busy = false;
          serve(e.a);
          break;
        case Ev::kWorkerDone: worker_done(e.a); break;
        case Ev::kResult: result(static_cast<size_t>(e.a)); break;
        case Ev::kCollect: collect(static_cast<size_t>(e.a)); break;
        case Ev::kLayerDone: layer_done(e.a); break;
      }
    }
    return finish();
  }

 private:
  // The MoE layer index m (over tokens) of global layer gl, or -1 for a dense layer.
  int64_t moe_of(int64_t gl) const {
    const int64_t s = gl / L_, l = gl % L_;
    return l < c_.n_dense_layer ? -1 : s * M_ + (l - c_.n_dense_layer);
  }
  int64_t global_of(int64_t m) const { return (m / M_) * L_ + c_.n_dense_layer + m % M_; }
  int group_of(int64_t m) const { return static_cast<int>((m % M_) % G_); }
  int worker_of(int group, int i) const { return group * S_ + i; }

  void push(double t, Ev type, int64_t a) { q_.push({t, ++seq_, type, static_cast<int>(a)}); }

  // Routing, predictions, leads and cache hits, all drawn up front.
  void draw() {
    const size_t n = static_cast<size_t>(n_moe_total_);
    route_.resize(n);
    pred_.resize(n);
    has_pred_.assign(n, false);
    ready_.assign(n, false);
    gate_open_.assign(n, false);
    dispatched_.assign(n, false);
    routed_.assign(n, false);
    plan_.resize(n);
    pending_.assign(n, 0);
    route_time_.assign(n, 0.0);
    ready_list_.resize(static_cast<size_t>(c_.n_tokens) * static_cast<size_t>(L_));
    const int E = c_.n_expert, k = c_.top_k;
    const bool predicting = c_.mode != SimMode::kResident && c_.predicted;
    const double recall_given = c_.unpredicted < 1 ? std::min(1.0, c_.recall / (1.0 - c_.unpredicted)) : 0.0;
    double lead_total = 0;
    for (const LeadBucket& b : c_.lead) lead_total += b.weight;
    std::vector<int> perm(static_cast<size_t>(E));
    for (size_t m = 0; m < n; ++m) {
      for (int e = 0; e < E; ++e) perm[static_cast<size_t>(e)] = e;
      for (int j = 0; j < k; ++j) std::swap(perm[static_cast<size_t>(j)], perm[static_cast<size_t>(j + rng_.below(E - j))]);
      route_[m].assign(perm.begin(), perm.begin() + k);
      if (!predicting) continue;
      if (rng_.uniform() < c_.unpredicted) continue;
      has_pred_[m] = true;
      // Routed experts it names, then wrong guesses up to k (what a top-k predictor names).
      std::vector<int>& p = pred_[m];
      for (int j = 0; j < k; ++j)
        if (rng_.uniform() < recall_given) p.push_back(route_[m][static_cast<size_t>(j)]);
      std::vector<int> others(perm.begin() + k, perm.end());
      for (size_t j = 0; j < others.size() && static_cast<int>(p.size()) < k; ++j) {
        std::swap(others[j], others[j + static_cast<size_t>(rng_.below(static_cast<int>(others.size() - j)))]);
        p.push_back(others[j]);
      }
      if (static_cast<int>(p.size()) > cap_) p.resize(static_cast<size_t>(cap_));
      // Its lead: a bucket by weight, a fractional lead rounded up with its fraction.
      double lead = 0;
      if (lead_total > 0) {
        double u = rng_.uniform() * lead_total;
        for (const LeadBucket& b : c_.lead) {
          lead = b.layers;
          if ((u -= b.weight) < 0) break;
        }
      }
      const double fl = std::floor(lead);
      const int64_t lead_layers = static_cast<int64_t>(fl) + (rng_.uniform() < lead - fl ? 1 : 0);
      const int64_t gl = global_of(static_cast<int64_t>(m));
      // A prediction is published for the current or the next token only (the runtime's ledger).
      const int64_t at = c_.lead_tokens >= 0 ? (gl / L_ - c_.lead_tokens) * L_
                                             : std::max(gl - lead_layers, (gl / L_ - 1) * L_);
      if (at <= 0) ready_at_start_.push_back(static_cast<int64_t>(m));
      else ready_list_[static_cast<size_t>(at)].push_back(static_cast<int64_t>(m));
    }
    // Slot banks: layer m may load once main has collected the same group's layer
    // `lookahead` rounds earlier. A group's rounds, across tokens, are the runtime's own
    // (LoadPlanner::next_of_group over the MoE layers; m is the planner's global layer).
    gate_next_.assign(n, -1);
    const LoadPlanner planner(Schedule(M_, c_.n_expert, c_.top_k, c_.n_workers, G_, c_.lookahead),
                              c_.mode, 0, c_.n_workers + 1, EvictionPolicy::kLru);
    for (int g = 0; g < std::min(G_, M_); ++g) {
      std::vector<int64_t> rounds;  // the group's layers in order
      for (int64_t m = planner.global(0, g); m < n_moe_total_; m = planner.next_of_group(m)) rounds.push_back(m);
      for (size_t i = 0; i < rounds.size(); ++i) {
        if (i < static_cast<size_t>(c_.lookahead)) gate_open_[static_cast<size_t>(rounds[i])] = true;
        else gate_next_[static_cast<size_t>(rounds[i - static_cast<size_t>(c_.lookahead)])] = rounds[i];
      }
    }
  }

  bool cached(size_t m, int e) {
    if (c_.mode != SimMode::kCache) return false;
    // A deterministic coin per (layer, expert): the same expert is a hit or a miss whether it
    // was prefetched or is loaded after routing.
    Rng r{c_.seed ^ (static_cast<uint64_t>(m) * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(e) * 0xc2b2ae3d27d4eb4full)};
    return r.uniform() < c_.cache_hit_rate;
  }

  // Main -> worker: messages between one pair never overtake each other (MPI order).
  void send(int w, Cmd cmd, double t_arrive) {
    Worker& wk = workers_[static_cast<size_t>(w)];
    cmd.arrival = std::max(t_arrive, wk.last_arrival);
    wk.last_arrival = cmd.arrival;
    wk.inbox.push_back(cmd);
    push(cmd.arrival, Ev::kWorkerMsg, w);
  }

  int new_load(int w, double t_send) {
    loads_.push_back({w, -1.0});
    ++n_loads_;
    send(w, {true, static_cast<int>(loads_.size() - 1), -1, 0}, t_send + c_.msg_latency_s);
    return static_cast<int>(loads_.size() - 1);
  }

  void mark_ready(size_t m) {
    ready_[m] = true;
    try_dispatch(m);
  }

  void try_dispatch(size_t m) {
    if (!has_pred_[m] || !ready_[m] || !gate_open_[m] || dispatched_[m] || routed_[m]) return;
    dispatched_[m] = true;
    const int g = group_of(static_cast<int64_t>(m));
    const std::vector<int>& p = pred_[m];
    for (size_t j = 0; j < p.size(); ++j) {
      const int w = worker_of(g, static_cast<int>(j) % S_);
      plan_[m].push_back({p[j], w, cached(m, p[j]) ? -1 : new_load(w, now_)});
    }
  }

  void main_start(int64_t gl) {
    for (int64_t m : ready_list_[static_cast<size_t>(gl)]) mark_ready(static_cast<size_t>(m));
    const int64_t m = moe_of(gl);
    if (m < 0) {
      main_busy_ += c_.t_dense_layer_s;
      push(now_ + c_.t_dense_layer_s, Ev::kLayerDone, gl);
      return;
    }
    main_busy_ += c_.t_main_s;
    push(now_ + c_.t_main_s, Ev::kRoute, m);
  }

  void route(size_t m) {
    routed_[m] = true;
    const int g = group_of(static_cast<int64_t>(m));
    const std::vector<int>& want = route_[m];
    std::vector<std::pair<int, int>> work;  // (worker, load id) per routed expert, routing order

    if (c_.mode == SimMode::kResident) {
      for (int e : want) work.push_back({worker_of(g, e % S_), -1});
    } else {
      // Places 0..cap-1 (place j: worker j mod S); the predicted experts that were routed
      // keep theirs, wrong guesses are dropped (their pulls still occupy the link), misses
      // take the free places in order and are loaded now.
      std::vector<bool> used(static_cast<size_t>(cap_), false);
      std::vector<int> slot_of(want.size(), -1);
      for (size_t i = 0; i < want.size(); ++i)
        for (size_t j = 0; j < plan_[m].size(); ++j)
          if (plan_[m][j].expert == want[i]) {
            used[j] = true;
            slot_of[i] = static_cast<int>(j);
          }
      std::vector<std::pair<int, int>> misses;  // (index into want, place)
      size_t next_free = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        if (slot_of[i] >= 0) continue;
        while (next_free < used.size() && used[next_free]) ++next_free;
        used[next_free] = true;
        misses.push_back({static_cast<int>(i), static_cast<int>(next_free)});
      }
      work.assign(want.size(), {-1, -1});
      for (size_t i = 0; i < want.size(); ++i)
        if (slot_of[i] >= 0) {
          const PlanEntry& pe = plan_[m][static_cast<size_t>(slot_of[i])];
          work[i] = {pe.worker, pe.load_id};
        }
      std::vector<int> need;  // misses that are not cached: loaded now
      for (const auto& [i, place] : misses)
        if (!cached(m, want[static_cast<size_t>(i)])) need.push_back(i);
      for (const auto& [i, place] : misses) {  // the LOADs go out before the COMPUTEs
        const int w = worker_of(g, place % S_);
        const bool hit = std::find(need.begin(), need.end(), i) == need.end();
        work[static_cast<size_t>(i)] = {w, hit ? -1 : new_load(w, now_)};
        if (!hit) ++n_misses_;
      }
    }
    const double xfer = c_.net_gbps > 0 ? c_.act_bytes * 8.0 / (c_.net_gbps * 1e9) : 0.0;
    for (const auto& [w, load_id] : work) {
      // Activations leave main one after another over its link.
      const double start = std::max(now_, tx_free_);
      tx_free_ = start + xfer;
      send(w, {false, static_cast<int>(m), load_id, 0}, tx_free_ + c_.msg_latency_s);
    }
    // Main's own work of the layer (t_submit) runs beside the expert phase; the layer is
    // collected when both are done.
    main_busy_ += c_.t_submit_s;
    main_free_ = now_ + c_.t_submit_s;
    route_time_[m] = now_;
    pending_[m] = static_cast<int>(work.size());
    main_seen_ = now_;  // main starts waiting for the results
  }

  // A command reaches a worker: an idle worker notices it at its next poll.
  void arrive(int w) {
    Worker& wk = workers_[static_cast<size_t>(w)];
    if (wk.busy || wk.waking || wk.inbox.empty() || wk.inbox.front().arrival > now_) return;
    const double t = c_.poll.messages ? c_.poll.notice(wk.idle_since, now_) : now_;
    if (t > now_) {
      wk.waking = true;
      push(t, Ev::kWorkerWake, w);
      return;
    }
    serve(w);
  }

  // A worker takes its commands in order; LOAD only hands a pull to its loader thread.
  void serve(int w) {
    Worker& wk = workers_[static_cast<size_t>(w)];
    while (!wk.busy && !wk.inbox.empty() && wk.inbox.front().arrival <= now_) {
      const Cmd cmd = wk.inbox.front();
      wk.inbox.pop_front();
      wk.idle_since = now_;
      if (cmd.load) {
        // The loader posts the pull: at once if it is busy with others (at its next poll),
        // else once it has woken up. The pull then queues on the load path; the loader
        // notices it finished at its next poll.
        const bool active = now_ < wk.loader_ready;
        const double post = c_.pull_start_s + (active ? (c_.poll.loads ? c_.poll.notice(wk.loader_post, now_) : now_)
                                                       : now_ + c_.poll.wake_s);
        double& free = link_free_[static_cast<size_t>(w / c_.workers_per_link)];
        const double start = std::max(post, free);
        free = start + c_.pull_seconds();
        const double ready =
            c_.pull_notice_s + (c_.poll.loads ? c_.poll.notice(std::max(post, active ? wk.loader_ready : post), free) : free);
        wk.loader_post = post;
        wk.loader_ready = std::max(wk.loader_ready, ready);
        loads_[static_cast<size_t>(cmd.idx)].second = ready;
        load_seconds_ += ready - post;
        if (c_.pull_post_s > 0 && post + c_.pull_post_s > now_) {  // held while the pull is posted
          wk.busy = true;
          push(post + c_.pull_post_s, Ev::kWorkerFree, w);
          return;
        }
        continue;
      }
      const double ready = cmd.load_id >= 0 ? loads_[static_cast<size_t>(cmd.load_id)].second : now_;
      const double start = ready <= now_ ? now_ : c_.poll.loads ? c_.poll.notice(now_, ready) : ready;
      wk.stall += start - now_;
      wk.compute += c_.t_expert_s;
      wk.busy = true;
      wk.computing = cmd.idx;
      push(start + c_.t_expert_s, Ev::kWorkerDone, w);
    }
  }

  void worker_done(int w) {
    Worker& wk = workers_[static_cast<size_t>(w)];
    wk.busy = false;
    wk.idle_since = now_;
    const double xfer = c_.net_gbps > 0 ? c_.act_bytes * 8.0 / (c_.net_gbps * 1e9) : 0.0;
    // Results arrive one after another over main's link.
    const double start = std::max(now_, rx_free_);
    rx_free_ = start + xfer;
    push(rx_free_ + c_.msg_latency_s, Ev::kResult, wk.computing);
    wk.computing = -1;
    serve(w);  // commands that came meanwhile are found by the first poll
  }

  // A result reaches main, which notices it at its next poll (a new wait per result).
  void result(size_t m) {
    const double seen = !c_.poll.messages || now_ <= main_seen_ ? std::max(now_, main_seen_) : c_.poll.notice(main_seen_, now_);
    main_seen_ = seen;
    if (--pending_[m] == 0) push(std::max(seen, main_free_), Ev::kCollect, static_cast<int64_t>(m));
  }

  void collect(size_t m) {
    expert_wait_ += now_ - route_time_[m];
    // The group's slot bank for its layer `lookahead` rounds on is free now.
    const int64_t next = gate_next_[m];
    if (next >= 0) {
      gate_open_[static_cast<size_t>(next)] = true;
      try_dispatch(static_cast<size_t>(next));
    }
    layer_done(global_of(static_cast<int64_t>(m)));
  }

  void layer_done(int64_t gl) {
    const int64_t next = gl + 1;
    if (next % L_ == 0) {  // the token is complete: LM head, sampling
      main_busy_ += c_.t_step_s;
      if (next / L_ >= c_.n_tokens) {
        end_ = now_ + c_.t_step_s;
        return;
      }
      push(now_ + c_.t_step_s, Ev::kMainStart, next);
      return;
    }
    push(now_, Ev::kMainStart, next);
  }

  SimResult finish() const {
    SimResult r;
    r.wall_seconds = end_;
    r.seconds_per_token = end_ / c_.n_tokens;
    r.tokens_per_second = end_ > 0 ? c_.n_tokens / end_ : 0.0;
    double stall = 0, busy = 0;
    for (const Worker& w : workers_) {
      stall += w.stall;
      busy += w.compute;
    }
    const double W = c_.n_workers;
    r.main_busy_fraction = end_ > 0 ? main_busy_ / end_ : 0.0;
    r.worker_stall_fraction = end_ > 0 ? stall / (W * end_) : 0.0;
    r.worker_busy_fraction = end_ > 0 ? busy / (W * end_) : 0.0;
    r.stall_seconds = stall;
    r.load_seconds = load_seconds_;
    r.load_hidden_fraction = load_seconds_ > 0 ? std::max(0.0, 1.0 - stall / load_seconds_) : 1.0;
    const double n_moe = static_cast<double>(n_moe_total_);
    r.expert_phase_s = n_moe > 0 ? expert_wait_ / n_moe : 0.0;
    r.loads_per_token = static_cast<double>(n_loads_) / c_.n_tokens;
    r.misses_per_token = static_cast<double>(n_misses_) / c_.n_tokens;
    return r;
  }

  const SimConfig& c_;
  Rng rng_;
  int G_ = 1, S_ = 1, M_ = 1, L_ = 1, cap_ = 1;
  int64_t n_moe_total_ = 0;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> q_;
  uint64_t seq_ = 0;
  double now_ = 0, end_ = 0, main_seen_ = 0, main_free_ = 0;
  double tx_free_ = 0, rx_free_ = 0;
  std::vector<Worker> workers_;
  std::vector<double> link_free_;
  std::vector<std::pair<int, double>> loads_;  // (worker, time the pull completes; -1 until it is queued)

  std::vector<std::vector<int>> route_, pred_;
  std::vector<bool> has_pred_, ready_, gate_open_, dispatched_, routed_;
  std::vector<int64_t> gate_next_;
  std::vector<std::vector<PlanEntry>> plan_;
  std::vector<int> pending_;
  std::vector<double> route_time_;
  std::vector<std::vector<int64_t>> ready_list_;  // [global layer]: MoE layers whose prediction is ready when main starts it
  std::vector<int64_t> ready_at_start_;

  double main_busy_ = 0, expert_wait_ = 0, load_seconds_ = 0;
  uint64_t n_loads_ = 0, n_misses_ = 0;
};

}  // namespace

SimResult simulate(const SimConfig& c) {
  SimResult r = Simulation(c).run();
  r.eq1 = eq1(c);
  SimConfig res = c;
  res.mode = SimMode::kResident;
  const SimResult rr = c.mode == SimMode::kResident ? r : Simulation(res).run();
  r.resident_tokens_per_second = rr.tokens_per_second;
  // Main's wait per MoE layer beyond the resident expert phase: what loading costs.
  r.stall_per_layer_s = std::max(0.0, r.expert_phase_s - rr.expert_phase_s);
  return r;
}


}  // namespace odmoe::sim
