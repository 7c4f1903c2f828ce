// Scalar references: the definition every SIMD kernel is tested against. Accumulate in double so
// the reference is more accurate than what it checks.
#include <Eigen/Core>
#include <cstring>

#include "kernels/kernels.h"

namespace zeroskip {
namespace {

template <WeightType T>
float Load(const void* w, int64_t i) {
  if constexpr (T == WeightType::kF32) {
    return static_cast<const float*>(w)[i];
  } else {
    const uint16_t bits = static_cast<const uint16_t*>(w)[i];
    if constexpr (T == WeightType::kBF16) {
      uint32_t wide = static_cast<uint32_t>(bits) << 16;
      float f;
      std::memcpy(&f, &wide, 4);
      return f;
    } else {
      return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits));
    }
  }
}

template <WeightType T>
void DotRows(const void* w, int64_t ld, const int32_t* rows, int64_t n, int64_t cols,
             const float* x, float* out) {
  for (int64_t k = 0; k < n; ++k) {
    const int64_t base = (rows ? rows[k] : k) * ld;
    double acc = 0;
    for (int64_t c = 0; c < cols; ++c) acc += double(Load<T>(w, base + c)) * x[c];
    out[k] = static_cast<float>(acc);
  }
}

template <WeightType T>
void AxpyRows(const void* w, int64_t ld, const int32_t* rows, const float* coef, int64_t n,
              int64_t cols, float* y) {
  for (int64_t k = 0; k < n; ++k) {
    const int64_t base = (rows ? rows[k] : k) * ld;
    for (int64_t c = 0; c < cols; ++c) y[c] += coef[k] * Load<T>(w, base + c);
  }
}

template <WeightType T>
void SparseUpDown(const void* w_up, const void* w_down_t, int64_t hidden, const int32_t* rows,
                  const float* gate_act, int64_t n, const float* x, float* y) {
  for (int64_t k = 0; k < n; ++k) {
    float u;
    DotRows<T>(w_up, hidden, rows + k, 1, hidden, x, &u);
    const float h = gate_act[k] * u;
    AxpyRows<T>(w_down_t, hidden, rows + k, &h, 1, hidden, y);
  }
}

int64_t CompactPositive(const float* g, int64_t n, int32_t* rows, float* values) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (g[i] > 0.0f) {
      rows[count] = static_cast<int32_t>(i);
      values[count++] = g[i];
    }
  }
  return count;
}

}  // namespace

const KernelTable& ScalarKernels() {
  static const KernelTable table{
      Isa::kScalar,
      {DotRows<WeightType::kF32>, DotRows<WeightType::kF16>, DotRows<WeightType::kBF16>},
      {AxpyRows<WeightType::kF32>, AxpyRows<WeightType::kF16>, AxpyRows<WeightType::kBF16>},
      {SparseUpDown<WeightType::kF32>, SparseUpDown<WeightType::kF16>,
       SparseUpDown<WeightType::kBF16>},
      CompactPositive};
  return table;
}

}  // namespace zeroskip
