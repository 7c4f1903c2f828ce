// Element conversions between the weight dtypes: the converter's, and the embedding row of each
// token a forward pass reads (one row per token: cheap next to the matmuls).
// bf16 and f16 narrowing round to nearest even (Eigen's conversions); widening is exact.
// Quantizing rounds each value to the nearest level of its block (ties to even); dequantizing is
// exact.
#pragma once

#include <cstddef>
#include <cstdint>

#include "zeroskip/format.h"

namespace zeroskip {

// Converts a [rows, cols] row-major matrix of `src_type` into `dst_type`, transposing it to
// [cols, rows] when `transpose` is set. A vector is a matrix with one row. Returns how many finite
// values became infinite (narrowing to f16 overflows above 65504; a quantized block whose scale
// overflows f16 counts all its values).
// Quantized types: the rows written (or read) are whole blocks; a quantized source is
// dequantized into a float type and never transposed.
uint64_t ConvertMatrix(const uint8_t* src, DType src_type, uint64_t rows, uint64_t cols,
                       bool transpose, uint8_t* dst, DType dst_type);

// One block of DTypeBlockElements(type) values to a quantized type (docs/FORMAT.md),
// DTypeBlockBytes(type) bytes at `out`. Returns true if a scale of the block overflows f16
// (values beyond ~8e6 for q8).
bool QuantizeBlock(const float* v, DType type, uint8_t* out);
// The DTypeBlockElements(type) values of a quantized block (q8, q4, q6k: exact, d · q fits f32;
// q4k: d·sc·q − dmin·m, one f32 rounding, as ggml computes it).
void DequantizeBlock(const uint8_t* in, DType type, float* v);

// An f16's value (exact).
float HalfToFloat(uint16_t bits);

// How many of the n elements at `data` are NaN or Inf (a damaged or diverged checkpoint).
uint64_t CountNonFinite(const uint8_t* data, DType type, uint64_t n);

}  // namespace zeroskip
