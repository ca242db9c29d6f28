// The load planner (load_planner.h): the decisions of main's executor, apart from sending.
#include "odmoe/sched/load_planner.h"

#include <algorithm>

#include "odmoe/core/error.h"

namespace odmoe {

LoadPlanner::LoadPlanner(const Schedule& sched, Mode mode, int cache_slots, int n_ranks, EvictionPolicy policy)
    : sched_(sched), mode_(mode), n_cache_(cache_slots),
      cache_(n_ranks, cache_slots, sched.n_layer(), sched.n_expert(), policy) {
  plan_.resize(static_cast<size_t>(2 * sched.n_layer()));
  dispatched_.assign(plan_.size(), false);
  // Before any step: group g's first layer is layer g.
  for (int g = 0; g < sched.n_groups(); ++g) group_next_.push_back(g < sched.n_layer() ? global(0, g) : kNoLayer);
}

PlanActions LoadPlanner::resident_loads() {
  PlanActions out;
  if (mode_ != Mode::kResident) return out;
  for (int l = 0; l < sched_.n_layer(); ++l)
    for (int e = 0; e < sched_.n_expert(); ++e) out.push_back({PlanAction::kLoad, l, e, sched_.resident_place(l, e)});
  return out;
}

int64_t LoadPlanner::next_of_group(int64_t gl) const {
  const int64_t L = sched_.n_layer(), step = gl / L, layer = gl % L, G = sched_.n_groups();
  return layer + G < L ? gl + G : (step + 1) * L + layer % G;
}

Placement LoadPlanner::place(int step, int layer, int j) const {
  // The group's round: how many layers it has computed before this one, over all steps.
  const int G = sched_.n_groups(), g = layer % G;
  const int64_t rounds_per_step = (sched_.n_layer() - g + G - 1) / G;
  const int64_t round = static_cast<int64_t>(step) * rounds_per_step + layer / G;
  return sched_.decode_place(layer, j, static_cast<int>(round % sched_.lookahead()));
}

Placement LoadPlanner::free_place(int step, int layer) const {
  const auto& plan = plan_[ring(step, layer)];
  for (int j = 0; j < sched_.decode_capacity(); ++j) {
    const Placement c = place(step, layer, j);
    if (std::none_of(plan.begin(), plan.end(), [&](const auto& kv) { return kv.second == c; })) return c;
  }
  return {};
}

Placement LoadPlanner::prefill_place(int layer, int expert) const {
  Placement p = sched_.prefill_place(layer, expert);
  p.slot += n_cache_;
  return p;
}

void LoadPlanner::clear_ring(int step, PlanActions* out) {
  for (int l = 0; l < sched_.n_layer(); ++l) {
    const size_t r = ring(step, l);
    if (!caching())
      for (const auto& [e, p] : plan_[r]) out->push_back({PlanAction::kDrop, -1, -1, p});
    plan_[r].clear();
    dispatched_[r] = false;
  }
}

void LoadPlanner::dispatch_prefill_layer(int step, int layer, PlanActions* out) {
  if (layer >= sched_.n_layer()) return;
  auto& plan = plan_[ring(step, layer)];
  for (int e = 0; e < sched_.n_expert(); ++e) {
    const Placement p = prefill_place(layer, e);
    out->push_back({PlanAction::kLoad, layer, e, p});
    plan[e] = p;
  }
  dispatched_[ring(step, layer)] = true;
}

PlanActions LoadPlanner::begin_step(int step, bool prefill) {
  PlanActions out;
  if (!on_demand()) return out;
  clear_ring(step + 1, &out);  // held step - 1, which is over
  if (prefill) {
    // Loads made ahead for this step as a decode step are of no use to a prefill.
    clear_ring(step, &out);
    dispatch_prefill_layer(step, 0, &out);
    dispatch_prefill_layer(step, 1, &out);
  }
  return out;
}

bool LoadPlanner::pinned(Placement p) const {
  for (const auto& plan : plan_)
    for (const auto& [_, q] : plan)
      if (q == p) return true;
  return false;
}

Placement LoadPlanner::cache_place(int layer, int e, bool* hit, bool optional, PlanActions* out) {
  const int rank = cache_home(layer, e);
  const int held = cache_.find(rank, layer, e);
  *hit = held >= 0;
  if (*hit) return {rank, held};
  bool evicted = false;
  const int slot = cache_.admit(rank, layer, e, [&](int s) { return pinned({rank, s}); }, &evicted);
  if (slot < 0 && optional) return {};
  ODMOE_CHECK(slot >= 0, kCli, "cache-too-small",
              "expert rank " << rank << " has no cache slot free for expert (" << layer << ", " << e << "): all "
                             << n_cache_ << " hold experts of layers in flight",
              "raise --cache-slots");
  counts_.cache_evictions += evicted;
  out->push_back({PlanAction::kLoad, layer, e, {rank, slot}});
  return {rank, slot};
}

void LoadPlanner::dispatch(int step, int layer, const std::vector<int32_t>& want, PlanActions* out) {
  const size_t r = ring(step, layer);
  dispatched_[r] = true;
  auto& plan = plan_[r];
  for (auto it = plan.begin(); it != plan.end();) {
    if (std::find(want.begin(), want.end(), it->first) != want.end()) {
      ++it;
      continue;
    }
    // A cached expert stays cached; it is just not pinned.
    if (!caching()) out->push_back({PlanAction::kDrop, -1, -1, it->second});
    ++counts_.wasted_loads;
    it = plan.erase(it);
  }
  for (int32_t e : want) {
    if (plan.count(e)) continue;
    if (caching()) {
      bool hit = false;
      const Placement c = cache_place(layer, e, &hit, true, out);
      if (c.rank < 0) continue;  // no slot to spare for a guess
      plan[e] = c;
      counts_.cache_prefetches += !hit;
      continue;
    }
    const Placement c = free_place(step, layer);
    if (c.rank < 0) break;
    out->push_back({PlanAction::kLoad, layer, e, c});
    plan[e] = c;
  }
}

PlanActions LoadPlanner::follow(int step, int layer, const std::vector<int32_t>& want) {
  PlanActions out;
  if (on_demand() && dispatched_[ring(step, layer)]) dispatch(step, layer, want, &out);
  return out;
}

PlanActions LoadPlanner::pump(int step, const Predicted& predicted) {
  PlanActions out;
  if (!on_demand() || step < 0) return out;
  const int L = sched_.n_layer();
  for (int g = 0; g < sched_.n_groups(); ++g) {
    int64_t gl = group_next_[static_cast<size_t>(g)];
    if (gl == kNoLayer) continue;
    for (int i = 0; i < sched_.lookahead(); ++i, gl = next_of_group(gl)) {
      const int s = static_cast<int>(gl / L), layer = static_cast<int>(gl % L);
      if (s > step + 1) break;
      if (dispatched_[ring(s, layer)]) continue;
      const std::vector<int32_t>* want = predicted(s, layer);
      if (want) dispatch(s, layer, *want, &out);
    }
  }
  return out;
}

RoutedLayer LoadPlanner::route(int step, int layer, bool prefill, const std::vector<int>& experts, bool on_host,
                               bool again, PlanActions* out) {
  RoutedLayer routed;
  if (!on_demand()) {
    for (int e : experts) routed.at[e] = sched_.resident_place(layer, e);
    return routed;
  }
  auto& plan = plan_[ring(step, layer)];
  // Drop loads nobody needs (mispredictions), then load what is missing.
  for (auto it = plan.begin(); it != plan.end();) {
    if (std::binary_search(experts.begin(), experts.end(), it->first)) {
      ++it;
      continue;
    }
    if (!caching() || prefill) out->push_back({PlanAction::kDrop, -1, -1, it->second});
    if (!prefill) ++counts_.wasted_loads;  // a prompt loads every expert of a layer by design
    it = plan.erase(it);
  }
  dispatched_[ring(step, layer)] = true;  // late predictions for it are moot
  for (int e : experts) {
    if (plan.count(e)) continue;
    if (!prefill && on_host) {
      // A miss: the store rank nearest the group computes it from its own copy; nothing
      // is loaded.
      const Placement would = free_place(step, layer);
      routed.on_host_near[e] = would.rank >= 0 ? would.rank : place(step, layer, 0).rank;
      continue;
    }
    Placement p;
    if (prefill) {
      p = prefill_place(layer, e);
    } else if (caching()) {
      bool hit = false;
      plan[e] = cache_place(layer, e, &hit, false, out);
      counts_.cache_misses += !hit;  // loaded now, after routing: a stall
      continue;
    } else {
      p = free_place(step, layer);
      ODMOE_CHECK(p.rank >= 0, kMpi, "no-slot", "no free slot for expert (" << layer << ", " << e << ")",
                  "this is a bug in the scheduler");
    }
    out->push_back({PlanAction::kLoad, layer, e, p});
    plan[e] = p;
  }
  for (int e : experts)
    if (!routed.on_host_near.count(e)) routed.at[e] = plan.at(e);
  if (caching() && !prefill && !again)
    for (int e : experts) {
      ++counts_.cache_needed;
      const Placement p = plan.at(e);
      cache_.touch(p.rank, p.slot);
    }
  return routed;
}

PlanActions LoadPlanner::layer_done(int step, int layer, bool prefill) {
  PlanActions out;
  if (!on_demand()) return out;
  // The layer's slots were freed by the last COMPUTE of each expert (cache mode: the
  // experts stay, no longer pinned).
  plan_[ring(step, layer)].clear();
  if (prefill) {
    dispatch_prefill_layer(step, layer + 2, &out);
    if (layer + 1 == sched_.n_layer())  // decode starts: group g's next layer is layer g of the next step
      for (int g = 0; g < sched_.n_groups(); ++g)
        group_next_[static_cast<size_t>(g)] = g < sched_.n_layer() ? global(step + 1, g) : kNoLayer;
  } else {
    group_next_[static_cast<size_t>(sched_.group_of_layer(layer))] = next_of_group(global(step, layer));
  }
  return out;
}

bool LoadPlanner::is_cached(int step, int layer, int e) const {
  if (plan_[ring(step, layer)].count(e)) return true;  // prefetched for this layer (maybe still loading)
  return cache_.find(cache_home(layer, e), layer, e) >= 0;
}

PlanActions LoadPlanner::replan(const Schedule& next, int cache_slots, int n_ranks, int step, int layer,
                                bool prefill) {
  ODMOE_CHECK(next.n_layer() == sched_.n_layer() && next.n_expert() == sched_.n_expert(), kCore, "bad-replan",
              "a re-plan must keep the model's shape", "");
  sched_ = next;
  n_cache_ = cache_slots;
  cache_.clear(n_ranks, cache_slots);
  for (auto& plan : plan_) plan.clear();
  std::fill(dispatched_.begin(), dispatched_.end(), false);
  // Where each group's next layer is, from this layer on.
  const int G = sched_.n_groups(), L = sched_.n_layer();
  group_next_.assign(static_cast<size_t>(G), 0);
  for (int g = 0; g < G; ++g) {
    int l = layer;
    while (l < L && l % G != g) ++l;
    group_next_[static_cast<size_t>(g)] = l < L ? global(step, l) : g < L ? global(step + 1, g) : kNoLayer;
  }
  PlanActions out;
  if (prefill && on_demand()) {
    dispatch_prefill_layer(step, layer, &out);
    dispatch_prefill_layer(step, layer + 1, &out);
  }
  return out;
}

}  // namespace odmoe
