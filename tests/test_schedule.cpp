// The round-robin schedule, checked exhaustively over small job shapes: every placement
// lands in the right group, inside the slots the worker allocates, and never two experts
// of one layer (or of two layers in flight) share a slot.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "odmoe/core/error.h"
#include "odmoe/sched/schedule.h"

using odmoe::Placement;
using odmoe::Schedule;

namespace {

template <typename F>
void for_each_shape(F&& f) {
  for (int W = 1; W <= 9; ++W)
    for (int G = 1; G <= W; ++G) {
      if (W % G) continue;
      for (int E = 1; E <= 10; ++E)
        for (int k = 1; k <= E; ++k)
          for (int L = 1; L <= 5; ++L)
            for (int ahead = 1; ahead <= 3; ++ahead) f(Schedule(L, E, k, W, G, ahead));
    }
}

std::string shape(const Schedule& s) {
  return "L=" + std::to_string(s.n_layer()) + " E=" + std::to_string(s.n_expert()) + " k=" + std::to_string(s.top_k()) +
         " W=" + std::to_string(s.n_workers()) + " G=" + std::to_string(s.n_groups()) +
         " lookahead=" + std::to_string(s.lookahead());
}

}  // namespace

TEST(Schedule, GroupsPartitionTheExpertRanks) {
  for_each_shape([](const Schedule& s) {
    std::set<int> seen;
    for (int g = 0; g < s.n_groups(); ++g)
      for (int i = 0; i < s.group_size(); ++i) {
        const int r = s.worker_rank(g, i);
        ASSERT_GE(r, 1);
        ASSERT_LE(r, s.n_workers());
        ASSERT_EQ(s.group_of_rank(r), g);
        ASSERT_TRUE(seen.insert(r).second) << shape(s);
      }
    ASSERT_EQ(static_cast<int>(seen.size()), s.n_workers());
    for (int l = 0; l < 3 * s.n_groups(); ++l) ASSERT_EQ(s.group_of_layer(l), l % s.n_groups());
  });
}

TEST(Schedule, DecodePlacesFillTheGroupRoundRobin) {
  for_each_shape([](const Schedule& s) {
    ASSERT_GE(s.decode_capacity(), s.top_k()) << shape(s);
    ASSERT_LE(s.lookahead() * s.decode_slots(), s.on_demand_slots());
    // Layers a group has in flight together (lookahead consecutive layers of the group)
    // never share a slot.
    for (int l = 0; l < s.n_layer(); ++l) {
      std::set<std::pair<int, int>> window;
      for (int i = 0; i < s.lookahead(); ++i) {
        const int li = l + i * s.n_groups();
        for (int j = 0; j < s.decode_capacity(); ++j) {
          const Placement p = s.decode_place(li, j);
          ASSERT_LT(p.slot, s.lookahead() * s.decode_slots());
          ASSERT_TRUE(window.insert({p.rank, p.slot}).second) << shape(s) << " l=" << l << " i=" << i;
        }
      }
    }
    for (int l = 0; l < s.n_layer(); ++l) {
      std::set<std::pair<int, int>> used;
      std::map<int, int> per_rank;
      for (int j = 0; j < s.decode_capacity(); ++j) {
        const Placement p = s.decode_place(l, j);
        ASSERT_EQ(s.group_of_rank(p.rank), s.group_of_layer(l)) << shape(s);
        ASSERT_GE(p.slot, 0);
        ASSERT_LT(p.slot % s.decode_slots() + (p.slot / s.decode_slots()) * s.decode_slots(), s.on_demand_slots());
        ASSERT_TRUE(used.insert({p.rank, p.slot}).second) << shape(s) << " j=" << j;
        if (j < s.top_k()) ++per_rank[p.rank];
      }
      // The top-k are spread evenly: no rank computes two before every rank has one.
      for (const auto& [r, n] : per_rank) ASSERT_LE(n, s.decode_slots()) << shape(s);
      if (s.top_k() >= s.group_size()) {
        ASSERT_EQ(static_cast<int>(per_rank.size()), s.group_size()) << shape(s);
      }
    }
    EXPECT_THROW(s.decode_place(0, s.decode_capacity()), odmoe::Error);
  });
}

TEST(Schedule, PrefillSpreadsEveryLayerOverAllWorkersInTwoBanks) {
  for_each_shape([](const Schedule& s) {
    ASSERT_GE(s.on_demand_slots(), 2 * s.prefill_slots_per_bank());
    for (int l = 0; l < s.n_layer(); ++l) {
      std::set<std::pair<int, int>> used;
      std::map<int, int> per_rank;
      const int bank = l % 2, P = s.prefill_slots_per_bank();
      for (int e = 0; e < s.n_expert(); ++e) {
        const Placement p = s.prefill_place(l, e);
        ASSERT_GE(p.rank, 1);
        ASSERT_LE(p.rank, s.n_workers());
        ASSERT_GE(p.slot, bank * P) << shape(s);
        ASSERT_LT(p.slot, (bank + 1) * P) << shape(s);
        ASSERT_TRUE(used.insert({p.rank, p.slot}).second) << shape(s) << " l=" << l << " e=" << e;
        ++per_rank[p.rank];
      }
      // Balanced: worker loads differ by at most one expert.
      int lo = s.n_expert(), hi = 0;
      for (int r = 1; r <= s.n_workers(); ++r) {
        lo = std::min(lo, per_rank[r]);
        hi = std::max(hi, per_rank[r]);
      }
      ASSERT_LE(hi - lo, 1) << shape(s);
    }
  });
}

TEST(Schedule, ResidentPlacesEveryExpertOnceInItsLayersGroup) {
  for_each_shape([](const Schedule& s) {
    std::set<std::pair<int, int>> used;
    for (int l = 0; l < s.n_layer(); ++l)
      for (int e = 0; e < s.n_expert(); ++e) {
        const Placement p = s.resident_place(l, e);
        ASSERT_EQ(s.group_of_rank(p.rank), s.group_of_layer(l)) << shape(s);
        ASSERT_GE(p.slot, 0);
        ASSERT_LT(p.slot, s.resident_slots()) << shape(s);
        ASSERT_TRUE(used.insert({p.rank, p.slot}).second) << shape(s);
      }
  });
}

TEST(Schedule, DefaultGroupsReachTopK) {
  for (int W = 1; W <= 16; ++W)
    for (int k = 1; k <= 8; ++k) {
      const int G = Schedule::default_groups(W, k);
      ASSERT_EQ(W % G, 0);
      ASSERT_GE(W / G, std::min(k, W));
      for (int g2 = G + 1; g2 <= W; ++g2)  // the largest such G
        if (W % g2 == 0) {
          ASSERT_LT(W / g2, std::min(k, W)) << "W=" << W << " k=" << k;
        }
    }
  EXPECT_EQ(Schedule::default_groups(8, 2), 4);  // Mixtral top-2 on 8 expert ranks: 4 groups of 2
  EXPECT_EQ(Schedule::default_groups(2, 8), 1);  // Qwen3 top-8 on 2 ranks: one group, 4 slots each
  EXPECT_EQ(Schedule(48, 128, 8, 2, 1).decode_slots(), 4);
}

TEST(Schedule, ImpossibleShapesAreClearErrors) {
  auto msg = [](auto f) {
    try {
      f();
    } catch (const odmoe::Error& e) {
      return e.message() + " " + e.hint();
    }
    return std::string("no error");
  };
  EXPECT_NE(msg([] { Schedule(4, 8, 2, 0, 1); }).find("at least one expert rank"), std::string::npos);
  EXPECT_NE(msg([] { Schedule(4, 8, 2, 6, 4); }).find("does not divide the 6 expert ranks"), std::string::npos);
  EXPECT_NE(msg([] { Schedule(4, 8, 9, 4, 1); }).find("top-9"), std::string::npos);
  EXPECT_NE(msg([] { Schedule(4, 8, 2, 4, 1, 0); }).find("--lookahead 0"), std::string::npos);
}
