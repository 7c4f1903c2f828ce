// The SIMD kernels' drivers, written once for every ISA: row blocking (4 rows share each load of
// x or y), gathering rows, tails and prefetch, over a vector-traits struct V that a per-ISA file
// supplies (see VectorTraits). The arithmetic order is fixed here, so every ISA adds the same
// terms in the same order up to its vector width.
//
// Include only from a per-ISA .cpp compiled with that ISA's flags. Everything here sits in an
// unnamed namespace: code compiled for one ISA must never be linked into another's callers.
#pragma once

#include <immintrin.h>

#include <concepts>
#include <cstdint>
#include <type_traits>

#include "kernels/kernels.h"

namespace zeroskip::simd {
namespace {

// One ISA's vectors of f32. Half is a vector of kLanes 16-bit values (bf16 or f16 bits); Tail
// says how many of the last elements of a row are read (fewer than kLanes; reads are
// zero-filled, stores leave the rest of memory alone).
template <typename V>
concept VectorTraits = requires(typename V::Vec v, typename V::Half h, typename V::Tail t,
                                const float* pf, float* f, const uint16_t* ph, int64_t n) {
  { V::kLanes } -> std::convertible_to<int64_t>;
  { V::kPrefetchLines } -> std::convertible_to<int>;  // lines at each next row start; 0: none
  { V::Zero() } -> std::same_as<typename V::Vec>;
  { V::Broadcast(1.0f) } -> std::same_as<typename V::Vec>;
  { V::Fma(v, v, v) } -> std::same_as<typename V::Vec>;  // a * b + c, one rounding
  { V::Sum(v) } -> std::same_as<float>;
  { V::Load(pf) } -> std::same_as<typename V::Vec>;
  V::Store(f, v);
  { V::TailOf(n) } -> std::same_as<typename V::Tail>;
  { V::LoadTail(pf, t) } -> std::same_as<typename V::Vec>;
  V::StoreTail(f, t, v);
  { V::LoadHalf(ph) } -> std::same_as<typename V::Half>;
  { V::LoadHalfTail(ph, t) } -> std::same_as<typename V::Half>;
  { V::Bf16ToF32(h) } -> std::same_as<typename V::Vec>;  // exact: bits shifted up by 16
  { V::F16ToF32(h) } -> std::same_as<typename V::Vec>;   // exact
};

// kLanes 16-bit weights of type T widened exactly to f32.
template <VectorTraits V, DType T>
typename V::Vec Widen(typename V::Half h) {
  if constexpr (T == DType::kBF16) {
    return V::Bf16ToF32(h);
  } else {
    static_assert(T == DType::kF16);
    return V::F16ToF32(h);
  }
}

// kLanes weights of type T as f32; the Tail version reads only the tail's elements.
template <VectorTraits V, DType T>
typename V::Vec LoadWeights(const WeightElem<T>* p) {
  if constexpr (T == DType::kF32) {
    return V::Load(p);
  } else {
    return Widen<V, T>(V::LoadHalf(p));
  }
}

template <VectorTraits V, DType T>
typename V::Vec LoadWeightsTail(const WeightElem<T>* p, typename V::Tail tail) {
  if constexpr (T == DType::kF32) {
    return V::LoadTail(p, tail);
  } else {
    return Widen<V, T>(V::LoadHalfTail(p, tail));
  }
}

// Dot products of R rows with x, sharing each load of x.
template <VectorTraits V, DType T, int R>
void DotBlock(const WeightElem<T>* const* r, int64_t cols, const float* x, float* out) {
  typename V::Vec acc[R];
  for (int j = 0; j < R; ++j) acc[j] = V::Zero();
  int64_t c = 0;
  for (; c + V::kLanes <= cols; c += V::kLanes) {
    const typename V::Vec xv = V::Load(x + c);
    for (int j = 0; j < R; ++j) acc[j] = V::Fma(LoadWeights<V, T>(r[j] + c), xv, acc[j]);
  }
  if (c < cols) {
    const typename V::Tail tail = V::TailOf(cols - c);
    const typename V::Vec xv = V::LoadTail(x + c, tail);
    for (int j = 0; j < R; ++j) acc[j] = V::Fma(LoadWeightsTail<V, T>(r[j] + c, tail), xv, acc[j]);
  }
  for (int j = 0; j < R; ++j) out[j] = V::Sum(acc[j]);
}

// y += sum_j coef[j] * row_j, one load/store of y per R rows.
template <VectorTraits V, DType T, int R>
void AxpyBlock(const WeightElem<T>* const* r, const float* coef, int64_t cols, float* y) {
  typename V::Vec cv[R];
  for (int j = 0; j < R; ++j) cv[j] = V::Broadcast(coef[j]);
  int64_t c = 0;
  for (; c + V::kLanes <= cols; c += V::kLanes) {
    typename V::Vec yv = V::Load(y + c);
    for (int j = 0; j < R; ++j) yv = V::Fma(cv[j], LoadWeights<V, T>(r[j] + c), yv);
    V::Store(y + c, yv);
  }
  if (c < cols) {
    const typename V::Tail tail = V::TailOf(cols - c);
    typename V::Vec yv = V::LoadTail(y + c, tail);
    for (int j = 0; j < R; ++j) yv = V::Fma(cv[j], LoadWeightsTail<V, T>(r[j] + c, tail), yv);
    V::StoreTail(y + c, tail, yv);
  }
}

constexpr int kBlockRows = 4;

// Calls block(k, std::integral_constant<int, R>) for the rows [k, k + R) of [0, n): blocks of
// kBlockRows, then the rest one row at a time.
template <typename Block>
void ForEachRowBlock(int64_t n, Block&& block) {
  int64_t k = 0;
  for (; k + kBlockRows <= n; k += kBlockRows) block(k, std::integral_constant<int, kBlockRows>());
  for (; k < n; ++k) block(k, std::integral_constant<int, 1>());
}

// r[j] = the start of row rows[k + j] of w (row k + j when rows is null).
template <typename Elem, int R>
void RowStarts(WeightRows w, const int32_t* rows, int64_t k, const Elem* (&r)[R]) {
  const auto* base = static_cast<const Elem*>(w.data);
  for (int j = 0; j < R; ++j) r[j] = base + (rows ? rows[k + j] : k + j) * w.ld;
}

template <VectorTraits V, DType T>
void DotRows(WeightRows w, const int32_t* rows, int64_t n, int64_t cols, const float* x,
             float* out) {
  ForEachRowBlock(n, [&](int64_t k, auto block) {
    const WeightElem<T>* r[decltype(block)::value];
    RowStarts(w, rows, k, r);
    DotBlock<V, T, decltype(block)::value>(r, cols, x, out + k);
  });
}

template <VectorTraits V, DType T>
void AxpyRows(WeightRows w, const int32_t* rows, const float* coef, int64_t n, int64_t cols,
              float* y) {
  ForEachRowBlock(n, [&](int64_t k, auto block) {
    const WeightElem<T>* r[decltype(block)::value];
    RowStarts(w, rows, k, r);
    AxpyBlock<V, T, decltype(block)::value>(r, coef + k, cols, y);
  });
}

// Active rows are scattered, so the hardware prefetcher must find each new row afresh. Asking for
// the first lines of the next block's rows while this block streams hides that start-up latency.
template <int kLines, typename Elem>
void PrefetchRowStarts(const Elem* up, int64_t up_ld, const Elem* down, int64_t down_ld,
                       const int32_t* rows, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    for (int l = 0; l < kLines; ++l) {
      _mm_prefetch(reinterpret_cast<const char*>(up + rows[j] * up_ld) + 64 * l, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(down + rows[j] * down_ld) + 64 * l, _MM_HINT_T0);
    }
  }
}

// The fused sparse step with the up dot products of each block from `up_dots(r, h)` (r: the R up
// rows, h: their R dots with x): the ISA's DotBlock over x in f32, or a dot that reads x in another
// form (the AVX512-BF16 table's, over x rounded to bf16). The down half is this ISA's AxpyBlock.
template <VectorTraits V, DType T, typename UpDots>
void SparseUpDownWith(WeightRows w_up, WeightRows w_down_t, int64_t hidden, const int32_t* rows,
                      const float* gate_act, int64_t n, float* y, UpDots&& up_dots) {
  using Elem = WeightElem<T>;
  const auto* up = static_cast<const Elem*>(w_up.data);
  const auto* down = static_cast<const Elem*>(w_down_t.data);
  ForEachRowBlock(n, [&](int64_t k, auto block) {
    constexpr int R = decltype(block)::value;
    const Elem* ru[R];
    const Elem* rd[R];
    for (int j = 0; j < R; ++j) {
      ru[j] = up + rows[k + j] * w_up.ld;
      rd[j] = down + rows[k + j] * w_down_t.ld;
    }
    if constexpr (R == kBlockRows && V::kPrefetchLines > 0) {
      if (k + 2 * kBlockRows <= n) {
        PrefetchRowStarts<V::kPrefetchLines>(up, w_up.ld, down, w_down_t.ld, rows + k + kBlockRows,
                                             kBlockRows);
      }
    }
    float h[R];
    up_dots(ru, h);
    for (int j = 0; j < R; ++j) h[j] *= gate_act[k + j];
    AxpyBlock<V, T, R>(rd, h, hidden, y);
  });
}

template <VectorTraits V, DType T>
void SparseUpDown(WeightRows w_up, WeightRows w_down_t, int64_t hidden, const int32_t* rows,
                  const float* gate_act, int64_t n, const float* x, float* y) {
  SparseUpDownWith<V, T>(w_up, w_down_t, hidden, rows, gate_act, n, y,
                         [&]<int R>(const WeightElem<T>* const (&r)[R], float (&h)[R]) {
                           DotBlock<V, T, R>(r, hidden, x, h);
                         });
}

// The weight ops of one ISA, for MakeWeightOps.
template <VectorTraits V>
struct SimdKernels {
  template <DType T>
  static constexpr WeightOps Ops() {
    return {DotRows<V, T>, AxpyRows<V, T>, SparseUpDown<V, T>};
  }
};

}  // namespace
}  // namespace zeroskip::simd
