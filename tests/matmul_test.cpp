// DenseMatmul on quantized weights. [out, in] products of any batch are bit-identical to the same
// tokens one at a time (the kernels' quant_matmul on activations quantized per token). The
// transposed ones ([in, out], the FFN's down projection) run the decode kernels token by token up
// to kSmallBatch, and beyond it widen the matrix (dequantized, exactly) for oneDNN, bit-identical
// to the same call on the dequantized f32 matrix.
#include "model/matmul.h"

#include <gtest/gtest.h>

#include <random>

#include "format/dtype.h"
#include "kernels/kernels.h"

namespace zeroskip {
namespace {

struct Quantized {
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // the same matrix dequantized
  WeightView view, f32_view;
};

Quantized RandomQuantized(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (auto& e : v) e = std::normal_distribution<float>()(rng);
  Quantized q;
  q.bytes.resize(static_cast<size_t>(rows) * DTypeBytes(dtype, cols));
  q.values.resize(v.size());
  ConvertMatrix(reinterpret_cast<const uint8_t*>(v.data()), DType::kF32, rows, cols, false,
                q.bytes.data(), dtype);
  ConvertMatrix(q.bytes.data(), dtype, rows, cols, false,
                reinterpret_cast<uint8_t*>(q.values.data()), DType::kF32);
  q.view = {.data = q.bytes.data(), .dtype = dtype, .rows = rows, .cols = cols};
  q.f32_view = {.data = q.values.data(), .dtype = DType::kF32, .rows = rows, .cols = cols};
  return q;
}

std::vector<float> Input(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& e : x) e = std::normal_distribution<float>()(rng);
  return x;
}

TEST(DenseMatmul, QuantizedBatchesMatchTheirDefinition) {
  const KernelTable& kernels = *KernelsFor(BestIsa());
  for (DType dtype : {DType::kQ8, DType::kQ4, DType::kQ4K, DType::kQ6K}) {
    for (int threads : {1, 2}) {
      DenseMatmul mm(kernels, threads);
      const int64_t out = 72, in = IsKQuant(dtype) ? 256 : 96;
      const Quantized w = RandomQuantized(dtype, out, in, 1);    // [out, in]
      const Quantized w_t = RandomQuantized(dtype, out, in, 2);  // [in', out'] = [72, 96]
      for (int64_t n : {int64_t{5}, kSmallBatch + 4, int64_t{37}}) {
        const std::vector<float> x = Input(n * in, 3), xt = Input(n * out, 4);
        std::vector<float> y(n * out), want(n * out), yt(n * in), want_t(n * in);
        mm.Linear(w.view, x.data(), n, y.data());
        mm.LinearTransposed(w_t.view, xt.data(), n, yt.data());
        // Token by token through the decode kernels (x quantized per token).
        for (int64_t t = 0; t < n; ++t) {
          mm.Linear(w.view, x.data() + t * in, 1, want.data() + t * out);
          if (n <= kSmallBatch) {
            mm.LinearTransposed(w_t.view, xt.data() + t * out, 1, want_t.data() + t * in);
          }
        }
        if (n > kSmallBatch) mm.LinearTransposed(w_t.f32_view, xt.data(), n, want_t.data());
        EXPECT_EQ(y, want) << DTypeName(dtype) << " n " << n << " threads " << threads;
        EXPECT_EQ(yt, want_t) << DTypeName(dtype) << " n " << n << " threads " << threads;
      }
    }
  }
}

}  // namespace
}  // namespace zeroskip
