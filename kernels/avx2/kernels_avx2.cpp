// AVX2+FMA kernels (8 lanes): the vector traits for the shared drivers, and compaction. bf16 and
// f16 weights are widened exactly to f32 in registers; tails shorter than a vector are copied
// into a zero-filled stack buffer and run through the same code (AVX2 has no 16-bit masked load).
// Quantized blocks multiply with maddubs.
#include <immintrin.h>

#include <array>
#include <cstring>

#include "kernels/kernels.h"
#include "kernels/ref/kernels_ref.h"
#include "kernels/simd/drivers.h"
#include "kernels/simd/shadow_dot.h"
#include "kernels/simd/softmax.h"

namespace zeroskip {
namespace {

struct Avx2 : simd::MaddubsDot {
  using Vec = __m256;
  using Half = __m128i;
  using Tail = int64_t;  // elements left
  static constexpr int64_t kLanes = 8;
  static constexpr int kPrefetchLines = 0;

  static Vec Zero() { return _mm256_setzero_ps(); }
  static Vec Broadcast(float v) { return _mm256_set1_ps(v); }
  static Vec Fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static float Sum(Vec v) { return simd::SumLanes(v); }
  // SumLanes of four vectors at once: the same pairs added at each step.
  static void Sum4(const Vec* v, float* out) {
    // [a.lo + a.hi | b.lo + b.hi] and the same for c, d.
    const Vec ab = _mm256_add_ps(_mm256_permute2f128_ps(v[0], v[1], 0x20),
                                 _mm256_permute2f128_ps(v[0], v[1], 0x31));
    const Vec cd = _mm256_add_ps(_mm256_permute2f128_ps(v[2], v[3], 0x20),
                                 _mm256_permute2f128_ps(v[2], v[3], 0x31));
    // Lanes i + (i + 2): [a, a, c, c | b, b, d, d].
    const Vec s = _mm256_add_ps(_mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                                _mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    const Vec u = _mm256_hadd_ps(s, s);  // i + (i + 1): [a, c, a, c | b, d, b, d]
    _mm_storeu_ps(out, _mm256_castps256_ps128(
                           _mm256_permutevar8x32_ps(u, _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0))));
  }

  static Vec Load(const float* p) { return _mm256_loadu_ps(p); }
  static void Store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static Tail TailOf(int64_t n) { return n; }
  static Vec LoadTail(const float* p, Tail n) { return Load(Buffered(p, n).data()); }
  static void StoreTail(float* p, Tail n, Vec v) {
    float out[kLanes];
    _mm256_storeu_ps(out, v);
    std::memcpy(p, out, n * sizeof(float));
  }

  static Half LoadHalf(const uint16_t* p) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  }
  static Half LoadHalfTail(const uint16_t* p, Tail n) { return LoadHalf(Buffered(p, n).data()); }
  static Vec Bf16ToF32(Half v) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
  }
  static Vec F16ToF32(Half v) { return _mm256_cvtph_ps(v); }

  // Quantized blocks: DotU8S8 is MaddubsDot's.
  static Vec I8ToF32(const int8_t* p) {
    return _mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  static void NibblesToF32(const uint8_t* p, Vec* low, Vec* high) {
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    const __m256i eight = _mm256_set1_epi32(8);
    *low = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(v, _mm256_set1_epi32(15)), eight));
    *high = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(v, 4), eight));
  }

  // The last n < kLanes elements at p, zero-filled to a whole vector.
  template <typename E>
  static std::array<E, kLanes> Buffered(const E* p, int64_t n) {
    std::array<E, kLanes> buf{};
    std::memcpy(buf.data(), p, n * sizeof(E));
    return buf;
  }
};

// For each 8-bit mask, the lane permutation that packs the set lanes to the front.
constexpr std::array<std::array<int32_t, 8>, 256> MakeCompressTable() {
  std::array<std::array<int32_t, 8>, 256> table{};
  for (int m = 0; m < 256; ++m) {
    int k = 0;
    for (int lane = 0; lane < 8; ++lane) {
      if (m & (1 << lane)) table[m][k++] = lane;
    }
  }
  return table;
}
constexpr auto kCompressTable = MakeCompressTable();

int64_t CompactAbove(const float* g, int64_t n, float threshold, int32_t* rows, float* values) {
  constexpr int64_t kLanes = Avx2::kLanes;
  __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i step = _mm256_set1_epi32(kLanes);
  const __m256 t = _mm256_set1_ps(threshold);
  int64_t count = 0;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m256 v = _mm256_loadu_ps(g + i);
    const int m = _mm256_movemask_ps(_mm256_cmp_ps(v, t, _CMP_GT_OQ));
    const __m256i perm =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kCompressTable[m].data()));
    const int got = __builtin_popcount(m);
    alignas(32) int32_t idx_out[kLanes];
    alignas(32) float val_out[kLanes];
    _mm256_store_si256(reinterpret_cast<__m256i*>(idx_out),
                       _mm256_permutevar8x32_epi32(index, perm));
    _mm256_store_ps(val_out, _mm256_permutevar8x32_ps(v, perm));
    std::memcpy(rows + count, idx_out, got * sizeof(int32_t));
    std::memcpy(values + count, val_out, got * sizeof(float));
    count += got;
    index = _mm256_add_epi32(index, step);
  }
  return count + ref::CompactAboveRange(g, i, n, threshold, rows + count, values + count);
}

constexpr KernelTable kTable{Isa::kAvx2, MakeWeightOps<simd::SimdKernels<Avx2>>(), CompactAbove,
                             simd::ScaledSoftmax<xsimd::fma3<xsimd::avx2>>,
                             simd::QuantizeActivations, simd::ShadowDotRows};

}  // namespace

const KernelTable& Avx2Kernels() { return kTable; }

}  // namespace zeroskip
