// An expert rank: pulls experts into slots when main says LOAD, computes them on COMPUTE,
// frees them after the last COMPUTE (on-demand) or keeps them (resident).
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

#include "odmoe/core/error.h"
#include "odmoe/core/memory_stats.h"
#include "odmoe/dist/runtime.h"

namespace odmoe::dist {

namespace {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

struct Slot {
  std::unique_ptr<uint8_t, FreeDeleter> buf;
  int layer = -1, expert = -1;  // what the slot holds or is loading; -1: free (dropped or evicted)
  int load_layer = -1, load_expert = -1;  // the last load into it (its gets may outlive a drop)
  std::vector<MPI_Request> reqs;
  bool in_flight = false;  // gets posted, not yet complete (or the emulated link not yet done)
  bool gets_done = false;
  double t_post = 0, t_link_done = 0;
  uint64_t bytes = 0;
};

class Worker {
 public:
  Worker(const Comm& comm, const ModelFiles& files, ExpertStore& store, Backend& be, const Schedule& sched,
         const DistOptions& opts)
      : comm_(comm), store_(store), be_(be), sched_(sched), opts_(opts), out_(comm), trace_(opts.trace),
        cfg_(files.config()) {
    n_slots_ = opts.mode == Mode::kResident ? sched.resident_slots() : sched.on_demand_slots();
    slot_bytes_ = (store.max_expert_bytes() + 4095) / 4096 * 4096;
    slots_.resize(static_cast<size_t>(n_slots_));
    for (Slot& s : slots_) {
      void* p = std::aligned_alloc(4096, slot_bytes_);
      ODMOE_CHECK(p, kCore, "oom", "cannot allocate a " << slot_bytes_ << "-byte expert slot", "");
      s.buf.reset(static_cast<uint8_t*>(p));
    }
  }

  void run() {
    bool started = false;  // the first COMPUTE may follow main's model loading: a longer bound
    for (;;) {
      const double t0 = now_s();
      Message m = comm_.recv(
          0, kTagCmd, [&] { return "a command from main (" + comm_.where(0) + ")"; }, [&] { poll_loads(); },
          started ? opts_.timeout_s : std::max(opts_.timeout_s, opts_.startup_timeout_s));
      const double t1 = now_s();
      msg_wait_s_ += t1 - t0;
      const MsgHeader& h = m.header;
      switch (h.op) {
        case Op::kLoad: load(h); break;
        case Op::kCompute:
          started = true;
          compute(h, m.payload);
          break;
        case Op::kDrop: slot_at(h.slot).layer = slot_at(h.slot).expert = -1; break;
        case Op::kSync: {
          for (int s = 0; s < n_slots_; ++s) wait_slot(s, "SYNC");
          MsgHeader r;
          r.op = Op::kReady;
          r.seq = h.seq;
          out_.send(0, kTagReply, r);
          break;
        }
        case Op::kClock: {
          MsgHeader r;
          r.op = Op::kClock;
          r.seq = h.seq;
          r.time = now_s();
          out_.send(0, kTagReply, r);
          break;
        }
        case Op::kStop: {
          for (int s = 0; s < n_slots_; ++s) wait_slot(s, "STOP");
          const std::string js = stats().dump();
          MsgHeader r;
          r.op = Op::kStats;
          out_.send(0, kTagReply, r, js.data(), js.size());
          out_.drain("main to take this rank's statistics");
          return;
        }
        default:
          ODMOE_THROW(kMpi, "protocol", "unexpected " << op_name(h.op) << " from main", "all ranks must run the same build");
      }
      out_.reap();
    }
  }

 private:
  Slot& slot_at(int s) {
    ODMOE_CHECK(s >= 0 && s < n_slots_, kMpi, "protocol", "main named slot " << s << "; this rank has " << n_slots_,
                "all ranks must run with the same options");
    return slots_[static_cast<size_t>(s)];
  }

  void load(const MsgHeader& h) {
    Slot& s = slot_at(h.slot);
    if (s.in_flight) wait_slot(h.slot, "a reused slot");  // a dropped expert's gets may still be landing
    const ExpertEntry& en = store_.entry(h.layer, h.expert);
    s.layer = s.load_layer = h.layer;
    s.expert = s.load_expert = h.expert;
    s.bytes = en.rec.bytes;
    s.reqs.clear();
    s.t_post = now_s();
    store_.post_get(h.layer, h.expert, s.buf.get(), &s.reqs);
    s.in_flight = true;
    s.gets_done = false;
    s.t_link_done = 0;
    if (opts_.load_gbps > 0) {  // emulated link: transfers on it are serialised at the given rate
      const double start = std::max(s.t_post, link_free_);
      s.t_link_done = start + static_cast<double>(s.bytes) * 8.0 / (opts_.load_gbps * 1e9);
      link_free_ = s.t_link_done;
    }
    bytes_pulled_ += s.bytes;
    ++pulls_;
    if (store_.source_of(h.layer, h.expert) == comm_.rank()) ++pulls_local_rank_;
    else if (comm_.node_of(store_.source_of(h.layer, h.expert)) != comm_.node_of(comm_.rank())) ++pulls_remote_node_;
  }

  // Completes slot `si`'s load if it is done; true when the slot holds its expert.
  bool try_finish(int si) {
    Slot& s = slots_[static_cast<size_t>(si)];
    if (!s.in_flight) return true;
    if (!s.gets_done) {
      int done = 0;
      MPI_Testall(static_cast<int>(s.reqs.size()), s.reqs.data(), &done, MPI_STATUSES_IGNORE);
      if (!done) return false;
      s.gets_done = true;
    }
    const double t = now_s();
    if (t < s.t_link_done) return false;
    s.in_flight = false;
    load_s_ += t - s.t_post;
    trace_.add("load L" + std::to_string(s.load_layer) + " E" + std::to_string(s.load_expert), "load", kStreamLoad, s.t_post, t,
               {{"bytes", s.bytes}, {"from", store_.source_of(s.load_layer, s.load_expert)}});
    if (opts_.verify_pulls) {
      const std::string bad = store_.verify(s.load_layer, s.load_expert, s.buf.get());
      ODMOE_CHECK(bad.empty(), kMpi, "corrupt-pull",
                  "an expert pulled from " << comm_.where(store_.source_of(s.load_layer, s.load_expert)) << " is corrupt: " << bad,
                  "the holder's shard file differs or the transport corrupted data");
      ++verified_;
    }
    return true;
  }

  void poll_loads() {
    for (int s = 0; s < n_slots_; ++s) try_finish(s);
  }

  // Waits (bounded) until slot `si` holds its expert; returns the seconds waited.
  double wait_slot(int si, const char* why) {
    Slot& s = slots_[static_cast<size_t>(si)];
    if (!s.in_flight) return 0;
    const double t0 = now_s(), deadline = t0 + opts_.timeout_s;
    Backoff backoff;
    while (!try_finish(si)) {
      const double t = now_s();
      if (t > deadline)
        ODMOE_THROW(kMpi, "timeout",
                    "timed out after " << opts_.timeout_s << " s waiting for expert (" << s.load_layer << ", " << s.load_expert
                                       << ") from " << comm_.where(store_.source_of(s.load_layer, s.load_expert)) << " (" << why
                                       << ")",
                    "the holder may have died or be stuck; a slow link may need a larger --timeout");
      if (s.gets_done && s.t_link_done > t)
        std::this_thread::sleep_for(std::chrono::duration<double>(std::min(s.t_link_done - t, 0.001)));
      else
        backoff.pause();
    }
    return now_s() - t0;
  }

  void compute(const MsgHeader& h, const std::vector<char>& payload) {
    const size_t d = static_cast<size_t>(cfg_.n_embd), n = static_cast<size_t>(h.n_tokens);
    ODMOE_CHECK(payload.size() == n * d * 4, kMpi, "protocol",
                "COMPUTE with " << payload.size() << " payload bytes for " << n << " tokens of " << d, "");
    Slot& s = slot_at(h.slot);
    ODMOE_CHECK(s.layer == h.layer && s.expert == h.expert, kMpi, "protocol",
                "COMPUTE for expert (" << h.layer << ", " << h.expert << ") in slot " << h.slot << ", which holds ("
                                       << s.layer << ", " << s.expert << ")",
                "");
    const double t0 = now_s();
    const double stalled = wait_slot(h.slot, "COMPUTE");
    const double t1 = now_s();
    if (stalled > 0) {
      stall_s_ += stalled;
      trace_.add("stall L" + std::to_string(h.layer) + " E" + std::to_string(h.expert), "stall", kStreamWait, t0, t1);
    }
    const ExpertRecord& rec = store_.entry(h.layer, h.expert).rec;
    const auto dt = static_cast<DType>(rec.dtype);
    const size_t ff = static_cast<size_t>(cfg_.n_ff_expert);
    const uint8_t* base = s.buf.get();
    auto view = [&](int t, size_t rows, size_t cols) {
      WeightView w;
      w.dtype = dt;
      w.rows = rows;
      w.cols = cols;
      w.data = base + rec.rel[t];
      w.scales = rec.len[3 + t] ? reinterpret_cast<const float*>(base + rec.rel[3 + t]) : nullptr;
      return w;
    };
    y_.resize(n * d);
    expert_forward(be_, view(0, ff, d), view(1, ff, d), view(2, d, ff), reinterpret_cast<const float*>(payload.data()),
                   n, y_.data(), &scratch_);
    const double t2 = now_s();
    compute_s_ += t2 - t1;
    ++computes_;
    trace_.add("expert L" + std::to_string(h.layer) + " E" + std::to_string(h.expert), "compute", kStreamCompute, t1, t2,
               {{"tokens", n}});
    MsgHeader r = h;
    r.op = Op::kResult;
    out_.send(0, kTagReply, r, y_.data(), n * d * 4);
    if (h.flags & kFlagLast) s.layer = s.expert = -1;  // evict: the slot is free for the next load
  }

  nlohmann::json stats() const {
    return {{"rank", comm_.rank()},
            {"host", comm_.host(comm_.rank())},
            {"role", "worker"},
            {"group", sched_.group_of_rank(comm_.rank())},
            {"slots", n_slots_},
            {"slot_bytes", slot_bytes_},
            {"store_bytes", store_.bytes_held()},
            {"progress_thread", store_.progress_thread_running()},
            {"pulls", pulls_},
            {"pulls_from_own_window", pulls_local_rank_},
            {"pulls_from_other_nodes", pulls_remote_node_},
            {"bytes_pulled", bytes_pulled_},
            {"pulls_verified", verified_},
            {"load_seconds", load_s_},
            {"computes", computes_},
            {"compute_seconds", compute_s_},
            {"stall_seconds", stall_s_},
            {"message_wait_seconds", msg_wait_s_},
            {"peak_host_bytes", peak_rss_bytes()},
            {"peak_device_bytes", 0},
            {"device", be_.name()},
            {"trace_events", trace_.to_json()}};
  }

  const Comm& comm_;
  ExpertStore& store_;
  Backend& be_;
  const Schedule& sched_;
  const DistOptions& opts_;
  Outbox out_;
  TraceRecorder trace_;
  const ModelConfig& cfg_;
  int n_slots_ = 0;
  uint64_t slot_bytes_ = 0;
  std::vector<Slot> slots_;
  std::vector<float> y_, scratch_;
  double link_free_ = 0;
  uint64_t bytes_pulled_ = 0, pulls_ = 0, pulls_local_rank_ = 0, pulls_remote_node_ = 0, computes_ = 0, verified_ = 0;
  double load_s_ = 0, compute_s_ = 0, stall_s_ = 0, msg_wait_s_ = 0;
};

}  // namespace

void run_worker(const Comm& comm, const ModelFiles& files, ExpertStore& store, Backend& be, const Schedule& sched,
                const DistOptions& opts) {
  Worker w(comm, files, store, be, sched, opts);
  w.run();
}

}  // namespace odmoe::dist
