#include "odmoe/exec/options.h"

#include <algorithm>

#include "odmoe/core/error.h"

namespace odmoe {

int cache_slots(const Schedule& sched, const DistOptions& opts) {
  if (opts.mode != Mode::kCache) return 0;
  // Default: a quarter of the experts the rank's group serves, per rank; at least enough
  // for two layers' top-k.
  const int layers_of_group = (sched.n_layer() + sched.n_groups() - 1) / sched.n_groups();
  const int share = layers_of_group * sched.n_expert() / sched.group_size();
  const int n = opts.cache_slots > 0 ? opts.cache_slots : std::max(share / 4, 1);
  // A layer's top-k may all live on one rank, for each layer a group has in flight.
  return std::max(n, sched.top_k() * sched.lookahead());
}

int worker_slots(const Schedule& sched, const DistOptions& opts) {
  switch (opts.mode) {
    case Mode::kResident: return sched.resident_slots();
    case Mode::kCache: return cache_slots(sched, opts) + 2 * sched.prefill_slots_per_bank();
    default: return sched.on_demand_slots();
  }
}

}  // namespace odmoe
