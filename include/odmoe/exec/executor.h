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
#include "odmoe/sched/load_planner.h"
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

  const Schedule& schedule() const { return planner_.schedule(); }

 private:
  struct Pending {
    int rank, expert;
    std::vector<size_t> pairs;  // indices t*k + j this chunk answers
  };
  void publish(const Prediction& p) override;
  void poll_predictor();
  void pump();  // the planner's look-ahead loads (decode)
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
  void send(const PlanActions& actions);  // the planner's loads and drops, in order
  bool loads_on_demand() const { return opts_.mode != Mode::kResident; }
  bool caching() const { return opts_.mode == Mode::kCache; }
  const Schedule& sched() const { return planner_.schedule(); }

  const Comm& comm_;
  const ExpertStore& store_;
  DistOptions opts_;
  std::unique_ptr<Predictor> predictor_;
  Outbox out_;
  TraceRecorder trace_;
  int n_embd_, n_layer_, n_expert_;
  int n_slots_;

  // Predictions of the current step and the next; which loads go where (sched/load_planner.h:
  // banks, look-ahead, the step ring, the cache, the re-plan after a failure).
  PredictionLedger ledger_;
  LoadPlanner planner_;

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

  // Cache mode: substitution (sched/expert_cache.h).
  bool norm_topk_ = false;
  std::vector<float> probs_;  // f32 [n_expert]: a decode token's routing probabilities
  uint64_t substitutions_ = 0;

  // Statistics.
  uint64_t loads_ = 0, computes_ = 0, host_computes_ = 0;
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
