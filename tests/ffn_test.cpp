// The FFN runtime: the decode step equals a float64 reference computed here from the weights,
// and the sparse path equals the dense one, for every ISA, dtype and thread count, with active
// sets from empty to full; statistics count exactly. An ISA this CPU lacks is reported as skipped.
#include "zeroskip/ffn.h"

#include <gtest/gtest.h>

#include <Eigen/Core>
#include <array>
#include <cmath>
#include <limits>
#include <random>

#include "engine/workspace.h"
#include "format/dtype.h"
#include "format/shadow_gate.h"
#include "kernels/kernels.h"
#include "kernels/ref/kernels_ref.h"
#include "test_util.h"

namespace zeroskip {
namespace {

// The dtypes of gate, up and down, in that order.
using FfnDTypes = std::array<DType, 3>;

struct RandomFfn {
  ModelConfig config;
  std::vector<uint8_t> gate, up, down;
  std::vector<float> gate_f, up_f, down_f;  // [ffn, hidden] the stored values, widened
  FfnWeights weights;

  RandomFfn(int64_t hidden, int64_t ffn, DType dtype, float gate_shift, uint32_t seed)
      : RandomFfn(hidden, ffn, FfnDTypes{dtype, dtype, dtype}, gate_shift, seed) {}
  // Quantized values are the format's dequantization of their blocks (DequantizeBlock).
  RandomFfn(int64_t hidden, int64_t ffn, FfnDTypes dtypes, float gate_shift, uint32_t seed) {
    config.hidden = hidden;
    config.ffn = ffn;
    config.layers = 1;
    config.activation = Activation::kReLU;
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, 1.0f / std::sqrt(float(hidden)));
    auto fill = [&](std::vector<uint8_t>& bytes, std::vector<float>& values, DType dtype,
                    float shift_per_row) {
      bytes.resize(static_cast<size_t>(ffn) * DTypeBytes(dtype, hidden));
      values.resize(static_cast<size_t>(hidden * ffn));
      for (int64_t i = 0; i < hidden * ffn; ++i) {
        // A shift on column 0 moves every gate by shift * x[0] (x[0] is fixed to 1 below).
        const float v = dist(rng) + (i % hidden == 0 ? shift_per_row : 0.0f);
        if (IsQuantized(dtype)) {
          values[i] = v;  // quantized below, a block at a time
        } else if (dtype == DType::kF32) {
          values[i] = v;
          std::memcpy(&bytes[4 * i], &v, 4);
        } else if (dtype == DType::kBF16) {
          const auto b = Eigen::bfloat16(v);
          values[i] = static_cast<float>(b);
          std::memcpy(&bytes[2 * i], &b, 2);
        } else {
          const auto h = Eigen::half(v);
          values[i] = static_cast<float>(h);
          std::memcpy(&bytes[2 * i], &h, 2);
        }
      }
      if (IsQuantized(dtype)) {
        const auto elements = static_cast<int64_t>(DTypeBlockElements(dtype));
        for (int64_t b = 0; b < hidden * ffn / elements; ++b) {
          uint8_t* block = &bytes[b * DTypeBlockBytes(dtype)];
          QuantizeBlock(&values[b * elements], dtype, block);
          DequantizeBlock(block, dtype, &values[b * elements]);
        }
      }
    };
    fill(gate, gate_f, dtypes[0], gate_shift);
    fill(up, up_f, dtypes[1], 0.0f);
    fill(down, down_f, dtypes[2], 0.0f);
    auto view = [&](const std::vector<uint8_t>& b, DType dtype) {
      return WeightView{.data = b.data(), .dtype = dtype, .rows = ffn, .cols = hidden};
    };
    weights.gate = view(gate, dtypes[0]);
    weights.up = view(up, dtypes[1]);
    weights.down_t = view(down, dtypes[2]);
  }
};

std::vector<float> Input(int64_t hidden, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> x(hidden);
  for (auto& v : x) v = std::normal_distribution<float>()(rng);
  x[0] = 1.0f;
  return x;
}

// One FFN runtime on `kernels`, with the settings and statistics a session would hold.
struct Ffn {
  Ffn(const ModelConfig& c, FfnMode mode, int threads, int64_t max_tokens = 1,
      const KernelTable& kernels = ChooseKernels(""))
      : matmul(kernels, threads),
        runtime(c, kernels, matmul, threads, max_tokens),
        settings(FfnSettings::Resolve(c, mode, {})) {}
  void Forward(const FfnWeights& w, const float* x, int64_t n, float* y) {
    runtime.Forward(settings, 0, w, x, n, y, 0, &stats);
  }

  DenseMatmul matmul;
  FfnRuntime runtime;
  FfnSettings settings;
  FfnLayerStats stats;
};

class FfnIsaTest : public testing::IsaTest {};

// y = Σ_i relu(g_i)·u_i·W_down_t[i] in double from the widened weights, and a bound on what float
// evaluation may deviate from it: 4·(hidden + ffn)·2⁻²⁴ times the sum of the absolute values of
// every term (gate and up dot products carry their own error into h_i; a neuron whose gate is
// within that error of 0 may flip on or off, which the same bound covers). Losing any neuron's
// term, or a thread's partial sum, is off by a whole term and fails it. Quantized weights: gate
// and up read x as the kernels quantize it (ref::QuantizeActivations, pinned in kernels_test),
// so the same bound holds.
struct Reference {
  std::vector<double> y, bound;
  int64_t active = 0;     // neurons with gate > threshold
  int64_t ambiguous = 0;  // ... of which this many are within float error of it (may flip)
  int64_t up_zeros = 0;   // dReLU: active neurons with up <= 0 ...
  int64_t up_ambiguous = 0;  // ... of which this many are within float error of 0
};

//
// The gate and up dot products see x as the kernels feed it, each as its own weight type asks:
// x itself, or x rounded to bf16 for a table with bf16_products on bf16 weights (whose products of
// two bf16 are exact in f32, so the same float bound holds around a reference computed from the
// rounded x), or x quantized for quantized weights.
// With f.config's FATReLU threshold and dReLU (relu on up) when set.
Reference ReferenceFfn(const RandomFfn& f, const std::vector<float>& x_in, bool bf16_products) {
  const double t = f.config.activation == Activation::kFatReLU ? f.config.activation_threshold : 0;
  const int64_t hidden = f.config.hidden, ffn = f.config.ffn;
  auto seen_by = [&](DType dtype) {
    std::vector<float> x = x_in;
    if (bf16_products && dtype == DType::kBF16) {
      for (float& v : x) v = testing::RoundToBf16(v);
    }
    if (IsQuantized(dtype)) {
      std::vector<int8_t> q(hidden);
      std::vector<float> d(hidden / kQuantBlock);
      ref::QuantizeActivations(x_in.data(), hidden / kQuantBlock, q.data(), d.data());
      for (int64_t i = 0; i < hidden; ++i) x[i] = d[i / kQuantBlock] * q[i];
    }
    return x;
  };
  const std::vector<float> x = seen_by(f.weights.gate.dtype), xu = seen_by(f.weights.up.dtype);
  Reference r{std::vector<double>(hidden, 0.0), std::vector<double>(hidden, 0.0)};
  const double unit = 4.0 * static_cast<double>(hidden + ffn) * std::ldexp(1.0, -24);
  for (int64_t i = 0; i < ffn; ++i) {
    double g = 0, u = 0, g_abs = 0, u_abs = 0;
    for (int64_t d = 0; d < hidden; ++d) {
      g += double(f.gate_f[i * hidden + d]) * x[d];
      u += double(f.up_f[i * hidden + d]) * xu[d];
      g_abs += std::abs(double(f.gate_f[i * hidden + d]) * x[d]);
      u_abs += std::abs(double(f.up_f[i * hidden + d]) * xu[d]);
    }
    r.active += g > t;
    r.ambiguous += std::abs(g - t) <= unit * g_abs;
    if (f.config.relu_up && g > t) {
      r.up_zeros += u <= 0;
      r.up_ambiguous += std::abs(u) <= unit * u_abs;
    }
    const double h = (g > t ? g : 0.0) * (f.config.relu_up ? std::max(u, 0.0) : u);
    const double h_abs = g_abs * std::abs(u) + std::abs(g) * u_abs + std::abs(h);
    for (int64_t c = 0; c < hidden; ++c) {
      const double w = f.down_f[i * hidden + c];
      r.y[c] += h * w;
      r.bound[c] += unit * h_abs * std::abs(w);
    }
  }
  return r;
}

// A batch of n inputs (seeds seed, seed + 1, ...) as one [n, hidden] array, and each one's
// reference.
struct ReferenceBatch {
  ReferenceBatch(const RandomFfn& f, int64_t n, uint32_t seed, bool bf16_products) {
    for (int64_t k = 0; k < n; ++k) {
      const auto xk = Input(f.config.hidden, seed + static_cast<uint32_t>(k));
      x.insert(x.end(), xk.begin(), xk.end());
      want.push_back(ReferenceFfn(f, xk, bf16_products));
    }
  }
  std::vector<float> x;
  std::vector<Reference> want;
};

// Every output of a batch y ([n, hidden]) within its token's reference bound, and the active
// neurons the layer's statistics count (neurons - zero_neurons) within the references' ambiguity.
void ExpectWithinReferences(const std::vector<Reference>& want, const std::vector<float>& y,
                            const FfnLayerStats& st, const std::string& where) {
  const auto hidden = static_cast<int64_t>(y.size() / want.size());
  int64_t active = 0, ambiguous = 0;
  for (size_t k = 0; k < want.size(); ++k) {
    active += want[k].active;
    ambiguous += want[k].ambiguous;
    for (int64_t c = 0; c < hidden; ++c) {
      ASSERT_NEAR(y[k * hidden + c], want[k].y[c], want[k].bound[c] + 1e-30)
          << where << " token " << k << " c " << c;
    }
  }
  EXPECT_NEAR(static_cast<int64_t>(st.neurons - st.zero_neurons), active, ambiguous) << where;
}

const DType kDTypes[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kQ8,
                         DType::kQ4,  DType::kQ4K,  DType::kQ6K};

// (hidden, ffn) pairs with odd sizes; quantized rows are whole blocks.
std::vector<std::pair<int64_t, int64_t>> Shapes(DType dtype) {
  if (IsKQuant(dtype)) return {{256, 75}, {512, 17}};
  if (IsQuantized(dtype)) return {{96, 75}, {64, 200}, {32, 17}};
  return {{100, 75}, {64, 200}, {33, 17}};
}

TEST_P(FfnIsaTest, DecodeStepMatchesFloat64Reference) {
  const Isa isa = GetParam();
  for (DType dtype : kDTypes) {
    for (float shift : {50.0f, 0.0f, -1.3f, -50.0f}) {
      for (auto [hidden, ffn] : Shapes(dtype)) {
        RandomFfn f(hidden, ffn, dtype, shift, 21);
        const auto x = Input(hidden, 22);
        const Reference want = ReferenceFfn(f, x, kernels().bf16_products);
        for (FfnMode mode : {FfnMode::kSparse, FfnMode::kDense}) {
          for (int threads : {1, 2, 3}) {
            Ffn rt(f.config, mode, threads, 1, kernels());
            // NaN first: an output element nobody writes fails loudly.
            std::vector<float> y(hidden, std::numeric_limits<float>::quiet_NaN());
            rt.Forward(f.weights, x.data(), 1, y.data());
            for (int64_t c = 0; c < hidden; ++c) {
              ASSERT_NEAR(y[c], want.y[c], want.bound[c] + 1e-30)
                  << IsaName(isa) << " " << DTypeName(dtype) << " " << FfnModeName(mode)
                  << " threads " << threads << " shift " << shift << " hidden " << hidden << " ffn "
                  << ffn << " c " << c;
            }
            // The statistics count what the step did: the whole gate, then two rows (up and
            // down) per active neuron when sparse; three whole matrices when dense.
            const FfnLayerStats& st = rt.stats;
            const auto active = static_cast<int64_t>(st.neurons - st.zero_neurons);
            EXPECT_NEAR(active, want.active, want.ambiguous);
            const uint64_t hf = hidden * ffn;
            const uint64_t rows = mode == FfnMode::kSparse ? ffn + 2 * active : 3 * ffn;
            EXPECT_EQ(st.tokens, 1u);
            EXPECT_EQ(st.neurons, static_cast<uint64_t>(ffn));
            EXPECT_EQ(st.weight_bytes_read, rows * DTypeBytes(dtype, hidden));
            EXPECT_EQ(st.flops_done, 2 * rows * hidden);
            EXPECT_EQ(st.flops_dense, 6 * hf);
          }
        }
      }
    }
  }
}

// A batch (prefill) against the same float64 reference, token by token: the sparse path (gate
// batched, up and down neuron by neuron over each token's active neurons) and the dense one
// (three batched matmuls), short batches and ones past kSmallBatch (oneDNN for float weights).
// The sparse path sums every output in neuron order whatever the thread count: bit-identical
// across 1, 2 and 3 threads.
TEST_P(FfnIsaTest, BatchMatchesFloat64Reference) {
  const Isa isa = GetParam();
  for (DType dtype : kDTypes) {
    for (float shift : {50.0f, 0.0f, -1.3f, -50.0f}) {
      for (auto [hidden, ffn] : Shapes(dtype)) {
        RandomFfn f(hidden, ffn, dtype, shift, 31);
        for (int64_t n : {int64_t{3}, kSmallBatch + 5}) {
          const ReferenceBatch batch(f, n, 40, kernels().bf16_products);
          const std::vector<float>& x = batch.x;
          const std::vector<Reference>& want = batch.want;
          for (FfnMode mode : {FfnMode::kSparse, FfnMode::kDense}) {
            // A dense batch under bf16_products also rounds the down projection's input to
            // bf16 (oneDNN's bf16 matmul), beyond this bound: the golden tests cover it.
            if (mode == FfnMode::kDense && kernels().bf16_products && dtype == DType::kBF16) {
              continue;
            }
            std::vector<float> first;
            for (int threads : {1, 2, 3}) {
              Ffn rt(f.config, mode, threads, n, kernels());
              std::vector<float> y(n * hidden, std::numeric_limits<float>::quiet_NaN());
              rt.Forward(f.weights, x.data(), n, y.data());
              const FfnLayerStats& st = rt.stats;
              ExpectWithinReferences(want, y, st,
                          std::string(IsaName(isa)) + " " + std::string(DTypeName(dtype)) + " " +
                              std::string(FfnModeName(mode)) + " n " + std::to_string(n) +
                              " threads " + std::to_string(threads) + " shift " +
                              std::to_string(shift) + " hidden " + std::to_string(hidden) +
                              " ffn " + std::to_string(ffn));
              EXPECT_EQ(st.tokens, static_cast<uint64_t>(n));
              EXPECT_EQ(st.neurons, static_cast<uint64_t>(n * ffn));
              EXPECT_LE(st.weight_bytes_read, 3 * ffn * DTypeBytes(dtype, hidden));
              if (mode == FfnMode::kSparse) {
                if (first.empty()) first = y;
                ASSERT_EQ(y, first) << IsaName(isa) << " " << DTypeName(dtype) << " threads "
                                    << threads << " shift " << shift;
              }
            }
          }
        }
      }
    }
  }
}

// FATReLU (threshold 0.3, ProSparse) and dReLU (Bamboo) against the float64 reference, decode
// and batches, sparse and dense: the threshold decides the active set (a gate in (0, 0.3] that
// passes moves y by a whole term), and dReLU's sparse decode skips the down rows of neurons whose
// up is not positive, counted in up_zero_neurons, the bytes read and the FLOPs. Catches the
// compaction ignoring the threshold, up without its ReLU in any path, and a wrong byte or FLOP
// count.
TEST_P(FfnIsaTest, FatReluAndDReluMatchFloat64Reference) {
  const Isa isa = GetParam();
  for (bool drelu : {false, true}) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kQ8}) {
      for (float shift : {0.0f, -1.3f}) {
        const auto [hidden, ffn] = Shapes(dtype)[0];
        RandomFfn f(hidden, ffn, dtype, shift, 51);
        if (drelu) {
          f.config.relu_up = true;
        } else {
          f.config.activation = Activation::kFatReLU;
          f.config.activation_threshold = 0.3f;
        }
        for (int64_t n : {int64_t{1}, int64_t{3}, kSmallBatch + 5}) {
          const ReferenceBatch batch(f, n, 60, kernels().bf16_products);
          const std::vector<float>& x = batch.x;
          const std::vector<Reference>& want = batch.want;
          for (FfnMode mode : {FfnMode::kSparse, FfnMode::kDense}) {
            if (n > 1 && mode == FfnMode::kDense && kernels().bf16_products &&
                dtype == DType::kBF16) {
              continue;  // as in BatchMatchesFloat64Reference
            }
            for (int threads : {1, 3}) {
              Ffn rt(f.config, mode, threads, n, kernels());
              std::vector<float> y(n * hidden, std::numeric_limits<float>::quiet_NaN());
              rt.Forward(f.weights, x.data(), n, y.data());
              const std::string where = std::string(IsaName(isa)) + " " +
                                        (drelu ? "drelu " : "fatrelu ") +
                                        std::string(DTypeName(dtype)) + " " +
                                        std::string(FfnModeName(mode)) + " n " + std::to_string(n) +
                                        " threads " + std::to_string(threads) + " shift " +
                                        std::to_string(shift);
              const FfnLayerStats& st = rt.stats;
              ExpectWithinReferences(want, y, st, where);
              const auto got_active = static_cast<int64_t>(st.neurons - st.zero_neurons);
              if (n == 1 && mode == FfnMode::kSparse) {
                EXPECT_NEAR(static_cast<int64_t>(st.up_zero_neurons), want[0].up_zeros,
                            want[0].up_ambiguous + want[0].ambiguous)
                    << where;
                if (drelu) {
                  EXPECT_GT(st.up_zero_neurons, 0u) << where;
                }
                const uint64_t rows = ffn + 2 * got_active - st.up_zero_neurons;
                EXPECT_EQ(st.weight_bytes_read, rows * DTypeBytes(dtype, hidden)) << where;
                EXPECT_EQ(st.flops_done, 2 * rows * hidden) << where;
              } else {
                EXPECT_EQ(st.up_zero_neurons, 0u) << where;
              }
            }
          }
        }
      }
    }
  }
}

// OPT's ungated FFN, y = Σ_i relu(fc1_i·x + b1_i)·fc2_i + b2, in double, with the bound of
// ReferenceFfn (the gate's error carried into each term).
Reference UngatedReference(const RandomFfn& f, const std::vector<float>& bias1,
                           const std::vector<float>& bias2, const std::vector<float>& x_in,
                           bool quantized_x) {
  const int64_t hidden = f.config.hidden, ffn = f.config.ffn;
  std::vector<float> x = x_in;
  if (quantized_x) {
    std::vector<int8_t> q(hidden);
    std::vector<float> d(hidden / kQuantBlock);
    ref::QuantizeActivations(x_in.data(), hidden / kQuantBlock, q.data(), d.data());
    for (int64_t i = 0; i < hidden; ++i) x[i] = d[i / kQuantBlock] * q[i];
  }
  Reference r{std::vector<double>(bias2.begin(), bias2.end()), std::vector<double>(hidden, 0.0)};
  const double unit = 4.0 * static_cast<double>(hidden + ffn) * std::ldexp(1.0, -24);
  for (int64_t i = 0; i < ffn; ++i) {
    double g = bias1[i], g_abs = std::abs(bias1[i]);
    for (int64_t d = 0; d < hidden; ++d) {
      g += double(f.gate_f[i * hidden + d]) * x[d];
      g_abs += std::abs(double(f.gate_f[i * hidden + d]) * x[d]);
    }
    r.active += g > 0;
    r.ambiguous += std::abs(g) <= unit * g_abs;
    const double a = std::max(g, 0.0);
    for (int64_t c = 0; c < hidden; ++c) {
      const double w = f.down_f[i * hidden + c];
      r.y[c] += a * w;
      r.bound[c] += unit * (g_abs + a) * std::abs(w) + unit * std::abs(bias2[c]);
    }
  }
  return r;
}

// The ungated FFN (fc1 with bias -> ReLU -> fc2 with bias; no up) for every dtype, decode and
// batches, sparse and dense, against UngatedReference; the sparse decode reads the fc1 matrix
// and one fc2 row per active neuron (the dense one both matrices whole), and equals the dense
// decode bit for bit (the same rows in the same order; a zero coefficient adds nothing).
// Catches a dropped bias, up read for an ungated FFN, and counting three matrices (bytes or FLOPs).
TEST_P(FfnIsaTest, UngatedFfnMatchesFloat64ReferenceAndSparseEqualsDense) {
  const Isa isa = GetParam();
  for (DType dtype : kDTypes) {
    for (float shift : {0.0f, -1.3f}) {
      const auto [hidden, ffn] = Shapes(dtype)[0];
      RandomFfn f(hidden, ffn, dtype, shift, 71);
      f.config.gated_ffn = false;
      f.weights.up = {};
      std::mt19937 rng(72);
      std::normal_distribution<float> dist(0.0f, 0.5f);
      std::vector<float> bias1(ffn), bias2(hidden);
      for (float& b : bias1) b = dist(rng) - 0.2f;
      for (float& b : bias2) b = dist(rng);
      f.weights.gate_bias = bias1.data();
      f.weights.down_bias = bias2.data();
      const bool bf16_x = kernels().bf16_products && dtype == DType::kBF16;
      for (int64_t n : {int64_t{1}, int64_t{3}, kSmallBatch + 5}) {
        std::vector<float> x;
        std::vector<Reference> want;
        for (int64_t k = 0; k < n; ++k) {
          auto xk = Input(hidden, 80 + static_cast<uint32_t>(k));
          x.insert(x.end(), xk.begin(), xk.end());
          if (bf16_x) {
            for (float& v : xk) v = testing::RoundToBf16(v);
          }
          want.push_back(UngatedReference(f, bias1, bias2, xk, IsQuantized(dtype)));
        }
        std::vector<float> y_sparse;
        for (FfnMode mode : {FfnMode::kSparse, FfnMode::kDense}) {
          if (n > 1 && mode == FfnMode::kDense && bf16_x) continue;  // oneDNN's bf16 rounding
          for (int threads : {1, 3}) {
            Ffn rt(f.config, mode, threads, n, kernels());
            std::vector<float> y(n * hidden, std::numeric_limits<float>::quiet_NaN());
            rt.Forward(f.weights, x.data(), n, y.data());
            const std::string where = std::string(IsaName(isa)) + " " +
                                      std::string(DTypeName(dtype)) + " " +
                                      std::string(FfnModeName(mode)) + " n " + std::to_string(n) +
                                      " threads " + std::to_string(threads) + " shift " +
                                      std::to_string(shift);
            const FfnLayerStats& st = rt.stats;
            ExpectWithinReferences(want, y, st, where);
            const auto got_active = static_cast<int64_t>(st.neurons - st.zero_neurons);
            EXPECT_EQ(st.flops_dense, 4u * hidden * ffn * n) << where;
            if (n == 1) {
              const uint64_t rows = mode == FfnMode::kSparse ? ffn + got_active : 2 * ffn;
              EXPECT_EQ(st.weight_bytes_read, rows * DTypeBytes(dtype, hidden)) << where;
              EXPECT_EQ(st.flops_done, 2 * rows * hidden) << where;
              if (mode == FfnMode::kSparse && threads == 1) y_sparse = y;
              if (mode == FfnMode::kDense && threads == 1) {
                ASSERT_EQ(y, y_sparse) << where << ": sparse and dense decode differ";
              }
            }
          }
        }
      }
    }
  }
}

// Layers whose gate, up and down have different weight types (llama.cpp's Q4_K_M keeps some down
// projections in q6k and the rest in q4k), against the float64 reference on each matrix as the
// format dequantizes it.
const FfnDTypes kMixes[] = {
    {DType::kQ4K, DType::kQ8, DType::kQ6K},  {DType::kQ4K, DType::kQ4K, DType::kQ6K},
    {DType::kBF16, DType::kQ4K, DType::kQ8}, {DType::kQ6K, DType::kBF16, DType::kF32},
    {DType::kF16, DType::kQ4, DType::kQ4K},  {DType::kQ8, DType::kQ6K, DType::kBF16}};

std::string MixName(const FfnDTypes& d) {
  return std::string(DTypeName(d[0])) + "/" + std::string(DTypeName(d[1])) + "/" +
         std::string(DTypeName(d[2]));
}

// Every path of a mixed layer: decode (sparse, dense, and the shadow gate, which must give the
// dense gate's output bit for bit) and batches (sparse, dense), with ReLU, FATReLU and dReLU,
// 1 and 3 threads; the statistics count each matrix's own row bytes. Catches a matrix read with
// another's kernels (the fused kernel on rows of two types, up read as down's type or the
// reverse), a row or column offset in another matrix's type, and bytes counted in the gate's.
TEST_P(FfnIsaTest, MixedDTypesMatchFloat64Reference) {
  const Isa isa = GetParam();
  const bool bf16_products = kernels().bf16_products;
  for (const FfnDTypes& dtypes : kMixes) {
    const int64_t hidden = 256, ffn = 75;  // rows of whole K-quant blocks
    const uint64_t g_row = DTypeBytes(dtypes[0], hidden), u_row = DTypeBytes(dtypes[1], hidden),
                   d_row = DTypeBytes(dtypes[2], hidden);
    for (const char* act : {"relu", "fatrelu", "drelu"}) {
      for (float shift : {0.0f, -1.3f}) {
        RandomFfn f(hidden, ffn, dtypes, shift, 91);
        if (act == std::string("fatrelu")) {
          f.config.activation = Activation::kFatReLU;
          f.config.activation_threshold = 0.3f;
        }
        f.config.relu_up = act == std::string("drelu");
        for (int64_t n : {int64_t{1}, int64_t{3}, kSmallBatch + 5}) {
          const ReferenceBatch batch(f, n, 92, bf16_products);
          for (FfnMode mode : {FfnMode::kSparse, FfnMode::kDense}) {
            // As in BatchMatchesFloat64Reference: oneDNN's bf16 rounding of down's input.
            if (n > 1 && mode == FfnMode::kDense && bf16_products && dtypes[2] == DType::kBF16) {
              continue;
            }
            for (int threads : {1, 3}) {
              Ffn rt(f.config, mode, threads, n, kernels());
              std::vector<float> y(n * hidden, std::numeric_limits<float>::quiet_NaN());
              rt.Forward(f.weights, batch.x.data(), n, y.data());
              const std::string where = std::string(IsaName(isa)) + " " + MixName(dtypes) + " " +
                                        act + " " + std::string(FfnModeName(mode)) + " n " +
                                        std::to_string(n) + " threads " + std::to_string(threads) +
                                        " shift " + std::to_string(shift);
              const FfnLayerStats& st = rt.stats;
              ExpectWithinReferences(batch.want, y, st, where);
              const auto active = static_cast<uint64_t>(st.neurons - st.zero_neurons);
              if (mode == FfnMode::kDense) {
                EXPECT_EQ(st.weight_bytes_read, ffn * (g_row + u_row + d_row)) << where;
              } else if (n == 1) {
                EXPECT_EQ(st.weight_bytes_read,
                          ffn * g_row + active * (u_row + d_row) - st.up_zero_neurons * d_row)
                    << where;
              } else {
                EXPECT_EQ(st.weight_bytes_read, ffn * g_row + st.pass_rows_read * (u_row + d_row))
                    << where;
              }
            }
          }
        }
        if (act != std::string("relu")) continue;
        // The shadow gate bounds the gate alone, whatever up and down are.
        std::vector<uint8_t> shadow(ffn * DTypeBytes(DType::kQ8, hidden));
        std::vector<float> norms(2 * ffn);
        ASSERT_EQ(
            BuildShadowGate(f.gate.data(), dtypes[0], ffn, hidden, shadow.data(), norms.data()),
            0u);
        f.weights.gate_shadow = {
            .data = shadow.data(), .dtype = DType::kQ8, .rows = ffn, .cols = hidden};
        f.weights.gate_shadow_norms = norms.data();
        const auto x = Input(hidden, 93);
        std::vector<float> dense_y(hidden), shadow_y(hidden);
        DenseMatmul matmul(kernels(), 2);
        FfnRuntime runtime(f.config, kernels(), matmul, 2, 1);
        FfnLayerStats dense_stats, shadow_stats;
        runtime.Forward(FfnSettings::Resolve(f.config, FfnMode::kSparse, {}, GateMode::kDense), 0,
                        f.weights, x.data(), 1, dense_y.data(), 0, &dense_stats);
        runtime.Forward(FfnSettings::Resolve(f.config, FfnMode::kSparse, {}, GateMode::kShadow), 0,
                        f.weights, x.data(), 1, shadow_y.data(), 0, &shadow_stats);
        EXPECT_EQ(shadow_y, dense_y) << IsaName(isa) << " " << MixName(dtypes) << " shadow";
        EXPECT_EQ(shadow_stats.shadow_rows, static_cast<uint64_t>(ffn));
        EXPECT_EQ(shadow_stats.zero_neurons, dense_stats.zero_neurons);
      }
    }
  }
}

// An ungated FFN whose fc1 and fc2 have different weight types, against UngatedReference; the
// sparse decode reads fc1 whole and one fc2 row (in fc2's type) per active neuron.
TEST_P(FfnIsaTest, MixedUngatedFfnMatchesFloat64Reference) {
  const Isa isa = GetParam();
  for (const FfnDTypes& dtypes : kMixes) {
    const int64_t hidden = 256, ffn = 75;
    RandomFfn f(hidden, ffn, dtypes, -0.5f, 94);
    f.config.gated_ffn = false;
    f.weights.up = {};
    std::mt19937 rng(95);
    std::normal_distribution<float> dist(0.0f, 0.5f);
    std::vector<float> bias1(ffn), bias2(hidden);
    for (float& b : bias1) b = dist(rng) - 0.2f;
    for (float& b : bias2) b = dist(rng);
    f.weights.gate_bias = bias1.data();
    f.weights.down_bias = bias2.data();
    const bool bf16_x = kernels().bf16_products && dtypes[0] == DType::kBF16;
    for (int64_t n : {int64_t{1}, int64_t{3}, kSmallBatch + 5}) {
      std::vector<float> x;
      std::vector<Reference> want;
      for (int64_t k = 0; k < n; ++k) {
        auto xk = Input(hidden, 96 + static_cast<uint32_t>(k));
        x.insert(x.end(), xk.begin(), xk.end());
        if (bf16_x) {
          for (float& v : xk) v = testing::RoundToBf16(v);
        }
        want.push_back(UngatedReference(f, bias1, bias2, xk, IsQuantized(dtypes[0])));
      }
      for (FfnMode mode : {FfnMode::kSparse, FfnMode::kDense}) {
        if (n > 1 && mode == FfnMode::kDense && kernels().bf16_products &&
            (dtypes[0] == DType::kBF16 || dtypes[2] == DType::kBF16)) {
          continue;  // oneDNN's bf16 rounding
        }
        for (int threads : {1, 3}) {
          Ffn rt(f.config, mode, threads, n, kernels());
          std::vector<float> y(n * hidden, std::numeric_limits<float>::quiet_NaN());
          rt.Forward(f.weights, x.data(), n, y.data());
          const std::string where = std::string(IsaName(isa)) + " " + MixName(dtypes) + " " +
                                    std::string(FfnModeName(mode)) + " n " + std::to_string(n) +
                                    " threads " + std::to_string(threads);
          const FfnLayerStats& st = rt.stats;
          ExpectWithinReferences(want, y, st, where);
          const auto active = static_cast<uint64_t>(st.neurons - st.zero_neurons);
          if (n == 1 && mode == FfnMode::kSparse) {
            EXPECT_EQ(st.weight_bytes_read,
                      ffn * DTypeBytes(dtypes[0], hidden) + active * DTypeBytes(dtypes[2], hidden))
                << where;
          }
        }
      }
    }
  }
}

// Sessions share a batched FFN pass only when they compute alike: on a FATReLU model, the model's
// activation (threshold 0.3) and --act relu (threshold 0) resolve to the same act but must not
// share (one would get the other's threshold). Catches Batchable comparing act alone.
TEST(FfnRuntime, FatReluThresholdKeepsSessionsApart) {
  ModelConfig c;
  c.activation = Activation::kFatReLU;
  c.activation_threshold = 0.3f;
  const FfnSettings model = FfnSettings::Resolve(c, FfnMode::kAuto, {});
  const FfnSettings relu = FfnSettings::Resolve(c, FfnMode::kAuto, {.kind = FfnActivation::kReLU});
  EXPECT_EQ(model.threshold, 0.3f);
  EXPECT_EQ(relu.threshold, 0.0f);
  EXPECT_EQ(model.act, relu.act);
  EXPECT_FALSE(model.Batchable(relu));
  EXPECT_TRUE(model.Batchable(FfnSettings::Resolve(c, FfnMode::kSparse, {})));
}

// Auto decodes sparsely exactly when the activation makes zeros (ReLU), and never under dense.
TEST(FfnRuntime, AutoDecodesSparselyExactlyWhenTheActivationHasZeros) {
  RandomFfn f(64, 200, DType::kF32, -0.5f, 7);
  const auto x = Input(64, 8);
  struct Want {
    Activation model;
    FfnMode mode;
    bool sparse;
  };
  for (const Want& w : {Want{Activation::kReLU, FfnMode::kAuto, true},
                        Want{Activation::kReLU, FfnMode::kSparse, true},
                        Want{Activation::kReLU, FfnMode::kDense, false},
                        Want{Activation::kSiLU, FfnMode::kAuto, false}}) {
    ModelConfig c = f.config;
    c.activation = w.model;
    Ffn rt(c, w.mode, 2);
    EXPECT_EQ(rt.settings.sparse_decode, w.sparse) << FfnModeName(w.mode);
    std::vector<float> y(64);
    rt.Forward(f.weights, x.data(), 1, y.data());
    const FfnLayerStats& st = rt.stats;
    if (w.model == Activation::kReLU) {
      ASSERT_GT(st.zero_neurons, 0u);
    }
    if (w.sparse) {
      EXPECT_LT(st.weight_bytes_read, 3u * 64 * 200 * 4) << FfnModeName(w.mode);
    } else {
      EXPECT_EQ(st.weight_bytes_read, 3u * 64 * 200 * 4) << FfnModeName(w.mode);
    }
  }
}

// Quantized weights: exactly equal, since both paths do the same arithmetic for each neuron (x
// quantized once, the same row kernels; an inactive neuron's zero coefficient adds nothing).
TEST_P(FfnIsaTest, SparseEqualsDenseEverywhere) {
  const Isa isa = GetParam();
  for (DType dtype : kDTypes) {
    // Shifts from "every gate positive" to "every gate negative" (100% zeros).
    for (float shift : {50.0f, 0.0f, -1.3f, -50.0f}) {
      for (auto [hidden, ffn] : Shapes(dtype)) {
        for (int threads : {1, 2}) {
          RandomFfn f(hidden, ffn, dtype, shift, 11);
          const auto x = Input(hidden, 12);
          Ffn sparse(f.config, FfnMode::kSparse, threads, 1, kernels());
          Ffn dense(f.config, FfnMode::kDense, threads, 1, kernels());
          std::vector<float> ys(hidden), yd(hidden);
          sparse.Forward(f.weights, x.data(), 1, ys.data());
          dense.Forward(f.weights, x.data(), 1, yd.data());
          double scale = 0;
          for (float v : yd) scale = std::max(scale, double(std::abs(v)));
          for (int64_t c = 0; c < hidden; ++c) {
            if (IsQuantized(dtype)) {
              ASSERT_EQ(ys[c], yd[c]) << IsaName(isa) << " dtype " << DTypeName(dtype) << " shift "
                                      << shift << " threads " << threads << " c " << c;
            }
            ASSERT_NEAR(ys[c], yd[c], 1e-5 * scale + 1e-30)
                << IsaName(isa) << " dtype " << DTypeName(dtype) << " shift " << shift
                << " threads " << threads << " c " << c;
          }
          const auto& s = sparse.stats;
          const auto& d = dense.stats;
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

INSTANTIATE_TEST_SUITE_P(Isas, FfnIsaTest, ::testing::ValuesIn(testing::AllIsaValues()),
                         [](const auto& info) { return std::string(IsaName(info.param)); });

TEST(FfnRuntime, BatchedMatchesOneTokenAtATime) {
  RandomFfn f(64, 200, DType::kBF16, -0.5f, 5);
  Ffn batched(f.config, FfnMode::kAuto, 2, 4);
  Ffn single(f.config, FfnMode::kAuto, 2, 1);
  std::vector<float> x;
  for (uint32_t t = 0; t < 4; ++t) {
    const auto xi = Input(64, 100 + t);
    x.insert(x.end(), xi.begin(), xi.end());
  }
  std::vector<float> yb(4 * 64), y1(64);
  batched.Forward(f.weights, x.data(), 4, yb.data());
  for (int t = 0; t < 4; ++t) {
    single.Forward(f.weights, x.data() + 64 * t, 1, y1.data());
    for (int c = 0; c < 64; ++c) EXPECT_NEAR(yb[64 * t + c], y1[c], 1e-4);
  }
  EXPECT_EQ(batched.stats.zero_neurons, single.stats.zero_neurons);
}

}  // namespace
}  // namespace zeroskip
