// The cache policy, substitution and the regrouping rule, driven directly: no MPI, no model.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <set>
#include <vector>

#include "odmoe/core/softmax.h"
#include "odmoe/sched/expert_cache.h"
#include "odmoe/sched/schedule.h"

namespace odmoe {
namespace {

const auto kNone = [](int) { return false; };

TEST(ExpertCache, FillsEmptySlotsFirstInOrder) {
  ExpertCache c(2, 3, 4, 8, EvictionPolicy::kLru);
  bool ev = true;
  for (int e = 0; e < 3; ++e) {
    EXPECT_EQ(c.admit(1, 0, e, kNone, &ev), e);
    EXPECT_FALSE(ev);
  }
  EXPECT_EQ(c.find(1, 0, 2), 2);
  EXPECT_EQ(c.find(0, 0, 2), -1);  // another rank's slots are its own
  EXPECT_EQ(c.find(1, 1, 2), -1);  // same expert index, other layer
}

TEST(ExpertCache, LruEvictsTheLeastRecentlyUsed) {
  ExpertCache c(1, 3, 2, 8, EvictionPolicy::kLru);
  bool ev = false;
  for (int e = 0; e < 3; ++e) c.admit(0, 0, e, kNone, &ev);
  c.touch(0, 0);  // expert 0 used again: expert 1 is now the oldest
  EXPECT_EQ(c.admit(0, 1, 5, kNone, &ev), 1);
  EXPECT_TRUE(ev);
  EXPECT_EQ(c.find(0, 0, 1), -1);
  EXPECT_EQ(c.find(0, 1, 5), 1);
}

TEST(ExpertCache, LfuEvictsTheLeastUsedThenTheOldest) {
  ExpertCache c(1, 3, 2, 8, EvictionPolicy::kLfu);
  bool ev = false;
  for (int e = 0; e < 3; ++e) c.admit(0, 0, e, kNone, &ev);
  c.touch(0, 0);
  c.touch(0, 0);
  c.touch(0, 2);
  c.touch(0, 1);  // uses: 2, 1, 1; expert 2 (slot 2) used before expert 1 (slot 1)
  EXPECT_EQ(c.admit(0, 1, 7, kNone, &ev), 2);
  // Slot 2 is new (0 uses): it goes next, though it is the most recent.
  EXPECT_EQ(c.admit(0, 1, 6, kNone, &ev), 2);
}

TEST(ExpertCache, ScoreEvictsTheLowestRecentScore) {
  ExpertCache c(1, 2, 1, 4, EvictionPolicy::kScore);
  bool ev = false;
  c.admit(0, 0, 0, kNone, &ev);
  c.admit(0, 0, 1, kNone, &ev);
  const float p[4] = {0.1f, 0.6f, 0.2f, 0.1f};
  c.observe_scores(0, p);
  EXPECT_FLOAT_EQ(c.score(0, 1), 0.06f);  // 0.9 * 0 + 0.1 * 0.6
  EXPECT_EQ(c.admit(0, 0, 2, kNone, &ev), 0);  // expert 0 scores lower than expert 1
  const float q[4] = {0.0f, 0.0f, 0.0f, 1.0f};
  for (int i = 0; i < 50; ++i) c.observe_scores(0, q);  // the average decays
  EXPECT_LT(c.score(0, 1), 0.001f);
}

TEST(ExpertCache, NeverEvictsAPinnedSlot) {
  ExpertCache c(1, 3, 2, 8, EvictionPolicy::kLru);
  bool ev = false;
  for (int e = 0; e < 3; ++e) c.admit(0, 0, e, kNone, &ev);
  EXPECT_EQ(c.admit(0, 1, 4, [](int s) { return s == 0; }, &ev), 1);  // 0 is the oldest but pinned
  EXPECT_EQ(c.admit(0, 1, 5, [](int) { return true; }, &ev), -1);     // nothing to evict
  EXPECT_FALSE(ev);
  // Every (policy, pin set) choice over a full cache is an unpinned slot, or -1 iff all are pinned.
  for (EvictionPolicy pol : {EvictionPolicy::kLru, EvictionPolicy::kLfu, EvictionPolicy::kScore})
    for (int mask = 0; mask < 16; ++mask) {
      ExpertCache d(1, 4, 1, 16, pol);
      for (int e = 0; e < 4; ++e) d.admit(0, 0, e, kNone, &ev);
      const int s = d.admit(0, 0, 9, [&](int slot) { return (mask >> slot) & 1; }, &ev);
      if (mask == 15) {
        EXPECT_EQ(s, -1);
      } else {
        ASSERT_GE(s, 0);
        EXPECT_FALSE((mask >> s) & 1) << "policy " << eviction_policy_name(pol) << " mask " << mask;
        EXPECT_TRUE(ev);
      }
    }
}

TEST(ExpertCache, ClearForgetsEveryExpert) {
  ExpertCache c(3, 2, 1, 4, EvictionPolicy::kLru);
  bool ev = false;
  c.admit(2, 0, 3, kNone, &ev);
  c.clear(2, 5);
  EXPECT_EQ(c.slots(), 5);
  EXPECT_EQ(c.find(1, 0, 3), -1);
}

TEST(Substitution, ReplacesAnUncachedLowScorerWithACachedNearScorer) {
  // Scores: e0 0.40, e1 0.25 (selected), e2 0.22 (best unselected: S_{k+1}), e3 0.13.
  const float probs[4] = {0.40f, 0.25f, 0.22f, 0.13f};
  int32_t ids[2] = {0, 1};
  float w[2] = {0.40f / 0.65f, 0.25f / 0.65f};
  // alpha 0.2: e1 (0.25 < 1.2 * 0.22) is not cached; e2 (>= 0.8 * 0.22) is.
  const int n = substitute_experts(probs, 4, 2, 0.2f, true, [](int e) { return e != 1; }, ids, w);
  EXPECT_EQ(n, 1);
  EXPECT_EQ(ids[0], 0);
  EXPECT_EQ(ids[1], 2);
  EXPECT_FLOAT_EQ(w[0], 0.40f / 0.62f);
  EXPECT_FLOAT_EQ(w[1], 0.22f / 0.62f);
}

TEST(Substitution, KeepsConfidentOrCachedChoicesAndRespectsTheBand) {
  const float probs[4] = {0.40f, 0.25f, 0.22f, 0.13f};
  int32_t ids[2] = {0, 1};
  float w[2] = {1, 1};
  // alpha 0.1: e1 scores 0.25 >= 1.1 * 0.22: confident, kept although uncached.
  EXPECT_EQ(substitute_experts(probs, 4, 2, 0.1f, true, [](int) { return false; }, ids, w), 0);
  // alpha 0.2, nothing cached: no replacement to choose.
  EXPECT_EQ(substitute_experts(probs, 4, 2, 0.2f, true, [](int) { return false; }, ids, w), 0);
  // alpha 0.2, only e3 cached: 0.13 < 0.8 * 0.22, outside the band.
  EXPECT_EQ(substitute_experts(probs, 4, 2, 0.2f, true, [](int e) { return e == 3; }, ids, w), 0);
  EXPECT_EQ(ids[1], 1);
  EXPECT_EQ(w[0], 1.0f);  // weights untouched when nothing changed
  // Without norm_topk the weights are the probabilities themselves.
  EXPECT_EQ(substitute_experts(probs, 4, 2, 0.2f, false, [](int e) { return e != 1; }, ids, w), 1);
  EXPECT_FLOAT_EQ(w[1], 0.22f);
}

TEST(Softmax, MatchesTheDefinitionAndSumsToOne) {
  std::vector<float> x = {1000, 1001, 1002};
  softmax(x.data(), 3, x.data());
  const double e0 = std::exp(-2.0), e1 = std::exp(-1.0), den = e0 + e1 + 1;
  EXPECT_NEAR(x[0], e0 / den, 1e-7);
  EXPECT_NEAR(x[2], 1 / den, 1e-7);
  EXPECT_NEAR(std::accumulate(x.begin(), x.end(), 0.0), 1.0, 1e-6);
}

TEST(Regroup, SurvivorsKeepAtMostTheirGroupsAndReachTopK) {
  // 8 expert ranks in 2 groups of 4 (top-2); one dies: 7 survivors split into 1 group of 7.
  EXPECT_EQ(Schedule::default_groups(7, 2, 2), 1);
  // 6 survivors of 3 groups with top-2: 3 groups of 2.
  EXPECT_EQ(Schedule::default_groups(6, 2, 3), 3);
  // Never more groups than before, even if more would fit.
  EXPECT_EQ(Schedule::default_groups(6, 1, 2), 2);
  EXPECT_EQ(Schedule::default_groups(6, 1), 6);
  // Every answer divides the survivors and keeps groups of min(top_k, W) or more.
  for (int w = 1; w <= 12; ++w)
    for (int k = 1; k <= 8; ++k)
      for (int g0 = 1; g0 <= 12; ++g0) {
        const int g = Schedule::default_groups(w, k, g0);
        EXPECT_GE(g, 1);
        EXPECT_LE(g, std::min(w, g0));
        EXPECT_EQ(w % g, 0);
        EXPECT_GE(w / g, std::min(k, w));
      }
}

}  // namespace
}  // namespace odmoe
