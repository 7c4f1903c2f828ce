// Normalizations applied row by row to activations (f32). No weights are owned here.
#pragma once

#include <cstdint>

namespace zeroskip {

// RMSNorm as Hugging Face's Llama computes it: out = x / sqrt(mean(x²) + eps) * weight.
// x, out: [n, dim] (may not alias); weight: [dim]. Accumulates in double.
void RmsNorm(const float* x, int64_t n, int64_t dim, const float* weight, float eps, float* out);

// x[i] += y[i] for i in [0, n): the residual connection.
// OPT's LayerNorm: (x - mean) / sqrt(var + eps) * weight + bias per row of `dim` (biased
// variance, as torch.nn.LayerNorm). out may be x.
void LayerNorm(const float* x, int64_t n, int64_t dim, const float* weight, const float* bias,
               float eps, float* out);

void AddInPlace(float* x, const float* y, int64_t n);

// x[r, i] += bias[i] for each of n rows of `dim`.
void AddBias(float* x, const float* bias, int64_t n, int64_t dim);

}  // namespace zeroskip
