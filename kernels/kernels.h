// Compute kernels and their run-time dispatch table.
//
// Kernels take pointers, sizes and strides, never model types, and are single-threaded: callers
// split rows or columns across threads. Each op has a scalar reference (kernels/ref), an
// AVX2+FMA version and an AVX-512 version, each compiled with its own flags; an Engine picks one
// table at start-up (the best the CPU runs, or `--isa`). Weight matrices are f32, bf16 or f16
// (bit patterns as uint16_t); activations are always f32.
#pragma once

#include <cstdint>
#include <string_view>

namespace zeroskip {

enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

enum class WeightType { kF32 = 0, kF16 = 1, kBF16 = 2 };  // same codes as DType

// out[k] = dot(W[row_k, 0:cols], x) for k in [0, n), row_k = rows ? rows[k] : k.
using DotRowsFn = void (*)(const void* w, int64_t ld, const int32_t* rows, int64_t n,
                           int64_t cols, const float* x, float* out);
// y[0:cols] += sum_k coef[k] * W[row_k, 0:cols], row_k = rows ? rows[k] : k.
using AxpyRowsFn = void (*)(const void* w, int64_t ld, const int32_t* rows, const float* coef,
                            int64_t n, int64_t cols, float* y);
// The sparse FFN step over active neurons, up and down fused in one pass:
// for k in [0, n): i = rows[k]; h = gate_act[k] * dot(W_up[i], x); y += h * W_down_t[i].
// Both matrices are [ffn, hidden] row-major (ld = hidden); y is [hidden], accumulated.
using SparseUpDownFn = void (*)(const void* w_up, const void* w_down_t, int64_t hidden,
                                const int32_t* rows, const float* gate_act, int64_t n,
                                const float* x, float* y);
// Writes the indices i in [0, n) with g[i] > 0 to rows[] and g[i] to values[]; returns count.
using CompactPositiveFn = int64_t (*)(const float* g, int64_t n, int32_t* rows, float* values);

struct KernelTable {
  Isa isa;
  DotRowsFn dot_rows[3];      // indexed by WeightType
  AxpyRowsFn axpy_rows[3];
  SparseUpDownFn sparse_up_down[3];
  CompactPositiveFn compact_positive;
};

// Every ISA's table; nullptr if the CPU cannot run it. Callers keep the table they chose (an
// Engine does): there is no process-wide selection.
const KernelTable* KernelsFor(Isa isa);
// The fastest ISA this CPU runs.
Isa BestIsa();
std::string_view IsaName(Isa isa);
bool ParseIsaName(std::string_view name, Isa* out);

// Defined in the per-ISA object libraries.
const KernelTable& ScalarKernels();
const KernelTable& Avx2Kernels();
const KernelTable& Avx512Kernels();

}  // namespace zeroskip
