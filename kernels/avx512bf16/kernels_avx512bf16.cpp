// AVX-512 + AVX512_BF16 kernels: bf16 dot products in vdpbf16ps, everything else from the
// avx512vnni table (f32, f16 and quantized ops, every axpy, compaction, softmax).
//
// vdpbf16ps multiplies pairs of bf16 and adds both products into an f32 lane, so x is rounded to
// bf16 once per call (round to nearest even) into a stack buffer; a row then costs one load and
// one instruction per 32 weights, where the widening path needs a widen, a shift and an FMA per
// 16. Products of two bf16 are exact in f32 and each is added with one rounding, so the only new
// error is x's rounding: at most 2⁻⁸·Σ|w·x| per dot. The instruction also treats subnormal inputs
// as zero and flushes subnormal results (it ignores MXCSR): bf16 weights below 2⁻¹²⁶ count as
// zero. The down half of the sparse step stays exact f32 (an axpy of f32 coefficients).
#include <immintrin.h>

#include <algorithm>

#include "kernels/avx512/avx512_traits.h"
#include "kernels/kernels.h"
#include "kernels/simd/drivers.h"

namespace zeroskip {

const KernelTable& Avx512VnniKernels();

namespace {

constexpr int64_t kPairLanes = 32;  // bf16 elements per vdpbf16ps
// Columns of x held as bf16 on the stack (32 KiB): any row up to this long has x converted once
// per call; longer rows are converted a chunk at a time (for the sparse step, once per block).
constexpr int64_t kXChunk = 16384;

__mmask32 TailMask32(int64_t remaining) {
  return static_cast<__mmask32>((uint64_t{1} << remaining) - 1);
}

__m512bh AsBf16(__m512i v) { return reinterpret_cast<__m512bh&>(v); }

// out[0:n) = x[0:n) rounded to bf16, zero-filled up to the next multiple of kPairLanes.
void RoundToBf16(const float* x, int64_t n, uint16_t* out) {
  int64_t c = 0;
  for (; c + kPairLanes <= n; c += kPairLanes) {
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + c + 16), _mm512_loadu_ps(x + c));
    _mm512_storeu_si512(out + c, reinterpret_cast<const __m512i&>(v));
  }
  if (c < n) {
    const int64_t left = n - c;
    const __m512 lo = _mm512_maskz_loadu_ps(TailMask(std::min<int64_t>(left, 16)), x + c);
    const __m512 hi = _mm512_maskz_loadu_ps(TailMask(std::max<int64_t>(left - 16, 0)), x + c + 16);
    const __m512bh v = _mm512_cvtne2ps_pbh(hi, lo);
    _mm512_storeu_si512(out + c, reinterpret_cast<const __m512i&>(v));
  }
}

// acc[j] += the dot of r[j][0:cols) with xb[0:cols) (xb zero-filled to a multiple of kPairLanes).
template <int R>
void DotChunk(const uint16_t* const* r, int64_t cols, const uint16_t* xb, __m512 (&acc)[R]) {
  int64_t c = 0;
  for (; c + kPairLanes <= cols; c += kPairLanes) {
    const __m512bh xv = AsBf16(_mm512_loadu_si512(xb + c));
    for (int j = 0; j < R; ++j) {
      acc[j] = _mm512_dpbf16_ps(acc[j], AsBf16(_mm512_loadu_si512(r[j] + c)), xv);
    }
  }
  if (c < cols) {
    const __mmask32 tail = TailMask32(cols - c);
    const __m512bh xv = AsBf16(_mm512_loadu_si512(xb + c));
    for (int j = 0; j < R; ++j) {
      acc[j] = _mm512_dpbf16_ps(acc[j], AsBf16(_mm512_maskz_loadu_epi16(tail, r[j] + c)), xv);
    }
  }
}

// out[j] = dot(r[j][0:cols), x) for R rows. `xb` holds x[0:cols) as bf16 when cols <= kXChunk;
// longer rows convert x into it chunk by chunk.
template <int R>
void DotBlockBf16(const uint16_t* const* r, int64_t cols, const float* x, uint16_t* xb,
                  float* out) {
  __m512 acc[R];
  for (int j = 0; j < R; ++j) acc[j] = _mm512_setzero_ps();
  if (cols <= kXChunk) {
    DotChunk<R>(r, cols, xb, acc);
  } else {
    for (int64_t c0 = 0; c0 < cols; c0 += kXChunk) {
      const int64_t len = std::min(kXChunk, cols - c0);
      RoundToBf16(x + c0, len, xb);
      const uint16_t* rc[R];
      for (int j = 0; j < R; ++j) rc[j] = r[j] + c0;
      DotChunk<R>(rc, len, xb, acc);
    }
  }
  for (int j = 0; j < R; ++j) out[j] = _mm512_reduce_add_ps(acc[j]);
}

void DotRows(WeightRows w, const int32_t* rows, int64_t n, int64_t cols, const float* x,
             float* out) {
  alignas(64) uint16_t xb[kXChunk];
  if (cols <= kXChunk) RoundToBf16(x, cols, xb);
  simd::ForEachRowBlockOf<DType::kBF16>(rows, n, [&](int64_t k, auto block) {
    constexpr int R = decltype(block)::value;
    const uint16_t* r[R];
    simd::RowStarts<DType::kBF16>(w, rows, k, 0, r);
    DotBlockBf16<R>(r, cols, x, xb, out + k);
  });
}

void SparseUpDown(WeightRows w_up, WeightRows w_down_t, int64_t hidden, const int32_t* rows,
                  const float* gate_act, int64_t n, const float* x, float* y) {
  alignas(64) uint16_t xb[kXChunk];
  if (hidden <= kXChunk) RoundToBf16(x, hidden, xb);
  simd::SparseUpDownWith<Avx512, DType::kBF16>(
      w_up, w_down_t, hidden, rows, gate_act, n, y,
      [&]<int R>(const uint16_t* const (&r)[R], float (&h)[R]) {
        DotBlockBf16<R>(r, hidden, x, xb, h);
      });
}

constexpr size_t kBf16Index =
    std::find(kWeightDTypes.begin(), kWeightDTypes.end(), DType::kBF16) - kWeightDTypes.begin();
static_assert(kBf16Index < kWeightDTypes.size());

}  // namespace

const KernelTable& Avx512Bf16Kernels() {
  static const KernelTable table = [] {
    KernelTable t = Avx512VnniKernels();
    t.isa = Isa::kAvx512Bf16;
    t.bf16_products = true;
    t.weight_ops[kBf16Index].dot_rows = DotRows;
    t.weight_ops[kBf16Index].sparse_up_down = SparseUpDown;
    return t;
  }();
  return table;
}

}  // namespace zeroskip
