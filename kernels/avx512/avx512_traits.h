// The AVX-512 (F, BW, VL, DQ; 16 lanes) vector traits for the shared drivers, and compaction:
// shared by the AVX-512 ISAs (avx512, avx512vnni, avx512bf16), each compiling them with its own
// flags.
// bf16 and f16 weights are widened exactly to f32 in registers (bf16: shift left by 16; f16:
// vcvtph2ps), so results match the f32 math on the widened values. Tails are masked.
//
// Include only from an AVX-512 ISA's .cpp; like the drivers, everything is in an unnamed
// namespace.
#pragma once

#include <immintrin.h>

#include "kernels/kernels.h"
#include "kernels/simd/drivers.h"

namespace zeroskip {
namespace {

__mmask16 TailMask(int64_t remaining) { return static_cast<__mmask16>((1u << remaining) - 1); }

struct Avx512 : simd::MaddubsDot {
  using Vec = __m512;
  using Half = __m256i;
  using Tail = __mmask16;
  static constexpr int64_t kLanes = 16;
  static constexpr int kPrefetchLines = 4;

  static Vec Zero() { return _mm512_setzero_ps(); }
  static Vec Broadcast(float v) { return _mm512_set1_ps(v); }
  static Vec Fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  // Halves added until one lane is left: lanes i and i + 8, then i + 4, i + 2, i + 1.
  static float Sum(Vec v) {
    return simd::SumLanes(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
  }
  // Sum of four vectors at once: the same pairs added at each step, four vectors to a register.
  static void Sum4(const Vec* v, float* out) {
    // [a.lo256 + a.hi256, b.lo256 + b.hi256] and the same for c, d.
    const Vec ab = _mm512_add_ps(_mm512_shuffle_f32x4(v[0], v[1], 0x44),
                                 _mm512_shuffle_f32x4(v[0], v[1], 0xEE));
    const Vec cd = _mm512_add_ps(_mm512_shuffle_f32x4(v[2], v[3], 0x44),
                                 _mm512_shuffle_f32x4(v[2], v[3], 0xEE));
    // Each 128-bit quarter: one vector's lanes i + (i + 4), in the order a, b, c, d.
    const Vec s =
        _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
    const Vec t = _mm512_add_ps(s, _mm512_permute_ps(s, _MM_SHUFFLE(1, 0, 3, 2)));  // i + (i + 2)
    const Vec u = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(2, 3, 0, 1)));  // i + (i + 1)
    _mm_storeu_ps(out, _mm512_castps512_ps128(_mm512_maskz_compress_ps(0x1111, u)));
  }

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

  // Quantized blocks: DotU8S8 from MaddubsDot (Avx512Vnni replaces it with vpdpbusd).
  static Vec I8ToF32(const int8_t* p) {
    return _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static void NibblesToF32(const uint8_t* p, Vec* low, Vec* high) {
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m512i eight = _mm512_set1_epi32(8);
    *low = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(v, _mm512_set1_epi32(15)), eight));
    *high = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(v, 4), eight));
  }
};

// (maybe_unused: avx512bf16 copies the avx512vnni table, compaction included.)
[[maybe_unused]] int64_t CompactAbove(const float* g, int64_t n, float threshold, int32_t* rows,
                                      float* values) {
  constexpr int64_t kLanes = Avx512::kLanes;
  __m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(kLanes);
  const __m512 t = _mm512_set1_ps(threshold);
  int64_t count = 0;
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 in = n - i >= kLanes ? static_cast<__mmask16>(0xFFFF) : TailMask(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(in, g + i);
    const __mmask16 m = _mm512_mask_cmp_ps_mask(in, v, t, _CMP_GT_OQ);
    const int got = __builtin_popcount(m);
    // Compress in registers, then a masked store of exactly `got` lanes.
    const __mmask16 out = TailMask(got);
    _mm512_mask_storeu_epi32(rows + count, out, _mm512_maskz_compress_epi32(m, index));
    _mm512_mask_storeu_ps(values + count, out, _mm512_maskz_compress_ps(m, v));
    count += got;
    index = _mm512_add_epi32(index, step);
  }
  return count;
}

}  // namespace
}  // namespace zeroskip
