// Scalar references: the definition every SIMD kernel is tested against. Accumulate in double so
// the reference is more accurate than what it checks.
#include "kernels/ref/kernels_ref.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <limits>

#include "kernels/kernels.h"

namespace zeroskip {
namespace {

float HalfToFloat(uint16_t bits) {
  return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits));
}

// A quantized block of T: its scale and its 32 integer levels (q8: q; q4: q - 8).
template <DType T>
float BlockScale(const uint8_t* block) {
  return HalfToFloat(static_cast<uint16_t>(block[0] | block[1] << 8));
}

template <DType T>
int BlockLevel(const uint8_t* block, int64_t i) {
  if constexpr (T == DType::kQ8) {
    return static_cast<int8_t>(block[2 + i]);
  } else {
    const uint8_t byte = block[2 + i % (kQuantBlock / 2)];
    return (i < int64_t{kQuantBlock / 2} ? byte & 15 : byte >> 4) - 8;
  }
}

// K-quants: a block of 256 is eight units of 32 elements, each lined up with one block of
// quantized activations. Element i of a block's level: q4k its nibble 0..15 (the unit's min comes
// off separately), q6k its 6 bits - 32 (docs/FORMAT.md).
template <DType T>
int KLevel(const uint8_t* block, int64_t i) {
  if constexpr (T == DType::kQ4K) {
    const uint8_t byte = block[16 + 32 * (i / 64) + i % 32];
    return i % 64 < 32 ? byte & 15 : byte >> 4;
  } else {
    static_assert(T == DType::kQ6K);
    const int64_t h = i / 128, k = i % 128 / 32, c = i % 32;
    const int low = block[64 * h + 32 * (k % 2) + c] >> 4 * (k / 2) & 15;
    const int high = block[128 + 32 * h + c] >> 2 * k & 3;
    return (low | high << 4) - 32;
  }
}

// q4k unit u's scale d·sc and min dmin·m (exact in f32).
void Q4KUnitScales(const uint8_t* block, int64_t u, float* scale, float* min) {
  int sc, m;
  Q4KScaleMin(block + 4, static_cast<int>(u), &sc, &m);
  *scale = HalfToFloat(static_cast<uint16_t>(block[0] | block[1] << 8)) * static_cast<float>(sc);
  *min = HalfToFloat(static_cast<uint16_t>(block[2] | block[3] << 8)) * static_cast<float>(m);
}

// q6k group g's (16 elements) scale d·sc[g] (exact in f32).
float Q6KGroupScale(const uint8_t* block, int64_t g) {
  return HalfToFloat(static_cast<uint16_t>(block[208] | block[209] << 8)) *
         static_cast<float>(static_cast<int8_t>(block[192 + g]));
}

// Element i of a matrix of T (for quantized types, its dequantized value: exact in f32, except
// q4k's d·sc·n − dmin·m, which rounds once, as docs/FORMAT.md defines it).
template <DType T>
float Load(const void* w, int64_t i) {
  if constexpr (IsKQuant(T)) {
    const auto* block = static_cast<const uint8_t*>(w) + DTypeBytes(T, i - i % kSuperBlock);
    const int64_t e = i % kSuperBlock;
    if constexpr (T == DType::kQ4K) {
      float scale, min;
      Q4KUnitScales(block, e / 32, &scale, &min);
      return scale * static_cast<float>(KLevel<T>(block, e)) - min;
    } else {
      return Q6KGroupScale(block, e / 16) * static_cast<float>(KLevel<T>(block, e));
    }
  } else if constexpr (IsQuantized(T)) {
    const auto* block = static_cast<const uint8_t*>(w) + DTypeBytes(T, i - i % kQuantBlock);
    return BlockScale<T>(block) * static_cast<float>(BlockLevel<T>(block, i % kQuantBlock));
  } else if constexpr (T == DType::kF32) {
    return static_cast<const float*>(w)[i];
  } else {
    const uint16_t bits = static_cast<const uint16_t*>(w)[i];
    if constexpr (T == DType::kBF16) {
      uint32_t wide = static_cast<uint32_t>(bits) << 16;
      float f;
      std::memcpy(&f, &wide, 4);
      return f;
    } else {
      return HalfToFloat(bits);
    }
  }
}

// The dot product of a quantized row with prepared activations (levels q, scales d), block by
// block: the exact integer dot product of the levels, times the product of the weight's and the
// activations' scales (rounded to f32, as every ISA computes it).
// K-quants, unit by unit: q4k's exact integer sums Σ n·q and Σ q times d·sc·d_x and dmin·m·d_x;
// q6k's two groups of 16, each Σ level·q times d·sc·d_x (the scale products rounded to f32).
template <DType T>
float QuantRowDot(const uint8_t* row, int64_t cols, const int8_t* q, const float* d) {
  double acc = 0;
  if constexpr (IsKQuant(T)) {
    for (int64_t c = 0; c < cols; c += kQuantBlock) {
      const uint8_t* block = row + DTypeBytes(T, c - c % kSuperBlock);
      const int64_t e = c % kSuperBlock;
      const float dx = d[c / kQuantBlock];
      if constexpr (T == DType::kQ4K) {
        int64_t levels = 0, sum = 0;
        for (int64_t i = 0; i < int64_t{kQuantBlock}; ++i) {
          levels += KLevel<T>(block, e + i) * q[c + i];
          sum += q[c + i];
        }
        float scale, min;
        Q4KUnitScales(block, e / 32, &scale, &min);
        acc += double(levels) * double(scale * dx) - double(sum) * double(min * dx);
      } else {
        for (int64_t g = 0; g < 2; ++g) {
          int64_t levels = 0;
          for (int64_t i = 16 * g; i < 16 * g + 16; ++i)
            levels += KLevel<T>(block, e + i) * q[c + i];
          acc += double(levels) * double(Q6KGroupScale(block, e / 16 + g) * dx);
        }
      }
    }
    return static_cast<float>(acc);
  }
  for (int64_t c = 0; c < cols; c += kQuantBlock) {
    const uint8_t* block = row + DTypeBytes(T, c);
    int64_t levels = 0;
    for (int64_t i = 0; i < int64_t{kQuantBlock}; ++i) levels += BlockLevel<T>(block, i) * q[c + i];
    acc += double(levels) * double(BlockScale<T>(block) * d[c / kQuantBlock]);
  }
  return static_cast<float>(acc);
}

template <DType T>
void DotRows(WeightRows w, const int32_t* rows, int64_t n, int64_t cols, const float* x,
             float* out) {
  // x quantized once per call, on the stack (no allocation on the decode path), up to the
  // widest row the config allows, as in the SIMD drivers.
  constexpr int64_t kMaxCols = int64_t{1} << 16;
  int8_t q[IsQuantized(T) ? kMaxCols : 1];
  float d[IsQuantized(T) ? kMaxCols / kQuantBlock : 1];
  if constexpr (IsQuantized(T)) {
    if (cols > kMaxCols) std::abort();
    ref::QuantizeActivations(x, cols / kQuantBlock, q, d);
  }
  for (int64_t k = 0; k < n; ++k) {
    const int64_t base = (rows ? rows[k] : k) * w.ld;
    if constexpr (IsQuantized(T)) {
      out[k] = QuantRowDot<T>(static_cast<const uint8_t*>(w.data) + DTypeBytes(T, base), cols, q,
                              d);
    } else {
      double acc = 0;
      for (int64_t c = 0; c < cols; ++c) acc += double(Load<T>(w.data, base + c)) * x[c];
      out[k] = static_cast<float>(acc);
    }
  }
}

template <DType T>
void QuantMatmul(WeightRows w, int64_t rows, int64_t cols, const int8_t* q, const float* d,
                 int64_t n, float* y, int64_t ldy) {
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      y[t * ldy + r] =
          QuantRowDot<T>(static_cast<const uint8_t*>(w.data) + DTypeBytes(T, r * w.ld), cols,
                         q + t * cols, d + t * (cols / kQuantBlock));
    }
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

template <DType T>
void DotRowsBatch(WeightRows w, int64_t n, int64_t cols, const float* x, int64_t nx, int64_t ld_x,
                  float* out, int64_t ld_out) {
  for (int64_t i = 0; i < nx; ++i) DotRows<T>(w, nullptr, n, cols, x + i * ld_x, out + i * ld_out);
}

template <DType T>
void AxpyRowsBatch(WeightRows w, const float* coef, int64_t ld_coef, int64_t n, int64_t cols,
                   int64_t ny, float* y, int64_t ld_y) {
  for (int64_t i = 0; i < ny; ++i)
    AxpyRows<T>(w, nullptr, coef + i * ld_coef, n, cols, y + i * ld_y);
}

int64_t CompactAbove(const float* g, int64_t n, float threshold, int32_t* rows, float* values) {
  return ref::CompactAboveRange(g, 0, n, threshold, rows, values);
}

struct RefKernels {
  template <DType T>
  static constexpr WeightOps Ops() {
    if constexpr (IsQuantized(T)) {
      return {DotRows<T>, AxpyRows<T>, SparseUpDown<T>, QuantMatmul<T>};
    } else {
      return {DotRows<T>, AxpyRows<T>, SparseUpDown<T>, nullptr, DotRowsBatch<T>, AxpyRowsBatch<T>};
    }
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

// As the SIMD kernels: exact integer block sums times the f32 product of the two scales.
void ShadowDotRows(const uint8_t* rows, int64_t n, int64_t cols, const int16_t* xq, const float* xd,
                   float* out) {
  for (int64_t k = 0; k < n; ++k) {
    double acc = 0;
    for (int64_t c = 0; c < cols; c += kQuantBlock) {
      const uint8_t* block = rows + DTypeBytes(DType::kQ8, k * cols + c);
      int64_t levels = 0;
      for (int64_t i = 0; i < int64_t{kQuantBlock}; ++i) {
        levels += BlockLevel<DType::kQ8>(block, i) * xq[c + i];
      }
      acc += double(levels) * double(BlockScale<DType::kQ8>(block) * xd[c / kQuantBlock]);
    }
    out[k] = static_cast<float>(acc);
  }
}

constexpr KernelTable kTable{Isa::kScalar, MakeWeightOps<RefKernels>(), CompactAbove,
                             ScaledSoftmax, ref::QuantizeActivations, ShadowDotRows};

}  // namespace

void ref::QuantizeActivations(const float* x, int64_t blocks, int8_t* q, float* d) {
  for (int64_t b = 0; b < blocks; ++b) {
    const float* v = x + b * kQuantBlock;
    int8_t* out = q + b * kQuantBlock;
    float amax = 0.0f;
    bool finite = true;
    for (uint64_t i = 0; i < kQuantBlock; ++i) {
      finite = finite && std::abs(v[i]) <= std::numeric_limits<float>::max();
      amax = std::max(amax, std::abs(v[i]));
    }
    std::memset(out, 0, kQuantBlock);
    if (!finite) {
      d[b] = std::numeric_limits<float>::quiet_NaN();  // poisons every product with this block
      continue;
    }
    d[b] = amax / 127.0f;
    if (amax < kMinActivationScale) continue;  // (also keeps 127 / amax finite)
    const float inv = 127.0f / amax;
    for (uint64_t i = 0; i < kQuantBlock; ++i) {
      out[i] = static_cast<int8_t>(std::nearbyint(v[i] * inv));
    }
  }
}

int64_t ref::CompactAboveRange(const float* g, int64_t begin, int64_t end, float threshold,
                               int32_t* rows, float* values) {
  int64_t count = 0;
  for (int64_t i = begin; i < end; ++i) {
    if (g[i] > threshold) {
      rows[count] = static_cast<int32_t>(i);
      values[count++] = g[i];
    }
  }
  return count;
}

const KernelTable& ScalarKernels() { return kTable; }

}  // namespace zeroskip
