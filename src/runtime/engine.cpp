#include "odmoe/runtime/engine.h"

#include <mpi.h>
#include <sched.h>

#include <algorithm>
#include <thread>

#include "odmoe/core/error.h"
#include "odmoe/core/memory_stats.h"
#include "odmoe/exec/expert_rank.h"
#include "odmoe/exec/predictor_rank.h"
#include "odmoe/predict/fallback.h"

namespace odmoe {

namespace {
bool g_coupled = false;

int cores_available() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}
}  // namespace

bool Engine::ranks_coupled() { return g_coupled; }

nlohmann::json main_rank_stats(const std::string& backend) {
  return {{"rank", 0}, {"role", "main"}, {"peak_host_bytes", peak_rss_bytes()},
          {"device", backend}};
}

namespace {

// The look-ahead of gate-ahead and of the shadow's fallback: --gate-ahead-depth, else what
// hides a load behind the other groups' work (G - 1 layers, at least 1).
int look_ahead_depth(const DistOptions& d, int groups) {
  return d.gate_ahead_depth > 0 ? d.gate_ahead_depth : std::max(1, groups - 1);
}

// A shadow (on main's thread or on a rank of its own) backed by its fallback unless
// --shadow-fallback off.
std::unique_ptr<Predictor> with_fallback(std::unique_ptr<Predictor> shadow, const DistOptions& d, const Model& model,
                                         int groups) {
  if (!d.shadow.fallback) return shadow;
  return make_fallback_predictor(std::move(shadow), model, look_ahead_depth(d, groups), d.predict_extra);
}

// The predictor `name` for `model` (created once the model exists: gate-ahead reads its
// routers, the shadow its KV cache).
std::unique_ptr<Predictor> make_predictor(const DistOptions& d, const ModelFiles& files, const Model& model,
                                                int groups) {
  const ModelConfig& c = files.config();
  const std::string& name = d.predictor;
  if (name == "none") return make_none_predictor();
  if (name == "oracle") {
    ODMOE_CHECK(!d.routing_trace.empty(), kCli, "bad-option", "--predictor oracle needs --routing-trace FILE",
                "record one first: odmoe generate ... --save-routing FILE");
    RoutingTrace t = RoutingTrace::load(d.routing_trace);
    ODMOE_CHECK(t.model_uid == files.header().model_uid && t.n_layer == c.n_layer && t.n_expert == c.n_expert, kCli,
                "bad-trace", d.routing_trace << " was recorded with another model", "record the trace with the same --model");
    return make_oracle_predictor(std::move(t));
  }
  if (name == "previous") return make_previous_predictor(c.n_layer);
  if (name == "random") return make_random_predictor(c.n_layer, c.n_expert, c.n_expert_used, 0x0d0e);
  if (name == "gate-ahead") return make_gate_ahead_predictor(model, look_ahead_depth(d, groups), d.predict_extra);
  if (name == "shadow") {
    ShadowOptions so = d.shadow;
    so.extra = d.predict_extra;
    return with_fallback(make_shadow_predictor(files, model, model.n_ctx(), so), d, model, groups);
  }
  ODMOE_THROW(kCli, "bad-option", "--predictor " << name << " is not available",
              std::string("choose ") + kPredictorNames);
}

}  // namespace

Engine::Role Engine::open_common(const EngineOptions& o) {
  opts_ = o;
  const int size = mpi_world_size();  // starts MPI only under a launcher
  if (size == 1) {
    files_ = std::make_unique<ModelFiles>(o.model_dir);
    // A shadow runs on cores of its own: the model gets the rest.
    const int shadow_cores = o.dist.predictor == "shadow" ? o.dist.shadow.threads : 0;
    const int threads = o.threads > 0 ? o.threads : std::max(1, cores_available() - shadow_cores);
    backend_ = std::make_unique<CpuBackend>(detect_cpu_isa(), threads);
    device_ = std::make_unique<CpuDevice>(*backend_, backend_->n_threads());
    return Role::kMain;
  }

  g_coupled = true;
  comm_ = std::make_unique<Comm>(std::max(o.dist.timeout_s, o.dist.startup_timeout_s));
  const Comm& comm = *comm_;
  files_ = std::make_unique<ModelFiles>(o.model_dir);
  int on_node = 0;
  for (int r = 0; r < comm.size(); ++r) on_node += comm.node_of(r) == comm.node_of(comm.rank());
  const int threads = o.threads > 0 ? o.threads : std::max(1, cores_available() / on_node);
  backend_ = std::make_unique<CpuBackend>(detect_cpu_isa(), threads);
  device_ = std::make_unique<CpuDevice>(*backend_, backend_->n_threads());
  const ModelConfig& c = files_->config();
  const int shadow_rank = o.dist.predictor_rank;
  ODMOE_CHECK(!(o.dist.degrade && o.dist.mode == Mode::kResident), kCli, "bad-option",
              "--on-worker-failure degrade re-plans loads on demand; resident mode loads nothing after start-up",
              "use --mode on-demand or cache, or --on-worker-failure abort");
  if (shadow_rank >= 0) {
    ODMOE_CHECK(o.dist.predictor == "shadow" && o.dist.mode != Mode::kResident, kCli, "bad-option",
                "--predictor-rank runs the shadow predictor on its own rank",
                "use it with --mode on-demand --predictor shadow");
    ODMOE_CHECK(!o.dist.degrade, kCli, "bad-option",
                "--on-worker-failure degrade does not cover the predictor rank (--predictor-rank)",
                "run the shadow on main, or use --on-worker-failure abort");
    ODMOE_CHECK(shadow_rank == size - 1 && size >= 3, kCli, "bad-option",
                "--predictor-rank " << shadow_rank << ": the predictor rank must be the last rank (" << size - 1
                                    << ") of a job of at least 3",
                "launch one more rank and name it, e.g. mpirun -np 6 ... --predictor-rank 5");
  }
  const int workers = size - 1 - (shadow_rank >= 0 ? 1 : 0);
  const int groups = o.dist.groups > 0 ? o.dist.groups : Schedule::default_groups(workers, c.n_expert_used);
  sched_ = std::make_unique<Schedule>(c.n_layer, c.n_expert, c.n_expert_used, workers, groups, o.dist.lookahead,
                                      o.dist.predict_extra);
  StoreOptions store = o.dist.store;
  store.n_workers = workers;
  store_ = std::make_unique<ExpertStore>(comm, *files_, store);
  comm_->set_timeout(o.dist.timeout_s);
  if (comm.rank() == 0) return Role::kMain;
  return comm.rank() == shadow_rank ? Role::kPredictorRank : Role::kExpertRank;
}

void Engine::open_single_process() {
  const EngineOptions& o = opts_;
  local_ = std::make_unique<LocalExpertExecutor>(*files_, *backend_);
  if (o.dist.predictor == "none") {
    model_ = std::make_unique<Model>(*files_, *device_, *local_, o.n_ctx);
    return;
  }
  // A predictor in one process: nothing to load, its predictions are accounted.
  const ModelConfig& c = files_->config();
  const int groups = std::max(1, o.dist.groups);
  accounting_ = std::make_unique<AccountingExecutor>(
      *local_, c.n_layer, c.n_expert, groups - 1, std::min(c.n_expert, c.n_expert_used + o.dist.predict_extra),
      make_none_predictor(), o.dist.predictor_sync, o.dist.timeout_s);
  model_ = std::make_unique<Model>(*files_, *device_, *accounting_, o.n_ctx);
  accounting_->set_predictor(make_predictor(o.dist, *files_, *model_, groups));
}

void Engine::open_main() {
  const EngineOptions& o = opts_;
  DistOptions d = o.dist;
  if (d.mode == Mode::kResident) d.predictor = "none";  // nothing is loaded after start-up
  exec_ = std::make_unique<DistributedExpertExecutor>(*comm_, *files_, *store_, *sched_, d, make_none_predictor());
  exec_->start();
  model_ = std::make_unique<Model>(*files_, *device_, *exec_, o.n_ctx);
  const int groups = sched_->n_groups();
  exec_->set_predictor(o.dist.predictor_rank >= 0
                           ? with_fallback(make_remote_shadow_predictor(*comm_, o.dist.predictor_rank, *model_), d,
                                           *model_, groups)
                           : make_predictor(d, *files_, *model_, groups));
}

int Engine::run(const EngineOptions& opts, const std::function<int(Engine&)>& as_main) {
  std::unique_ptr<Engine> eng(new Engine);
  switch (eng->open_common(opts)) {
    case Role::kMain:
      if (eng->comm_) {
        eng->open_main();
      } else {
        eng->open_single_process();
      }
      return as_main(*eng);
    case Role::kPredictorRank:
      run_shadow_rank(*eng->comm_, *eng->files_, opts.n_ctx, opts.dist);
      eng->store_->close();
      return 0;
    case Role::kExpertRank:
      run_worker(*eng->comm_, *eng->files_, *eng->store_, *eng->backend_, *eng->sched_, opts.dist);
      // After a rank died (--on-worker-failure degrade) the windows cannot be freed (that is
      // collective); the process ends without MPI_Finalize.
      if (!job_degraded()) eng->store_->close();
      return 0;
  }
  return 0;
}

Engine::~Engine() {
  // The predictor goes first: a shadow's thread reads the model's KV cache.
  if (exec_) exec_->set_predictor(make_none_predictor());
  if (accounting_) accounting_->set_predictor(make_none_predictor());
}

std::string Engine::describe() const {
  if (!exec_)
    return "single process" + (accounting_ ? ", predictor " + opts_.dist.predictor + " (accounted only)" : std::string()) +
           ", " + backend_->to_string();
  const DistOptions& d = opts_.dist;
  std::string s = std::string(mode_name(d.mode)) + ", " + sched_->to_string() + ", " +
                  store_placement_name(d.store.placement) + " store on " + std::to_string(comm_->n_nodes()) +
                  " node" + (comm_->n_nodes() > 1 ? "s" : "");
  if (d.mode == Mode::kCache)
    s += ", " + std::to_string(cache_slots(*sched_, d)) + " cache slots per expert rank (" +
         (d.cache_by_score ? "score" : d.cache_lfu ? "lfu" : "lru") + ")" +
         (d.substitute >= 0 ? ", substitution alpha " + std::to_string(d.substitute) : "");
  if (d.mode != Mode::kResident)
    s += ", predictor " + d.predictor + (d.predictor_rank >= 0 ? " on rank " + std::to_string(d.predictor_rank) : "");
  if (d.load_gbps > 0) s += ", link emulated at " + std::to_string(d.load_gbps) + " Gbit/s per expert rank";
  return s + ", " + backend_->to_string();
}

void Engine::mark_memory(int64_t mark) {
  marks_.push_back({{"mark", mark}, {"rss_bytes", current_rss_bytes()}, {"peak_rss_bytes", peak_rss_bytes()}});
  if (exec_) exec_->mark_memory(mark);
}

nlohmann::json Engine::finish(const std::string& trace_path) {
  ODMOE_CHECK(!finished_, kCore, "twice", "Engine::finish called twice", "");
  finished_ = true;
  nlohmann::json main_stats = main_rank_stats(backend_->to_string());
  // Main's device allocator: KV cache and activations (peak), and the weights it computes from
  // in place (wrapped). peak_device_bytes itself waits for the expert ranks' allocators: a
  // job reporting it for some ranks only would read as measured for all.
  const MemoryAccount& mem = device_->memory();
  main_stats["device_memory"] = {{"peak_bytes", mem.peak_bytes()},
                                 {"live_bytes", mem.live_bytes()},
                                 {"wrapped_host_bytes", mem.wrapped_bytes()},
                                 {"limit_bytes", mem.limit_bytes()}};
  main_stats["memory_marks"] = marks_;
  if (!exec_) {
    nlohmann::json j = {{"ranks", nlohmann::json::array({main_stats})}};
    if (accounting_) j["predictor"] = accounting_->stats();
    return j;
  }
  main_stats["host"] = comm_->host(0);
  nlohmann::json j = exec_->finish(trace_path, main_stats);
  if (!job_degraded()) store_->close();
  return j;
}

}  // namespace odmoe
