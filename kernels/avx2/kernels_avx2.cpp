// AVX2+FMA kernels (8 lanes). bf16 and f16 weights are widened exactly to f32 in registers;
// tails shorter than a vector are copied into a zero-filled stack buffer and run through the
// same code (AVX2 has no 16-bit masked load).
#include <immintrin.h>

#include <array>
#include <cstring>

#include "kernels/kernels.h"

namespace zeroskip {
namespace {

constexpr int64_t kLanes = 8;

template <WeightType T>
struct Weights;

template <>
struct Weights<WeightType::kF32> {
  using Elem = float;
  static __m256 Load(const Elem* p) { return _mm256_loadu_ps(p); }
};
template <>
struct Weights<WeightType::kBF16> {
  using Elem = uint16_t;
  static __m256 Load(const Elem* p) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
  }
};
template <>
struct Weights<WeightType::kF16> {
  using Elem = uint16_t;
  static __m256 Load(const Elem* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
};

// Loads the last `n` < 8 elements, zero-filled, through a small stack buffer.
template <WeightType T>
__m256 LoadTail(const typename Weights<T>::Elem* p, int64_t n) {
  typename Weights<T>::Elem buf[kLanes] = {};
  std::memcpy(buf, p, n * sizeof(buf[0]));
  return Weights<T>::Load(buf);
}

float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <WeightType T, int R>
void DotBlock(const typename Weights<T>::Elem* const* r, int64_t cols, const float* x, float* out) {
  using W = Weights<T>;
  __m256 acc[R];
  for (int j = 0; j < R; ++j) acc[j] = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + kLanes <= cols; c += kLanes) {
    const __m256 xv = _mm256_loadu_ps(x + c);
    for (int j = 0; j < R; ++j) acc[j] = _mm256_fmadd_ps(W::Load(r[j] + c), xv, acc[j]);
  }
  if (c < cols) {
    const __m256 xv = LoadTail<WeightType::kF32>(x + c, cols - c);
    for (int j = 0; j < R; ++j) acc[j] = _mm256_fmadd_ps(LoadTail<T>(r[j] + c, cols - c), xv, acc[j]);
  }
  for (int j = 0; j < R; ++j) out[j] = HorizontalSum(acc[j]);
}

template <WeightType T, int R>
void AxpyBlock(const typename Weights<T>::Elem* const* r, const float* coef, int64_t cols,
               float* y) {
  using W = Weights<T>;
  __m256 cv[R];
  for (int j = 0; j < R; ++j) cv[j] = _mm256_set1_ps(coef[j]);
  int64_t c = 0;
  for (; c + kLanes <= cols; c += kLanes) {
    __m256 yv = _mm256_loadu_ps(y + c);
    for (int j = 0; j < R; ++j) yv = _mm256_fmadd_ps(cv[j], W::Load(r[j] + c), yv);
    _mm256_storeu_ps(y + c, yv);
  }
  if (c < cols) {
    const int64_t n = cols - c;
    __m256 yv = LoadTail<WeightType::kF32>(y + c, n);
    for (int j = 0; j < R; ++j) yv = _mm256_fmadd_ps(cv[j], LoadTail<T>(r[j] + c, n), yv);
    float out[kLanes];
    _mm256_storeu_ps(out, yv);
    std::memcpy(y + c, out, n * sizeof(float));
  }
}

constexpr int kBlockRows = 4;

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

int64_t CompactPositive(const float* g, int64_t n, int32_t* rows, float* values) {
  __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i step = _mm256_set1_epi32(kLanes);
  const __m256 zero = _mm256_setzero_ps();
  int64_t count = 0;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m256 v = _mm256_loadu_ps(g + i);
    const int m = _mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_GT_OQ));
    const __m256i perm =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kCompressTable[m].data()));
    const int got = __builtin_popcount(m);
    alignas(32) int32_t idx_out[kLanes];
    alignas(32) float val_out[kLanes];
    _mm256_store_si256(reinterpret_cast<__m256i*>(idx_out), _mm256_permutevar8x32_epi32(index, perm));
    _mm256_store_ps(val_out, _mm256_permutevar8x32_ps(v, perm));
    std::memcpy(rows + count, idx_out, got * sizeof(int32_t));
    std::memcpy(values + count, val_out, got * sizeof(float));
    count += got;
    index = _mm256_add_epi32(index, step);
  }
  for (; i < n; ++i) {
    if (g[i] > 0.0f) {
      rows[count] = static_cast<int32_t>(i);
      values[count++] = g[i];
    }
  }
  return count;
}

}  // namespace

const KernelTable& Avx2Kernels() {
  static const KernelTable table{
      Isa::kAvx2,
      {DotRows<WeightType::kF32>, DotRows<WeightType::kF16>, DotRows<WeightType::kBF16>},
      {AxpyRows<WeightType::kF32>, AxpyRows<WeightType::kF16>, AxpyRows<WeightType::kBF16>},
      {SparseUpDown<WeightType::kF32>, SparseUpDown<WeightType::kF16>,
       SparseUpDown<WeightType::kBF16>},
      CompactPositive};
  return table;
}

}  // namespace zeroskip
