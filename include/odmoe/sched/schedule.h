// The round-robin schedule: which expert rank computes which expert, in which slot. A pure
// function of the job's shape (no MPI), so every rank derives the same answer on its own
// and the tests can check it exhaustively.
//
// Rank 0 is main; ranks 1..W are expert ranks (workers) in G groups of S = W / G ranks:
// group g holds ranks 1 + g*S .. (g+1)*S. Layer l is served by group l mod G.
//
//  * decode (on-demand): the experts of layer l are spread over its group; the j-th expert
//    loaded for the layer goes to rank j mod S of the group, slot j div S. A group may hold
//    more experts per layer than it has ranks (Qwen3's top-8 on 2 ranks: 4 slots each).
//  * prefill (on-demand): every layer's experts are spread over all W workers, and two
//    layers are in flight (layer l+1 loads while l computes), so slots come in two banks.
//  * resident: every expert is loaded once at start-up into the group that serves its layer.
#pragma once

#include <algorithm>
#include <string>

namespace odmoe {

struct Placement {
  int rank = -1;  // MPI rank of the worker
  int slot = -1;  // slot index on that worker
  bool operator==(const Placement& o) const { return rank == o.rank && slot == o.slot; }
};

// How a run holds experts: resident (loaded once), on-demand (loaded before use, dropped
// after), cache (kept in each expert rank's cache slots). The runtime and the simulator share it.
enum class Mode { kResident, kOnDemand, kCache };
Mode parse_mode(const std::string& s);  // throws ArgumentError
const char* mode_name(Mode m);

class Schedule {
 public:
  // Throws odmoe::Error (kCli) when the shape is impossible: no workers, G not dividing W,
  // top_k > n_expert, ...; the message says which option to change.
  // `lookahead`: layers a group may have in flight in decode (1: the paper's schedule, where
  // a group loads its next layer only after computing the previous one; 2+: the next layers
  // load while the group still computes, in banks of decode slots).
  // `extra`: decode slots for candidates beyond the top-k (a predictor's next-best guesses).
  Schedule(int n_layer, int n_expert, int top_k, int n_workers, int n_groups, int lookahead = 1, int extra = 0);
  static constexpr int kMaxLookahead = 8, kMaxExtra = 64;

  // Default group count: the most groups whose size S still reaches min(top_k, W), so that
  // one layer's top-k experts are computed in parallel (DESIGN.md: S defaults to top-k).
  // At most `max_groups`: after a rank failure the survivors keep at most the groups they had.
  static int default_groups(int n_workers, int top_k, int max_groups = kNoLimit);
  static constexpr int kNoLimit = 1 << 30;

  int n_layer() const { return n_layer_; }
  int n_expert() const { return n_expert_; }
  int top_k() const { return top_k_; }
  int n_workers() const { return n_workers_; }
  int n_groups() const { return n_groups_; }
  int lookahead() const { return lookahead_; }
  int group_size() const { return group_size_; }

  int group_of_layer(int layer) const { return layer % n_groups_; }
  int group_of_rank(int rank) const { return (rank - 1) / group_size_; }
  int worker_rank(int group, int i) const { return 1 + group * group_size_ + i; }

  // Decode: slots per worker for one layer's top-k, and the place of the j-th expert
  // (0 <= j < decode_capacity()) loaded for `layer`: rank j mod S of the layer's group, in
  // the layer's bank ((layer div G) mod lookahead) of decode slots.
  int decode_slots() const { return (std::min(top_k_ + extra_, n_expert_) + group_size_ - 1) / group_size_; }
  int decode_capacity() const { return decode_slots() * group_size_; }
  Placement decode_place(int layer, int j) const { return decode_place(layer, j, (layer / n_groups_) % lookahead_); }
  // The same in a given bank (0 <= bank < lookahead): a runtime that keeps a group's layers
  // in flight across forward steps numbers its banks by the group's round, not the layer.
  Placement decode_place(int layer, int j, int bank) const;

  // Prefill: slots per worker per layer bank, and the place of expert e of `layer` (bank
  // layer mod 2, so consecutive layers never share a slot).
  int prefill_slots_per_bank() const { return (n_expert_ + n_workers_ - 1) / n_workers_; }
  Placement prefill_place(int layer, int expert) const;

  // Resident: the place of expert (layer, e), and slots each worker needs for all of them.
  Placement resident_place(int layer, int expert) const;
  int resident_slots() const;

  // Slots an on-demand worker allocates: enough for decode and for double-buffered prefill.
  int on_demand_slots() const;

  std::string to_string() const;  // "5 workers in 1 group of 5 ..."

 private:
  int n_layer_, n_expert_, top_k_, n_workers_, n_groups_, group_size_, lookahead_, extra_;
};

}  // namespace odmoe
