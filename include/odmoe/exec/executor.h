// Main's side of the distributed runtime: an ExpertExecutor that schedules experts on the
// expert ranks (exec/expert_rank.h is their side). DESIGN.md "Ranks and what each one does".
//
// Protocol (comm/protocol.h): main sends LOAD(layer, expert, slot), COMPUTE(layer, expert, slot,
// hidden states), DROP(slot), SYNC, STOP; workers answer RESULT, READY, STATS. Every wait
// is bounded by --timeout. Main applies the gate weights and sums expert outputs in
// routing order, exactly as the single-process path does, so results never depend on
// which worker answered first.
#pragma once

#include <array>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "odmoe/backend/backend.h"
#include "odmoe/core/error.h"
#include "odmoe/comm/comm.h"
#include "odmoe/store/expert_store.h"
#include "odmoe/predict/prediction_ledger.h"
#include "odmoe/predict/predictor.h"
#include "odmoe/sched/expert_cache.h"
#include "odmoe/sched/schedule.h"
#include "odmoe/predict/shadow.h"
#include "odmoe/exec/stats.h"
#include "odmoe/exec/trace.h"
#include "odmoe/exec/options.h"
#include "odmoe/model/model.h"

namespace odmoe {

// Main's side.
class DistributedExpertExecutor final : public ExpertExecutor, private PredictionSink {
 public:
  DistributedExpertExecutor(const Comm& comm, const ModelFiles& files, const ExpertStore& store, const Schedule& sched,
                            const DistOptions& opts, std::unique_ptr<Predictor> predictor);
  ~DistributedExpertExecutor() override;

  // Resident: loads every expert into its worker and waits until all are in. Both modes:
  // estimates each worker's clock offset (for the trace).
  void start();
  // Every expert rank records its resident set now and its peak, as memory mark `mark`
  // (in its statistics' "memory_marks"): how memory evolves over a batch of generations.
  void mark_memory(int64_t mark);
  void keep_alive();  // a KEEP_ALIVE to every expert rank main has sent nothing for --timeout / 4
  // Replaces the predictor (between forward steps): a predictor that needs the model, such
  // as gate-ahead, can only be made once the model exists.
  void set_predictor(std::unique_ptr<Predictor> p) { predictor_ = std::move(p); }
  void begin_forward(const int32_t* tokens, size_t n, int pos) override;
  // Cache mode with --substitute: a selected expert that is not cached and scores below
  // (1+alpha)*S_{k+1} is replaced by the best cached unselected expert scoring at least
  // (1-alpha)*S_{k+1} (S_{k+1}: the best unselected score); weights follow the new set.
  void adjust_routing(int layer, const float* router_logits, size_t n, size_t k, int32_t* ids, float* weights) override;
  void submit(int layer, const float* h, size_t n, size_t k, const int32_t* ids, const float* weights) override;
  void collect(float* out) override;
  // Stops every worker and gathers their statistics: {"ranks": [...], "predictor": {...},
  // "schedule": {...}}. Writes the trace file when `trace_path` is not empty.
  nlohmann::json finish(const std::string& trace_path, const nlohmann::json& main_rank_stats);

  const Schedule& schedule() const { return sched_; }

 private:
  struct Pending {
    int rank, expert;
    std::vector<size_t> pairs;  // indices t*k + j this chunk answers
  };
  void publish(const Prediction& p) override;
  void poll_predictor();
  void pump();
  void dispatch(int step, int layer);  // loads the standing prediction of (step, layer), adjusting earlier loads
  // Which (token, choice) pairs t*k + j need each expert, in expert order.
  using Users = std::map<int, std::vector<size_t>>;
  static Users users_of(const int32_t* ids, size_t pairs);
  // Loads what `layer` needs and sends its COMPUTEs (pending_ gets one entry per message).
  void send_layer(int layer, const float* h, size_t k, const Users& users);
  // --on-worker-failure degrade: finds the dead expert ranks, re-plans over the others and
  // sends `layer` again. Rethrows `why` when every rank is alive.
  void recover(int layer, const Error& why);
  int phys(int r) const { return phys_[static_cast<size_t>(r)]; }  // MPI rank of expert rank r of the schedule
  void send_load(int layer, int expert, Placement p);
  void send_drop(Placement p);
  void dispatch_prefill_layer(int layer);
  // Decode layers are numbered over steps: layer l of step s is s*L + l.
  int64_t global(int step, int layer) const { return static_cast<int64_t>(step) * n_layer_ + layer; }
  int64_t next_of_group(int64_t gl) const;  // the next layer the same group computes
  Placement place(int step, int layer, int j) const;  // j-th decode place, bank by the group's round
  // The first decode place of (step, layer) that `plan` does not use (ranks round-robin);
  // rank -1 if all are.
  Placement free_place(int step, int layer, const std::map<int, Placement>& plan) const;
  size_t ring(int step, int layer) const { return static_cast<size_t>((step & 1) * n_layer_ + layer); }
  void clear_ring(int step, bool drop_loads);
  bool loads_on_demand() const { return opts_.mode != Mode::kResident; }
  bool caching() const { return opts_.mode == Mode::kCache; }
  Placement prefill_place(int layer, int expert) const;  // the schedule's, after the cache's slots
  // Cache mode: where expert (layer, e) lives (its home rank in the layer's group); loads
  // it into a slot of that rank, evicting the least recently (or frequently) used expert no
  // layer in flight needs, unless it is cached already. `hit`: it was. `optional` (a
  // prefetch): rank -1 when every slot is needed, instead of an error.
  Placement cache_place(int layer, int e, bool* hit, bool optional = false);
  int cache_home(int layer, int e) const {  // spreads a layer's experts over its group
    return sched_.worker_rank(sched_.group_of_layer(layer), (e + layer) % sched_.group_size());
  }
  bool pinned(Placement p) const;

  const Comm& comm_;
  const ExpertStore& store_;
  Schedule sched_;
  DistOptions opts_;
  std::unique_ptr<Predictor> predictor_;
  Outbox out_;
  TraceRecorder trace_;
  int n_embd_, n_layer_, n_expert_;
  int n_slots_;

  // Predictions and loads of the current step and the next ([step & 1][layer]).
  PredictionLedger ledger_;
  std::vector<bool> dispatched_;
  std::vector<std::map<int, Placement>> plan_;  // expert -> where it is (being) loaded
  std::vector<int64_t> group_next_;             // [group]: the next global layer the group computes
  bool in_pump_ = false;

  // The current forward step.
  int step_ = -1;
  bool prefill_ = false;
  int layers_done_ = 0;
  double t_step_ = 0, t_last_ = 0;

  // The layer in flight between submit() and collect().
  int cur_layer_ = -1;
  size_t cur_n_ = 0, cur_k_ = 0;
  const float* cur_w_ = nullptr;
  double t_submit_ = 0;
  int64_t seq_ = 0;
  std::map<int64_t, Pending> pending_;
  std::vector<float> pair_out_;  // f32 [n_tokens * k, n_embd]: each (token, choice)'s expert output

  // Cache mode: what each expert rank's cache slots hold (indexed by MPI rank), the
  // eviction policy and substitution (sched/expert_cache.h).
  ExpertCache cache_;
  int n_cache_ = 0;  // cache slots per expert rank
  bool norm_topk_ = false;
  std::vector<float> probs_;  // [E]: a decode token's routing probabilities
  uint64_t substitutions_ = 0;
  bool is_cached(int layer, int e) const;
  uint64_t cache_needed_ = 0, cache_misses_ = 0, cache_evictions_ = 0, cache_prefetches_ = 0;

  // Statistics.
  uint64_t loads_ = 0, computes_ = 0, wasted_loads_ = 0, host_computes_ = 0;
  double dense_s_ = 0, expert_wait_s_ = 0;  // decode steps: main computing / waiting for experts
  uint64_t decode_layers_ = 0;
  std::vector<double> clock_offset_;  // [rank] worker clock - main clock
  std::vector<double> rtt_;
  bool finished_ = false;
  double origin_ = now_s();

  // --on-worker-failure degrade. The schedule numbers the live expert ranks 1..W; phys_[r]
  // is the MPI rank of the r-th (identity until a rank fails).
  std::vector<int> phys_;
  std::vector<int> dead_ranks_;
  std::vector<FailureRecord> failures_;
  std::vector<float> cur_h_;  // the layer in flight, to send again after a failure
  std::vector<int32_t> cur_ids_;
  bool resending_ = false;
};

}  // namespace odmoe
