// The AVX-512 vector traits (F, BW, VL, DQ; 16 lanes) for the shared drivers: the AVX-512 table
// and the AVX512-BF16 one (which reuses its f32 axpy for the down half of the sparse step) both
// build on them. Include only from a .cpp compiled with at least the AVX-512 flags; everything here
// sits in an unnamed namespace, like the drivers.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace zeroskip {
namespace {

__mmask16 TailMask(int64_t remaining) { return static_cast<__mmask16>((1u << remaining) - 1); }

struct Avx512 {
  using Vec = __m512;
  using Half = __m256i;
  using Tail = __mmask16;
  static constexpr int64_t kLanes = 16;
  static constexpr int kPrefetchLines = 4;

  static Vec Zero() { return _mm512_setzero_ps(); }
  static Vec Broadcast(float v) { return _mm512_set1_ps(v); }
  static Vec Fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static float Sum(Vec v) { return _mm512_reduce_add_ps(v); }

  static Vec Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static Tail TailOf(int64_t n) { return TailMask(n); }
  static Vec LoadTail(const float* p, Tail m) { return _mm512_maskz_loadu_ps(m, p); }
  static void StoreTail(float* p, Tail m, Vec v) { _mm512_mask_storeu_ps(p, m, v); }

  static Half LoadHalf(const uint16_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
  static Half LoadHalfTail(const uint16_t* p, Tail m) { return _mm256_maskz_loadu_epi16(m, p); }
  static Vec Bf16ToF32(Half v) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
  }
  static Vec F16ToF32(Half v) { return _mm512_cvtph_ps(v); }
};

}  // namespace
}  // namespace zeroskip
