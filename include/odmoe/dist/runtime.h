// The distributed runtime: main's side (an ExpertExecutor that schedules experts on the
// expert ranks) and the expert ranks' loop. DESIGN.md "Ranks and what each one does".
//
// Protocol (comm.h): main sends LOAD(layer, expert, slot), COMPUTE(layer, expert, slot,
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
#include "odmoe/dist/comm.h"
#include "odmoe/dist/expert_store.h"
#include "odmoe/dist/prediction_ledger.h"
#include "odmoe/dist/predictor.h"
#include "odmoe/dist/schedule.h"
#include "odmoe/dist/shadow.h"
#include "odmoe/dist/trace.h"
#include "odmoe/model/model.h"

namespace odmoe::dist {

enum class Mode { kResident, kOnDemand, kCache };
Mode parse_mode(const std::string& s);  // throws cli::UsageError
const char* mode_name(Mode m);

struct DistOptions {
  Mode mode = Mode::kOnDemand;
  std::string predictor = "none";  // none | oracle | previous | random | gate-ahead | shadow
  int gate_ahead_depth = 0;        // gate-ahead: layers looked ahead (0: G-1, at least 1)
  int predict_extra = 0;           // candidates beyond the top-k a predictor publishes (and slots for them)
  bool predictor_sync = false;     // one process: wait for each decode layer's pending prediction
  bool miss_on_host = false;       // --miss-policy cpu: a mispredicted expert runs on its store rank, unloaded
  int predictor_rank = -1;         // >= 0: the shadow runs on this rank (the last one), not on main
  int cache_slots = 0;             // cache mode: experts each expert rank keeps (0: a quarter of its share)
  bool cache_lfu = false;          // cache mode: evict the least frequently (else least recently) used
  bool cache_by_score = false;     // cache mode: evict the lowest recent average gate score (with substitution)
  double substitute = -1;          // cache mode, >= 0: importance-driven substitution with this alpha
  std::string routing_trace;       // oracle: a trace from --save-routing
  ShadowOptions shadow;            // shadow: dtype, alignment, departure
  int groups = 0;                  // 0: Schedule::default_groups
  int lookahead = 1;               // decode layers in flight per group (1: the paper's schedule)
  StoreOptions store;
  double timeout_s = 60;           // bound on every wait for another rank
  double startup_timeout_s = 600;  // bound on start-up (model loading on main, mapping shards)
  double load_gbps = 0;            // > 0: emulate a link of this many Gbit/s per expert rank
  double device_mib = 0;           // > 0: emulate a device of this many MiB per expert rank (slots)
  int prefill_batch = 64;          // most tokens per COMPUTE message in prefill
  bool verify_pulls = false;       // check every pulled expert's checksums
  bool degrade = false;            // --on-worker-failure degrade: carry on without an expert rank that died
  bool trace = false;              // record trace events
};

// Slots an expert rank allocates in `opts.mode` (main and the expert ranks agree on it). In
// cache mode: the cache's slots, then the prompt's double-buffered prefill slots.
int worker_slots(const Schedule& sched, const DistOptions& opts);
int cache_slots(const Schedule& sched, const DistOptions& opts);

// An expert rank: serves commands from main until STOP. Returns normally after STOP.
void run_worker(const Comm& comm, const ModelFiles& files, ExpertStore& store, Backend& be, const Schedule& sched,
                const DistOptions& opts);

// The predictor rank (--predictor-rank, the paper's shadow node): runs the shadow on a KV
// mirror fed by main's messages and sends its predictions to main, until STOP.
void run_shadow_rank(const Comm& comm, const ModelFiles& files, int n_ctx, const DistOptions& opts);
// Main's side of it: forwards each step's tokens and the full model's new KV rows to
// `rank`, and delivers its predictions as they arrive.
std::unique_ptr<Predictor> make_remote_shadow_predictor(const Comm& comm, int rank, const Model& full);

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
  std::vector<float> pair_out_, xs_;

  // Cache mode: what each expert rank's cache slots hold.
  struct CacheEntry {
    int layer = -1, expert = -1;
    uint64_t last_use = 0, uses = 0;
  };
  std::vector<std::vector<CacheEntry>> cache_;  // [rank][slot < n_cache_]
  int n_cache_ = 0;
  bool norm_topk_ = false;
  std::vector<float> score_avg_;  // [layer * E + e]: recent average gate score (decode)
  std::vector<float> probs_;
  uint64_t substitutions_ = 0;
  bool is_cached(int layer, int e) const;
  uint64_t use_clock_ = 0, cache_needed_ = 0, cache_misses_ = 0, cache_evictions_ = 0, cache_prefetches_ = 0;

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
  nlohmann::json failures_ = nlohmann::json::array();
  std::vector<float> cur_h_;  // the layer in flight, to send again after a failure
  std::vector<int32_t> cur_ids_;
  bool resending_ = false;
};

}  // namespace odmoe::dist
