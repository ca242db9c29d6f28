// An expert rank: pulls experts into slots when main says LOAD, computes them on COMPUTE,
// frees them after the last COMPUTE (on-demand) or keeps them (resident).
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "odmoe/core/error.h"
#include "odmoe/core/memory_stats.h"
#include "odmoe/exec/expert_rank.h"
#include "odmoe/exec/stats.h"
#include "odmoe/exec/trace.h"

namespace odmoe {

namespace {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// One slot: a buffer for one expert. `busy` is set by the worker thread when it queues a
// load and cleared by the loader thread (release) when the expert is in the buffer.
struct Slot {
  std::unique_ptr<uint8_t, FreeDeleter> buf;
  int layer = -1, expert = -1;            // what it holds or is loading (worker thread); -1: free
  int load_layer = -1, load_expert = -1;  // the last load into it (its gets may outlive a drop)
  std::atomic<bool> busy{false};
  std::vector<MPI_Request> reqs;          // loader thread only
  double t_post = 0, t_link_done = 0;
  uint64_t bytes = 0;
};

// The loader thread: posts the gets of every queued load at once (several in flight),
// drives them to completion and marks slots ready, so pulls proceed while the worker
// thread computes (on one node a get is a copy made by the caller's CPU; across nodes it
// needs MPI progress). With --load-gbps, a slot becomes ready no earlier than the emulated
// link would have delivered it: transfers on the link are serialised at the given rate.
class Loader {
 public:
  Loader(const Comm& comm, const ExpertStore& store, const DistOptions& opts, std::vector<Slot>& slots)
      : comm_(comm), store_(store), opts_(opts), slots_(slots), trace_(opts.trace) {
    th_ = std::thread([this] { loop(); });
  }
  ~Loader() { stop(); }

  void stop() {
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (th_.joinable()) th_.join();
  }

  void enqueue(int slot) {
    {
      std::lock_guard<std::mutex> g(mu_);
      queue_.push_back(slot);
    }
    cv_.notify_all();
  }

  // The loader's failure, if any (checked by the worker thread while it waits).
  std::string error() {
    std::lock_guard<std::mutex> g(mu_);
    return error_;
  }

  // Read after stop().
  double load_seconds = 0;
  uint64_t verified = 0;
  TraceRecorder& trace() { return trace_; }

 private:
  void loop() {
    std::vector<int> in_flight;
    Backoff backoff;
    try {
      for (;;) {
        std::vector<int> fresh;
        {
          std::unique_lock<std::mutex> lk(mu_);
          if (in_flight.empty())
            cv_.wait_for(lk, std::chrono::milliseconds(100), [&] { return stop_ || !queue_.empty(); });
          if (stop_) return;
          fresh.assign(queue_.begin(), queue_.end());
          queue_.clear();
        }
        for (int si : fresh) {
          Slot& s = slots_[static_cast<size_t>(si)];
          s.reqs.clear();
          s.t_post = now_s();
          store_.post_get(s.load_layer, s.load_expert, s.buf.get(), &s.reqs);
          s.t_link_done = 0;
          if (opts_.load_gbps > 0) {
            const double start = std::max(s.t_post, link_free_);
            s.t_link_done = start + static_cast<double>(s.bytes) * 8.0 / (opts_.load_gbps * 1e9);
            link_free_ = s.t_link_done;
          }
          in_flight.push_back(si);
        }
        bool progressed = !fresh.empty();
        for (size_t i = 0; i < in_flight.size();) {
          Slot& s = slots_[static_cast<size_t>(in_flight[i])];
          if (!s.reqs.empty()) {
            int done = 0;
            ODMOE_MPI_CHECK(MPI_Testall(static_cast<int>(s.reqs.size()), s.reqs.data(), &done, MPI_STATUSES_IGNORE));
            if (done) s.reqs.clear();
            else if (now_s() > s.t_post + opts_.timeout_s)
              ODMOE_THROW(kMpi, "timeout",
                          "timed out after " << opts_.timeout_s << " s pulling expert (" << s.load_layer << ", "
                                             << s.load_expert << ") from "
                                             << comm_.where(store_.source_of(s.load_layer, s.load_expert)),
                          "the holder may have died or be stuck; a slow link may need a larger --timeout");
          }
          const double t = now_s();
          if (!s.reqs.empty() || t < s.t_link_done) {
            ++i;
            continue;
          }
          finish(s, t);
          in_flight.erase(in_flight.begin() + static_cast<long>(i));
          progressed = true;
        }
        if (progressed) backoff.reset();
        else if (!in_flight.empty()) backoff.pause();
      }
    } catch (const Error& e) {
      std::lock_guard<std::mutex> g(mu_);
      error_ = e.to_string();
    }
  }

  void finish(Slot& s, double t) {
    load_seconds += t - s.t_post;
    trace_.add("load L" + std::to_string(s.load_layer) + " E" + std::to_string(s.load_expert), "load", kStreamLoad,
               s.t_post, t, {{"bytes", s.bytes}, {"from", store_.source_of(s.load_layer, s.load_expert)}});
    if (opts_.verify_pulls) {
      const std::string bad = store_.verify(s.load_layer, s.load_expert, s.buf.get());
      ODMOE_CHECK(bad.empty(), kMpi, "corrupt-pull",
                  "an expert pulled from " << store_.shard_name(s.load_layer, s.load_expert) << " on "
                                           << comm_.where(store_.source_of(s.load_layer, s.load_expert))
                                           << " is corrupt: " << bad,
                  "the holder's shard file differs or the transport corrupted data");
      ++verified;
    }
    s.busy.store(false, std::memory_order_release);
  }

  const Comm& comm_;
  const ExpertStore& store_;
  const DistOptions& opts_;
  std::vector<Slot>& slots_;
  TraceRecorder trace_;
  double link_free_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<int> queue_;
  bool stop_ = false;
  std::string error_;
  std::thread th_;
};

class Worker {
 public:
  Worker(const Comm& comm, const ModelFiles& files, ExpertStore& store, Backend& be, const Schedule& sched,
         const DistOptions& opts)
      : comm_(comm), store_(store), be_(be), sched_(sched), opts_(opts), out_(comm), trace_(opts.trace),
        cfg_(files.config()) {
    int provided = 0;
    ODMOE_MPI_CHECK(MPI_Query_thread(&provided));
    ODMOE_CHECK(provided == MPI_THREAD_MULTIPLE, kMpi, "threads",
                "expert ranks pull experts on a loader thread, which needs MPI_THREAD_MULTIPLE; this MPI provides "
                    << provided,
                "use an MPI library built with thread support");
    slot_bytes_ = (store.max_expert_bytes() + 4095) / 4096 * 4096;
    allocate_slots(worker_slots(sched, opts));
    loader_ = std::make_unique<Loader>(comm, store, opts, slots_);
  }

  // n_slots_ slots of slot_bytes_ each (the buffers of slots already there are kept).
  void allocate_slots(int n) {
    const double need_mib = static_cast<double>(slot_bytes_) * n / (1 << 20);
    ODMOE_CHECK(opts_.device_mib <= 0 || need_mib <= opts_.device_mib, kCore, "device-memory",
                "cannot allocate " << n << " expert slots (" << slot_bytes_ << " bytes each): the device has "
                                   << opts_.device_mib << " MiB (--device-mib) and the slots need " << need_mib << " MiB",
                "fewer slots per rank: --lookahead 1, --predict-extra 0, fewer --cache-slots, or more expert ranks");
    std::vector<Slot> fresh(static_cast<size_t>(n));
    for (size_t i = 0; i < fresh.size(); ++i) {
      if (i < slots_.size()) {
        fresh[i].buf = std::move(slots_[i].buf);
        continue;
      }
      void* p = std::aligned_alloc(4096, slot_bytes_);
      ODMOE_CHECK(p, kCore, "oom", "cannot allocate expert slot " << i + 1 << " of " << n << " (" << slot_bytes_
                                                                  << " bytes)", "");
      fresh[i].buf.reset(static_cast<uint8_t*>(p));
    }
    slots_.swap(fresh);
    n_slots_ = n;
  }

  // --on-worker-failure degrade: a rank died; main has re-planned the layers over the
  // survivors (payload: workers, groups, lookahead, extra, this rank's index among them).
  // Every slot is idle (main synced first); the loader restarts over the new slots.
  void reschedule(const msg::Reschedule& rs) {
    for (int s = 0; s < n_slots_; ++s) wait_slot(s, "RESCHEDULE");
    loader_->stop();
    retired_.push_back(std::move(loader_));
    sched_ = Schedule(cfg_.n_layer, cfg_.n_expert, cfg_.n_expert_used, rs.workers, rs.groups, rs.lookahead, rs.extra);
    index_ = rs.index;
    allocate_slots(worker_slots(sched_, opts_));
    loader_ = std::make_unique<Loader>(comm_, store_, opts_, slots_);
    ++reschedules_;
  }

  void run() {
    bool started = false;  // the first COMPUTE may follow main's model loading: a longer bound
    // With --on-worker-failure degrade, main may spend a timeout finding a dead rank, a
    // probe and a re-plan before its next command: live ranks wait that out.
    const double idle_bound = opts_.degrade ? 3 * opts_.timeout_s + 5 : opts_.timeout_s;
    for (;;) {
      const double t0 = now_s();
      Message m = comm_.recv(
          0, kTagCmd, [&] { return "a command from main (" + comm_.where(0) + ")"; },
          [&] {
            check_loader();
            store_.check_files();
          },
          started ? idle_bound : std::max(idle_bound, opts_.startup_timeout_s));
      const double t1 = now_s();
      msg_wait_s_ += t1 - t0;
      switch (m.header.op) {
        case Op::kLoad: load(msg::Load::decode(m)); break;
        case Op::kCompute:
          started = true;
          compute(msg::Compute::decode(m));
          break;
        case Op::kDrop: {
          Slot& s = slot_at(msg::Drop::decode(m).slot);
          s.layer = s.expert = -1;
          break;
        }
        case Op::kReschedule: reschedule(msg::Reschedule::decode(m)); break;
        case Op::kKeepAlive: msg::KeepAlive::decode(m); break;
        case Op::kAbort:
          std::fprintf(stderr, "odmoe: %s: main failed (its error is above); this rank exits\n",
                       comm_.where(comm_.rank()).c_str());
          std::fflush(stderr);
          std::_Exit(1);
        case Op::kMark:
          marks_.push_back(MemoryMark::now(msg::Mark::decode(m).mark));
          break;
        case Op::kSync: {
          const msg::Sync sync = msg::Sync::decode(m);
          for (int s = 0; s < n_slots_; ++s) wait_slot(s, "SYNC");
          out_.send(0, kTagReply, msg::Ready{sync.seq}.encode());
          break;
        }
        case Op::kClock:
          out_.send(0, kTagReply, msg::Clock{msg::Clock::decode(m).seq, now_s()}.encode());
          break;
        case Op::kStop: {
          const msg::Stop stop = msg::Stop::decode(m);
          for (int s = 0; s < n_slots_; ++s) wait_slot(s, "STOP");
          loader_->stop();
          store_.check_files(0);  // a run shorter than the check period is checked too
          out_.send(0, kTagReply, msg::Stats{stats().to_json().dump()}.encode());
          out_.drain("main to take this rank's statistics");
          if (stop.degraded) set_job_degraded();
          return;
        }
        default:
          ODMOE_THROW(kMpi, "protocol", "unexpected " << op_name(m.header.op) << " from main",
                      "all ranks must run the same build");
      }
      out_.reap();
      store_.check_files();
    }
  }

 private:
  Slot& slot_at(int s) {
    ODMOE_CHECK(s >= 0 && s < n_slots_, kMpi, "protocol", "main named slot " << s << "; this rank has " << n_slots_,
                "all ranks must run with the same options");
    return slots_[static_cast<size_t>(s)];
  }

  void check_loader() {
    const std::string e = loader_->error();
    if (!e.empty()) ODMOE_THROW(kMpi, "loader", "pulling an expert failed: " << e, "");
  }

  void load(const msg::Load& h) {
    Slot& s = slot_at(h.slot);
    wait_slot(h.slot, "a reused slot");  // a dropped expert's gets may still be landing
    const ExpertEntry& en = store_.entry(h.layer, h.expert);
    s.layer = s.load_layer = h.layer;
    s.expert = s.load_expert = h.expert;
    s.bytes = en.rec.bytes;
    s.busy.store(true, std::memory_order_release);
    loader_->enqueue(h.slot);
    bytes_pulled_ += s.bytes;
    ++pulls_;
    const int src = store_.source_of(h.layer, h.expert);
    if (src == comm_.rank()) ++pulls_local_rank_;
    else if (comm_.node_of(src) != comm_.node_of(comm_.rank())) ++pulls_remote_node_;
  }

  // Waits (bounded) until slot `si` holds its expert; returns the seconds waited.
  double wait_slot(int si, const char* why) {
    Slot& s = slots_[static_cast<size_t>(si)];
    if (!s.busy.load(std::memory_order_acquire)) return 0;
    const double t0 = now_s(), deadline = t0 + opts_.timeout_s + 1.0;  // the loader's own bound fires first
    Backoff backoff;
    while (s.busy.load(std::memory_order_acquire)) {
      check_loader();
      if (now_s() > deadline)
        ODMOE_THROW(kMpi, "timeout",
                    "timed out after " << opts_.timeout_s << " s waiting for expert (" << s.load_layer << ", "
                                       << s.load_expert << ") from "
                                       << comm_.where(store_.source_of(s.load_layer, s.load_expert)) << " (" << why
                                       << ")",
                    "the holder may have died or be stuck; a slow link may need a larger --timeout");
      backoff.pause();
    }
    return now_s() - t0;
  }

  void compute(const msg::Compute& h) {
    const size_t d = static_cast<size_t>(cfg_.n_embd), n = static_cast<size_t>(h.n_tokens);
    ODMOE_CHECK(h.hidden.size() == n * d, kMpi, "protocol",
                "COMPUTE with " << h.hidden.size() << " values for " << n << " tokens of " << d, "");
    const double t0 = now_s();
    const uint8_t* base = nullptr;
    Slot* s = nullptr;
    if (h.host) {
      // A miss computed where the expert already is: this store rank's mapped shard.
      base = store_.local_data(h.layer, h.expert);
      ODMOE_CHECK(base, kMpi, "protocol",
                  "host COMPUTE for expert (" << h.layer << ", " << h.expert << "), which this rank does not hold", "");
      ++host_computes_;
    } else {
      s = &slot_at(h.slot);
      ODMOE_CHECK(s->layer == h.layer && s->expert == h.expert, kMpi, "protocol",
                  "COMPUTE for expert (" << h.layer << ", " << h.expert << ") in slot " << h.slot << ", which holds ("
                                         << s->layer << ", " << s->expert << ")",
                  "");
      const double stalled = wait_slot(h.slot, "COMPUTE");
      if (stalled > 0) {
        stall_s_ += stalled;
        trace_.add("stall L" + std::to_string(h.layer) + " E" + std::to_string(h.expert), "stall", kStreamWait, t0,
                   now_s());
      }
      base = s->buf.get();
    }
    const double t1 = now_s();
    const ExpertRecord& rec = store_.entry(h.layer, h.expert).rec;
    const auto dt = static_cast<DType>(rec.dtype);
    const size_t ff = static_cast<size_t>(cfg_.n_ff_expert);
    auto view = [&](int t, size_t rows, size_t cols) {
      WeightView w;
      w.dtype = dt;
      w.rows = rows;
      w.cols = cols;
      w.data = base + rec.rel[t];
      w.scales = rec.len[3 + t] ? reinterpret_cast<const float*>(base + rec.rel[3 + t]) : nullptr;
      return w;
    };
    msg::Result r{h.layer, h.expert, h.seq, h.n_tokens, std::vector<float>(n * d)};
    expert_forward(be_, view(0, ff, d), view(1, ff, d), view(2, d, ff), h.hidden.data(), n, r.out.data(), &scratch_);
    const double t2 = now_s();
    compute_s_ += t2 - t1;
    ++computes_;
    trace_.add("expert L" + std::to_string(h.layer) + " E" + std::to_string(h.expert), "compute", kStreamCompute, t1, t2,
               {{"tokens", n}});
    out_.send(0, kTagReply, r.encode());
    if (s && h.last) s->layer = s->expert = -1;  // evict: the slot is free for the next load
  }

  WorkerStats stats() {
    WorkerStats w;
    w.trace_events = trace_.to_json();
    w.load_seconds = loader_->load_seconds;
    w.pulls_verified = loader_->verified;
    for (const auto& l : retired_) {
      w.load_seconds += l->load_seconds;
      w.pulls_verified += l->verified;
      for (const auto& e : l->trace().to_json()) w.trace_events.push_back(e);
    }
    for (const auto& e : loader_->trace().to_json()) w.trace_events.push_back(e);
    w.rank = comm_.rank();
    w.host = comm_.host(comm_.rank());
    w.group = sched_.group_of_rank(index_);
    w.reschedules = reschedules_;
    w.slots = n_slots_;
    w.slot_bytes = slot_bytes_;
    w.store_bytes = store_.bytes_held();
    w.progress_thread = store_.progress_thread_running();
    w.pulls = pulls_;
    w.host_computes = host_computes_;
    w.pulls_from_own_window = pulls_local_rank_;
    w.pulls_from_other_nodes = pulls_remote_node_;
    w.bytes_pulled = bytes_pulled_;
    w.computes = computes_;
    w.compute_seconds = compute_s_;
    w.stall_seconds = stall_s_;
    w.message_wait_seconds = msg_wait_s_;
    w.peak_host_bytes = peak_rss_bytes();
    w.memory_marks = marks_;
    w.device = be_.name();
    return w;
  }

  std::vector<MemoryMark> marks_;  // Mark: memory at main's marks (batch generation)
  const Comm& comm_;
  ExpertStore& store_;
  Backend& be_;
  Schedule sched_;
  int index_ = comm_.rank();  // this rank among the expert ranks (1-based; changes after a failure)
  int reschedules_ = 0;
  std::vector<std::unique_ptr<Loader>> retired_;  // loaders before a reschedule (their figures)
  const DistOptions& opts_;
  Outbox out_;
  TraceRecorder trace_;
  const ModelConfig& cfg_;
  int n_slots_ = 0;
  uint64_t slot_bytes_ = 0;
  std::vector<Slot> slots_;
  std::vector<float> scratch_;  // f32: the expert's intermediate activations (expert_forward)
  std::unique_ptr<Loader> loader_;  // last: stopped before the slots it fills are freed
  uint64_t bytes_pulled_ = 0, pulls_ = 0, pulls_local_rank_ = 0, pulls_remote_node_ = 0, computes_ = 0, host_computes_ = 0;
  double compute_s_ = 0, stall_s_ = 0, msg_wait_s_ = 0;
};

}  // namespace

void run_worker(const Comm& comm, const ModelFiles& files, ExpertStore& store, Backend& be, const Schedule& sched,
                const DistOptions& opts) {
  Worker w(comm, files, store, be, sched, opts);
  w.run();
}

}  // namespace odmoe
