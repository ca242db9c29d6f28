// Cache mode's policy (--mode cache): what each expert rank's cache slots hold, which expert
// to evict for a new one, and importance-driven substitution. Pure: no MPI, no clock; main's
// executor asks it and sends the loads it decides, and the unit tests drive it directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace odmoe {

enum class EvictionPolicy {
  kLru,    // the least recently used expert
  kLfu,    // the least frequently used (ties: least recently)
  kScore,  // the lowest recent average gate score (ties: least recently); goes with substitution
};
const char* eviction_policy_name(EvictionPolicy p);

class ExpertCache {
 public:
  // `n_ranks` ranks (indices 0..n_ranks-1; the executor uses the MPI rank) of `slots` cache
  // slots each, for a model of `n_layer` x `n_expert` experts.
  ExpertCache(int n_ranks, int slots, int n_layer, int n_expert, EvictionPolicy policy);

  int slots() const { return slots_; }
  EvictionPolicy policy() const { return policy_; }
  // The slot of `rank` that holds expert (layer, e), or -1.
  int find(int rank, int layer, int e) const;
  // Chooses a slot of `rank` for expert (layer, e), which it must not hold yet: the first
  // empty slot, else the policy's victim; slots for which `pinned` is true (experts of layers
  // in flight) are never chosen. Records the expert there as just used; *evicted tells
  // whether another expert was dropped for it. Returns -1 when every slot is pinned.
  int admit(int rank, int layer, int e, const std::function<bool(int slot)>& pinned, bool* evicted);
  // A decode use of the expert in (rank, slot): its recency and use count.
  void touch(int rank, int slot);
  // One decode token's routing probabilities of `layer` ([n_expert]), folded into the recent
  // average score that kScore evicts by: avg = 0.9 avg + 0.1 p.
  void observe_scores(int layer, const float* probs);
  float score(int layer, int e) const { return score_avg_[index(layer, e)]; }
  // Forgets every expert (after a re-plan over fewer ranks), keeping the scores.
  void clear(int n_ranks, int slots);

 private:
  struct Entry {
    int layer = -1, expert = -1;
    uint64_t last_use = 0, uses = 0;
  };
  size_t index(int layer, int e) const {
    return static_cast<size_t>(layer) * static_cast<size_t>(n_expert_) + static_cast<size_t>(e);
  }
  bool evicts_before(const Entry& x, const Entry& v) const;  // x is a better victim than v

  int slots_, n_expert_;
  EvictionPolicy policy_;
  std::vector<std::vector<Entry>> entries_;  // [rank][slot]
  std::vector<float> score_avg_;             // [layer * n_expert + e]
  uint64_t clock_ = 0;                       // use stamps: admit and touch
};

// Importance-driven substitution (arXiv 2508.18983) for one decode token of a layer: a
// selected expert that is not cached and scores below (1+alpha)*S_{k+1} is replaced by the
// best cached unselected expert scoring at least (1-alpha)*S_{k+1} (S_{k+1}: the best
// unselected score). `probs` [n_expert] are the routing probabilities; `ids` and `weights`
// [k] the routing, changed in place (weights follow the new set, renormalised when
// `norm_topk`). Returns how many experts were replaced.
int substitute_experts(const float* probs, size_t n_expert, size_t k, float alpha, bool norm_topk,
                       const std::function<bool(int expert)>& cached, int32_t* ids, float* weights);

}  // namespace odmoe
