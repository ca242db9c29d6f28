// What `odmoe generate/logits/perplexity` run: a model opened either as one process (every
// expert in memory) or as an MPI job (main on rank 0, experts on ranks 1..W). The commands
// drive `model()` the same way in both cases.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "odmoe/backend/cpu_backend.h"
#include "odmoe/dist/runtime.h"
#include "odmoe/model/model.h"
#include "odmoe/weights/model_files.h"

namespace odmoe {

struct EngineOptions {
  std::string model_dir;
  int threads = 0;  // 0: the node's cores shared among its ranks
  int n_ctx = 0;    // 0: the model's maximum
  dist::DistOptions dist;
};

class Engine {
 public:
  // In an MPI job of several ranks this is collective. Expert ranks serve main until it
  // calls finish(), then get nullptr back; main (and a single process) gets the engine.
  static std::unique_ptr<Engine> open(const EngineOptions& opts);
  ~Engine();

  ModelFiles& files() { return *files_; }
  Model& model() { return *model_; }
  const CpuBackend& backend() const { return *backend_; }
  bool distributed() const { return exec_ != nullptr; }
  std::string describe() const;  // mode, ranks, groups, predictor
  // The predictor's name, or "" when none runs.
  std::string predictor_name() const;

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
  Engine() = default;
  EngineOptions opts_;
  std::unique_ptr<dist::Comm> comm_;
  std::unique_ptr<ModelFiles> files_;
  std::unique_ptr<CpuBackend> backend_;
  std::unique_ptr<dist::Schedule> sched_;
  std::unique_ptr<dist::ExpertStore> store_;
  std::unique_ptr<LocalExpertExecutor> local_;
  std::unique_ptr<dist::AccountingExecutor> accounting_;  // single process with a predictor
  std::unique_ptr<dist::DistributedExpertExecutor> exec_;
  std::unique_ptr<Model> model_;
  bool finished_ = false;
  nlohmann::json marks_ = nlohmann::json::array();  // main's memory marks
};

nlohmann::json main_rank_stats(const std::string& backend);

}  // namespace odmoe
