// The shadow gate's product (docs/SHADOW_GATE.md) for every SIMD ISA: rows of q8 blocks times x
// quantized to int16 per block. A block's 32 products are exact integer arithmetic (madd of int16
// pairs; each of the 8 lanes sums 4 products, |sum| <= 4·128·32767 < 2^24, so it is exact in f32
// too), scaled by the product of the two scales and accumulated in f32. Every SIMD ISA here has
// AVX2, so this is written once with AVX2 intrinsics, compiled with each ISA's flags.
//
// Include only from a per-ISA .cpp compiled with that ISA's flags, after kernels/simd/drivers.h.
#pragma once

#include "kernels/simd/drivers.h"

namespace zeroskip::simd {
namespace {

// The exact integer dot product of a q8 block's levels with 32 int16 activations, as 8 int32
// lanes.
inline __m256i ShadowBlockDot(const uint8_t* block, const int16_t* xq) {
  const auto* levels = reinterpret_cast<const __m128i*>(block + 2);
  const auto* x = reinterpret_cast<const __m256i*>(xq);
  const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(levels));
  const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(levels + 1));
  return _mm256_add_epi32(_mm256_madd_epi16(w0, _mm256_loadu_si256(x)),
                          _mm256_madd_epi16(w1, _mm256_loadu_si256(x + 1)));
}

inline void ShadowDotRows(const uint8_t* rows, int64_t n, int64_t cols, const int16_t* xq,
                          const float* xd, float* out) {
  constexpr int64_t kBytes = DTypeBlockBytes(DType::kQ8);
  const int64_t blocks = cols / static_cast<int64_t>(kQuantBlock);
  for (int64_t k = 0; k < n; ++k) {
    const uint8_t* row = rows + k * blocks * kBytes;
    // Even and odd blocks in separate sums: two FMA chains keep the loads flowing.
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    auto block = [&](int64_t b, float scale) {
      const __m256i sum = ShadowBlockDot(row + b * kBytes, xq + b * kQuantBlock);
      acc[b & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(scale), acc[b & 1]);
    };
    int64_t b = 0;
    for (; b + 8 <= blocks; b += 8) {
      alignas(32) float scale[8];  // weight scale x activation scale
      _mm256_store_ps(
          scale, _mm256_mul_ps(GroupScales<DType::kQ8>(row + b * kBytes), _mm256_loadu_ps(xd + b)));
      for (int i = 0; i < 8; ++i) block(b + i, scale[i]);
    }
    for (; b < blocks; ++b) block(b, BlockScale(row + b * kBytes) * xd[b]);
    out[k] = SumLanes(_mm256_add_ps(acc[0], acc[1]));
  }
}

}  // namespace
}  // namespace zeroskip::simd
