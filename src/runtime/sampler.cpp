#include "odmoe/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "odmoe/core/error.h"

namespace odmoe {

void SamplerConfig::validate() const {
  ODMOE_CHECK(std::isfinite(temperature) && temperature >= 0, kCli, "bad-option",
              "--temperature must be >= 0, got " << temperature, "0 means greedy decoding");
  ODMOE_CHECK(top_k >= 0, kCli, "bad-option", "--top-k must be >= 0, got " << top_k, "0 disables top-k");
  ODMOE_CHECK(top_p > 0 && top_p <= 1, kCli, "bad-option", "--top-p must be in (0, 1], got " << top_p,
              "1 disables nucleus sampling");
}

std::string SamplerConfig::to_string() const {
  std::ostringstream os;
  if (temperature == 0) {
    os << "greedy";
  } else {
    os << "temperature=" << temperature << " top_k=" << top_k << " top_p=" << top_p << " seed=" << seed;
  }
  return os.str();
}

Sampler::Sampler(const SamplerConfig& cfg) : cfg_(cfg), rng_(cfg.seed) { cfg_.validate(); }

int32_t Sampler::sample(const float* logits, size_t vocab) {
  if (cfg_.temperature == 0) {
    size_t best = 0;
    for (size_t i = 1; i < vocab; ++i)
      if (logits[i] > logits[best]) best = i;
    return static_cast<int32_t>(best);
  }
  cand_.resize(vocab);
  for (size_t i = 0; i < vocab; ++i) cand_[i] = {logits[i] / cfg_.temperature, static_cast<int32_t>(i)};
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  size_t keep = vocab;
  if (cfg_.top_k > 0 && static_cast<size_t>(cfg_.top_k) < vocab) {
    keep = static_cast<size_t>(cfg_.top_k);
    std::partial_sort(cand_.begin(), cand_.begin() + static_cast<long>(keep), cand_.end(), by_logit);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  // Softmax over the kept candidates (sorted, highest first).
  const float mx = cand_[0].first;
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += (cand_[i].first = std::exp(cand_[i].first - mx));
  // Nucleus: the smallest prefix whose probability reaches top_p.
  if (cfg_.top_p < 1.0f) {
    double cum = 0;
    size_t n = 0;
    while (n < keep) {
      cum += cand_[n].first / sum;
      ++n;
      if (cum >= cfg_.top_p) break;
    }
    keep = n;
    sum = 0;
    for (size_t i = 0; i < keep; ++i) sum += cand_[i].first;
  }
  std::uniform_real_distribution<double> u(0.0, sum);
  const double r = u(rng_);
  double acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += cand_[i].first;
    if (r < acc) return cand_[i].second;
  }
  return cand_[keep - 1].second;
}

}  // namespace odmoe
