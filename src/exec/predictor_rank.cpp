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
    out_.send(0, kTagPredict, msg::Predict{p.step, p.layer, p.experts}.encode());
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
    out_.send(rank_, kTagCmd, msg::ShadowBegin{step, pos, std::vector<int32_t>(tokens, tokens + n)}.encode());
    poll(sink);
  }

  // The layer's attention has written its KV rows: the shadow may align to them.
  void after_routing(int, int layer, const float*, size_t, const int32_t*, size_t, PredictionSink& sink) override {
    const size_t kv = full_.kv_dim();
    msg::KvRows rows{layer, pos_, static_cast<int32_t>(n_), std::vector<float>(2 * n_ * kv)};
    full_.read_kv_rows(layer, pos_, n_, rows.rows.data(), rows.rows.data() + n_ * kv);
    out_.send(rank_, kTagCmd, rows.encode());
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
    out_.send(rank_, kTagCmd, msg::Stop{}.encode());
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
      stats_ = nlohmann::json::parse(msg::Stats::decode(m).json);
      return;
    }
    const msg::Predict pm = msg::Predict::decode(m);
    if (!sink) return;
    Prediction p;
    p.step = static_cast<int>(pm.step);
    p.layer = pm.layer;
    p.experts = pm.experts;
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
    switch (m.header.op) {
      case Op::kShadowBegin: {
        const msg::ShadowBegin b = msg::ShadowBegin::decode(m);
        if (b.pos == 0) mirror.reset();
        shadow->begin_step(static_cast<int>(b.step), b.pos, b.tokens.data(), b.tokens.size(), sink);
        break;
      }
      case Op::kKvRows: {
        const msg::KvRows r = msg::KvRows::decode(m);
        const size_t n = static_cast<size_t>(r.n_tokens), kv = mirror.kv_dim();
        ODMOE_CHECK(r.rows.size() == 2 * n * kv, kMpi, "protocol",
                    "KV_ROWS from main has " << r.rows.size() << " values; " << n << " rows of K and V take " << 2 * n * kv,
                    "all ranks must run the same odmoe build");
        mirror.write(r.layer, r.pos, n, r.rows.data(), r.rows.data() + n * kv);
        break;
      }
      case Op::kStop: {
        msg::Stop::decode(m);
        shadow->poll(sink);
        nlohmann::json st = shadow->stats();
        st["peak_host_bytes"] = peak_rss_bytes();
        out.send(0, kTagPredict, msg::Stats{st.dump()}.encode());
        out.drain("main to take the predictor rank's statistics");
        return;
      }
      default:
        ODMOE_THROW(kMpi, "protocol", "unexpected " << op_name(m.header.op) << " from main at the predictor rank",
                    "all ranks must run the same build");
    }
    shadow->poll(sink);
    out.reap();
  }
}

}  // namespace odmoe
