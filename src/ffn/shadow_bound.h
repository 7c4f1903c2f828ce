// The certification of the shadow gate (docs/SHADOW_GATE.md): when is a neuron's gate certainly
// not positive, knowing only its int8 shadow's estimate?
//
// For row i with shadow estimate est_i (the shadow GEMV's f32 result), the full gate as the
// kernels compute it is at most est_i + B_i, with B_i = ‖e_i‖·a + ‖w_i‖·c + d: ‖e_i‖ the row's
// quantization error norm and ‖w_i‖ its norm (both from the file, rounded up), a, c, d per token
// from x. So est_i <= -B_i certifies relu(gate_i) = 0, bit for bit, in the arithmetic executed.
// This file holds the arithmetic only; the runtime decides when it applies.
#pragma once

#include <cstdint>

#include "zeroskip/format.h"

namespace zeroskip {

struct ShadowBound {
  bool usable = false;  // false: x holds NaN or Inf or is too large to bound; certify nothing
  float a = 0, c = 0, d = 0;
};

// Quantizes x, as the full gate's kernel sees it (int8-quantized for a quantized gate, rounded to
// bf16 for a bf16 gate under kernels with `bf16_products`, x otherwise), for the shadow's product
// (shadow_dot_rows) into xq [hidden] and xd [hidden / 32]: per block of 32, d = amax / 32767 and
// q = round(v / d) in [-32767, 32767] (q = 0 where amax < 2^-100). Returns the per-token
// coefficients of the bound against the full gate as that kernel computes it.
// xq and xd are meaningless when the bound is not usable.
ShadowBound PrepareShadowInput(const float* x, int64_t hidden, DType gate_dtype, bool bf16_products,
                               int16_t* xq, float* xd);

// est [n]: the shadow's estimates, in place: a certified row's becomes 0 (not positive: dropped
// by compaction like any zero); the others' indices go to uncertain[], their estimates stay for
// the caller to overwrite with the full gate. err, norm [n]: the rows' ‖e_i‖ and ‖w_i‖.
// Returns the number of uncertain rows.
int64_t CertifyRows(const ShadowBound& bound, const float* err, const float* norm, int64_t n,
                    float* est, int32_t* uncertain);

}  // namespace zeroskip
