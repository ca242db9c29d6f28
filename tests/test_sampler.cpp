// Sampler: the draw for a given seed is the one the former implementation made (it sorted the
// whole vocabulary every step; kept here as the reference), for every filter combination.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "odmoe/runtime/sampler.h"

namespace odmoe {
namespace {

// The former Sampler::sample (temperature > 0): a full sort by logit (ties to the lower id),
// softmax over the kept prefix, nucleus prefix, one uniform draw walked best first.
class SortingSampler {
 public:
  explicit SortingSampler(const SamplerConfig& cfg) : cfg_(cfg), rng_(cfg.seed) {}
  int32_t sample(const float* logits, size_t vocab) {
    std::vector<std::pair<float, int32_t>> cand(vocab);
    for (size_t i = 0; i < vocab; ++i) cand[i] = {logits[i] / cfg_.temperature, static_cast<int32_t>(i)};
    auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
    size_t keep = vocab;
    if (cfg_.top_k > 0 && static_cast<size_t>(cfg_.top_k) < vocab) {
      keep = static_cast<size_t>(cfg_.top_k);
      std::partial_sort(cand.begin(), cand.begin() + static_cast<long>(keep), cand.end(), by_logit);
    } else {
      std::sort(cand.begin(), cand.end(), by_logit);
    }
    const float mx = cand[0].first;
    double sum = 0;
    for (size_t i = 0; i < keep; ++i) sum += (cand[i].first = std::exp(cand[i].first - mx));
    if (cfg_.top_p < 1.0f) {
      double cum = 0;
      size_t n = 0;
      while (n < keep) {
        cum += cand[n].first / sum;
        ++n;
        if (cum >= cfg_.top_p) break;
      }
      keep = n;
      sum = 0;
      for (size_t i = 0; i < keep; ++i) sum += cand[i].first;
    }
    std::uniform_real_distribution<double> u(0.0, sum);
    const double r = u(rng_);
    double acc = 0;
    for (size_t i = 0; i < keep; ++i) {
      acc += cand[i].first;
      if (r < acc) return cand[i].second;
    }
    return cand[keep - 1].second;
  }

 private:
  SamplerConfig cfg_;
  std::mt19937_64 rng_;
};

// Logits like a language model's: a few strong candidates over a long tail, with ties (rounded
// values) so that the id order of equal logits matters.
std::vector<float> make_logits(size_t vocab, std::mt19937& rng, float spread) {
  std::normal_distribution<float> n(0.0f, spread);
  std::vector<float> l(vocab);
  for (float& x : l) x = std::round(n(rng) * 8.0f) / 8.0f;
  for (int i = 0; i < 5; ++i) l[rng() % vocab] += 3 * spread;
  return l;
}

TEST(Sampler, SameTokensAsTheFullSortForTheSameSeed) {
  const std::vector<SamplerConfig> configs = {
      {1.0f, 0, 1.0f, 1},   {0.7f, 0, 1.0f, 2},  {1.0f, 40, 1.0f, 3},  {1.3f, 0, 0.9f, 4},
      {0.8f, 50, 0.95f, 5}, {2.0f, 0, 0.5f, 6},  {1.0f, 1, 1.0f, 7},   {1.0f, 100000, 0.99f, 8},
      {5.0f, 0, 1.0f, 9},   {0.3f, 0, 0.999f, 10}};
  std::mt19937 rng(42);
  size_t draws = 0;
  for (const SamplerConfig& c : configs) {
    for (size_t vocab : {size_t{7}, size_t{1000}, size_t{50304}}) {
      Sampler now(c);
      SortingSampler then(c);
      for (int step = 0; step < 20; ++step) {
        const std::vector<float> l = make_logits(vocab, rng, step % 2 ? 1.0f : 4.0f);
        ASSERT_EQ(now.sample(l.data(), vocab), then.sample(l.data(), vocab))
            << now.config().to_string() << " vocab " << vocab << " step " << step;
        ++draws;
      }
    }
  }
  EXPECT_EQ(draws, 10u * 3 * 20);
}

// Fixed draws of a fixed seed (recorded with the full-sort implementation): a change of the
// draw order, the tie-breaking or the random stream shows up here.
TEST(Sampler, PinnedDrawsForAFixedSeed) {
  std::vector<float> l(64);
  for (size_t i = 0; i < l.size(); ++i) l[i] = std::sin(static_cast<float>(i) * 0.7f) * 3.0f;
  std::vector<int32_t> got;
  for (const SamplerConfig& c : {SamplerConfig{1.0f, 0, 1.0f, 1234}, SamplerConfig{1.0f, 8, 0.9f, 1234}}) {
    Sampler s(c);
    SortingSampler ref(c);
    for (int i = 0; i < 8; ++i) {
      got.push_back(s.sample(l.data(), l.size()));
      EXPECT_EQ(got.back(), ref.sample(l.data(), l.size()));
    }
  }
  const std::vector<int32_t> pinned = {49, 56, 27, 49, 38, 58, 1, 49, 2, 56, 2, 2, 47, 2, 2, 2};
  EXPECT_EQ(got, pinned);
}

TEST(Sampler, GreedyTakesTheLowestIdOfEqualMaxima) {
  Sampler s(SamplerConfig{});
  const std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(s.sample(l.data(), l.size()), 1);
}

}  // namespace
}  // namespace odmoe
