// AVX-512 kernels (F, BW, VL, DQ). bf16 and f16 weights are widened exactly to f32 in registers
// (bf16: shift left by 16; f16: vcvtph2ps), so results match the f32 math on the widened values.
#include <immintrin.h>

#include "kernels/kernels.h"

namespace zeroskip {
namespace {

constexpr int64_t kLanes = 16;

template <WeightType T>
struct Weights;

template <>
struct Weights<WeightType::kF32> {
  using Elem = float;
  static __m512 Load(const Elem* p) { return _mm512_loadu_ps(p); }
  static __m512 LoadTail(const Elem* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
};
template <>
struct Weights<WeightType::kBF16> {
  using Elem = uint16_t;
  static __m512 Widen(__m256i v) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
  }
  static __m512 Load(const Elem* p) { return Widen(_mm256_loadu_si256((const __m256i*)p)); }
  static __m512 LoadTail(const Elem* p, __mmask16 m) { return Widen(_mm256_maskz_loadu_epi16(m, p)); }
};
template <>
struct Weights<WeightType::kF16> {
  using Elem = uint16_t;
  static __m512 Load(const Elem* p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)); }
  static __m512 LoadTail(const Elem* p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
  }
};

__mmask16 TailMask(int64_t remaining) { return static_cast<__mmask16>((1u << remaining) - 1); }

// Dot products of R rows with x, sharing each load of x.
template <WeightType T, int R>
void DotBlock(const typename Weights<T>::Elem* const* r, int64_t cols, const float* x, float* out) {
  using W = Weights<T>;
  __m512 acc[R];
  for (int j = 0; j < R; ++j) acc[j] = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + kLanes <= cols; c += kLanes) {
    const __m512 xv = _mm512_loadu_ps(x + c);
    for (int j = 0; j < R; ++j) acc[j] = _mm512_fmadd_ps(W::Load(r[j] + c), xv, acc[j]);
  }
  if (c < cols) {
    const __mmask16 m = TailMask(cols - c);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + c);
    for (int j = 0; j < R; ++j) acc[j] = _mm512_fmadd_ps(W::LoadTail(r[j] + c, m), xv, acc[j]);
  }
  for (int j = 0; j < R; ++j) out[j] = _mm512_reduce_add_ps(acc[j]);
}

// y += sum_j coef[j] * row_j, one load/store of y per R rows.
template <WeightType T, int R>
void AxpyBlock(const typename Weights<T>::Elem* const* r, const float* coef, int64_t cols,
               float* y) {
  using W = Weights<T>;
  __m512 cv[R];
  for (int j = 0; j < R; ++j) cv[j] = _mm512_set1_ps(coef[j]);
  int64_t c = 0;
  for (; c + kLanes <= cols; c += kLanes) {
    __m512 yv = _mm512_loadu_ps(y + c);
    for (int j = 0; j < R; ++j) yv = _mm512_fmadd_ps(cv[j], W::Load(r[j] + c), yv);
    _mm512_storeu_ps(y + c, yv);
  }
  if (c < cols) {
    const __mmask16 m = TailMask(cols - c);
    __m512 yv = _mm512_maskz_loadu_ps(m, y + c);
    for (int j = 0; j < R; ++j) yv = _mm512_fmadd_ps(cv[j], W::LoadTail(r[j] + c, m), yv);
    _mm512_mask_storeu_ps(y + c, m, yv);
  }
}

constexpr int kBlockRows = 4;

// Active rows are scattered, so the hardware prefetcher must find each new row afresh. Asking for
// the first lines of the next block's rows while this block streams hides that start-up latency.
constexpr int kPrefetchLines = 4;

template <typename Elem>
void PrefetchRowStarts(const Elem* up, const Elem* down, int64_t hidden, const int32_t* rows,
                       int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    for (int l = 0; l < kPrefetchLines; ++l) {
      _mm_prefetch(reinterpret_cast<const char*>(up + rows[j] * hidden) + 64 * l, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(down + rows[j] * hidden) + 64 * l, _MM_HINT_T0);
    }
  }
}

template <WeightType T>
void DotRows(const void* w, int64_t ld, const int32_t* rows, int64_t n, int64_t cols,
             const float* x, float* out) {
  using Elem = typename Weights<T>::Elem;
  const auto* base = static_cast<const Elem*>(w);
  int64_t k = 0;
  for (; k + kBlockRows <= n; k += kBlockRows) {
    const Elem* r[kBlockRows];
    for (int j = 0; j < kBlockRows; ++j) r[j] = base + (rows ? rows[k + j] : k + j) * ld;
    DotBlock<T, kBlockRows>(r, cols, x, out + k);
  }
  for (; k < n; ++k) {
    const Elem* r[1] = {base + (rows ? rows[k] : k) * ld};
    DotBlock<T, 1>(r, cols, x, out + k);
  }
}

template <WeightType T>
void AxpyRows(const void* w, int64_t ld, const int32_t* rows, const float* coef, int64_t n,
              int64_t cols, float* y) {
  using Elem = typename Weights<T>::Elem;
  const auto* base = static_cast<const Elem*>(w);
  int64_t k = 0;
  for (; k + kBlockRows <= n; k += kBlockRows) {
    const Elem* r[kBlockRows];
    for (int j = 0; j < kBlockRows; ++j) r[j] = base + (rows ? rows[k + j] : k + j) * ld;
    AxpyBlock<T, kBlockRows>(r, coef + k, cols, y);
  }
  for (; k < n; ++k) {
    const Elem* r[1] = {base + (rows ? rows[k] : k) * ld};
    AxpyBlock<T, 1>(r, coef + k, cols, y);
  }
}

template <WeightType T>
void SparseUpDown(const void* w_up, const void* w_down_t, int64_t hidden, const int32_t* rows,
                  const float* gate_act, int64_t n, const float* x, float* y) {
  using Elem = typename Weights<T>::Elem;
  const auto* up = static_cast<const Elem*>(w_up);
  const auto* down = static_cast<const Elem*>(w_down_t);
  int64_t k = 0;
  for (; k + kBlockRows <= n; k += kBlockRows) {
    const Elem* ru[kBlockRows];
    const Elem* rd[kBlockRows];
    for (int j = 0; j < kBlockRows; ++j) {
      ru[j] = up + rows[k + j] * hidden;
      rd[j] = down + rows[k + j] * hidden;
    }
    if (k + 2 * kBlockRows <= n) PrefetchRowStarts(up, down, hidden, rows + k + kBlockRows, kBlockRows);
    float h[kBlockRows];
    DotBlock<T, kBlockRows>(ru, hidden, x, h);
    for (int j = 0; j < kBlockRows; ++j) h[j] *= gate_act[k + j];
    AxpyBlock<T, kBlockRows>(rd, h, hidden, y);
  }
  for (; k < n; ++k) {
    const Elem* ru[1] = {up + rows[k] * hidden};
    const Elem* rd[1] = {down + rows[k] * hidden};
    float h;
    DotBlock<T, 1>(ru, hidden, x, &h);
    h *= gate_act[k];
    AxpyBlock<T, 1>(rd, &h, hidden, y);
  }
}

int64_t CompactPositive(const float* g, int64_t n, int32_t* rows, float* values) {
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

}  // namespace

const KernelTable& Avx512Kernels() {
  static const KernelTable table{
      Isa::kAvx512,
      {DotRows<WeightType::kF32>, DotRows<WeightType::kF16>, DotRows<WeightType::kBF16>},
      {AxpyRows<WeightType::kF32>, AxpyRows<WeightType::kF16>, AxpyRows<WeightType::kBF16>},
      {SparseUpDown<WeightType::kF32>, SparseUpDown<WeightType::kF16>,
       SparseUpDown<WeightType::kBF16>},
      CompactPositive};
  return table;
}

}  // namespace zeroskip
