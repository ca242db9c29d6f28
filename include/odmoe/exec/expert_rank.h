// An expert rank's life: pulls experts into its slots, computes them for main, drops them.
#pragma once

#include "odmoe/backend/backend.h"
#include "odmoe/comm/comm.h"
#include "odmoe/exec/options.h"
#include "odmoe/sched/schedule.h"
#include "odmoe/store/expert_store.h"
#include "odmoe/weights/model_files.h"

namespace odmoe {

// An expert rank: serves commands from main until STOP. Returns normally after STOP.
void run_worker(const Comm& comm, const ModelFiles& files, ExpertStore& store, Backend& be, const Schedule& sched,
                const DistOptions& opts);

}  // namespace odmoe
