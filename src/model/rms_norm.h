// RMSNorm as Hugging Face's Llama computes it, row by row: out = x / sqrt(mean(x²) + eps) * w.
// Declared here (defined in llama.cpp) so a unit test can pin it directly: an eps moved outside
// the square root shifts logits by only ~eps / rms, which end-to-end tests barely see.
#pragma once

#include <cstdint>

namespace zeroskip {

// x, out: [n, dim] (may not alias); weight: [dim].
void RmsNorm(const float* x, int64_t n, int64_t dim, const float* weight, float eps, float* out);

}  // namespace zeroskip
