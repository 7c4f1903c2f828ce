// Scalar pieces of the reference that the SIMD kernels reuse for their tails. They are compiled
// once, in kernels_ref.cpp with the baseline flags, so a call from any ISA's file is safe on any
// x86-64 (an inline copy in a header would be compiled once per ISA's flags).
#pragma once

#include <cstdint>

namespace zeroskip::ref {

// CompactPositive over g[begin, end): appends each i with g[i] > 0 to rows[] and g[i] to values[]
// (both from their first element); returns how many it appended.
int64_t CompactPositiveRange(const float* g, int64_t begin, int64_t end, int32_t* rows,
                             float* values);

}  // namespace zeroskip::ref
