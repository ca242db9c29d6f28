// --predictor-rank: the shadow on a rank of its own (the paper's shadow node). Main sends it
// each forward step's tokens and, layer by layer, the full model's new KV rows; it runs the
// shadow against a mirror of those rows and sends back each prediction as it is made.
#include <mpi.h>

#include <cstring>

#include "odmoe/core/error.h"
#include "odmoe/core/memory_stats.h"
#include "odmoe/exec/predictor_rank.h"

namespace odmoe {

namespace {

// Predictions made on the predictor rank go to main.
class ToMain final : public PredictionSink {
 public:
  explicit ToMain(Outbox& out) : out_(out) {}
  void publish(const Prediction& p) override {
    MsgHeader h;
    h.op = Op::kPredict;
    h.seq = p.step;
    h.layer = p.layer;
    h.n_tokens = static_cast<int32_t>(p.experts.size());
    out_.send(0, kTagPredict, h, p.experts.data(), p.experts.size() * sizeof(int32_t));
  }

 private:
  Outbox& out_;
};

class RemoteShadowPredictor final : public Predictor {
 public:
  RemoteShadowPredictor(const Comm& comm, int rank, const Model& full)
      : comm_(comm), rank_(rank), full_(full), out_(comm) {}
  std::string name() const override { return "shadow"; }

  void begin_step(int step, int pos, const int32_t* tokens, size_t n, PredictionSink& sink) override {
    pos_ = pos;
    n_ = n;
    MsgHeader h;
    h.op = Op::kShadowBegin;
    h.seq = step;
    h.slot = pos;
    h.n_tokens = static_cast<int32_t>(n);
    out_.send(rank_, kTagCmd, h, tokens, n * sizeof(int32_t));
    poll(sink);
  }

  // The layer's attention has written its KV rows: the shadow may align to them.
  void after_routing(int, int layer, const float*, size_t, const int32_t*, size_t, PredictionSink& sink) override {
    const size_t kv = full_.kv_dim();
    buf_.resize(2 * n_ * kv);
    std::memcpy(buf_.data(), full_.k_row(layer, pos_), n_ * kv * sizeof(float));
    std::memcpy(buf_.data() + n_ * kv, full_.v_row(layer, pos_), n_ * kv * sizeof(float));
    MsgHeader h;
    h.op = Op::kKvRows;
    h.layer = layer;
    h.slot = pos_;
    h.n_tokens = static_cast<int32_t>(n_);
    out_.send(rank_, kTagCmd, h, buf_.data(), buf_.size() * sizeof(float));
    poll(sink);
  }

  void poll(PredictionSink& sink) override {
    out_.reap();
    for (;;) {
      int flag = 0;
      ODMOE_MPI_CHECK(MPI_Iprobe(rank_, kTagPredict, comm_.comm(), &flag, MPI_STATUS_IGNORE));
      if (!flag) return;
      Message m = comm_.recv(rank_, kTagPredict, [&] { return "a prediction from " + comm_.where(rank_); });
      take(m, &sink);
    }
  }

  void finish() override {
    MsgHeader h;
    h.op = Op::kStop;
    out_.send(rank_, kTagCmd, h);
    while (stats_.is_null()) {
      Message m = comm_.recv(rank_, kTagPredict, [&] { return "the statistics of the predictor rank " + comm_.where(rank_); });
      take(m, nullptr);  // late predictions are dropped
    }
    out_.drain("the predictor rank to take STOP");
  }

  nlohmann::json stats() const override {
    nlohmann::json j = stats_.is_null() ? nlohmann::json::object() : stats_;
    j["predictor_rank"] = rank_;
    j["predictor_host"] = comm_.host(rank_);
    return j;
  }

 private:
  void take(const Message& m, PredictionSink* sink) {
    if (m.header.op == Op::kStats) {
      stats_ = nlohmann::json::parse(m.payload.begin(), m.payload.end());
      return;
    }
    ODMOE_CHECK(m.header.op == Op::kPredict && m.payload.size() == static_cast<size_t>(m.header.n_tokens) * sizeof(int32_t),
                kMpi, "protocol", "unexpected " << op_name(m.header.op) << " from the predictor rank " << comm_.where(rank_),
                "all ranks must run the same build");
    if (!sink) return;
    Prediction p;
    p.step = static_cast<int>(m.header.seq);
    p.layer = m.header.layer;
    p.experts.resize(static_cast<size_t>(m.header.n_tokens));
    std::memcpy(p.experts.data(), m.payload.data(), m.payload.size());
    p.time = now_s();  // usable from when it arrived (the ranks' clocks may differ)
    p.source = "shadow";
    sink->publish(p);
  }

  const Comm& comm_;
  int rank_;
  const Model& full_;
  Outbox out_;
  int pos_ = 0;
  size_t n_ = 0;
  std::vector<float> buf_;
  nlohmann::json stats_;
};

}  // namespace

std::unique_ptr<Predictor> make_remote_shadow_predictor(const Comm& comm, int rank, const Model& full) {
  return std::make_unique<RemoteShadowPredictor>(comm, rank, full);
}

void run_shadow_rank(const Comm& comm, const ModelFiles& files, int n_ctx, const DistOptions& opts) {
  const ModelConfig& c = files.config();
  const int ctx = n_ctx > 0 ? std::min(n_ctx, c.max_position_embeddings) : c.max_position_embeddings;
  KvMirror mirror(c.n_layer, ctx, static_cast<size_t>(c.n_head_kv) * c.head_dim);
  ShadowOptions so = opts.shadow;
  so.extra = opts.predict_extra;
  std::unique_ptr<Predictor> shadow = make_shadow_predictor(files, mirror, ctx, so);
  Outbox out(comm);
  ToMain sink(out);
  bool started = false;
  for (;;) {
    Message m = comm.recv(
        0, kTagCmd, [&] { return "a command from main (" + comm.where(0) + ")"; },
        [&] {
          shadow->poll(sink);
          out.reap();
        },
        started ? opts.timeout_s : std::max(opts.timeout_s, opts.startup_timeout_s));
    started = true;
    const MsgHeader& h = m.header;
    switch (h.op) {
      case Op::kShadowBegin: {
        const size_t n = static_cast<size_t>(h.n_tokens);
        ODMOE_CHECK(n > 0 && m.payload.size() == n * sizeof(int32_t), kMpi, "protocol", "bad SHADOW_BEGIN from main", "");
        if (h.slot == 0) mirror.reset();
        shadow->begin_step(static_cast<int>(h.seq), h.slot, reinterpret_cast<const int32_t*>(m.payload.data()), n, sink);
        break;
      }
      case Op::kKvRows: {
        const size_t n = static_cast<size_t>(h.n_tokens), kv = mirror.kv_dim();
        ODMOE_CHECK(m.payload.size() == 2 * n * kv * sizeof(float), kMpi, "protocol", "bad KV_ROWS from main", "");
        const auto* k = reinterpret_cast<const float*>(m.payload.data());
        mirror.write(h.layer, h.slot, n, k, k + n * kv);
        break;
      }
      case Op::kStop: {
        shadow->poll(sink);
        nlohmann::json st = shadow->stats();
        st["peak_host_bytes"] = peak_rss_bytes();
        const std::string js = st.dump();
        MsgHeader r;
        r.op = Op::kStats;
        out.send(0, kTagPredict, r, js.data(), js.size());
        out.drain("main to take the predictor rank's statistics");
        return;
      }
      default:
        ODMOE_THROW(kMpi, "protocol", "unexpected " << op_name(h.op) << " from main at the predictor rank",
                    "all ranks must run the same build");
    }
    shadow->poll(sink);
    out.reap();
  }
}

}  // namespace odmoe
