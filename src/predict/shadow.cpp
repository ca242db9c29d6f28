#include "odmoe/predict/shadow.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "odmoe/backend/cpu_backend.h"
#include "odmoe/backend/cpu_device.h"
#include "odmoe/core/error.h"
#include "odmoe/core/clock.h"
#include "odmoe/core/tensor_codec.h"

namespace odmoe {

void check_shadow_dtype(const std::string& dtype) {
  if (dtype != "auto" && dtype != "file" && !parse_dtype(dtype))
    throw ArgumentError("--shadow-dtype must be auto, file, f32, bf16, f16, int8 or int4, not '" + dtype + "'");
}

TensorReader shadow_tensor_reader(const ModelFiles& files, const std::string& dtype, std::string* resolved) {
  check_shadow_dtype(dtype);
  std::optional<DType> file_dtype;
  if (files.has_shadow()) file_dtype = read_file_header(files.shadow_file(), files.shadow_path()).weight_dtype;
  std::optional<DType> want;
  if (dtype == "file") {
    ODMOE_CHECK(file_dtype, kCli, "no-shadow", "--shadow-dtype file: " << files.dir() << " has no shadow.h5",
                "convert with --shadow int8|int4|f16, or pick a dtype to build the shadow in memory");
  } else if (dtype == "auto") {
    if (!file_dtype) want = DType::kInt8;
  } else {
    want = parse_dtype(dtype);
  }
  const ModelFiles* f = &files;
  if (!want || (file_dtype && *file_dtype == *want)) {
    *resolved = std::string(dtype_name(*file_dtype)) + " (shadow.h5)";
    return [f](const layout::TensorSpec& s) { return f->read_shadow_tensor(s); };
  }
  const DType target = *want;
  *resolved = std::string(dtype_name(target)) + " (re-encoded in memory from the model's " +
              dtype_name(files.header().weight_dtype) + " weights)";
  return [f, target](const layout::TensorSpec& s) {
    EncodedTensor t = f->read_tensor(s);
    const DType to = layout::stored_dtype(s, target);
    if (t.dtype == to) return t;
    std::vector<float> v(t.rows * t.cols);
    decode_tensor(t, v.data());
    EncodedTensor out;
    encode_tensor(v.data(), t.rows, t.cols, to, &out);
    return out;
  };
}

namespace {

struct Cancelled {};

// The model's stored weights (dense and experts, with quantization scales), from the
// layout: what the shadow's size is compared with.
uint64_t model_weight_bytes(const ModelFiles& files) {
  const ModelConfig& c = files.config();
  const DType wd = files.header().weight_dtype;
  uint64_t b = 0;
  for (const auto& s : layout::dense_tensor_specs(c)) b += layout::stored_bytes(s, wd);
  for (int l = 0; l < c.n_layer; ++l)
    for (int e = 0; e < c.n_expert; ++e)
      for (const auto& s : layout::expert_tensor_specs(c, l, e)) b += layout::stored_bytes(s, wd);
  return b;
}

int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());  // first of equal maxima
}

class ShadowPredictor;

// The shadow's routed experts: computed locally from its own weights; each decode layer's
// routing is published the moment the shadow's router has chosen.
class ShadowExperts final : public ExpertExecutor {
 public:
  ShadowExperts(ShadowPredictor& owner, std::unique_ptr<LocalExpertExecutor> local)
      : owner_(owner), local_(std::move(local)) {}
  void submit(int layer, const float* h, size_t n, size_t k, const int32_t* ids, const float* w) override;
  void collect(float* out) override { local_->collect(out); }
  size_t weight_bytes() const { return local_->weight_bytes(); }

 private:
  ShadowPredictor& owner_;
  std::unique_ptr<LocalExpertExecutor> local_;
};

class ShadowPredictor final : public Predictor {
 public:
  ShadowPredictor(const ModelFiles& files, const KvRows& full, int n_ctx, const ShadowOptions& o)
      : full_(full), o_(o), be_(detect_cpu_isa(), std::max(1, o.threads)), device_(be_, be_.n_threads()) {
    const TensorReader reader = shadow_tensor_reader(files, o.dtype, &dtype_);
    experts_ = std::make_unique<ShadowExperts>(*this, std::make_unique<LocalExpertExecutor>(files, be_, reader));
    model_ = std::make_unique<Model>(files, device_, *experts_, n_ctx, reader);
    model_->set_layer_hook([this](int layer, int pos, size_t n) { before_layer(layer, pos, n); });
    kv_aligned_.assign(static_cast<size_t>(files.config().n_layer), 0);
    full_bytes_ = model_weight_bytes(files);
    thread_ = std::thread([this] { thread_main(); });
  }

  ~ShadowPredictor() override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
      cancel_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  std::string name() const override { return "shadow"; }

  void begin_step(int step, int pos, const int32_t* tokens, size_t n, PredictionSink& sink) override {
    std::unique_lock<std::mutex> lk(mu_);
    rethrow_locked();
    main_step_ = step;
    main_step_now_.store(step);
    main_pos_ = pos;
    if (n > 1 || pos == 0 || !seq_valid_) {
      // A new sequence (or a chunk of prompt): whatever the shadow does now is moot.
      cancel_wait_locked(lk);
      prefill_ = Job{step, pos, std::vector<int32_t>(tokens, tokens + n), true};
      seq_start_ = step;
      seq_valid_ = true;
      done_step_ = -1;
      true_token_.clear();
    } else {
      const int32_t tok = tokens[0];
      true_token_[step] = tok;
      true_token_.erase(true_token_.begin(), true_token_.lower_bound(step - 1));
      // How the shadow's guess for this step compares with the truth.
      int32_t guess = -1;
      if (running_ && running_step_ == step) guess = running_token_;
      else if (done_step_ == step) guess = done_token_;
      if (guess >= 0) {
        ++speculated_;
        speculated_right_ += guess == tok;
      }
      if (guess >= 0 && guess != tok && align_token(step)) {
        // Redo this step with the full model's token; the corrected predictions replace
        // the speculative ones.
        ++restarts_;
        if (running_ && running_step_ == step) cancel_wait_locked(lk);
        if (done_step_ >= step) {
          done_step_ = step - 1;
          next_pos_ = pos;
        }
      }
    }
    lk.unlock();
    cv_.notify_all();
    poll(sink);
  }

  void poll(PredictionSink& sink) override {
    std::vector<Prediction> out;
    {
      std::lock_guard<std::mutex> lk(out_mu_);
      out.swap(out_);
    }
    for (const Prediction& p : out) sink.publish(p);
    std::lock_guard<std::mutex> lk(mu_);
    rethrow_locked();
  }

  nlohmann::json stats() const override {
    std::lock_guard<std::mutex> lk(mu_);
    const size_t shadow_bytes = model_->dense_weight_bytes() + experts_->weight_bytes();
    return {{"shadow_dtype", dtype_},
            {"shadow_weight_bytes", shadow_bytes},
            {"shadow_kv_cache_bytes", model_->kv_cache_bytes()},
            {"full_model_weight_bytes", full_bytes_},
            {"shadow_to_full_ratio", full_bytes_ ? static_cast<double>(shadow_bytes) / static_cast<double>(full_bytes_) : 0.0},
            {"align_token_period", o_.align_token_period},
            {"align_kv_period", o_.align_kv_period},
            {"departure", o_.early_departure ? "early" : "late"},
            {"extra_candidates", o_.extra},
            {"steps_run", steps_run_},
            {"steps_speculated", speculated_},
            {"speculation_right", speculated_right_},
            {"restarts", restarts_},
            {"catch_ups", catch_ups_},
            {"thread_priority_raised", priority_raised_.load()},
            {"injected_lag_ms", o_.lag_ms},
            {"busy_seconds", busy_s_}};
  }

  bool pending(int step, int layer) const override {
    std::lock_guard<std::mutex> lk(mu_);
    if (error_ || !seq_valid_ || step <= seq_start_ || done_step_ >= step) return false;
    if (running_ && running_step_ == step) return published_layer_.load() < layer;
    return next_pos_ < model_->n_ctx();  // it will get to this step
  }

  // Called by ShadowExperts on the shadow thread.
  void routed(int layer, size_t n, size_t k) {
    if (!job_decode_ || n != 1) return;
    const int E = model_->config().n_expert;
    Prediction p{job_step_, layer, rank_experts(model_->current_router_logits(), E, static_cast<int>(k) + o_.extra),
                 now_s(), "shadow"};
    {
      std::lock_guard<std::mutex> lk(out_mu_);
      out_.push_back(std::move(p));
    }
    published_layer_.store(layer);
  }

 private:
  struct Job {
    int step = 0, pos = 0;
    std::vector<int32_t> tokens;
    bool prefill = false;
  };

  bool align_token(int step) const {
    return o_.align_token_period > 0 && (step - seq_start_) % o_.align_token_period == 0;
  }
  bool align_kv(int step) const { return o_.align_kv_period > 0 && (step - seq_start_) % o_.align_kv_period == 0; }

  void rethrow_locked() {
    if (error_) std::rethrow_exception(error_);
  }

  // Stops the running job at its next layer and waits until it has (main thread).
  void cancel_wait_locked(std::unique_lock<std::mutex>& lk) {
    if (!running_) return;
    cancel_ = true;
    cv_.notify_all();
    cv_.wait(lk, [&] { return !running_; });
    cancel_ = false;
  }

  // Fully aligned, the shadow can leave a step it has fallen behind on and jump to the full
  // model's: KV alignment fills the rows it skipped.
  bool can_jump() const { return o_.align_token_period == 1 && o_.align_kv_period == 1; }

  // The next step the shadow may run (under mu_).
  bool next_job(Job* j) {
    if (prefill_) {
      *j = std::move(*prefill_);
      prefill_.reset();
      return true;
    }
    if (!seq_valid_) return false;
    const bool jump = can_jump() && main_step_ > seq_start_ && true_token_.count(main_step_) &&
                      (done_step_ < 0 || done_step_ + 1 < main_step_);
    if (jump) {
      // Fallen behind (a slow or descheduled shadow, or a prompt it had not finished).
      ++catch_ups_;
      if (main_pos_ >= model_->n_ctx()) return false;
      *j = Job{main_step_, main_pos_, {true_token_.at(main_step_)}, false};
      return true;
    }
    if (done_step_ < 0) return false;  // the prompt is not done yet
    const int s = done_step_ + 1, pos = next_pos_;
    const int allowed = o_.early_departure ? main_step_ + 1 : main_step_;
    if (s > allowed || pos >= model_->n_ctx()) return false;
    int32_t tok = greedy_;
    const auto it = true_token_.find(s);
    if (it != true_token_.end() && align_token(s)) tok = it->second;
    *j = Job{s, pos, {tok}, false};
    return true;
  }

  // Before each layer of the shadow's forward (shadow thread): stop if cancelled; align
  // the KV rows the full model has written.
  void before_layer(int layer, int pos, size_t n) {
    if (cancel_.load(std::memory_order_relaxed)) throw Cancelled{};
    if (o_.lag_ms > 0 && job_decode_ && job_step_ % o_.lag_every == 0)
      std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(o_.lag_ms * 1000)));
    if (cancel_.load(std::memory_order_relaxed)) throw Cancelled{};
    // The full model has moved past this step: its predictions are of no use any more.
    if (can_jump() && job_step_ < main_step_now_.load(std::memory_order_relaxed)) throw Cancelled{};
    if (n != 1 || !align_kv(job_step_)) return;
    int& a = kv_aligned_[static_cast<size_t>(layer)];
    const int hi = std::min(pos, full_.kv_filled(layer));
    if (hi > a) {
      model_->copy_kv_rows(full_, layer, a, hi);
      a = hi;
    }
  }

  void run_job(const Job& j) {
    job_step_ = j.step;
    job_decode_ = !j.prefill;
    if (j.prefill && j.pos == 0) {
      model_->reset();
      std::fill(kv_aligned_.begin(), kv_aligned_.end(), 0);
    } else {
      model_->seek(j.pos);
      for (int& a : kv_aligned_) a = std::min(a, j.pos);  // rows from pos on are the shadow's again
    }
    model_->forward(j.tokens.data(), j.tokens.size(), false, &logits_);
  }

  // Lowers this thread's niceness by o_.priority below the process's (Linux: a thread is a
  // task of its own for setpriority). Returns how much it was lowered: 0 where refused.
  int raise_priority() const {
    if (o_.priority <= 0) return 0;
    errno = 0;
    const int base = getpriority(PRIO_PROCESS, 0);
    if (errno != 0) return 0;
    const int want = std::max(-20, base - o_.priority);
    const auto tid = static_cast<id_t>(syscall(SYS_gettid));
    return setpriority(PRIO_PROCESS, tid, want) == 0 ? base - want : 0;
  }

  void thread_main() {
    priority_raised_.store(raise_priority());
    std::unique_lock<std::mutex> lk(mu_);
    while (true) {
      Job j;
      // No new job while main is cancelling: it must see this thread idle first.
      cv_.wait(lk, [&] { return stop_ || (!cancel_ && next_job(&j)); });
      if (stop_) return;
      running_ = true;
      published_layer_.store(-1);
      running_step_ = j.step;
      running_token_ = j.prefill ? -1 : j.tokens[0];
      lk.unlock();
      const double t0 = now_s();
      bool ok = false;
      try {
        run_job(j);
        ok = true;
      } catch (const Cancelled&) {
      } catch (...) {
        lk.lock();
        error_ = std::current_exception();
        running_ = false;
        cv_.notify_all();
        return;
      }
      lk.lock();
      busy_s_ += now_s() - t0;
      running_ = false;
      if (ok && !cancel_) {
        ++steps_run_;
        done_step_ = j.step;
        done_token_ = running_token_;
        next_pos_ = j.pos + static_cast<int>(j.tokens.size());
        greedy_ = argmax(logits_);
      }
      cv_.notify_all();
    }
  }

  const KvRows& full_;
  ShadowOptions o_;
  std::string dtype_;
  CpuBackend be_;
  CpuDevice device_;  // the shadow's own: the CPU by default, so it does not compete with main for a small GPU
  std::unique_ptr<ShadowExperts> experts_;
  std::unique_ptr<Model> model_;
  uint64_t full_bytes_ = 0;
  // Shadow thread only.
  std::vector<int> kv_aligned_;  // [layer]: rows [0, n) hold the full model's entries
  std::vector<float> logits_;
  int job_step_ = 0;
  bool job_decode_ = false;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;
  std::atomic<bool> cancel_{false};
  std::atomic<int> published_layer_{-1};  // of the running step
  std::atomic<int> main_step_now_{-1};    // main_step_, for the shadow thread without the lock
  std::atomic<int> priority_raised_{0};   // niceness the shadow thread got below the process's
  bool stop_ = false;
  std::exception_ptr error_;
  // What main has told the shadow (under mu_).
  int main_step_ = -1, main_pos_ = 0, seq_start_ = 0;
  bool seq_valid_ = false;
  std::map<int, int32_t> true_token_;  // decode step -> the full model's input token
  std::optional<Job> prefill_;
  // Where the shadow is (under mu_).
  bool running_ = false;
  int running_step_ = -1;
  int32_t running_token_ = -1;
  int done_step_ = -1;
  int32_t done_token_ = -1, greedy_ = 0;
  int next_pos_ = 0;
  uint64_t steps_run_ = 0, speculated_ = 0, speculated_right_ = 0, restarts_ = 0, catch_ups_ = 0;
  double busy_s_ = 0;
  // Predictions made, not yet delivered.
  std::mutex out_mu_;
  std::vector<Prediction> out_;
};

void ShadowExperts::submit(int layer, const float* h, size_t n, size_t k, const int32_t* ids, const float* w) {
  owner_.routed(layer, n, k);
  local_->submit(layer, h, n, k, ids, w);
}

}  // namespace

std::unique_ptr<Predictor> make_shadow_predictor(const ModelFiles& files, const KvRows& full, int n_ctx,
                                                 const ShadowOptions& o) {
  ODMOE_CHECK(o.align_token_period >= 0 && o.align_kv_period >= 0, kCli, "bad-option",
              "--align-token-period and --align-kv-period must be >= 0", "0 turns alignment off");
  ODMOE_CHECK(o.extra >= 0, kCli, "bad-option", "--predict-extra must be >= 0", "");
  ODMOE_CHECK(o.lag_ms >= 0 && o.lag_every >= 1 && o.priority >= 0, kCli, "bad-option",
              "--shadow-lag-ms must be >= 0, --shadow-lag-every >= 1 and --shadow-priority >= 0", "");
  return std::make_unique<ShadowPredictor>(files, full, n_ctx, o);
}

}  // namespace odmoe
