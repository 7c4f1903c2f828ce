#include "ffn/shadow_bound.h"

#include <Eigen/Core>
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

// x as the full gate's kernel multiplies it, exactly (in double), block by block: int8-quantized
// for quantized gates (ref::QuantizeActivations, bit-identical on every ISA), rounded to bf16
// (nearest even) for bf16 gates under bf16_products, x itself otherwise. The kernels flush
// subnormal bf16 x to zero where this keeps it; the bound's underflow slack covers that.
class KernelView {
 public:
  KernelView(DType gate_dtype, bool bf16_products)
      : quantized_(IsQuantized(gate_dtype)), bf16_(gate_dtype == DType::kBF16 && bf16_products) {}

  void Block(const float* x, double* view) const {
    if (quantized_) {
      int8_t q[kQuantBlock];
      float d;
      ref::QuantizeActivations(x, 1, q, &d);
      for (uint64_t i = 0; i < kQuantBlock; ++i) view[i] = double(d) * q[i];
    } else if (bf16_) {
      for (uint64_t i = 0; i < kQuantBlock; ++i) {
        view[i] = static_cast<float>(Eigen::bfloat16(x[i]));
      }
    } else {
      for (uint64_t i = 0; i < kQuantBlock; ++i) view[i] = x[i];
    }
  }

 private:
  bool quantized_, bf16_;
};

// Quantizes the kernel's view of x to int16 levels per block (d = amax / 32767, q = round(v / d)),
// and returns ‖v‖ and ‖v − v̂‖ (v̂ = d·q; both sums of exact squares in double).
struct ShadowInputNorms {
  double view, quantization;
};
ShadowInputNorms QuantizeForShadow(const float* x, int64_t hidden, const KernelView& kernel,
                                   int16_t* xq, float* xd) {
  constexpr float kLevels = 32767.0f;
  double view_sum = 0, delta_sum = 0;
  for (int64_t c = 0; c < hidden; c += kQuantBlock) {
    double v[kQuantBlock];
    kernel.Block(x + c, v);
    float amax = 0.0f;
    for (double e : v) amax = std::max(amax, static_cast<float>(std::abs(e)));
    const bool tiny = amax < 0x1p-100f;  // (also keeps kLevels / amax finite)
    const float d = tiny ? 0.0f : amax / kLevels, inv = tiny ? 0.0f : kLevels / amax;
    xd[c / kQuantBlock] = d;
    for (uint64_t i = 0; i < kQuantBlock; ++i) {
      // A level clamped at 32767 (amax rounded down to f32) only adds to the δ accounted below.
      const float q = std::clamp(std::nearbyint(static_cast<float>(v[i]) * inv), -kLevels, kLevels);
      xq[c + i] = static_cast<int16_t>(q);
      const double delta = v[i] - double(d) * q;
      view_sum += v[i] * v[i];
      delta_sum += delta * delta;
    }
  }
  return {std::sqrt(view_sum) * kDoubleSlack, std::sqrt(delta_sum) * kDoubleSlack};
}

}  // namespace

ShadowBound PrepareShadowInput(const float* x, int64_t hidden, DType gate_dtype, bool bf16_products,
                               int16_t* xq, float* xd) {
  double sum = 0;
  for (int64_t i = 0; i < hidden; ++i) sum += double(x[i]) * x[i];
  const double nx = std::sqrt(sum) * kDoubleSlack;
  ShadowBound b;
  if (!(nx <= kLargestNorm)) return b;  // NaN and Inf fail this too
  // The shadow estimates the product the full gate's kernel computes, Σ w·v with v its view of
  // x, so the rounding or quantization of x that the kernel does costs the bound nothing.
  const ShadowInputNorms norms =
      QuantizeForShadow(x, hidden, KernelView(gate_dtype, bf16_products), xq, xd);
  const double nv = norms.view, nq = norms.quantization;
  // γ_n = n·u / (1 − n·u) bounds the relative error of an f32 dot product of n terms in any
  // order (each term passes through at most n roundings): the shadow's and the full gate's.
  const double n = static_cast<double>(hidden);
  const double gamma = n * kUnit / (1 - n * kUnit);
  // With ŵ = w − e the shadow's weights and v̂ = v − δ its input (‖v̂‖ <= ‖v‖ + ‖δ‖):
  //   est − Σ w·v = (est − Σ ŵ·v̂) − Σ ŵ·δ − Σ e·v
  //   |·| <= γ·‖ŵ‖·‖v̂‖ + ‖ŵ‖·‖δ‖ + ‖e‖·‖v‖,  and ‖ŵ‖ <= ‖w‖ + ‖e‖; the full gate is within
  //   γ·‖w‖·‖v‖ of Σ w·v, so
  //   B = ‖e‖·(‖v‖ + (‖δ‖ + γ·(‖v‖ + ‖δ‖))) + ‖w‖·(‖δ‖ + γ·(‖v‖ + ‖δ‖) + γ·‖v‖) + underflow.
  // The factor covers the f32 rounding of B's own evaluation in CertifyRows (4 operations).
  constexpr double kEvaluation = 1.0 + 0x1p-20;
  const double shadow = nq + gamma * (nv + nq);
  const double dense = gamma * nv;
  const double slack = kUnderflow * (1 + std::max(nx, nv));
  b.a = RoundedUp((nv + shadow) * kEvaluation);
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
