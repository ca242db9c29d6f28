// The load planner: which expert is loaded into which slot of which expert rank, and when.
// Pure policy (no MPI, no clock): main's executor tells it what happened (a step began, a
// prediction came, a layer was routed or collected, a rank failed), it answers with the
// loads and drops to send, and the executor sends them in that order. The unit tests drive
// it directly.
//
// Decode layers are numbered over steps: layer l of step s is global layer s*L + l. Group g
// computes layers g, g+G, ...; a group loads its next --lookahead layers while it computes,
// across the boundary between steps too (pump), each in the bank of decode slots its round
// (layers it computed before, over all steps) names. Loads are kept for two steps, in a ring
// indexed [step & 1][layer]: expert -> Placement.
//
// Prefill (a prompt): every expert of a layer, spread over all expert ranks, in two banks of
// prefill slots after the cache's slots; two layers in flight.
//
// Cache mode: the experts stay in each rank's cache slots (ExpertCache decides which one to
// evict); a drop only unpins them.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include "odmoe/sched/expert_cache.h"
#include "odmoe/sched/schedule.h"

namespace odmoe {

// One command for main to send: load (layer, expert) into `at`, or free the slot `at`.
struct PlanAction {
  enum Kind { kLoad, kDrop };
  Kind kind = kLoad;
  int layer = -1, expert = -1;  // kLoad only
  Placement at;                  // rank: the schedule's expert rank index (1..W)
  bool operator==(const PlanAction& o) const {
    return kind == o.kind && layer == o.layer && expert == o.expert && at == o.at;
  }
};
using PlanActions = std::vector<PlanAction>;

// Where a routed layer's experts are computed.
struct RoutedLayer {
  std::map<int, Placement> at;  // expert -> its place (resident, loaded, cached)
  // --miss-policy cpu: expert -> the expert rank (schedule index) whose node the store rank
  // computing the miss should be nearest; such an expert has no place in `at`.
  std::map<int, int> on_host_near;
};

// The counts the statistics report.
struct PlannerCounts {
  uint64_t wasted_loads = 0;     // loads of experts the routing did not use (decode)
  uint64_t cache_needed = 0;     // cache mode: decode experts routed
  uint64_t cache_misses = 0;     // cache mode: of those, loaded only after routing (a stall)
  uint64_t cache_evictions = 0;  // cache mode: experts evicted for another
  uint64_t cache_prefetches = 0; // cache mode: loads made ahead on a prediction
};

class LoadPlanner {
 public:
  // `n_ranks`: indices the cache keeps slots for (the executor's MPI ranks; at least W + 1).
  LoadPlanner(const Schedule& sched, Mode mode, int cache_slots, int n_ranks, EvictionPolicy policy);

  const Schedule& schedule() const { return sched_; }
  Mode mode() const { return mode_; }
  int cache_slots() const { return n_cache_; }
  const ExpertCache& cache() const { return cache_; }
  ExpertCache& cache() { return cache_; }
  const PlannerCounts& counts() const { return counts_; }

  // Resident mode, at start-up: every expert's one load.
  PlanActions resident_loads();

  // Forward step `step` begins (`prefill`: a prompt of several tokens). Forgets step - 1's
  // loads (and, for a prompt, loads made ahead for this step as a decode step), and starts a
  // prompt's first two layers.
  PlanActions begin_step(int step, bool prefill);

  // Predictions, by (step, layer): the experts to load, best first, or nullptr when none is
  // known yet.
  using Predicted = std::function<const std::vector<int32_t>*(int step, int layer)>;

  // A prediction for (step, layer) arrived: a layer already dispatched follows it (loads
  // dropped or added). Nothing when it is not dispatched yet (pump() will).
  PlanActions follow(int step, int layer, const std::vector<int32_t>& want);
  // Every group's next --lookahead layers with a known prediction and no loads yet get
  // them (decode only; `step` is the current step, a group looks at most one step ahead).
  PlanActions pump(int step, const Predicted& predicted);

  // `layer` of `step` is routed to `experts` (ascending). Drops loads nobody needs, loads
  // what is missing (cache mode: admits to the cache), and says where each expert is
  // computed. `on_host`: --miss-policy cpu (a decode miss is computed on a store rank).
  // `again`: the layer is sent again after a failure (cache uses are not counted twice).
  RoutedLayer route(int step, int layer, bool prefill, const std::vector<int>& experts, bool on_host, bool again,
                    PlanActions* out);

  // `layer` of `step` is collected: its slots were freed by the last COMPUTEs. A prompt
  // starts layer + 2; decode moves the group's next layer on.
  PlanActions layer_done(int step, int layer, bool prefill);

  // Cache mode: whether expert (layer, e) is cached or being loaded for `step`.
  bool is_cached(int step, int layer, int e) const;

  // After expert ranks failed: the new schedule over the survivors (`cache_slots` each);
  // forgets every load and the cache, and numbers each group's next layer from (step,
  // layer) on. A prompt's `layer` and the next are loaded again.
  PlanActions replan(const Schedule& next, int cache_slots, int n_ranks, int step, int layer, bool prefill);

  // The rule of the ring, the rounds and the banks (public for the tests and the simulator).
  int64_t global(int step, int layer) const { return static_cast<int64_t>(step) * sched_.n_layer() + layer; }
  int64_t next_of_group(int64_t gl) const;             // the next global layer the same group computes
  Placement place(int step, int layer, int j) const;  // j-th decode place of (step, layer), bank by the round
  // The next global layer group g computes; kNoLayer for a group with no layer (more
  // groups than layers).
  int64_t group_next(int g) const { return group_next_[static_cast<size_t>(g)]; }
  static constexpr int64_t kNoLayer = -1;
  bool dispatched(int step, int layer) const { return dispatched_[ring(step, layer)]; }
  const std::map<int, Placement>& plan(int step, int layer) const { return plan_[ring(step, layer)]; }

 private:
  size_t ring(int step, int layer) const { return static_cast<size_t>((step & 1) * sched_.n_layer() + layer); }
  bool on_demand() const { return mode_ != Mode::kResident; }
  bool caching() const { return mode_ == Mode::kCache; }
  void clear_ring(int step, PlanActions* out);
  void dispatch(int step, int layer, const std::vector<int32_t>& want, PlanActions* out);
  void dispatch_prefill_layer(int step, int layer, PlanActions* out);
  Placement free_place(int step, int layer) const;
  Placement prefill_place(int layer, int expert) const;
  int cache_home(int layer, int e) const {  // spreads a layer's experts over its group
    return sched_.worker_rank(sched_.group_of_layer(layer), (e + layer) % sched_.group_size());
  }
  bool pinned(Placement p) const;
  // Cache mode: the slot of expert (layer, e) on its home rank, loading it when it is not
  // cached (*hit says whether it was). `optional` (a prefetch): rank -1 when every slot is
  // pinned, instead of an error.
  Placement cache_place(int layer, int e, bool* hit, bool optional, PlanActions* out);

  Schedule sched_;
  Mode mode_;
  int n_cache_;
  ExpertCache cache_;
  std::vector<std::map<int, Placement>> plan_;  // [ring]: expert -> where it is (being) loaded
  std::vector<bool> dispatched_;                // [ring]: loads sent for the layer
  std::vector<int64_t> group_next_;             // [group]: the next global layer the group computes
  PlannerCounts counts_;
};

}  // namespace odmoe
