// AVX-512 with AVX512_VNNI: the AVX-512 kernels, except that a quantized block's int8 dot product
// is one vpdpbusd (u8 x s8, four products summed into each int32 lane, exactly) instead of
// maddubs + madd. Float weights run the same code as avx512.
#include <immintrin.h>

#include "kernels/avx512/avx512_traits.h"
#include "kernels/simd/shadow_dot.h"
#include "kernels/simd/softmax.h"

namespace zeroskip {
namespace {

struct Avx512Vnni : Avx512 {
  static __m256i DotU8S8(__m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
  }
};

constexpr KernelTable kTable{Isa::kAvx512Vnni, MakeWeightOps<simd::SimdKernels<Avx512Vnni>>(),
                             CompactAbove, simd::ScaledSoftmax<xsimd::avx512f>,
                             simd::QuantizeActivations, simd::ShadowDotRows};

}  // namespace

const KernelTable& Avx512VnniKernels() { return kTable; }

}  // namespace zeroskip
