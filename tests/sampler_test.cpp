#include "zeroskip/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "zeroskip/error.h"

namespace zeroskip {
namespace {

std::vector<float> Logits() { return {1.0f, 3.0f, 2.0f, -1.0f, 2.9f, 0.0f}; }

TEST(Sampler, GreedyPicksTheArgmax) {
  Sampler s({.temperature = 0.0f}, 6);
  auto l = Logits();
  EXPECT_EQ(s.Sample(l.data(), {}), 1);
}

TEST(Sampler, TopK1AndTinyTopPAndMinP1AreGreedy) {
  for (SamplerOptions o :
       {SamplerOptions{.temperature = 2.0f, .top_k = 1, .top_p = 1, .min_p = 0},
        SamplerOptions{.temperature = 2.0f, .top_k = 0, .top_p = 1e-6f, .min_p = 0},
        SamplerOptions{.temperature = 2.0f, .top_k = 0, .top_p = 1, .min_p = 1}}) {
    Sampler s(o, 6);
    for (int i = 0; i < 50; ++i) {
      auto l = Logits();
      EXPECT_EQ(s.Sample(l.data(), {}), 1);
    }
  }
}

TEST(Sampler, SameSeedSameSequence) {
  const SamplerOptions o{.temperature = 1.0f, .top_k = 0, .top_p = 1, .min_p = 0, .seed = 42};
  Sampler a(o, 6), b(o, 6);
  for (int i = 0; i < 100; ++i) {
    auto la = Logits(), lb = Logits();
    EXPECT_EQ(a.Sample(la.data(), {}), b.Sample(lb.data(), {}));
  }
}

// At temperature 1 with no truncation, frequencies follow softmax(logits). With 40000 draws the
// standard error of each frequency is <= 0.0025; 5 standard errors keeps false alarms negligible.
TEST(Sampler, FrequenciesFollowSoftmax) {
  Sampler s({.temperature = 1.0f, .top_k = 0, .top_p = 1, .min_p = 0, .seed = 7}, 6);
  const auto l0 = Logits();
  double z = 0;
  for (float v : l0) z += std::exp(v);
  std::vector<int> counts(6);
  const int n = 40000;
  for (int i = 0; i < n; ++i) {
    auto l = Logits();
    counts[s.Sample(l.data(), {})]++;
  }
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(counts[i] / double(n), std::exp(l0[i]) / z, 0.0125);
}

TEST(Sampler, TopKNeverPicksOutsideTheTopK) {
  Sampler s({.temperature = 5.0f, .top_k = 2, .top_p = 1, .min_p = 0, .seed = 3}, 6);
  for (int i = 0; i < 500; ++i) {
    auto l = Logits();
    const int id = s.Sample(l.data(), {});
    EXPECT_TRUE(id == 1 || id == 4) << id;
  }
}

TEST(Sampler, RepetitionPenaltyFollowsHuggingFace) {
  // Token 1 was seen (twice): its positive logit 3.0 is divided by 2 once -> 1.5 < 2.9, so
  // greedy moves to token 4. A negative logit would be multiplied instead.
  Sampler s({.temperature = 0.0f, .repeat_penalty = 2.0f}, 6);
  auto l = Logits();
  const std::vector<int> history = {1, 3, 1};
  EXPECT_EQ(s.Sample(l.data(), history), 4);
  EXPECT_FLOAT_EQ(l[1], 1.5f);
  EXPECT_FLOAT_EQ(l[3], -2.0f);
}

// The distribution Sample should draw from, computed from the definitions in double precision
// (Hugging Face's warpers, in their order: temperature, top-k, top-p, min-p), with masks rather
// than the engine's sorted, truncated candidate list.
std::vector<double> ExpectedDistribution(const std::vector<float>& logits,
                                         const SamplerOptions& o) {
  const size_t n = logits.size();
  std::vector<double> scaled(n);
  // A NaN logit (a broken model) is a token that must never be picked: probability 0.
  for (size_t i = 0; i < n; ++i) {
    scaled[i] = std::isnan(logits[i]) ? -INFINITY : double(logits[i]) / o.temperature;
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return scaled[a] > scaled[b]; });
  std::vector<bool> kept(n, true);
  auto softmax = [&] {
    double max = -INFINITY, z = 0;
    for (size_t i = 0; i < n; ++i) {
      if (kept[i]) max = std::max(max, scaled[i]);
    }
    std::vector<double> p(n, 0.0);
    for (size_t i = 0; i < n; ++i) {
      if (kept[i]) z += p[i] = std::exp(scaled[i] - max);
    }
    for (double& v : p) v /= z;
    return p;
  };
  // top-k: the k largest survive.
  if (o.top_k > 0) {
    for (size_t r = static_cast<size_t>(o.top_k); r < n; ++r) kept[order[r]] = false;
  }
  // top-p: the most likely tokens up to and including the one whose cumulative mass reaches p.
  if (o.top_p < 1.0f) {
    const auto p = softmax();
    double mass = 0;
    for (size_t id : order) {
      if (!kept[id]) continue;
      if (mass >= o.top_p) {
        kept[id] = false;
      } else {
        mass += p[id];
      }
    }
  }
  // min-p: tokens less likely than min_p times the most likely one are dropped.
  if (o.min_p > 0.0f) {
    const auto p = softmax();
    const double top = *std::max_element(p.begin(), p.end());
    for (size_t i = 0; i < n; ++i) {
      if (kept[i] && p[i] < o.min_p * top) kept[i] = false;
    }
  }
  return softmax();
}

// Draws `draws` samples and checks every token's count against its binomial expectation within 5
// standard deviations; a token the distribution excludes must never appear. The sampler is
// seeded, so the outcome is deterministic, not flaky.
void ExpectFrequencies(const std::vector<float>& logits, const SamplerOptions& o, int draws,
                       std::span<const int> history = {}) {
  const auto want = ExpectedDistribution(logits, o);
  Sampler s(o, static_cast<int64_t>(logits.size()));
  std::vector<int> counts(logits.size());
  for (int i = 0; i < draws; ++i) {
    auto l = logits;
    const int id = s.Sample(l.data(), history);
    ASSERT_TRUE(id >= 0 && id < static_cast<int>(logits.size())) << id;
    counts[id]++;
  }
  for (size_t i = 0; i < logits.size(); ++i) {
    const double mean = draws * want[i], sd = std::sqrt(draws * want[i] * (1 - want[i]));
    if (want[i] == 0.0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " is outside the kept set";
    } else {
      EXPECT_NEAR(counts[i], mean, 5 * sd) << "token " << i << ": p " << want[i];
    }
  }
}

// Eight logits whose kept sets differ for each option below (margins to every threshold are
// several percent, far beyond float rounding).
const std::vector<float> kEight = {1.0f, 3.0f, 2.0f, -1.0f, 2.9f, 0.0f, 2.6f, 1.8f};

TEST(SamplerDistribution, TemperatureHalfSharpens) {
  // x / T, not x * T: at T = 0.5 the top two tokens carry 72%, at "x * 0.5" only 44%.
  ExpectFrequencies(kEight, {.temperature = 0.5f, .top_k = 0, .top_p = 1, .min_p = 0, .seed = 1},
                    40000);
}

TEST(SamplerDistribution, TopPKeepsTheTokenThatCrossesTheThreshold) {
  // At T = 0.5 the cumulative mass is 0.398 after token 1 and 0.723 after token 4: both survive.
  const SamplerOptions o{.temperature = 0.5f, .top_k = 0, .top_p = 0.7f, .min_p = 0, .seed = 2};
  const auto want = ExpectedDistribution(kEight, o);
  EXPECT_GT(want[4], 0.4);
  EXPECT_EQ(std::count_if(want.begin(), want.end(), [](double p) { return p > 0; }), 2);
  ExpectFrequencies(kEight, o, 40000);
}

TEST(SamplerDistribution, MinPDropsTokensBelowAFractionOfTheTop) {
  // Ratios to the top token at T = 0.5: 0.82 and 0.45 survive 0.3, 0.135 does not.
  const SamplerOptions o{.temperature = 0.5f, .top_k = 0, .top_p = 1, .min_p = 0.3f, .seed = 3};
  const auto want = ExpectedDistribution(kEight, o);
  EXPECT_EQ(std::count_if(want.begin(), want.end(), [](double p) { return p > 0; }), 3);
  ExpectFrequencies(kEight, o, 40000);
}

TEST(SamplerDistribution, TopKAtTemperatureHalf) {
  ExpectFrequencies(kEight, {.temperature = 0.5f, .top_k = 3, .top_p = 1, .min_p = 0, .seed = 4},
                    40000);
}

TEST(SamplerDistribution, AllFiltersInHuggingFaceOrder) {
  // top-k 6, then top-p 0.9 over those six (five survive), then min-p 0.2 over those five.
  ExpectFrequencies(
      kEight, {.temperature = 1.5f, .top_k = 6, .top_p = 0.9f, .min_p = 0.2f, .seed = 5}, 40000);
  // Here min-p runs on what top-p left: renormalizing changes nothing about ratios, but the order
  // matters for top-p, whose mass is measured after top-k.
  ExpectFrequencies(
      kEight, {.temperature = 2.0f, .top_k = 4, .top_p = 0.8f, .min_p = 0.85f, .seed = 6}, 40000);
}

// Ties, where ">" versus ">=" and the tie-break decide: top-k keeps the lower ids of tokens tied at
// the k-th logit; min-p keeps a token whose probability equals min_p times the top one (HF removes
// only probs < min_p * top).
TEST(SamplerDistribution, TiesAtTheTopKAndMinPBoundaries) {
  const std::vector<float> tied = {2.0f, 1.0f, 2.0f, 2.0f, 0.5f};
  const SamplerOptions top_k{.temperature = 1.0f, .top_k = 2, .top_p = 1, .min_p = 0, .seed = 11};
  const auto want = ExpectedDistribution(tied, top_k);
  EXPECT_EQ(want[3], 0.0);  // tied with 0 and 2 but the highest id
  EXPECT_NEAR(want[0], 0.5, 1e-12);
  ExpectFrequencies(tied, top_k, 20000);
  // min-p 1: only the tokens tied for the top survive, all three of them.
  const SamplerOptions min_p{
      .temperature = 1.0f, .top_k = 0, .top_p = 1, .min_p = 1.0f, .seed = 12};
  EXPECT_NEAR(ExpectedDistribution(tied, min_p)[3], 1.0 / 3, 1e-12);
  ExpectFrequencies(tied, min_p, 30000);
}

// A broken model can emit NaN: such a token is never picked, whichever path runs, and the
// others keep their softmax probabilities.
TEST(Sampler, NanLogitsAreNeverPicked) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> logits = {nan, 1.0f, 3.0f, nan, 2.5f, 0.0f};
  {
    Sampler greedy({.temperature = 0.0f}, 6);
    auto l = logits;
    EXPECT_EQ(greedy.Sample(l.data(), {}), 2);
  }
  // Without truncation the NaN tokens carry probability 0 and the others their softmax.
  const SamplerOptions o{.temperature = 1.0f, .top_k = 0, .top_p = 1, .min_p = 0, .seed = 8};
  const auto want = ExpectedDistribution(logits, o);
  EXPECT_EQ(want[0], 0.0);
  EXPECT_NEAR(want[2], std::exp(3.0) / (std::exp(1.0) + std::exp(3.0) + std::exp(2.5) + 1), 1e-12);
  ExpectFrequencies(logits, o, 20000);
  // And through top-k / top-p / min-p.
  ExpectFrequencies(
      logits, {.temperature = 0.7f, .top_k = 4, .top_p = 0.95f, .min_p = 0.01f, .seed = 9}, 20000);
}

// An overflowing model can emit +inf: that token is certain (softmax gives it probability 1),
// whatever the temperature and filters. Several +inf tokens share the probability equally.
TEST(Sampler, InfiniteLogitsAreCertain) {
  const float inf = std::numeric_limits<float>::infinity();
  for (const SamplerOptions& o :
       {SamplerOptions{.temperature = 1.0f, .top_k = 0, .top_p = 1, .min_p = 0, .seed = 1},
        SamplerOptions{.temperature = 0.7f, .top_k = 3, .top_p = 0.9f, .min_p = 0.1f, .seed = 2},
        SamplerOptions{.temperature = 2.0f, .top_k = 0, .top_p = 0.5f, .min_p = 0, .seed = 3}}) {
    Sampler s(o, 5);
    for (int i = 0; i < 200; ++i) {
      std::vector<float> l = {1.0f, inf, 2.0f, -inf, 0.0f};
      ASSERT_EQ(s.Sample(l.data(), {}), 1) << "top_k " << o.top_k << " top_p " << o.top_p;
    }
  }
  Sampler two({.temperature = 1.0f, .top_k = 0, .top_p = 1, .min_p = 0, .seed = 4}, 4);
  std::vector<int> counts(4);
  for (int i = 0; i < 4000; ++i) {
    std::vector<float> l = {inf, 1.0f, inf, 2.0f};
    counts[two.Sample(l.data(), {})]++;
  }
  EXPECT_EQ(counts[1] + counts[3], 0);
  EXPECT_NEAR(counts[0], 2000, 5 * std::sqrt(1000.0));
}

// Nothing finite to choose from (every logit NaN or -inf): the first token, as greedy picks.
TEST(Sampler, NoFiniteLogitPicksTheFirstToken) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (const SamplerOptions& o :
       {SamplerOptions{.temperature = 0.0f},
        SamplerOptions{.temperature = 1.0f, .top_k = 0, .top_p = 1, .min_p = 0, .seed = 1},
        SamplerOptions{.temperature = 0.8f, .top_k = 3, .top_p = 0.95f, .min_p = 0.05f}}) {
    Sampler s(o, 4);
    std::vector<float> l = {nan, -inf, nan, -inf};
    EXPECT_EQ(s.Sample(l.data(), {}), 0) << "temperature " << o.temperature;
  }
}

TEST(Sampler, RepetitionPenaltyLooksOnlyAtTheLastNTokens) {
  // repeat_last_n 3: the window is {5, 4, 0}. Token 1 (the argmax, seen earlier) is outside it.
  Sampler s({.temperature = 0.0f, .repeat_penalty = 2.0f, .repeat_last_n = 3}, 6);
  auto l = Logits();
  const std::vector<int> history = {1, 1, 3, 5, 4, 0};
  EXPECT_EQ(s.Sample(l.data(), history), 1);
  const std::vector<float> want = {0.5f, 3.0f, 2.0f, -1.0f, 1.45f, 0.0f};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(l[i], want[i]) << "token " << i;
  // A history shorter than the window penalizes all of it.
  Sampler all({.temperature = 0.0f, .repeat_penalty = 2.0f, .repeat_last_n = 64}, 6);
  auto m = Logits();
  const std::vector<int> short_history = {1, 3};
  EXPECT_EQ(all.Sample(m.data(), short_history), 4);
  EXPECT_FLOAT_EQ(m[1], 1.5f);
  EXPECT_FLOAT_EQ(m[3], -2.0f);
}

// History ids at both edges of the vocabulary (0 and vocab - 1) are penalized; ids one past them
// (-1 and vocab: a client's or a broken prompt's) are skipped, not written: the logits sit between
// two sentinels that must stay as they are. Catches a bounds check off by one at either end.
TEST(Sampler, RepetitionPenaltyHistoryIdsAtTheVocabularyEdges) {
  Sampler s({.temperature = 0.0f, .repeat_penalty = 2.0f}, 6);
  std::vector<float> buffer = {4.0f, 1.0f, 3.0f, 2.0f, -1.0f, 2.9f, -0.5f, 4.0f};
  const std::vector<int> history = {-1, 0, 6, 5, 6, -1};
  EXPECT_EQ(s.Sample(buffer.data() + 1, history), 1);
  const std::vector<float> want = {4.0f, 0.5f, 3.0f, 2.0f, -1.0f, 2.9f, -1.0f, 4.0f};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(buffer[i], want[i]) << "slot " << i;
}

// Presence and frequency penalties reach the first and the last id: greedy over
// {2.9, 0, 0, 0, 0, 3.0} with presence 1.5 and frequency 0.5 alternates between them
// (5: 3.0; 0: 2.9 > 5's 1.0; 5: 1.0 > 0's 0.9; 0: 0.9 > 5's 3.0 - 2 * 0.5 - 1.5 = 0.5), and
// tokens never picked keep their logits.
TEST(Sampler, PresenceAndFrequencyPenaltiesReachBothEndsOfTheVocabulary) {
  Sampler s({.temperature = 0.0f, .presence_penalty = 1.5f, .frequency_penalty = 0.5f}, 6);
  std::vector<int> picks;
  std::vector<float> l;
  for (int i = 0; i < 4; ++i) {
    l = {2.9f, 0.0f, 0.0f, 0.0f, 0.0f, 3.0f};
    picks.push_back(s.Sample(l.data(), {}));
  }
  EXPECT_EQ(picks, (std::vector<int>{5, 0, 5, 0}));
  const std::vector<float> want = {0.9f, 0.0f, 0.0f, 0.0f, 0.0f, 0.5f};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(l[i], want[i]) << "token " << i;
}

TEST(Sampler, LogitBiasIsAddedFirst) {
  // {1, 3, 2, -1, 2.9, 0} + {0: +2.5, 1: -100}: token 0 (3.5) beats 4 (2.9) under greedy.
  Sampler s({.temperature = 0.0f, .logit_bias = {{0, 2.5f}, {1, -100.0f}}}, 6);
  auto l = Logits();
  EXPECT_EQ(s.Sample(l.data(), {}), 0);
  EXPECT_FLOAT_EQ(l[0], 3.5f);
  EXPECT_FLOAT_EQ(l[1], -97.0f);
  EXPECT_FLOAT_EQ(l[2], 2.0f);
}

TEST(Sampler, PresenceAndFrequencyPenaltiesFollowOpenAi) {
  // logit -= count * 0.3 + (count > 0) * 0.5 over the tokens picked, not the prompt {1, 1, 1}:
  // picks 1 (3.0); then 1 is 2.2 < 2.9: 4; then 1 2.2 > 4 2.1 > 2 2.0: 1; then 1 1.9 < 4 2.1: 4;
  // then 1 1.9, 4 1.8 < 2 2.0: 2.
  Sampler s({.temperature = 0.0f, .presence_penalty = 0.5f, .frequency_penalty = 0.3f}, 6);
  const std::vector<int> prompt = {1, 1, 1};
  std::vector<int> picks;
  std::vector<float> l;
  for (int i = 0; i < 5; ++i) {
    l = Logits();
    picks.push_back(s.Sample(l.data(), prompt));
  }
  EXPECT_EQ(picks, (std::vector<int>{1, 4, 1, 4, 2}));
  EXPECT_FLOAT_EQ(l[1], 3.0f - 2 * 0.3f - 0.5f);
  EXPECT_FLOAT_EQ(l[4], 2.9f - 2 * 0.3f - 0.5f);
  EXPECT_FLOAT_EQ(l[0], 1.0f);  // never picked
  // A negative presence penalty rewards repeating: token 1 forever.
  Sampler again({.temperature = 0.0f, .presence_penalty = -2.0f}, 6);
  for (int i = 0; i < 4; ++i) {
    l = Logits();
    EXPECT_EQ(again.Sample(l.data(), {}), 1);
  }
  EXPECT_FLOAT_EQ(l[1], 5.0f);
}

TEST(Sampler, RefusesPenaltiesAndBiasesOutOfRange) {
  EXPECT_NO_THROW(Sampler({.presence_penalty = 2.0f, .frequency_penalty = -2.0f}, 6));
  EXPECT_THROW(Sampler({.presence_penalty = 2.01f}, 6), Error);
  EXPECT_THROW(Sampler({.frequency_penalty = -2.01f}, 6), Error);
  EXPECT_THROW(Sampler({.presence_penalty = std::nanf("")}, 6), Error);
  EXPECT_NO_THROW(Sampler({.logit_bias = {{5, 100.0f}}}, 6));
  EXPECT_THROW(Sampler({.logit_bias = {{6, 1.0f}}}, 6), Error);
  EXPECT_THROW(Sampler({.logit_bias = {{-1, 1.0f}}}, 6), Error);
  EXPECT_THROW(Sampler({.logit_bias = {{0, std::numeric_limits<float>::infinity()}}}, 6), Error);
}

}  // namespace
}  // namespace zeroskip
