#include "odmoe/sched/schedule.h"

#include <algorithm>
#include <sstream>

#include "odmoe/core/error.h"

namespace odmoe {

Schedule::Schedule(int n_layer, int n_expert, int top_k, int n_workers, int n_groups, int lookahead, int extra)
    : n_layer_(n_layer), n_expert_(n_expert), top_k_(top_k), n_workers_(n_workers), n_groups_(n_groups),
      lookahead_(lookahead), extra_(extra) {
  ODMOE_CHECK(extra >= 0 && extra <= kMaxExtra, kCli, "bad-option", "--predict-extra " << extra << " is out of range",
              "use 0 (load the top-k only) to " << kMaxExtra);
  ODMOE_CHECK(lookahead >= 1 && lookahead <= kMaxLookahead, kCli, "bad-lookahead",
              "--lookahead " << lookahead << " is out of range", "use 1 (the paper's schedule) to " << kMaxLookahead);
  ODMOE_CHECK(n_layer > 0 && n_expert > 0 && top_k > 0 && top_k <= n_expert, kCli, "bad-model",
              "cannot schedule a model with " << n_layer << " layers, " << n_expert << " experts, top-" << top_k, "");
  ODMOE_CHECK(n_workers >= 1, kCli, "no-workers",
              "a distributed run needs at least one expert rank besides main (rank 0)", "launch with mpirun -np 2 or more");
  ODMOE_CHECK(n_groups >= 1 && n_groups <= n_workers && n_workers % n_groups == 0, kCli, "bad-groups",
              "--groups " << n_groups << " does not divide the " << n_workers << " expert ranks into equal groups",
              "choose a divisor of " << n_workers << " (ranks 1.." << n_workers << " are expert ranks)");
  group_size_ = n_workers / n_groups;
}

Mode parse_mode(const std::string& s) {
  if (s == "resident") return Mode::kResident;
  if (s == "on-demand") return Mode::kOnDemand;
  if (s == "cache") return Mode::kCache;
  throw ArgumentError("--mode must be resident, on-demand or cache, not '" + s + "'");
}

const char* mode_name(Mode m) {
  return m == Mode::kResident ? "resident" : m == Mode::kCache ? "cache" : "on-demand";
}

int Schedule::default_groups(int n_workers, int top_k, int max_groups) {
  const int want = std::min(top_k, n_workers);
  for (int g = std::min(n_workers, max_groups); g >= 1; --g)
    if (n_workers % g == 0 && n_workers / g >= want) return g;
  return 1;
}

Placement Schedule::decode_place(int layer, int j, int bank) const {
  ODMOE_CHECK(j >= 0 && j < decode_capacity() && bank >= 0 && bank < lookahead_, kCore, "range",
              "decode slot " << j << " (bank " << bank << ") out of range", "");
  return {worker_rank(group_of_layer(layer), j % group_size_), bank * decode_slots() + j / group_size_};
}

Placement Schedule::prefill_place(int layer, int expert) const {
  // Experts x = layer + e, e in [0, E), go round-robin over the workers starting at a
  // layer-dependent worker, so the remainder experts do not always land on the same ranks.
  const int W = n_workers_, x = layer % W + expert;
  const int w = x % W;
  const int first = layer % W + ((w - layer % W) % W + W) % W;  // smallest x' >= layer % W with x' % W == w
  const int idx = (x - first) / W;
  return {1 + w, (layer % 2) * prefill_slots_per_bank() + idx};
}

Placement Schedule::resident_place(int layer, int expert) const {
  const int per_layer = (n_expert_ + group_size_ - 1) / group_size_;
  const int g = group_of_layer(layer);
  return {worker_rank(g, expert % group_size_), (layer / n_groups_) * per_layer + expert / group_size_};
}

int Schedule::resident_slots() const {
  const int per_layer = (n_expert_ + group_size_ - 1) / group_size_;
  const int layers_per_group = (n_layer_ + n_groups_ - 1) / n_groups_;
  return per_layer * layers_per_group;
}

int Schedule::on_demand_slots() const {
  return std::max(lookahead_ * decode_slots(), 2 * prefill_slots_per_bank());
}

std::string Schedule::to_string() const {
  std::ostringstream os;
  os << n_workers_ << " expert rank" << (n_workers_ > 1 ? "s" : "") << " in " << n_groups_ << " group"
     << (n_groups_ > 1 ? "s" : "") << " of " << group_size_ << "; top-" << top_k_ << " of " << n_expert_ << " experts, "
     << decode_slots() << " decode slot" << (decode_slots() > 1 ? "s" : "") << " per rank and layer";
  if (lookahead_ > 1) os << ", " << lookahead_ << " layers in flight per group";
  return os.str();
}

}  // namespace odmoe
