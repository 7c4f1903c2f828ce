// Element conversions between the weight dtypes: the converter's, and the embedding row of each
// token a forward pass reads (one row per token: cheap next to the matmuls).
// bf16 and f16 narrowing round to nearest even (Eigen's conversions); widening is exact.
#pragma once

#include <cstddef>
#include <cstdint>

#include "zeroskip/format.h"

namespace zeroskip {

// Converts a [rows, cols] row-major matrix of `src_type` into `dst_type`, transposing it to
// [cols, rows] when `transpose` is set. A vector is a matrix with one row. Returns how many finite
// values became infinite (narrowing to f16 overflows above 65504).
uint64_t ConvertMatrix(const uint8_t* src, DType src_type, uint64_t rows, uint64_t cols,
                       bool transpose, uint8_t* dst, DType dst_type);

// How many of the n elements at `data` are NaN or Inf (a damaged or diverged checkpoint).
uint64_t CountNonFinite(const uint8_t* data, DType type, uint64_t n);

}  // namespace zeroskip
