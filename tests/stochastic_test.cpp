// Stochastic activations at inference (--act stoch): determinism across threads and batching,
// the picked fraction, and the P = 0 / P = 1 limits.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "kernels/kernels.h"
#include "engine/workspace.h"
#include "test_util.h"
#include "zeroskip/session.h"

namespace zeroskip {
namespace {

const std::string kModel = "llama_gqa_hd64_relu_f32";

SessionOptions Stochastic(float p, uint64_t seed, FfnMode ffn = FfnMode::kAuto) {
  return {.ffn = ffn, .activation = {FfnActivation::kStochastic, p, seed}};
}

std::vector<int> Greedy(Session& s, int n) {
  const std::vector<int> prompt = {1, 281, 342, 342, 343};
  auto logits = s.Forward(prompt);
  std::vector<int> out;
  for (int i = 0; i < n; ++i) {
    const int id = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(id);
    logits = s.Forward({&id, 1});
  }
  return out;
}

TEST(Stochastic, SameSeedSameOutputAcrossThreadsAndPaths) {
  const Model& m = testing::LoadedModel(kModel);
  Engine one(m, {.threads = 1}), two(m, {.threads = 2});
  Session a(one, Stochastic(0.5f, 9)), b(two, Stochastic(0.5f, 9));
  Session dense(two, Stochastic(0.5f, 9, FfnMode::kDense));
  const auto ga = Greedy(a, 24);
  EXPECT_EQ(ga, Greedy(b, 24));
  EXPECT_EQ(ga, Greedy(dense, 24));
}

TEST(Stochastic, SameSeedSameLogitsWhateverTheBatchSplit) {
  const Model& m = testing::LoadedModel(kModel);
  const std::vector<int> ids = {1, 281, 342, 342, 343, 292, 343, 308};
  // Separate engines: each session's logits stay valid while the other runs.
  Engine one(m, {.threads = 1}), two(m, {.threads = 2});
  Session batched(two, Stochastic(0.5f, 4)), stepwise(one, Stochastic(0.5f, 4));
  const auto all = batched.Forward(ids, /*all_logits=*/true);
  const size_t vocab = static_cast<size_t>(m.config().vocab);
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto row = stepwise.Forward({&ids[i], 1});
    for (size_t v = 0; v < vocab; ++v) ASSERT_NEAR(row[v], all[i * vocab + v], 1e-4) << i;
  }
}

TEST(Stochastic, DifferentSeedsGiveDifferentGreedyContinuations) {
  const Model& m = testing::LoadedModel(kModel);
  std::set<std::vector<int>> distinct;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    Engine engine(m, {.threads = 2});
    Session s(engine, Stochastic(0.5f, seed));
    distinct.insert(Greedy(s, 24));
  }
  EXPECT_GE(distinct.size(), 3u);
}

// Each negative gate is kept independently with probability p, so the kept fraction over n
// negatives has standard deviation sqrt(p(1-p)/n); 5 of them make a false failure ~1e-6 likely.
TEST(Stochastic, PickedFractionOfNegativesIsP) {
  const Model& m = testing::LoadedModel(kModel);
  for (float p : {0.1f, 0.5f, 0.9f}) {
    Engine engine(m, {.threads = 2});
    Session s(engine, Stochastic(p, 3));
    Greedy(s, 40);
    const FfnLayerStats st = s.ffn_total();
    ASSERT_GT(st.negative_gates, 5000u);
    const double frac = double(st.picked_negatives) / st.negative_gates;
    EXPECT_NEAR(frac, p, 5 * std::sqrt(p * (1 - p) / st.negative_gates)) << p;
    // Zero fraction drops accordingly: only the unpicked negatives (and exact zeros) stay zero.
    EXPECT_NEAR(st.zero_fraction(), double(st.negative_gates - st.picked_negatives) / st.neurons,
                1e-3);
  }
}

TEST(Stochastic, PZeroIsExactlyRelu) {
  const Model& m = testing::LoadedModel(kModel);
  Engine engine(m, {.threads = 2});
  Session a(engine, Stochastic(0.0f, 5)), b(engine);
  const std::vector<int> ids = {1, 281, 342, 342, 343};
  for (int id : ids) {
    const auto la = a.Forward({&id, 1});
    const std::vector<float> copy(la.begin(), la.end());
    const auto lb = b.Forward({&id, 1});
    ASSERT_EQ(copy, std::vector<float>(lb.begin(), lb.end()));
  }
}

// P = 1: every negative gate becomes SiLU(g), positives pass unchanged. Checked on the FFN
// runtime against a direct scalar computation of that activation.
TEST(Stochastic, POneIsSiluOnNegatives) {
  const int64_t hidden = 48, ffn = 70;
  ModelConfig c;
  c.hidden = hidden;
  c.ffn = ffn;
  c.layers = 1;
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 0.2f);
  std::vector<float> gate(ffn * hidden), up(ffn * hidden), down(ffn * hidden), x(hidden);
  for (auto* v : {&gate, &up, &down, &x}) {
    for (auto& e : *v) e = dist(rng);
  }
  FfnWeights w;
  w.gate = {.data = gate.data(), .rows = ffn, .cols = hidden};
  w.up = {.data = up.data(), .rows = ffn, .cols = hidden};
  w.down_t = {.data = down.data(), .rows = ffn, .cols = hidden};
  for (FfnMode mode : {FfnMode::kSparse, FfnMode::kDense}) {
    const KernelTable& kernels = ChooseKernels("");
    DenseMatmul mm(kernels, 2);
    FfnRuntime rt(c, kernels, mm, 2, 1);
    const FfnSettings settings =
        FfnSettings::Resolve(c, mode, {FfnActivation::kStochastic, 1.0f, 77});
    FfnLayerStats stats;
    std::vector<float> y(hidden);
    rt.Forward(settings, 0, w, x.data(), 1, y.data(), 3, &stats);
    std::vector<double> want(hidden, 0.0);
    for (int64_t i = 0; i < ffn; ++i) {
      double g = 0, u = 0;
      for (int64_t d = 0; d < hidden; ++d) {
        g += double(gate[i * hidden + d]) * x[d];
        u += double(up[i * hidden + d]) * x[d];
      }
      const double a = g >= 0 ? g : g / (1 + std::exp(-g));
      for (int64_t d = 0; d < hidden; ++d) want[d] += a * u * down[i * hidden + d];
    }
    for (int64_t d = 0; d < hidden; ++d) EXPECT_NEAR(y[d], want[d], 1e-5) << FfnModeName(mode);
    EXPECT_EQ(stats.picked_negatives, stats.negative_gates);
  }
}

}  // namespace
}  // namespace zeroskip
