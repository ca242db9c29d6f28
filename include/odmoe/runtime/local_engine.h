// A single-process engine: a model directory loaded with every expert in memory on the
// CPU backend. What `odmoe generate/logits/perplexity` run, and what tests compare against.
#pragma once

#include <string>

#include "odmoe/backend/cpu_backend.h"
#include "odmoe/backend/cpu_device.h"
#include "odmoe/model/model.h"
#include "odmoe/weights/model_files.h"

namespace odmoe {

struct LocalEngine {
  // threads <= 0: all cores; n_ctx <= 0: the model's maximum context.
  explicit LocalEngine(const std::string& model_dir, int threads = 0, int n_ctx = 0)
      : files(model_dir), backend(detect_cpu_isa(), threads), device(backend, backend.n_threads()),
        experts(files, backend), model(files, device, experts, n_ctx) {}

  ModelFiles files;
  CpuBackend backend;  // the routed experts' kernels
  CpuDevice device;    // the model's device, computing with `backend`
  LocalExpertExecutor experts;
  Model model;
};

}  // namespace odmoe
