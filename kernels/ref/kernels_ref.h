// Scalar pieces of the reference that the SIMD kernels reuse for their tails. They are compiled
// once, in kernels_ref.cpp with the baseline flags, so a call from any ISA's file is safe on any
// x86-64 (an inline copy in a header would be compiled once per ISA's flags).
#pragma once

#include <cstdint>

namespace zeroskip::ref {

// Activations quantized for the products with q8/q4 weights, the definition every ISA
// reproduces bit for bit: for each block of kQuantBlock values v, amax = max |v_i|,
// d = amax / 127 and q_i = round-half-even(v_i * (127 / amax)) (so |q_i| <= 127), in f32.
// A block holding Inf or NaN gets d = NaN (its products become NaN); a block with
// amax < kMinActivationScale gets q = 0 (and d = amax / 127).
inline constexpr float kMinActivationScale = 0x1p-96f;
void QuantizeActivations(const float* x, int64_t blocks, int8_t* q, float* d);

// CompactAbove over g[begin, end): appends each i with g[i] > threshold to rows[] and g[i] to
// values[] (both from their first element); returns how many it appended.
int64_t CompactAboveRange(const float* g, int64_t begin, int64_t end, float threshold,
                          int32_t* rows, float* values);

}  // namespace zeroskip::ref
