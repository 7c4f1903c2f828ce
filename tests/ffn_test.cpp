// The FFN runtime: the sparse decode path equals the dense path (to float rounding) for every
// ISA, dtype and thread count, with active sets from empty to full; statistics count exactly.
#include <gtest/gtest.h>

#include <Eigen/Core>
#include <cmath>
#include <random>

#include "kernels/kernels.h"
#include "model/matmul.h"
#include "zeroskip/ffn.h"

namespace zeroskip {
namespace {

struct RandomFfn {
  ModelConfig config;
  std::vector<uint8_t> gate, up, down;
  LayerWeights weights;

  RandomFfn(int64_t hidden, int64_t ffn, DType dtype, float gate_shift, uint32_t seed) {
    config.hidden = hidden;
    config.ffn = ffn;
    config.layers = 1;
    config.activation = Activation::kReLU;
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, 1.0f / std::sqrt(float(hidden)));
    auto fill = [&](std::vector<uint8_t>& bytes, float shift_per_row) {
      bytes.resize(static_cast<size_t>(hidden * ffn) * DTypeSize(dtype));
      for (int64_t i = 0; i < hidden * ffn; ++i) {
        // A shift on column 0 moves every gate by shift * x[0] (x[0] is fixed to 1 below).
        const float v = dist(rng) + (i % hidden == 0 ? shift_per_row : 0.0f);
        if (dtype == DType::kF32) {
          std::memcpy(&bytes[4 * i], &v, 4);
        } else if (dtype == DType::kBF16) {
          const auto b = Eigen::bfloat16(v);
          std::memcpy(&bytes[2 * i], &b, 2);
        } else {
          const auto h = Eigen::half(v);
          std::memcpy(&bytes[2 * i], &h, 2);
        }
      }
    };
    fill(gate, gate_shift);
    fill(up, 0.0f);
    fill(down, 0.0f);
    auto view = [&](const std::vector<uint8_t>& b) { return WeightView{b.data(), dtype, ffn, hidden}; };
    weights.gate = view(gate);
    weights.up = view(up);
    weights.down_t = view(down);
  }
};

std::vector<float> Input(int64_t hidden, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> x(hidden);
  for (auto& v : x) v = std::normal_distribution<float>()(rng);
  x[0] = 1.0f;
  return x;
}

std::vector<Isa> Isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (KernelsFor(isa) != nullptr) out.push_back(isa);
  }
  return out;
}

TEST(FfnRuntime, SparseEqualsDenseEverywhere) {
  for (Isa isa : Isas()) {
    ASSERT_TRUE(SelectIsa(isa));
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      // Shifts from "every gate positive" to "every gate negative" (100% zeros).
      for (float shift : {50.0f, 0.0f, -1.3f, -50.0f}) {
        for (auto [hidden, ffn] : {std::pair<int64_t, int64_t>{100, 75}, {64, 200}, {33, 17}}) {
          for (int threads : {1, 2}) {
            RandomFfn f(hidden, ffn, dtype, shift, 11);
            const auto x = Input(hidden, 12);
            DenseMatmul mm(threads);
            FfnRuntime sparse(f.config, FfnMode::kSparse, threads, 1, &mm);
            FfnRuntime dense(f.config, FfnMode::kDense, threads, 1, &mm);
            std::vector<float> ys(hidden), yd(hidden);
            sparse.Forward(0, f.weights, x.data(), 1, ys.data());
            dense.Forward(0, f.weights, x.data(), 1, yd.data());
            double scale = 0;
            for (float v : yd) scale = std::max(scale, double(std::abs(v)));
            for (int64_t c = 0; c < hidden; ++c) {
              ASSERT_NEAR(ys[c], yd[c], 1e-5 * scale + 1e-30)
                  << IsaName(isa) << " dtype " << DTypeName(dtype) << " shift " << shift
                  << " threads " << threads << " c " << c;
            }
            const auto& s = sparse.layer_stats()[0];
            const auto& d = dense.layer_stats()[0];
            EXPECT_EQ(s.zero_neurons, d.zero_neurons);
            EXPECT_EQ(s.neurons, static_cast<uint64_t>(ffn));
            if (shift == -50.0f) {
              EXPECT_EQ(s.zero_neurons, static_cast<uint64_t>(ffn));
              for (float v : ys) EXPECT_EQ(v, 0.0f);  // nothing active: exactly zero
            }
            if (shift == 50.0f) {
              EXPECT_EQ(s.zero_neurons, 0u);
            }
            EXPECT_LE(s.flops_done, d.flops_done);
            EXPECT_EQ(d.flops_done, d.flops_dense);
          }
        }
      }
    }
  }
  SelectIsa(BestIsa());
}

TEST(FfnRuntime, BatchedMatchesOneTokenAtATime) {
  RandomFfn f(64, 200, DType::kBF16, -0.5f, 5);
  DenseMatmul mm(2);
  FfnRuntime batched(f.config, FfnMode::kAuto, 2, 4, &mm);
  FfnRuntime single(f.config, FfnMode::kAuto, 2, 1, &mm);
  std::vector<float> x;
  for (uint32_t t = 0; t < 4; ++t) {
    const auto xi = Input(64, 100 + t);
    x.insert(x.end(), xi.begin(), xi.end());
  }
  std::vector<float> yb(4 * 64), y1(64);
  batched.Forward(0, f.weights, x.data(), 4, yb.data());
  for (int t = 0; t < 4; ++t) {
    single.Forward(0, f.weights, x.data() + 64 * t, 1, y1.data());
    for (int c = 0; c < 64; ++c) EXPECT_NEAR(yb[64 * t + c], y1[c], 1e-4);
  }
  EXPECT_EQ(batched.layer_stats()[0].zero_neurons, single.layer_stats()[0].zero_neurons);
}

}  // namespace
}  // namespace zeroskip
