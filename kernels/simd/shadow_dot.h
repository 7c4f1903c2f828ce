// The shadow gate's product (docs/SHADOW_GATE.md) for every SIMD ISA, over the drivers' vector
// traits: rows of q8 blocks times x in f32. Each weight d·q is formed exactly in f32 (an f16
// times an int8 needs 19 bits) and multiplied with x by FMA, so the result is an ordinary f32
// dot product of exactly known weights; the certification bounds its rounding as such (fewer
// than `cols` roundings on any term's path: blocks / 2 + 13 here).
//
// Include only from a per-ISA .cpp compiled with that ISA's flags, after kernels/simd/drivers.h.
#pragma once

#include "kernels/simd/drivers.h"

namespace zeroskip::simd {
namespace {

template <VectorTraits V>
void ShadowDotRows(const uint8_t* rows, int64_t n, int64_t cols, const float* x, float* out) {
  using Vec = typename V::Vec;
  constexpr int64_t kBytes = DTypeBlockBytes(DType::kQ8);
  constexpr int kVecs = static_cast<int>(kQuantBlock / V::kLanes);  // vectors per block
  const int64_t blocks = cols / static_cast<int64_t>(kQuantBlock);
  for (int64_t k = 0; k < n; ++k) {
    const uint8_t* row = rows + k * blocks * kBytes;
    // Even and odd blocks in separate sums: two FMA chains per vector keep the loads flowing.
    Vec acc[2][kVecs];
    for (auto& parity : acc) {
      for (Vec& a : parity) a = V::Zero();
    }
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* block = row + b * kBytes;
      const Vec d = V::Broadcast(BlockScale(block));
      const auto* levels = reinterpret_cast<const int8_t*>(block + 2);
      const float* xb = x + b * kQuantBlock;
      for (int v = 0; v < kVecs; ++v) {
        const Vec w = V::Fma(d, V::I8ToF32(levels + v * V::kLanes), V::Zero());  // exact
        acc[b & 1][v] = V::Fma(w, V::Load(xb + v * V::kLanes), acc[b & 1][v]);
      }
    }
    Vec sum = V::Zero();
    for (auto& parity : acc) {
      for (Vec& a : parity) sum = V::Fma(V::Broadcast(1.0f), a, sum);
    }
    out[k] = V::Sum(sum);
  }
}

}  // namespace
}  // namespace zeroskip::simd
