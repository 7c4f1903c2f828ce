// Google Benchmark suite: each kernel on Llama-2-7B FFN shapes (one [11008, 4096] matrix, larger
// than the last-level cache, so every pass streams from memory) against oneDNN and Eigen dense
// baselines. Counters: bytes of weights read per second and FLOP/s. Run:
//   build/zeroskip_kernel_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <omp.h>

#include <Eigen/Core>
#include <random>

#include "bench/onednn_gemv.h"
#include "format/dtype.h"
#include "kernels/kernels.h"
#include "model/matmul.h"

namespace zeroskip {
namespace {

constexpr int64_t kHidden = 4096, kFfn = 11008;

struct Weights {
  std::vector<float> f32;      // [kFfn, kHidden]
  std::vector<uint16_t> bf16;  // the same values rounded to bf16
  std::vector<float> x;        // [kHidden]
  Weights() : f32(kFfn * kHidden), bf16(kFfn * kHidden), x(kHidden) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> dist(-0.03f, 0.03f);
    for (auto& v : f32) v = dist(rng);
    for (auto& v : x) v = dist(rng) * 30;
    ConvertMatrix(reinterpret_cast<const uint8_t*>(f32.data()), DType::kF32, 1, f32.size(), false,
                  reinterpret_cast<uint8_t*>(bf16.data()), DType::kBF16);
  }
  const void* data(WeightType t) const {
    return t == WeightType::kF32 ? static_cast<const void*>(f32.data()) : bf16.data();
  }
};

const Weights& W() {
  static const Weights w;
  return w;
}

size_t ElemBytes(WeightType t) { return t == WeightType::kF32 ? 4 : 2; }

void Counters(benchmark::State& state, double bytes, double flops) {
  state.SetBytesProcessed(static_cast<int64_t>(bytes * state.iterations()));
  state.counters["FLOP/s"] = benchmark::Counter(flops * state.iterations(),
                                                benchmark::Counter::kIsRate);
}

// y = W·x, dense, with zeroskip's kernels: args isa, weight type, threads.
void BM_DenseGemv(benchmark::State& state) {
  const auto* k = KernelsFor(static_cast<Isa>(state.range(0)));
  if (k == nullptr) return state.SkipWithError("ISA not supported by this CPU");
  const auto type = static_cast<WeightType>(state.range(1));
  const int threads = static_cast<int>(state.range(2));
  std::vector<float> y(kFfn);
  const auto* w = static_cast<const uint8_t*>(W().data(type));
  for (auto _ : state) {
#pragma omp parallel num_threads(threads)
    {
      const auto [b, e] = ThreadSlice(kFfn, omp_get_thread_num(), omp_get_num_threads());
      k->dot_rows[int(type)](w + b * kHidden * ElemBytes(type), kHidden, nullptr, e - b, kHidden,
                             W().x.data(), y.data() + b);
    }
    benchmark::DoNotOptimize(y.data());
  }
  Counters(state, double(kFfn) * kHidden * ElemBytes(type), 2.0 * kFfn * kHidden);
}

// The same GEMV through oneDNN matmul, weights packed once (the dense baseline): args weight type,
// threads.
void BM_DenseGemvOneDnn(benchmark::State& state) {
  const auto type = static_cast<WeightType>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  omp_set_num_threads(threads);
  OneDnnGemv gemv(kHidden, kFfn, static_cast<DType>(type));
  const dnnl::memory packed =
      gemv.Prepare({W().data(type), static_cast<DType>(type), kFfn, kHidden}, /*out_in=*/true);
  std::vector<float> y(kFfn);
  for (auto _ : state) {
    gemv.Run(packed, W().x.data(), y.data());
    benchmark::DoNotOptimize(y.data());
  }
  Counters(state, double(kFfn) * kHidden * ElemBytes(type), 2.0 * kFfn * kHidden);
}

// Eigen's GEMV (single-threaded without an Eigen thread pool), f32.
void BM_DenseGemvEigen(benchmark::State& state) {
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const Matrix> w(W().f32.data(), kFfn, kHidden);
  const Eigen::Map<const Eigen::VectorXf> x(W().x.data(), kHidden);
  Eigen::VectorXf y(kFfn);
  for (auto _ : state) {
    y.noalias() = w * x;
    benchmark::DoNotOptimize(y.data());
  }
  Counters(state, double(kFfn) * kHidden * 4, 2.0 * kFfn * kHidden);
}

// Fused sparse up+down over a random active set: args isa, weight type, sparsity in %, threads.
// The "down" matrix is the same buffer (layout [ffn, hidden] either way); a row pair is 2 reads.
void BM_SparseUpDown(benchmark::State& state) {
  const auto* k = KernelsFor(static_cast<Isa>(state.range(0)));
  if (k == nullptr) return state.SkipWithError("ISA not supported by this CPU");
  const auto type = static_cast<WeightType>(state.range(1));
  const double sparsity = state.range(2) / 100.0;
  const int threads = static_cast<int>(state.range(3));
  std::mt19937 rng(2);
  std::vector<int32_t> rows;
  std::vector<float> gate;
  for (int32_t i = 0; i < kFfn; ++i) {
    if (std::uniform_real_distribution<double>()(rng) >= sparsity) {
      rows.push_back(i);
      gate.push_back(0.5f);
    }
  }
  std::vector<float> y(static_cast<size_t>(threads) * kHidden);
  const auto* w = W().data(type);
  for (auto _ : state) {
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num();
      const auto [b, e] = ThreadSlice(static_cast<int64_t>(rows.size()), t, omp_get_num_threads());
      k->sparse_up_down[int(type)](w, w, kHidden, rows.data() + b, gate.data() + b, e - b,
                                   W().x.data(), y.data() + t * kHidden);
    }
    benchmark::DoNotOptimize(y.data());
  }
  Counters(state, 2.0 * rows.size() * kHidden * ElemBytes(type), 4.0 * rows.size() * kHidden);
  state.counters["active"] = static_cast<double>(rows.size());
}

void BM_CompactPositive(benchmark::State& state) {
  const auto* k = KernelsFor(static_cast<Isa>(state.range(0)));
  if (k == nullptr) return state.SkipWithError("ISA not supported by this CPU");
  std::mt19937 rng(3);
  std::vector<float> g(kFfn);
  for (auto& v : g) v = std::uniform_real_distribution<float>(-1.0f, 0.11f)(rng);  // ~90% <= 0
  std::vector<int32_t> rows(kFfn + 16);
  std::vector<float> values(kFfn + 16);
  for (auto _ : state) {
    benchmark::DoNotOptimize(k->compact_positive(g.data(), kFfn, rows.data(), values.data()));
  }
  state.SetItemsProcessed(state.iterations() * kFfn);
}

constexpr int kF32 = int(WeightType::kF32), kBF16 = int(WeightType::kBF16);
constexpr int kAvx2 = int(Isa::kAvx2), kAvx512 = int(Isa::kAvx512);

BENCHMARK(BM_DenseGemv)
    ->ArgNames({"isa", "type", "threads"})
    ->ArgsProduct({{kAvx2, kAvx512}, {kF32, kBF16}, {1, 2}})
    ->UseRealTime();
BENCHMARK(BM_DenseGemvOneDnn)->ArgNames({"type", "threads"})->ArgsProduct({{kF32, kBF16}, {1, 2}})
    ->UseRealTime();
BENCHMARK(BM_DenseGemvEigen)->UseRealTime();
BENCHMARK(BM_SparseUpDown)
    ->ArgNames({"isa", "type", "sparsity", "threads"})
    ->ArgsProduct({{kAvx2, kAvx512}, {kF32, kBF16}, {50, 90, 99}, {1, 2}})
    ->UseRealTime();
BENCHMARK(BM_CompactPositive)->ArgNames({"isa"})->Args({kAvx2})->Args({kAvx512});

}  // namespace
}  // namespace zeroskip

BENCHMARK_MAIN();
