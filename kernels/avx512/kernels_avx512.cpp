// AVX-512 kernels (F, BW, VL, DQ; 16 lanes): the shared drivers over the AVX-512 traits.
#include "kernels/avx512/avx512_traits.h"
#include "kernels/simd/shadow_dot.h"
#include "kernels/simd/softmax.h"

namespace zeroskip {
namespace {

constexpr KernelTable kTable{Isa::kAvx512, MakeWeightOps<simd::SimdKernels<Avx512>>(),
                             CompactAbove, simd::ScaledSoftmax<xsimd::avx512f>,
                             simd::QuantizeActivations, simd::ShadowDotRows};

}  // namespace

const KernelTable& Avx512Kernels() { return kTable; }

}  // namespace zeroskip
