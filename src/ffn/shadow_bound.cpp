#include "ffn/shadow_bound.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/ref/kernels_ref.h"

namespace zeroskip {
namespace {

constexpr double kUnit = 0x1p-24;  // f32 unit roundoff
// Sums of squares of f32 values in double (exact squares, at most 2^16 of them, one sqrt) are
// within 2^-36 of exact; this factor covers it.
constexpr double kDoubleSlack = 1.0 + 0x1p-30;
// x past this makes no sense in a normalized FFN input; refusing it keeps every product below
// f32 overflow (|est| <= 2^16 · 65504 · 127 · 1e18 < 1e30).
constexpr double kLargestNorm = 1e18;
// Absolute slack for underflow: subnormal results (at most 2^-150 each, a few per term), and
// bf16 products that flush subnormal x or weights (at most 2^-126 · (‖w‖₁ + ‖x‖₁) <=
// 2^-118 · (‖w‖ + ‖x‖)); covered by 2^-100 · (1 + ‖w‖)(1 + ‖x‖).
constexpr double kUnderflow = 0x1p-100;

// v as an f32 no smaller than v (v >= 0).
float RoundedUp(double v) {
  float f = static_cast<float>(v);
  if (static_cast<double>(f) < v) f = std::nextafter(f, std::numeric_limits<float>::infinity());
  return f;
}

// ‖x − x̂‖ for x̂ the activations as the q8/q4 dot products quantize them (the reference and
// every ISA quantize bit for bit alike).
double ActivationQuantizationError(const float* x, int64_t hidden) {
  double sum = 0;
  for (int64_t c = 0; c < hidden; c += kQuantBlock) {
    int8_t q[kQuantBlock];
    float d;
    ref::QuantizeActivations(x + c, 1, q, &d);
    for (uint64_t i = 0; i < kQuantBlock; ++i) {
      const double delta = double(x[c + i]) - double(d) * q[i];
      sum += delta * delta;
    }
  }
  return std::sqrt(sum) * kDoubleSlack;
}

// Quantizes x to int16 levels per block and returns ‖x − x̂‖ (x̂ = d·q, exact in double).
double QuantizeForShadow(const float* x, int64_t hidden, int16_t* xq, float* xd) {
  constexpr float kLevels = 32767.0f;
  double sum = 0;
  for (int64_t c = 0; c < hidden; c += kQuantBlock) {
    float amax = 0.0f;
    for (uint64_t i = 0; i < kQuantBlock; ++i) amax = std::max(amax, std::abs(x[c + i]));
    const bool tiny = amax < 0x1p-100f;  // (also keeps kLevels / amax finite)
    const float d = tiny ? 0.0f : amax / kLevels, inv = tiny ? 0.0f : kLevels / amax;
    xd[c / kQuantBlock] = d;
    for (uint64_t i = 0; i < kQuantBlock; ++i) {
      const float q = std::clamp(std::nearbyint(x[c + i] * inv), -kLevels, kLevels);
      xq[c + i] = static_cast<int16_t>(q);
      const double delta = double(x[c + i]) - double(d) * q;
      sum += delta * delta;
    }
  }
  return std::sqrt(sum) * kDoubleSlack;
}

}  // namespace

ShadowBound PrepareShadowInput(const float* x, int64_t hidden, DType gate_dtype, bool bf16_products,
                               int16_t* xq, float* xd) {
  double sum = 0;
  for (int64_t i = 0; i < hidden; ++i) sum += double(x[i]) * x[i];
  const double nx = std::sqrt(sum) * kDoubleSlack;
  ShadowBound b;
  if (!(nx <= kLargestNorm)) return b;  // NaN and Inf fail this too
  // ‖x − x̂‖ of the shadow's input.
  const double nq = QuantizeForShadow(x, hidden, xq, xd);
  // γ_n = n·u / (1 − n·u) bounds the relative error of an f32 dot product of n terms in any
  // order (each term passes through at most n roundings): the shadow's and the full gate's.
  const double n = static_cast<double>(hidden);
  const double gamma = n * kUnit / (1 - n * kUnit);
  // The full gate's own error, per unit of ‖w_i‖.
  double dense;
  if (IsQuantized(gate_dtype)) {
    // x quantized to int8: Σ w·(x − x̃) <= ‖w‖·‖x − x̃‖, then the rounding of Σ w·x̃.
    const double nd = ActivationQuantizationError(x, hidden);
    dense = nd + gamma * (nx + nd);
  } else if (gate_dtype == DType::kBF16 && bf16_products) {
    // x rounded to bf16 (relative error 2^-8 per element), then summed in f32.
    dense = (0x1p-8 + 2 * gamma) * nx;
  } else {
    dense = gamma * nx;
  }
  // With ŵ = w − e the shadow's weights and x̂ = x − δ its input (‖x̂‖ <= ‖x‖ + ‖δ‖):
  //   est − Σ w·x = (est − Σ ŵ·x̂) − Σ ŵ·δ − Σ e·x
  //   |·| <= γ·‖ŵ‖·‖x̂‖ + ‖ŵ‖·‖δ‖ + ‖e‖·‖x‖,  and ‖ŵ‖ <= ‖w‖ + ‖e‖, so
  //   B = ‖e‖·(‖x‖ + (‖δ‖ + γ·(‖x‖ + ‖δ‖))) + ‖w‖·(‖δ‖ + γ·(‖x‖ + ‖δ‖) + dense) + underflow.
  // The factor covers the f32 rounding of B's own evaluation in CertifyRows (4 operations).
  constexpr double kEvaluation = 1.0 + 0x1p-20;
  const double shadow = nq + gamma * (nx + nq);
  const double slack = kUnderflow * (1 + nx);
  b.a = RoundedUp((nx + shadow) * kEvaluation);
  b.c = RoundedUp((shadow + dense + slack) * kEvaluation);
  b.d = RoundedUp(slack * kEvaluation);
  b.usable = true;
  return b;
}

int64_t CertifyRows(const ShadowBound& bound, const float* err, const float* norm, int64_t n,
                    float* est, int32_t* uncertain) {
  int64_t count = 0;
  if (!bound.usable) {
    for (int64_t i = 0; i < n; ++i) uncertain[count++] = static_cast<int32_t>(i);
    return count;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float b = err[i] * bound.a + norm[i] * bound.c + bound.d;
    // <=: a gate of exactly 0 is not active either. A NaN estimate fails the test: uncertain.
    if (est[i] <= -b) {
      est[i] = 0.0f;
    } else {
      uncertain[count++] = static_cast<int32_t>(i);
    }
  }
  return count;
}

}  // namespace zeroskip
