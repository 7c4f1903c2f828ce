// The shadow gate (docs/SHADOW_GATE.md): its per-row norms are upper bounds, the certification
// decides exactly at its boundary, and on inputs built to lie just outside the bound (a neuron
// that fires whose shadow estimate is negative) and just inside it (a neuron barely below zero)
// every ISA certifies only what it may, with outputs bit-identical to the dense gate's.
#include "format/shadow_gate.h"

#include <gtest/gtest.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "engine/workspace.h"
#include "ffn/shadow_bound.h"
#include "format/dtype.h"
#include "kernels/kernels.h"
#include "test_util.h"
#include "zeroskip/error.h"

namespace zeroskip {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// ‖v‖ in long double: an oracle far more precise than the f32 norms it checks.
long double Norm(const std::vector<long double>& v) {
  long double sum = 0;
  for (long double e : v) sum += e * e;
  return std::sqrt(sum);
}

// Catches norms rounded to nearest instead of up (about half the rows come out below the exact
// value), the two norms swapped, and an error measured against anything but the stored shadow.
TEST(ShadowGate, NormsAreTightUpperBounds) {
  std::mt19937 rng(3);
  const int64_t rows = 40;
  for (DType dtype :
       {DType::kF32, DType::kBF16, DType::kF16, DType::kQ8, DType::kQ4, DType::kQ4K, DType::kQ6K}) {
    const int64_t cols = IsKQuant(dtype) ? 256 : 96;
    std::vector<float> values(rows * cols);
    for (int64_t r = 0; r < rows; ++r) {
      // Magnitudes from 1e-3 to 1e3, so scales and norms cover many binades.
      const float scale = std::pow(10.0f, static_cast<float>(r % 7) - 3.0f);
      for (int64_t c = 0; c < cols; ++c) {
        values[r * cols + c] = scale * std::normal_distribution<float>()(rng);
      }
    }
    std::vector<uint8_t> gate(rows * DTypeBytes(dtype, cols));
    ConvertMatrix(reinterpret_cast<const uint8_t*>(values.data()), DType::kF32, rows, cols, false,
                  gate.data(), dtype);
    std::vector<float> widened(rows * cols);  // the gate as stored
    ConvertMatrix(gate.data(), dtype, rows, cols, false, reinterpret_cast<uint8_t*>(widened.data()),
                  DType::kF32);
    std::vector<uint8_t> shadow(rows * DTypeBytes(DType::kQ8, cols));
    std::vector<float> norms(2 * rows);
    ASSERT_EQ(BuildShadowGate(gate.data(), dtype, rows, cols, shadow.data(), norms.data()), 0u);
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<long double> error(cols), row(cols);
      for (int64_t c = 0; c < cols; c += kQuantBlock) {
        float block[kQuantBlock];
        DequantizeBlock(shadow.data() + DTypeBytes(DType::kQ8, r * cols + c), DType::kQ8, block);
        for (uint64_t i = 0; i < kQuantBlock; ++i) {
          row[c + i] = widened[r * cols + c + i];
          error[c + i] = row[c + i] - block[i];
        }
      }
      for (auto [stored, exact] :
           {std::pair{norms[r], Norm(error)}, {norms[rows + r], Norm(row)}}) {
        EXPECT_GE(stored, exact) << DTypeName(dtype) << " row " << r;
        EXPECT_LE(stored, exact * (1 + 1e-6L) + 1e-30L) << DTypeName(dtype) << " row " << r;
      }
    }
  }
}

// B = err·a + norm·c + d = 1·2 + 2·0.5 + 0.25 = 3.25, exact in f32. Catches < for <= (an
// estimate exactly at -B stays uncertain), the norms swapped (B would be 4.75), a NaN estimate
// certified, and certification without a usable bound.
TEST(ShadowGate, CertifiesExactlyAtTheBoundary) {
  const ShadowBound bound{.usable = true, .a = 2.0f, .c = 0.5f, .d = 0.25f};
  const float err[] = {1, 1, 1, 1}, norm[] = {2, 2, 2, 2};
  float est[] = {-3.25f, std::nextafter(-3.25f, 0.0f), kNaN, -100.0f};
  int32_t uncertain[4];
  ASSERT_EQ(CertifyRows(bound, err, norm, 4, est, uncertain), 2);
  EXPECT_EQ(uncertain[0], 1);
  EXPECT_EQ(uncertain[1], 2);
  EXPECT_EQ(est[0], 0.0f);  // certified rows become a gate of 0
  EXPECT_EQ(est[3], 0.0f);
  float again[] = {-100.0f, -100.0f};
  EXPECT_EQ(CertifyRows(ShadowBound{}, err, norm, 2, again, uncertain), 2);
}

// The coefficients against docs/SHADOW_GATE.md's formula, evaluated here in long double, for an
// x of equal elements e = 32767 / 1024 (‖x‖ = 8·e exact) and each way a gate kernel can see it:
// v = e (f32 gates; bf16 gates without bf16 products), v = bf16(e) = 32 (bf16 products: x rounded
// to nearest even), v = d·127 with d = f32(e / 127) (quantized gates: x in int8 blocks). The
// shadow quantizes v: every level 32767, scale v / 32767 in f32, ‖δ‖ = ‖v − d·q‖ (0 for v = e).
// α = ‖v‖ + s, β = s + γ·‖v‖ + η, η = 2^-100·(1 + max(‖x‖, ‖v‖)), s = ‖δ‖ + γ·(‖v‖ + ‖δ‖),
// γ = n·u / (1 − n·u). Each stored coefficient is at least its value (the bound must not shrink)
// and within 2^-19 of it (the evaluation's slack and the rounding up to f32). Catches γ over
// n - 1 terms, the full gate's own error left out, and the shadow quantizing anything but the
// kernel's view of x (x where the kernel rounds to bf16, or bf16 where it does not: α off by 3e-5).
TEST(ShadowGate, CoefficientsFollowTheDocumentedBound) {
  constexpr int64_t kHidden = 64;
  const float element = 32767.0f / 1024.0f;
  const std::vector<float> x(kHidden, element);
  std::vector<int16_t> xq(kHidden);
  std::vector<float> xd(kHidden / 32);
  const long double nx = 8.0L * element, u = 0x1p-24L;
  const long double gamma = kHidden * u / (1 - kHidden * u);
  const auto expect_within = [](float got, long double want, const std::string& what) {
    EXPECT_GE(static_cast<long double>(got), want) << what;
    EXPECT_LE(static_cast<long double>(got), want * (1 + 0x1p-19L)) << what;
  };
  struct Case {
    DType gate;
    bool bf16_products;
    long double view;  // every element of x as the gate's kernel multiplies it
  };
  const Case cases[] = {
      {DType::kF32, false, element},
      {DType::kF32, true, element},
      {DType::kBF16, false, element},
      {DType::kBF16, true, 32.0L},
      {DType::kQ8, false, static_cast<long double>(element / 127.0f) * 127},
  };
  for (const Case& k : cases) {
    const std::string what =
        std::string(DTypeName(k.gate)) + (k.bf16_products ? ", bf16 products" : "");
    const ShadowBound b =
        PrepareShadowInput(x.data(), kHidden, k.gate, k.bf16_products, xq.data(), xd.data());
    ASSERT_TRUE(b.usable) << what;
    EXPECT_EQ(xq[5], 32767) << what;
    EXPECT_EQ(xd[1], static_cast<float>(k.view) / 32767.0f) << what;
    const long double nv = 8 * k.view;
    const long double delta = 8 * std::abs(k.view - static_cast<long double>(xd[1]) * 32767);
    const long double s = delta + gamma * (nv + delta);
    const long double eta = 0x1p-100L * (1 + std::max(nx, nv));
    expect_within(b.a, nv + s, "a, " + what);
    expect_within(b.c, s + gamma * nv + eta, "c, " + what);
    expect_within(b.d, eta, "d, " + what);
  }
}

// NaN or Inf anywhere in x, or an x too large to bound, certifies nothing.
TEST(ShadowGate, NonFiniteOrHugeInputCertifiesNothing) {
  std::vector<int16_t> xq(64);
  std::vector<float> xd(2);
  for (float bad : {kNaN, std::numeric_limits<float>::infinity(), 1e30f}) {
    std::vector<float> x(64, 1.0f);
    x[37] = bad;
    EXPECT_FALSE(PrepareShadowInput(x.data(), 64, DType::kF32, false, xq.data(), xd.data()).usable)
        << bad;
  }
  const std::vector<float> x(64, 1.0f);
  EXPECT_TRUE(PrepareShadowInput(x.data(), 64, DType::kF32, false, xq.data(), xd.data()).usable);
}

class ShadowGateIsaTest : public testing::IsaTest {};

// The shadow GEMV of every ISA against the scalar reference: blocks from 1 to 129 (the 8-block
// scale groups and their tails), levels including -128 (a hostile file's; still exact), x with
// blocks of very different scales. Tolerance: the float summation bound 4·n·2⁻²⁴·Σ|terms|; a
// wrong block, lane or scale is off by a whole term.
TEST_P(ShadowGateIsaTest, ShadowDotRowsMatchesTheReference) {
  std::mt19937 rng(19);
  for (int64_t blocks : {1, 7, 8, 9, 16, 129}) {
    const int64_t cols = blocks * kQuantBlock, rows = 5;
    std::vector<uint8_t> shadow(rows * DTypeBytes(DType::kQ8, cols));
    std::uniform_int_distribution<int> byte(0, 255);
    for (size_t b = 0; b < shadow.size() / DTypeBlockBytes(DType::kQ8); ++b) {
      uint8_t* block = &shadow[b * DTypeBlockBytes(DType::kQ8)];
      const Eigen::half d(std::ldexp(1.0f + byte(rng) / 256.0f, -8 - byte(rng) % 8));
      std::memcpy(block, &d, 2);
      for (uint64_t i = 0; i < kQuantBlock; ++i) block[2 + i] = static_cast<uint8_t>(byte(rng));
    }
    std::vector<float> x(cols);
    for (int64_t c = 0; c < cols; ++c) {
      x[c] = std::ldexp(std::normal_distribution<float>()(rng), int(c / kQuantBlock % 5) * 3 - 6);
    }
    std::vector<int16_t> xq(cols);
    std::vector<float> xd(blocks);
    ASSERT_TRUE(PrepareShadowInput(x.data(), cols, DType::kF32, false, xq.data(), xd.data()).usable);
    std::vector<float> want(rows), got(rows);
    ScalarKernels().shadow_dot_rows(shadow.data(), rows, cols, xq.data(), xd.data(), want.data());
    kernels().shadow_dot_rows(shadow.data(), rows, cols, xq.data(), xd.data(), got.data());
    for (int64_t r = 0; r < rows; ++r) {
      double terms = 0;
      for (int64_t c = 0; c < cols; c += kQuantBlock) {
        const uint8_t* block = &shadow[DTypeBytes(DType::kQ8, r * cols + c)];
        Eigen::half d;
        std::memcpy(&d, block, 2);
        for (uint64_t i = 0; i < kQuantBlock; ++i) {
          terms += std::abs(double(static_cast<float>(d)) * xd[c / kQuantBlock] *
                            static_cast<int8_t>(block[2 + i]) * xq[c + i]);
        }
      }
      EXPECT_NEAR(got[r], want[r], 4.0 * cols * 0x1p-24 * terms) << "blocks " << blocks;
    }
  }
}

constexpr int64_t kHidden = 64, kFfn = 16;

std::vector<double> Widen(const std::vector<float>& v) { return {v.begin(), v.end()}; }

double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// A gate of f32 or bf16 rows (the given values, rounded to bf16 for bf16) with its shadow, and the
// FFN around it.
struct ShadowFfn {
  ModelConfig config;
  std::vector<float> gate, up, down;  // [kFfn, kHidden]; gate: the values as stored
  std::vector<uint16_t> gate_bf16;    // the gate's bits, for a bf16 gate
  std::vector<uint8_t> shadow;
  std::vector<float> norms;
  FfnWeights weights;

  explicit ShadowFfn(const std::vector<float>& gate_rows, DType gate_dtype = DType::kF32)
      : gate(gate_rows) {
    config.hidden = kHidden;
    config.ffn = kFfn;
    config.layers = 1;
    config.activation = Activation::kReLU;
    std::mt19937 rng(5);
    std::normal_distribution<float> dist(0.0f, 0.125f);
    for (auto* m : {&up, &down}) {
      m->resize(kFfn * kHidden);
      for (float& v : *m) v = dist(rng);
    }
    const void* gate_data = gate.data();
    if (gate_dtype == DType::kBF16) {
      for (float& v : gate) {
        const Eigen::bfloat16 b(v);
        gate_bf16.push_back(Eigen::numext::bit_cast<uint16_t>(b));
        v = static_cast<float>(b);
      }
      gate_data = gate_bf16.data();
    }
    shadow.resize(kFfn * DTypeBytes(DType::kQ8, kHidden));
    norms.resize(2 * kFfn);
    BuildShadowGate(static_cast<const uint8_t*>(gate_data), gate_dtype, kFfn, kHidden,
                    shadow.data(), norms.data());
    auto view = [](const std::vector<float>& m) {
      return WeightView{.data = m.data(), .dtype = DType::kF32, .rows = kFfn, .cols = kHidden};
    };
    weights.gate = {.data = gate_data, .dtype = gate_dtype, .rows = kFfn, .cols = kHidden};
    weights.up = view(up);
    weights.down_t = view(down);
    weights.gate_shadow = {
        .data = shadow.data(), .dtype = DType::kQ8, .rows = kFfn, .cols = kHidden};
    weights.gate_shadow_norms = norms.data();
  }

  // Row r of the shadow, dequantized.
  std::vector<double> ShadowRow(int64_t r) const {
    std::vector<double> row(kHidden);
    for (int64_t c = 0; c < kHidden; c += kQuantBlock) {
      float block[kQuantBlock];
      DequantizeBlock(shadow.data() + DTypeBytes(DType::kQ8, r * kHidden + c), DType::kQ8, block);
      for (uint64_t i = 0; i < kQuantBlock; ++i) row[c + i] = block[i];
    }
    return row;
  }
  std::vector<double> GateRow(int64_t r) const {
    return {gate.begin() + r * kHidden, gate.begin() + (r + 1) * kHidden};
  }
};

// Gaussian gate rows, but row `exact` of q8 levels times 2^-7 with 127 in each block: requantizing
// gives the same levels and scale, so its shadow has no error (and bf16 holds it exactly).
std::vector<float> GateWithExactRow(std::mt19937& rng, int64_t exact) {
  std::normal_distribution<float> dist(0.0f, 0.125f);
  std::vector<float> rows(kFfn * kHidden);
  for (float& v : rows) v = dist(rng);
  std::uniform_int_distribution<int> level(-127, 127);
  for (int64_t i = 0; i < kHidden; ++i) {
    rows[exact * kHidden + i] =
        std::ldexp(static_cast<float>(i % kQuantBlock == 0 ? 127 : level(rng)), -7);
  }
  return rows;
}

// Runs one decode step with the dense gate and with the shadow gate on `kernels`: the outputs
// must be bit-identical and the zeros the same; returns the shadow run's statistics.
FfnLayerStats ExpectShadowMatchesDense(const ShadowFfn& f, const std::vector<float>& x,
                                       const KernelTable& kernels) {
  DenseMatmul matmul(kernels, 1);
  FfnRuntime runtime(f.config, kernels, matmul, 1, 1);
  FfnLayerStats dense_stats, shadow_stats;
  std::vector<float> dense_y(kHidden), shadow_y(kHidden);
  const auto settings = [&](GateMode gate) {
    return FfnSettings::Resolve(f.config, FfnMode::kSparse, {}, gate);
  };
  runtime.Forward(settings(GateMode::kDense), 0, f.weights, x.data(), 1, dense_y.data(), 0,
                  &dense_stats);
  runtime.Forward(settings(GateMode::kShadow), 0, f.weights, x.data(), 1, shadow_y.data(), 0,
                  &shadow_stats);
  EXPECT_EQ(std::memcmp(dense_y.data(), shadow_y.data(), sizeof(float) * kHidden), 0);
  EXPECT_EQ(shadow_stats.zero_neurons, dense_stats.zero_neurons);
  EXPECT_EQ(shadow_stats.shadow_rows, static_cast<uint64_t>(kFfn));
  return shadow_stats;
}

// Row 0 of `f` fires on x while its shadow estimate is negative: the shadow run matches the dense
// gate's, and directly, the kernel's estimate and the bound for f's gate leave row 0 uncertain.
void ExpectRowZeroFiresAndStaysUncertain(const ShadowFfn& f, const std::vector<float>& x,
                                         const KernelTable& kernels) {
  const FfnLayerStats st = ExpectShadowMatchesDense(f, x, kernels);
  EXPECT_LT(st.zero_neurons, st.neurons);  // row 0 fires
  std::vector<int16_t> xq(kHidden);
  std::vector<float> scales(kHidden / kQuantBlock);
  const ShadowBound bound = PrepareShadowInput(x.data(), kHidden, f.weights.gate.dtype,
                                               kernels.bf16_products, xq.data(), scales.data());
  float est;
  kernels.shadow_dot_rows(f.shadow.data(), 1, kHidden, xq.data(), scales.data(), &est);
  int32_t uncertain;
  EXPECT_EQ(CertifyRows(bound, &f.norms[0], &f.norms[kFfn], 1, &est, &uncertain), 1);
}

// Row 0 fires (g = 0.05·L·‖e‖ > 0) while its shadow estimate is negative (-0.95·L·‖e‖): x is L
// along the row's quantization error e (where Cauchy–Schwarz is tight: e·x = ‖e‖·‖x‖ up to the
// small part of x that sets g) plus a multiple of the shadow row's part orthogonal to e. The
// bound's ‖e‖·‖x‖ >= L·‖e‖ keeps it uncertain. Catches a bound without its ‖x‖ factor, with ‖e‖
// and ‖w‖ confused, or a certification on the sign of the estimate alone: each certifies row 0
// and drops a neuron that fires.
TEST_P(ShadowGateIsaTest, NeuronJustOutsideTheBoundIsNotCertified) {
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.0f, 0.125f);
  std::vector<float> rows(kFfn * kHidden);
  for (float& v : rows) v = dist(rng);
  const ShadowFfn f(rows);
  const std::vector<double> w = f.GateRow(0), w_hat = f.ShadowRow(0);
  std::vector<double> e(kHidden), v(kHidden);
  for (int64_t i = 0; i < kHidden; ++i) e[i] = w[i] - w_hat[i];
  const double e_norm = std::sqrt(Dot(e, e)), along = Dot(w_hat, e) / Dot(e, e);
  for (int64_t i = 0; i < kHidden; ++i) v[i] = w_hat[i] - along * e[i];
  const double length = 8, lambda = length / e_norm, target = 0.05 * length * e_norm;
  const double mu = (target - lambda * Dot(w_hat, e) - length * e_norm) / Dot(v, v);
  std::vector<float> x(kHidden);
  for (int64_t i = 0; i < kHidden; ++i) x[i] = static_cast<float>(lambda * e[i] + mu * v[i]);
  // The premises, from x as rounded to f32.
  const std::vector<double> xd = Widen(x);
  ASSERT_GT(Dot(w, xd), 0.04 * length * e_norm);
  ASSERT_LT(Dot(w_hat, xd), -0.9 * length * e_norm);

  ExpectRowZeroFiresAndStaysUncertain(f, x, kernels());
}

// Row 1 holds exact q8 values (its shadow has no error), and x puts its gate at -2·B, B its bound:
// just inside, so it must be certified, and the outputs still match the dense gate's. Catches a
// bound far looser than the argument needs (‖x‖² for ‖x‖, a full ‖w‖·‖x‖ for the rounding term)
// and a shadow kernel whose estimate is off by more than the bound.
TEST_P(ShadowGateIsaTest, NeuronJustInsideTheBoundIsCertified) {
  std::mt19937 rng(13);
  const ShadowFfn f(GateWithExactRow(rng, 1));
  ASSERT_EQ(f.norms[1], 0.0f);
  const std::vector<double> w = f.GateRow(1);
  // x = (a random vector orthogonal to w, of length 8) + t·w/‖w‖², so w·x = t; t = -2·B, with B
  // recomputed for the x it gives (it barely depends on t).
  std::vector<double> base(kHidden);
  for (double& b : base) b = std::normal_distribution<double>()(rng);
  const double along = Dot(base, w) / Dot(w, w);
  for (int64_t i = 0; i < kHidden; ++i) base[i] -= along * w[i];
  const double base_norm = std::sqrt(Dot(base, base));
  for (double& b : base) b *= 8 / base_norm;
  std::vector<float> x(kHidden);
  std::vector<int16_t> xq(kHidden);
  std::vector<float> scales(kHidden / kQuantBlock);
  ShadowBound bound;
  double t = 0, b1 = 0;
  for (int iteration = 0; iteration < 3; ++iteration) {
    for (int64_t i = 0; i < kHidden; ++i) {
      x[i] = static_cast<float>(base[i] + t * w[i] / Dot(w, w));
    }
    bound = PrepareShadowInput(x.data(), kHidden, DType::kF32, false, xq.data(), scales.data());
    b1 = double(f.norms[1]) * bound.a + double(f.norms[kFfn + 1]) * bound.c + bound.d;
    t = -2 * b1;
  }
  const double g = Dot(w, Widen(x));
  ASSERT_LT(g, -1.5 * b1);
  ASSERT_GT(g, -2.5 * b1);

  float est;
  kernels().shadow_dot_rows(f.shadow.data() + DTypeBytes(DType::kQ8, kHidden), 1, kHidden,
                            xq.data(), scales.data(), &est);
  int32_t uncertain;
  EXPECT_EQ(CertifyRows(bound, &f.norms[1], &f.norms[kFfn + 1], 1, &est, &uncertain), 0);
  EXPECT_GE(ExpectShadowMatchesDense(f, x, kernels()).certified_rows, 1u);
}

// Under bf16 products the full gate is Σ w·bf16(x), not Σ w·x. Row 0 holds exact q8 values in a
// bf16 gate (its shadow has no error) and x = b − 0.45·ulp(b)·sign(w), b on the bf16 grid of
// [1.25, 1.75) in magnitude, so bf16(x) = b: the kernel's gate Σ w·b is a small positive number
// (the neuron fires) while Σ w·x is about 0.45·2^-7·‖w‖₁ lower, far below zero next to a bound
// without bf16 rounding in it. Catches a shadow that estimates Σ w·x (x quantized instead of the
// kernel's bf16(x)) with no room for the rounding: it certifies row 0 and drops a neuron that
// fires. Only kernel tables with bf16 products compute this gate; the others skip.
TEST_P(ShadowGateIsaTest, Bf16ProductsNeuronThatFiresOnlyAfterRoundingIsNotCertified) {
  if (!kernels().bf16_products) GTEST_SKIP() << "no bf16 products on " << IsaName(GetParam());
  std::mt19937 rng(23);
  const ShadowFfn f(GateWithExactRow(rng, 0), DType::kBF16);
  ASSERT_EQ(f.norms[0], 0.0f);
  const std::vector<double> w = f.GateRow(0);
  // b: magnitudes (160 + k)·2^-7, k random in [0, 64), each sign chosen to pull the partial sum
  // of w·b toward 0; then coordinate steps of 2^-7 move Σ w·b into [0.02, 0.05] (a step changes
  // it by at most 2^-7).
  std::vector<double> b(kHidden);
  std::uniform_int_distribution<int> step(0, 63);
  double sum = 0;
  for (int64_t i = 0; i < kHidden; ++i) {
    b[i] = ((sum > 0) == (w[i] > 0) ? -1 : 1) * std::ldexp(160 + step(rng), -7);
    sum += w[i] * b[i];
  }
  const auto in_window = [&] { return sum >= 0.02 && sum <= 0.05; };
  for (int pass = 0; pass < 64 && !in_window(); ++pass) {
    for (int64_t i = 0; i < kHidden && !in_window(); ++i) {
      const double next = b[i] + std::ldexp((sum < 0.02) == (w[i] > 0) ? 1.0 : -1.0, -7);
      if (w[i] != 0 && std::abs(next) >= 1.25 && std::abs(next) < 1.75) {
        b[i] = next;
        sum = Dot(w, b);
      }
    }
  }
  ASSERT_TRUE(sum >= 0.02 && sum <= 0.05) << sum;
  std::vector<float> x(kHidden);
  for (int64_t i = 0; i < kHidden; ++i) {
    x[i] = static_cast<float>(b[i] - 0.45 * 0x1p-7 * (w[i] > 0 ? 1 : w[i] < 0 ? -1 : 0));
    ASSERT_EQ(static_cast<double>(static_cast<float>(Eigen::bfloat16(x[i]))), b[i]);
  }
  // The premises: the exact gate is clearly negative, the kernel's clearly positive.
  ASSERT_LT(Dot(w, Widen(x)), -0.05);

  ExpectRowZeroFiresAndStaysUncertain(f, x, kernels());
}

// A NaN in x: nothing is certified and the full gate decides, as the dense gate would.
TEST_P(ShadowGateIsaTest, NaNInputFallsBackToTheFullGate) {
  std::mt19937 rng(17);
  std::normal_distribution<float> dist(0.0f, 0.125f);
  std::vector<float> rows(kFfn * kHidden), x(kHidden);
  for (float& v : rows) v = dist(rng) - 0.1f;
  for (float& v : x) v = std::abs(dist(rng)) * 8;
  x[5] = kNaN;
  const ShadowFfn f(rows);
  DenseMatmul matmul(kernels(), 1);
  FfnRuntime runtime(f.config, kernels(), matmul, 1, 1);
  FfnLayerStats st;
  std::vector<float> y(kHidden);
  runtime.Forward(FfnSettings::Resolve(f.config, FfnMode::kSparse, {}, GateMode::kShadow), 0,
                  f.weights, x.data(), 1, y.data(), 0, &st);
  EXPECT_EQ(st.certified_rows, 0u);
  EXPECT_EQ(st.uncertain_rows(), static_cast<uint64_t>(kFfn));
}

INSTANTIATE_TEST_SUITE_P(Isas, ShadowGateIsaTest, ::testing::ValuesIn(testing::AllIsaValues()),
                         [](const auto& info) { return std::string(IsaName(info.param)); });

// The shadow needs sparse ReLU: asking for it otherwise is refused; auto falls back to dense.
TEST(ShadowGate, OnlyWithSparseReLU) {
  ModelConfig c = testing::TinyConfig();
  c.activation = Activation::kReLU;
  EXPECT_THROW(FfnSettings::Resolve(c, FfnMode::kDense, {}, GateMode::kShadow), Error);
  EXPECT_THROW(FfnSettings::Resolve(c, FfnMode::kSparse, {.kind = FfnActivation::kStochastic},
                                    GateMode::kShadow),
               Error);
  EXPECT_EQ(
      FfnSettings::Resolve(c, FfnMode::kAuto, {.kind = FfnActivation::kStochastic}, GateMode::kAuto)
          .gate,
      GateMode::kDense);
  c.activation = Activation::kSiLU;
  EXPECT_THROW(FfnSettings::Resolve(c, FfnMode::kAuto, {}, GateMode::kShadow), Error);
  EXPECT_EQ(FfnSettings::Resolve(c, FfnMode::kAuto, {}, GateMode::kAuto).gate, GateMode::kDense);
}

}  // namespace
}  // namespace zeroskip
