// The scaled softmax of attention over xsimd batches, for the per-ISA files: each instantiates it
// with its own xsimd architecture (and is compiled with its flags). exp is xsimd's (a few ulp);
// the tail shorter than a batch is computed in the same batch arithmetic from a padded copy, so
// every element goes through the same exp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <xsimd/xsimd.hpp>

namespace zeroskip::simd {

template <class Arch>
void ScaledSoftmax(float* x, int64_t n, float scale) {
  using B = xsimd::batch<float, Arch>;
  constexpr int64_t kLanes = static_cast<int64_t>(B::size);
  const int64_t whole = n - n % kLanes;
  const B vscale(scale);
  // Lanes past the end of the tail are -inf: they are ignored by the max and add exp(-inf) = 0.
  alignas(64) float tail[kLanes];
  std::fill(tail, tail + kLanes, -std::numeric_limits<float>::infinity());
  std::copy(x + whole, x + n, tail);
  B max(-std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < whole; i += kLanes) {
    max = xsimd::max(max, B::load_unaligned(x + i) * vscale);
  }
  max = xsimd::max(max, B::load_aligned(tail) * vscale);
  alignas(64) float lanes[kLanes];  // xsimd 8 has no horizontal max
  max.store_aligned(lanes);
  const B vmax(*std::max_element(lanes, lanes + kLanes));
  B sum(0.0f);
  for (int64_t i = 0; i < whole; i += kLanes) {
    const B e = xsimd::exp(B::load_unaligned(x + i) * vscale - vmax);
    e.store_unaligned(x + i);
    sum += e;
  }
  const B e_tail = xsimd::exp(B::load_aligned(tail) * vscale - vmax);
  e_tail.store_aligned(tail);
  sum += e_tail;
  const float inv = 1.0f / xsimd::hadd(sum);
  const B vinv(inv);
  for (int64_t i = 0; i < whole; i += kLanes) {
    (B::load_unaligned(x + i) * vinv).store_unaligned(x + i);
  }
  for (int64_t i = whole; i < n; ++i) x[i] = tail[i - whole] * inv;
}

}  // namespace zeroskip::simd
