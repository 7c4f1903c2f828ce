// Scalar references: the definition every SIMD kernel is tested against. Accumulate in double so
// the reference is more accurate than what it checks.
#include "kernels/ref/kernels_ref.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/kernels.h"

namespace zeroskip {
namespace {

template <DType T>
float Load(const void* w, int64_t i) {
  if constexpr (T == DType::kF32) {
    return static_cast<const float*>(w)[i];
  } else {
    const uint16_t bits = static_cast<const uint16_t*>(w)[i];
    if constexpr (T == DType::kBF16) {
      uint32_t wide = static_cast<uint32_t>(bits) << 16;
      float f;
      std::memcpy(&f, &wide, 4);
      return f;
    } else {
      return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits));
    }
  }
}

template <DType T>
void DotRows(WeightRows w, const int32_t* rows, int64_t n, int64_t cols, const float* x,
             float* out) {
  for (int64_t k = 0; k < n; ++k) {
    const int64_t base = (rows ? rows[k] : k) * w.ld;
    double acc = 0;
    for (int64_t c = 0; c < cols; ++c) acc += double(Load<T>(w.data, base + c)) * x[c];
    out[k] = static_cast<float>(acc);
  }
}

template <DType T>
void AxpyRows(WeightRows w, const int32_t* rows, const float* coef, int64_t n, int64_t cols,
              float* y) {
  for (int64_t k = 0; k < n; ++k) {
    const int64_t base = (rows ? rows[k] : k) * w.ld;
    for (int64_t c = 0; c < cols; ++c) y[c] += coef[k] * Load<T>(w.data, base + c);
  }
}

template <DType T>
void SparseUpDown(WeightRows w_up, WeightRows w_down_t, int64_t hidden, const int32_t* rows,
                  const float* gate_act, int64_t n, const float* x, float* y) {
  for (int64_t k = 0; k < n; ++k) {
    float u;
    DotRows<T>(w_up, rows + k, 1, hidden, x, &u);
    const float h = gate_act[k] * u;
    AxpyRows<T>(w_down_t, rows + k, &h, 1, hidden, y);
  }
}

int64_t CompactPositive(const float* g, int64_t n, int32_t* rows, float* values) {
  return ref::CompactPositiveRange(g, 0, n, rows, values);
}

struct RefKernels {
  template <DType T>
  static constexpr WeightOps Ops() {
    return {DotRows<T>, AxpyRows<T>, SparseUpDown<T>};
  }
};

// In double: the reference the SIMD versions are checked against.
void ScaledSoftmax(float* x, int64_t n, float scale) {
  double max = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i) max = std::max(max, double(scale) * x[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(double(scale) * x[i] - max);
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(std::exp(double(scale) * x[i] - max) / sum);
}

constexpr KernelTable kTable{Isa::kScalar, MakeWeightOps<RefKernels>(), CompactPositive,
                             ScaledSoftmax};

}  // namespace

int64_t ref::CompactPositiveRange(const float* g, int64_t begin, int64_t end, int32_t* rows,
                                  float* values) {
  int64_t count = 0;
  for (int64_t i = begin; i < end; ++i) {
    if (g[i] > 0.0f) {
      rows[count] = static_cast<int32_t>(i);
      values[count++] = g[i];
    }
  }
  return count;
}

const KernelTable& ScalarKernels() { return kTable; }

}  // namespace zeroskip
