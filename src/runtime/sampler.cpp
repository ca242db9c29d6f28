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

namespace {

// The order the candidates are drawn in: higher scaled logit first, ties to the lower id.
bool before(const Sampler::Candidate& a, const Sampler::Candidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

}  // namespace

void Sampler::sort_prefix(size_t n) {
  while (n_sorted_ < n) {
    // The next chunk in its final place: a partial sort of the rest (one comparison per
    // candidate that does not make the chunk). Chunks double, so a walk that goes deep costs
    // about one full sort.
    const size_t end = std::min(cand_.size(), std::max(n, n_sorted_ + std::max<size_t>(64, n_sorted_)));
    std::partial_sort(cand_.begin() + static_cast<long>(n_sorted_), cand_.begin() + static_cast<long>(end), cand_.end(),
                      before);
    n_sorted_ = end;
  }
}

int32_t Sampler::sample(const float* logits, size_t vocab) {
  if (cfg_.temperature == 0) {
    size_t best = 0;
    for (size_t i = 1; i < vocab; ++i)
      if (logits[i] > logits[best]) best = i;
    return static_cast<int32_t>(best);
  }
  cand_.resize(vocab);
  for (size_t i = 0; i < vocab; ++i) cand_[i] = {logits[i] / cfg_.temperature, 0.0f, static_cast<int32_t>(i)};
  n_sorted_ = 0;
  size_t keep = vocab;
  double sum = 0;
  if (cfg_.top_k > 0 && static_cast<size_t>(cfg_.top_k) < vocab) {
    // The k best, sorted (the order is total: the same k in the same order as a full sort).
    keep = static_cast<size_t>(cfg_.top_k);
    std::partial_sort(cand_.begin(), cand_.begin() + static_cast<long>(keep), cand_.end(), before);
    n_sorted_ = keep;
    const float mx = cand_[0].logit;
    for (size_t i = 0; i < keep; ++i) sum += (cand_[i].p = std::exp(cand_[i].logit - mx));
  } else {
    // Every candidate: probabilities in vocabulary order, sorted only as far as the walks go.
    // (The total is summed in vocabulary order, not best first: it may differ in its last bits,
    // which changes a draw only when it falls within that rounding of a boundary.)
    float mx = -INFINITY;
    for (const Candidate& c : cand_) mx = std::max(mx, c.logit);
    for (Candidate& c : cand_) sum += (c.p = std::exp(c.logit - mx));
  }
  // Nucleus: the smallest prefix whose probability reaches top_p.
  if (cfg_.top_p < 1.0f) {
    double cum = 0;
    size_t n = 0;
    while (n < keep) {
      sort_prefix(n + 1);
      cum += cand_[n].p / sum;
      ++n;
      if (cum >= cfg_.top_p) break;
    }
    keep = n;
    sum = 0;
    for (size_t i = 0; i < keep; ++i) sum += cand_[i].p;
  }
  std::uniform_real_distribution<double> u(0.0, sum);
  const double r = u(rng_);
  double acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    sort_prefix(i + 1);
    acc += cand_[i].p;
    if (r < acc) return cand_[i].id;
  }
  sort_prefix(keep);
  return cand_[keep - 1].id;
}

}  // namespace odmoe
