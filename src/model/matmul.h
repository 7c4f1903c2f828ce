// Dense products of activations with a weight matrix. One token (decode) runs the dispatched
// GEMV kernels split across threads; a batch (prefill) runs oneDNN matmul, with primitives
// created once per shape. oneDNN's f32 matmul cannot take bf16/f16 weights next to f32
// activations, so batched calls on those widen the matrix into a reusable f32 buffer first —
// except bf16 weights under a kernel table with bf16_products where oneDNN runs bf16 natively:
// there the activations are rounded to bf16 (the same arithmetic as that table's kernels) and
// oneDNN's bf16 matmul reads the weights as stored. Batches on quantized weights ([out, in]) go
// through the kernels' quant_matmul on activations quantized once per token: the arithmetic of
// the decode kernels, bit for bit, with no widened copy.
#pragma once

#include <algorithm>
#include <dnnl.hpp>
#include <map>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "model/worker_pool.h"
#include "zeroskip/weights.h"

namespace zeroskip {

struct KernelTable;

// Batches up to this many tokens stream the weights through the decode kernels; longer ones go
// to oneDNN (measured crossover: docs/BENCHMARKS.md, "Prefill"): 16 for weights oneDNN needs
// widened first (f16, and bf16 without a native bf16 matmul) ...
constexpr int64_t kSmallBatch = 16;
// ... 8 for f32, which oneDNN takes as stored ("Sparse prefill").
constexpr int64_t kSmallBatchF32 = 8;
// The same for bf16 weights that oneDNN's bf16 matmul takes as stored (Bf16Batches): with no
// widening to pay for, oneDNN wins from fewer tokens (docs/BENCHMARKS.md, "Native bf16").
constexpr int64_t kSmallBatchBf16 = 5;
// Quantized weights: batches up to this many tokens run the decode kernel per token, longer ones
// the register-tiled quant_matmul (both give the same bits). Measured crossovers
// (docs/BENCHMARKS.md, "Server" and "Short quantized prompts"): q8's kernel is cheap per block,
// so three passes over cached rows still beat one tiled pass; q4 unpacks nibbles once per tile.
constexpr int64_t kSmallBatchQ8 = 3;
constexpr int64_t kSmallBatchQ4 = 2;
// A block of weight rows small enough to stay in a core's L2 while every token of a short batch
// reads it.
constexpr int64_t kCacheBlockBytes = 256 << 10;

class DenseMatmul {
 public:
  DenseMatmul(const KernelTable& kernels, int threads);

  // The engine's threads: every parallel phase outside oneDNN runs on them.
  WorkerPool& pool() { return pool_; }

  // y[n, w.rows] = x[n, w.cols] · wᵀ   (w stored [out, in], the Hugging Face orientation)
  void Linear(const WeightView& w, const float* x, int64_t n, float* y);
  // ys[i] = Linear(*ws[i], x, n) for matrices that read the same x (q, k and v): as GEMVs, all
  // in one phase of the pool (one synchronisation instead of one per matrix), the same bits.
  void LinearSameInput(std::span<const WeightView* const> ws, const float* x, int64_t n,
                       std::span<float* const> ys);
  // y[n, w.cols] = x[n, w.rows] · w    (w stored [in, out], e.g. the transposed FFN down);
  // batched use only (one token goes through the FFN runtime's own kernels)
  void LinearTransposed(const WeightView& w, const float* x, int64_t n, float* y);
  // Sizes the widening buffer up front, so batched calls neither allocate nor re-zero it.
  void ReserveWiden(uint64_t elements);
  // Sizes the bf16 copy of a batch's activations (elements: tokens times the widest input).
  void ReserveBf16Inputs(uint64_t elements);
  // Sizes the quantized copy of a batch's activations (elements: tokens times the widest input).
  void ReserveQuantInputs(uint64_t elements);

  // Whether batched calls on `dtype` weights under `kernels` run oneDNN's bf16 matmul (no
  // widening): bf16 weights, a table with bf16_products, and a native oneDNN bf16 matmul.
  static bool Bf16Batches(const KernelTable& kernels, DType dtype);
  // The oneDNN implementation a bf16 matmul gets on this CPU (e.g. "brg:avx512_core_bf16"), or
  // "" if oneDNN has none; one whose name contains "ref" (a reference loop) does not count.
  static const std::string& OneDnnBf16Impl();

 private:
  void OneDnn(const void* w, bool bf16, bool w_is_out_in, int64_t n, int64_t in, int64_t out,
              const float* x, float* y);
  // Whether Linear runs w on n tokens through the decode kernels (else oneDNN or quant_matmul).
  bool RunsAsGemv(const WeightView& w, int64_t n) const;
  // Linear's GEMV for the rows of w that chunk `chunk` of threads_ owns.
  void GemvSlice(const WeightView& w, const float* x, int64_t n, float* y, int chunk) const;
  const float* AsF32(const WeightView& w);
  const uint16_t* AsBf16(const float* x, int64_t n, int64_t in);
  void QuantLinear(const WeightView& w, const float* x, int64_t n, float* y);

  // The longest batch on `w` that goes through the decode kernels.
  int64_t SmallBatch(const WeightView& w) const;

  static int64_t small_batch_env_;  // ZEROSKIP_SMALL_BATCH (for measuring), else 0
  const KernelTable& kernels_;
  int threads_;
  WorkerPool pool_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  // key: n, in, out, w_is_out_in, bf16
  std::map<std::tuple<int64_t, int64_t, int64_t, bool, bool>, dnnl::matmul> primitives_;
  std::map<std::pair<int64_t, int64_t>, dnnl::reorder> to_bf16_;  // key: n, in
  std::vector<float> widened_;
  std::vector<uint16_t> bf16_inputs_;  // [n, in] a batch's activations rounded to bf16
  std::vector<int8_t> quant_levels_;   // [n, in] a batch's activations quantized per block
  std::vector<float> quant_scales_;    // [n, in / kQuantBlock] their scales
};

// Rows [begin, end) of `total` for thread t of n: contiguous, balanced slices.
inline std::pair<int64_t, int64_t> ThreadSlice(int64_t total, int t, int n, int64_t align = 1) {
  const int64_t units = (total + align - 1) / align;
  const int64_t begin = std::min(total, units * t / n * align);
  const int64_t end = std::min(total, units * (t + 1) / n * align);
  return {begin, end};
}

}  // namespace zeroskip
