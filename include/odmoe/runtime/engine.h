// What `odmoe generate/logits/perplexity` run: a model opened either as one process (every
// expert in memory) or as an MPI job (main on rank 0, experts on ranks 1..W). The commands
// drive `model()` the same way in both cases.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "odmoe/backend/cpu_backend.h"
#include "odmoe/backend/cpu_device.h"
#include "odmoe/exec/executor.h"
#include "odmoe/predict/prediction_ledger.h"
#include "odmoe/model/model.h"
#include "odmoe/weights/model_files.h"

namespace odmoe {

struct EngineOptions {
  std::string model_dir;
  int threads = 0;  // 0: the node's cores shared among its ranks
  int n_ctx = 0;    // 0: the model's maximum
  DistOptions dist;
};

class Engine {
 public:
  // Runs this process's part of the job `opts` describes, and says which part that is. A
  // single process, or rank 0 of an MPI job (main), opens the engine and runs `as_main` on
  // it, returning what it returns. The other ranks serve main (the expert ranks, and the
  // predictor rank with --predictor-rank) until it finishes, and return 0. In a job of
  // several ranks this is collective.
  static int run(const EngineOptions& opts, const std::function<int(Engine&)>& as_main);
  ~Engine();

  ModelFiles& files() { return *files_; }
  Model& model() { return *model_; }
  const CpuBackend& backend() const { return *backend_; }
  Device& device() { return *device_; }  // main's: the model computes on it
  bool distributed() const { return exec_ != nullptr; }
  std::string describe() const;  // mode, ranks, groups, predictor

  // Distributed: stops the expert ranks, gathers their statistics and writes the trace;
  // returns {"ranks": [...], "schedule", "timing", "predictor"}. Single process: {"ranks":
  // [main]}. Call once, at the end of a successful run.
  nlohmann::json finish(const std::string& trace_path = "");

  // Records memory mark `mark` on every rank (resident set and its peak now); finish()
  // reports them per rank as "memory_marks". Between forward steps only.
  void mark_memory(int64_t mark);

  // True once an engine of several ranks has been opened: from then on an error on one
  // rank must bring every rank down (MPI_Abort), since the others are waiting on it.
  static bool ranks_coupled();

 private:
  enum class Role { kMain, kExpertRank, kPredictorRank };
  Engine() = default;
  // Opens what every rank needs (the model files, the backend; in a job: the communicator,
  // schedule and expert store) and returns this rank's role.
  Role open_common(const EngineOptions& opts);
  void open_single_process();  // the model, with a predictor accounted where one is asked for
  void open_main();            // the executor on the expert ranks, then the model and predictor
  EngineOptions opts_;
  std::unique_ptr<Comm> comm_;
  std::unique_ptr<ModelFiles> files_;
  std::unique_ptr<CpuBackend> backend_;  // the expert ranks' kernels, and the CPU device's
  std::unique_ptr<CpuDevice> device_;
  std::unique_ptr<Schedule> sched_;
  std::unique_ptr<ExpertStore> store_;
  std::unique_ptr<LocalExpertExecutor> local_;
  std::unique_ptr<AccountingExecutor> accounting_;  // single process with a predictor
  std::unique_ptr<DistributedExpertExecutor> exec_;
  std::unique_ptr<Model> model_;
  bool finished_ = false;
  nlohmann::json marks_ = nlohmann::json::array();  // main's memory marks
};

nlohmann::json main_rank_stats(const std::string& backend);

}  // namespace odmoe
