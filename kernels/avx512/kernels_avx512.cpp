// AVX-512 kernels (F, BW, VL, DQ; 16 lanes): the shared drivers over the AVX-512 vector traits
// (avx512_traits.h), and compaction. bf16 and f16 weights are widened exactly to f32 in registers
// (bf16: shift left by 16; f16: vcvtph2ps), so results match the f32 math on the widened values.
// Tails are masked.
#include <immintrin.h>

#include "kernels/avx512/avx512_traits.h"
#include "kernels/kernels.h"
#include "kernels/simd/drivers.h"

namespace zeroskip {
namespace {

int64_t CompactPositive(const float* g, int64_t n, int32_t* rows, float* values) {
  constexpr int64_t kLanes = Avx512::kLanes;
  __m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(kLanes);
  const __m512 zero = _mm512_setzero_ps();
  int64_t count = 0;
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 in = n - i >= kLanes ? static_cast<__mmask16>(0xFFFF) : TailMask(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(in, g + i);
    const __mmask16 m = _mm512_mask_cmp_ps_mask(in, v, zero, _CMP_GT_OQ);
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

constexpr KernelTable kTable{Isa::kAvx512, MakeWeightOps<simd::SimdKernels<Avx512>>(),
                             CompactPositive};

}  // namespace

const KernelTable& Avx512Kernels() { return kTable; }

}  // namespace zeroskip
