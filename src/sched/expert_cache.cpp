#include "odmoe/sched/expert_cache.h"

#include <algorithm>

namespace odmoe {

const char* eviction_policy_name(EvictionPolicy p) {
  switch (p) {
    case EvictionPolicy::kLru: return "lru";
    case EvictionPolicy::kLfu: return "lfu";
    case EvictionPolicy::kScore: return "score";
  }
  return "?";
}

ExpertCache::ExpertCache(int n_ranks, int slots, int n_layer, int n_expert, EvictionPolicy policy)
    : slots_(slots), n_expert_(n_expert), policy_(policy) {
  entries_.assign(static_cast<size_t>(n_ranks), std::vector<Entry>(static_cast<size_t>(slots)));
  score_avg_.assign(static_cast<size_t>(n_layer) * static_cast<size_t>(n_expert), 0.0f);
}

void ExpertCache::clear(int n_ranks, int slots) {
  slots_ = slots;
  entries_.assign(static_cast<size_t>(n_ranks), std::vector<Entry>(static_cast<size_t>(slots)));
}

int ExpertCache::find(int rank, int layer, int e) const {
  const auto& c = entries_[static_cast<size_t>(rank)];
  for (int s = 0; s < slots_; ++s)
    if (c[static_cast<size_t>(s)].layer == layer && c[static_cast<size_t>(s)].expert == e) return s;
  return -1;
}

bool ExpertCache::evicts_before(const Entry& x, const Entry& v) const {
  switch (policy_) {
    case EvictionPolicy::kScore: {
      const float sx = score(x.layer, x.expert), sv = score(v.layer, v.expert);
      return sx < sv || (sx == sv && x.last_use < v.last_use);
    }
    case EvictionPolicy::kLfu: return x.uses < v.uses || (x.uses == v.uses && x.last_use < v.last_use);
    case EvictionPolicy::kLru: break;
  }
  return x.last_use < v.last_use;
}

int ExpertCache::admit(int rank, int layer, int e, const std::function<bool(int slot)>& pinned, bool* evicted) {
  auto& c = entries_[static_cast<size_t>(rank)];
  int victim = -1;
  for (int s = 0; s < slots_; ++s) {
    if (pinned(s)) continue;
    const Entry& x = c[static_cast<size_t>(s)];
    if (x.layer < 0) {  // empty
      victim = s;
      break;
    }
    if (victim < 0 || evicts_before(x, c[static_cast<size_t>(victim)])) victim = s;
  }
  *evicted = false;
  if (victim < 0) return -1;
  Entry& v = c[static_cast<size_t>(victim)];
  *evicted = v.layer >= 0;
  v = {layer, e, ++clock_, 0};
  return victim;
}

void ExpertCache::touch(int rank, int slot) {
  Entry& x = entries_[static_cast<size_t>(rank)][static_cast<size_t>(slot)];
  x.last_use = ++clock_;
  ++x.uses;
}

void ExpertCache::observe_scores(int layer, const float* probs) {
  float* avg = &score_avg_[index(layer, 0)];
  for (int e = 0; e < n_expert_; ++e) avg[e] = 0.9f * avg[e] + 0.1f * probs[e];
}

int substitute_experts(const float* probs, size_t n_expert, size_t k, float alpha, bool norm_topk,
                       const std::function<bool(int expert)>& cached, int32_t* ids, float* weights) {
  if (k >= n_expert) return 0;
  auto selected = [&](size_t e) { return std::find(ids, ids + k, static_cast<int32_t>(e)) != ids + k; };
  float s_next = 0;  // S_{k+1}: the best score not selected
  for (size_t e = 0; e < n_expert; ++e)
    if (!selected(e)) s_next = std::max(s_next, probs[e]);
  int changed = 0;
  for (size_t j = 0; j < k; ++j) {
    const int e = ids[j];
    if (probs[static_cast<size_t>(e)] >= (1 + alpha) * s_next || cached(e)) continue;
    int best = -1;
    for (size_t c = 0; c < n_expert; ++c) {
      if (selected(c) || probs[c] < (1 - alpha) * s_next) continue;
      if (!cached(static_cast<int>(c))) continue;
      if (best < 0 || probs[c] > probs[static_cast<size_t>(best)]) best = static_cast<int>(c);
    }
    if (best < 0) continue;
    ids[j] = best;
    ++changed;
  }
  if (changed == 0) return 0;
  float total = 0;
  for (size_t j = 0; j < k; ++j) total += probs[static_cast<size_t>(ids[j])];
  for (size_t j = 0; j < k; ++j) weights[j] = probs[static_cast<size_t>(ids[j])] / (norm_topk ? total : 1.0f);
  return changed;
}

}  // namespace odmoe
