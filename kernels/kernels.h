// Compute kernels and their run-time dispatch table.
//
// Kernels take pointers, sizes and strides, never model types, and are single-threaded: callers
// split rows or columns across threads. Each op has a scalar reference (kernels/ref) and one
// version per SIMD ISA (kernels/<isa>, each compiled with its own flags, the drivers shared in
// kernels/simd/drivers.h). The ISAs compiled in are listed once (AllIsas); an Engine picks one
// table at start-up (the best the CPU runs, or `--isa`). Weight matrices are f32, bf16 or f16
// (bit patterns as uint16_t), or q8 / q4 / q4k / q6k blocks (docs/FORMAT.md); activations are
// always f32 in memory. Every table widens 16-bit weights exactly and computes in f32, except where
// `bf16_products` says otherwise.
//
// Quantized weights are multiplied with activations quantized the same way: x is cut into
// blocks of 32, each stored as int8 with an f32 scale (QuantizeActivations), so a block's dot
// product is exact integer arithmetic times the product of the two scales. This adds at most
// |w|·amax_b/254 of error per block, amax_b the largest |x| of that block of x. The K-quants'
// sub-blocks of 32 (q4k: a scale and a min; q6k: two scales of 16) line up with those blocks: a
// q4k sub-block adds d·sc·d_x·Σ n·q_x − dmin·m·d_x·Σ q_x.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

#include "zeroskip/format.h"

namespace zeroskip {

enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Vnni = 3, kAvx512Bf16 = 4 };

// The weight types the kernels read, in the order of KernelTable::weight_ops. A new type is one
// entry here and in WeightElem, plus its loads in the reference and the SIMD drivers.
inline constexpr std::array kWeightDTypes = {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8,
                                             DType::kQ4,  DType::kQ4K, DType::kQ6K};

// How one weight element is stored; quantized types are streams of bytes (blocks).
template <DType T>
using WeightElem = std::conditional_t<T == DType::kF32, float,
                                      std::conditional_t<IsQuantized(T), uint8_t, uint16_t>>;

// Rows of a weight matrix as the kernels see it: row r starts at element r * ld of `data`
// (elements of the op's dtype). Quantized types: ld, cols and every column offset are whole
// blocks (multiples of DTypeBlockElements: 32, or 256 for q4k and q6k), so row r starts at byte
// DTypeBytes(dtype, r * ld).
struct WeightRows {
  const void* data = nullptr;
  int64_t ld = 0;
};

// out[k] = dot(W[row_k, 0:cols], x) for k in [0, n), row_k = rows ? rows[k] : k.
using DotRowsFn = void (*)(WeightRows w, const int32_t* rows, int64_t n, int64_t cols,
                           const float* x, float* out);
// y[0:cols] += sum_k coef[k] * W[row_k, 0:cols], row_k = rows ? rows[k] : k.
using AxpyRowsFn = void (*)(WeightRows w, const int32_t* rows, const float* coef, int64_t n,
                            int64_t cols, float* y);
// The sparse FFN step over active neurons, up and down fused in one pass:
// for k in [0, n): i = rows[k]; h = gate_act[k] * dot(W_up[i], x); y += h * W_down_t[i].
// Both matrices are [ffn, hidden] (rows `hidden` long); y is [hidden], accumulated.
using SparseUpDownFn = void (*)(WeightRows w_up, WeightRows w_down_t, int64_t hidden,
                                const int32_t* rows, const float* gate_act, int64_t n,
                                const float* x, float* y);
// Batched products with quantized (q8, q4, q4k, q6k) weights, on activations quantized once per
// token by the table's quantize_activations: y[t * ldy + r] = dot(W[r, 0:cols), x̂_t) for
// r in [0, rows), t in [0, n), x̂_t given as q[t * cols + c] (levels) and
// d[t * cols / kQuantBlock + b] (scales). Each result is bit-identical to dot_rows on token t's x
// under the same table, so a prompt in one batch computes what it computes token by token. Float
// types have none (nullptr).
using QuantMatmulFn = void (*)(WeightRows w, int64_t rows, int64_t cols, const int8_t* q,
                               const float* d, int64_t n, float* y, int64_t ldy);
// x[0 : blocks * kQuantBlock) quantized per block as ref::QuantizeActivations defines, bit for bit.
using QuantizeActivationsFn = void (*)(const float* x, int64_t blocks, int8_t* q, float* d);
// Writes the indices i in [0, n) with g[i] > threshold to rows[] and g[i] to values[]; returns
// the count. threshold 0: ReLU's active set; > 0: FATReLU's (ProSparse). NaN is never above.
using CompactAboveFn = int64_t (*)(const float* g, int64_t n, float threshold, int32_t* rows,
                                   float* values);
// The shadow gate's product (docs/SHADOW_GATE.md): out[k] = Σ_b d_b·xd_b·Σ_i q[k, b, i]·xq[b, i]
// for n consecutive rows of q8 blocks (cols / 32 blocks each) and x quantized by the caller to
// int16 levels xq [cols] with an f32 scale xd per block of 32. Each block's sum is exact integer
// arithmetic; its scaling and the sum over blocks round in f32 (at most `cols` roundings on any
// term's path, which the certification's bound assumes).
using ShadowDotRowsFn = void (*)(const uint8_t* rows, int64_t n, int64_t cols, const int16_t* xq,
                                 const float* xd, float* out);
// Attention weights in place: x[i] = exp(scale * x[i] - m) / sum_j exp(scale * x[j] - m) with
// m = max_j scale * x[j] (so no exp overflows), for i in [0, n), n >= 1.
using ScaledSoftmaxFn = void (*)(float* x, int64_t n, float scale);

// dot_rows of nx vectors over the same n contiguous rows, each loaded row serving every vector
// (attention: a group's query heads against a chunk of cached keys): out[i * ld_out + k] =
// dot(W[k, 0:cols), x[i * ld_x + 0:cols)) for i in [0, nx), k in [0, n). The weights are widened
// exactly (never bf16 products), and each result is bit-identical to dot_rows on that vector under
// a table whose dot_rows widens. Float types only.
using DotRowsBatchFn = void (*)(WeightRows w, int64_t n, int64_t cols, const float* x, int64_t nx,
                                int64_t ld_x, float* out, int64_t ld_out);
// axpy_rows of ny vectors of coefficients over the same n contiguous rows, each y held in
// registers across the rows (attention: a group's weights over a chunk of cached values):
// y[i * ld_y + c] += sum_k coef[i * ld_coef + k] * W[k, c] for i in [0, ny), c in [0, cols), the
// rows added in order, so each y is bit-identical to axpy_rows'. Float types only.
using AxpyRowsBatchFn = void (*)(WeightRows w, const float* coef, int64_t ld_coef, int64_t n,
                                 int64_t cols, int64_t ny, float* y, int64_t ld_y);

// The ops that read weights, for one weight type.
struct WeightOps {
  DotRowsFn dot_rows;
  AxpyRowsFn axpy_rows;
  SparseUpDownFn sparse_up_down;
  QuantMatmulFn quant_matmul = nullptr;       // quantized types only
  DotRowsBatchFn dot_rows_batch = nullptr;    // float types only
  AxpyRowsBatchFn axpy_rows_batch = nullptr;  // float types only
};

// Aborts: a dtype without kernels reached a kernel table. Dtypes are validated when a model is
// loaded, so this is a bug in the caller, not bad input.
[[noreturn]] void NoKernelsFor(DType dtype);

struct KernelTable {
  Isa isa;
  std::array<WeightOps, kWeightDTypes.size()> weight_ops;  // in kWeightDTypes order
  CompactAboveFn compact_above;
  ScaledSoftmaxFn scaled_softmax;
  QuantizeActivationsFn quantize_activations;
  ShadowDotRowsFn shadow_dot_rows;
  // bf16 dot products round x to bf16 (round to nearest even; subnormals of x and of the weights
  // count as zero) and multiply bf16 by bf16, summing in f32 (vdpbf16ps): against the exact
  // widening this adds at most 2⁻⁸·Σ|w·x| per dot. Batched bf16 matmuls may then do the same
  // (DenseMatmul). false: x stays f32 everywhere.
  bool bf16_products = false;

  const WeightOps& ops(DType dtype) const {
    for (size_t i = 0; i < kWeightDTypes.size(); ++i) {
      if (kWeightDTypes[i] == dtype) return weight_ops[i];
    }
    NoKernelsFor(dtype);
  }
};

// An ISA compiled into this binary.
struct IsaInfo {
  Isa isa;
  std::string_view name;          // as `--isa` and ZEROSKIP_MAX_ISA spell it
  const KernelTable& (*table)();  // defined in the ISA's object library
  bool (*cpu_supports)();         // CPU and OS can run it (ignores ZEROSKIP_MAX_ISA)
};

// Every ISA compiled in, plainest (scalar) first, best last.
std::span<const IsaInfo> AllIsas();

// Every ISA's table; nullptr if the CPU cannot run it. Callers keep the table they chose (an
// Engine does): there is no process-wide selection.
const KernelTable* KernelsFor(Isa isa);
// The fastest ISA this CPU runs.
Isa BestIsa();
std::string_view IsaName(Isa isa);
bool ParseIsaName(std::string_view name, Isa* out);

// The scalar reference every other ISA is tested against.
const KernelTable& ScalarKernels();

// For the per-ISA files: a table's weight_ops from Impl::Ops<T>() for every T in kWeightDTypes.
template <typename Impl>
constexpr std::array<WeightOps, kWeightDTypes.size()> MakeWeightOps() {
  return []<size_t... I>(std::index_sequence<I...>) {
    return std::array<WeightOps, sizeof...(I)>{Impl::template Ops<kWeightDTypes[I]>()...};
  }
  (std::make_index_sequence<kWeightDTypes.size()>{});
}

}  // namespace zeroskip
