// Google Benchmark suite: each kernel on Llama-2-7B FFN shapes (one [11008, 4096] matrix, larger
// than the last-level cache, so every pass streams from memory) against oneDNN and Eigen dense
// baselines. Counters: bytes of weights read per second and FLOP/s. Run:
//   build/zeroskip_kernel_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <omp.h>

#include <Eigen/Core>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "bench/onednn_gemv.h"
#include "format/dtype.h"
#include "kernels/kernels.h"
#include "model/matmul.h"
#include "ops/attention.h"
#include "text/byte_level_bpe.h"

namespace zeroskip {
namespace {

constexpr int64_t kHidden = 4096, kFfn = 11008;

// One [kFfn, kHidden] matrix in f32, and the same values in every other weight type measured.
struct Matrix {
  std::vector<float> f32;
  std::map<DType, std::vector<uint8_t>> converted;
  explicit Matrix(uint32_t seed) : f32(kFfn * kHidden) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-0.03f, 0.03f);
    for (auto& v : f32) v = dist(rng);
    for (DType type : {DType::kBF16, DType::kQ8, DType::kQ4, DType::kQ4K, DType::kQ6K}) {
      std::vector<uint8_t>& bytes = converted[type];
      bytes.resize(DTypeBytes(type, f32.size()));
      ConvertMatrix(reinterpret_cast<const uint8_t*>(f32.data()), DType::kF32, kFfn, kHidden, false,
                    bytes.data(), type);
    }
  }
  const void* data(DType t) const {
    return t == DType::kF32 ? static_cast<const void*>(f32.data()) : converted.at(t).data();
  }
};

// The up matrix, a distinct down matrix (so a row pair is two reads from memory) and x.
struct Weights {
  Matrix up{1}, down{2};
  std::vector<float> x = std::vector<float>(kHidden, 0.5f);
  const std::vector<float>& f32 = up.f32;
  const void* data(DType t) const { return up.data(t); }
};

const Weights& W() {
  static const Weights w;
  return w;
}

void Counters(benchmark::State& state, double bytes, double flops) {
  state.SetBytesProcessed(static_cast<int64_t>(bytes * state.iterations()));
  state.counters["FLOP/s"] = benchmark::Counter(flops * state.iterations(),
                                                benchmark::Counter::kIsRate);
}

// y = W·x, dense, with zeroskip's kernels: args isa, weight type, threads.
void BM_DenseGemv(benchmark::State& state) {
  const auto* k = KernelsFor(static_cast<Isa>(state.range(0)));
  if (k == nullptr) return state.SkipWithError("ISA not supported by this CPU");
  const auto type = static_cast<DType>(state.range(1));
  const int threads = static_cast<int>(state.range(2));
  std::vector<float> y(kFfn);
  const auto* w = static_cast<const uint8_t*>(W().data(type));
  for (auto _ : state) {
#pragma omp parallel num_threads(threads)
    {
      const auto [b, e] = ThreadSlice(kFfn, omp_get_thread_num(), omp_get_num_threads());
      k->ops(type).dot_rows({w + b * DTypeBytes(type, kHidden), kHidden}, nullptr, e - b, kHidden,
                            W().x.data(), y.data() + b);
    }
    benchmark::DoNotOptimize(y.data());
  }
  Counters(state, double(kFfn) * DTypeBytes(type, kHidden), 2.0 * kFfn * kHidden);
}

// The same GEMV on its first kL2Rows rows, which stay in L2 from one pass to the next: the kernel's
// arithmetic rate, apart from memory (one thread; args isa, weight type).
constexpr int64_t kL2Rows = 192;
void BM_DenseGemvL2(benchmark::State& state) {
  const auto* k = KernelsFor(static_cast<Isa>(state.range(0)));
  if (k == nullptr) return state.SkipWithError("ISA not supported by this CPU");
  const auto type = static_cast<DType>(state.range(1));
  std::vector<float> y(kL2Rows);
  const auto* w = static_cast<const uint8_t*>(W().data(type));
  for (auto _ : state) {
    k->ops(type).dot_rows({w, kHidden}, nullptr, kL2Rows, kHidden, W().x.data(), y.data());
    benchmark::DoNotOptimize(y.data());
  }
  Counters(state, double(kL2Rows) * DTypeBytes(type, kHidden), 2.0 * kL2Rows * kHidden);
}

// The same GEMV through oneDNN matmul, weights packed once (the dense baseline): args weight type,
// threads.
void BM_DenseGemvOneDnn(benchmark::State& state) {
  const auto type = static_cast<DType>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  omp_set_num_threads(threads);
  OneDnnGemv gemv(kHidden, kFfn, type);
  const dnnl::memory packed =
      gemv.Prepare({.data = W().data(type), .dtype = type, .rows = kFfn, .cols = kHidden},
                   /*out_in=*/true);
  std::vector<float> y(kFfn);
  for (auto _ : state) {
    gemv.Run(packed, W().x.data(), y.data());
    benchmark::DoNotOptimize(y.data());
  }
  Counters(state, double(kFfn) * DTypeBytes(type, kHidden), 2.0 * kFfn * kHidden);
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

// Fused sparse up+down over random active sets: args isa, weight type, sparsity in %, threads.
// Iterations cycle through 8 different sets so the rows they touch (8 x up to 35 MB) do not stay
// in the last-level cache, as in real decoding where each token activates other neurons.
void BM_SparseUpDown(benchmark::State& state) {
  const auto* k = KernelsFor(static_cast<Isa>(state.range(0)));
  if (k == nullptr) return state.SkipWithError("ISA not supported by this CPU");
  const auto type = static_cast<DType>(state.range(1));
  const double sparsity = state.range(2) / 100.0;
  const int threads = static_cast<int>(state.range(3));
  constexpr int kSets = 8;
  std::mt19937 rng(2);
  std::vector<std::vector<int32_t>> sets(kSets);
  size_t total_active = 0;
  for (auto& rows : sets) {
    for (int32_t i = 0; i < kFfn; ++i) {
      if (std::uniform_real_distribution<double>()(rng) >= sparsity) rows.push_back(i);
    }
    total_active += rows.size();
  }
  const std::vector<float> gate(kFfn, 0.5f);
  std::vector<float> y(static_cast<size_t>(threads) * kHidden);
  const auto* up = W().up.data(type);
  const auto* down = W().down.data(type);
  int64_t iteration = 0;
  for (auto _ : state) {
    const std::vector<int32_t>& rows = sets[iteration++ % kSets];
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num();
      const auto [b, e] = ThreadSlice(static_cast<int64_t>(rows.size()), t, omp_get_num_threads());
      k->ops(type).sparse_up_down({up, kHidden}, {down, kHidden}, kHidden, rows.data() + b,
                                  gate.data() + b, e - b, W().x.data(), y.data() + t * kHidden);
    }
    benchmark::DoNotOptimize(y.data());
  }
  const double mean_active = double(total_active) / kSets;
  Counters(state, 2.0 * mean_active * DTypeBytes(type, kHidden), 4.0 * mean_active * kHidden);
  state.counters["active"] = mean_active;
}

// A prompt's batched product with quantized weights (quant_matmul, the register-tiled kernel),
// activations quantized once outside the loop: args isa, weight type, tokens, threads. FLOP/s is
// the figure of merit: the matrix is read once per call, so long batches are compute-bound.
void BM_QuantMatmul(benchmark::State& state) {
  const auto* k = KernelsFor(static_cast<Isa>(state.range(0)));
  if (k == nullptr) return state.SkipWithError("ISA not supported by this CPU");
  const auto type = static_cast<DType>(state.range(1));
  const int64_t n = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  const int64_t blocks = kHidden / static_cast<int64_t>(kQuantBlock);
  std::vector<float> x(n * kHidden);
  std::mt19937 rng(4);
  for (auto& v : x) v = std::normal_distribution<float>()(rng);
  std::vector<int8_t> q(x.size());
  std::vector<float> d(n * blocks), y(n * kFfn);
  k->quantize_activations(x.data(), n * blocks, q.data(), d.data());
  const auto* w = static_cast<const uint8_t*>(W().data(type));
  for (auto _ : state) {
#pragma omp parallel num_threads(threads)
    {
      const auto [b, e] = ThreadSlice(kFfn, omp_get_thread_num(), omp_get_num_threads());
      k->ops(type).quant_matmul({w + b * DTypeBytes(type, kHidden), kHidden}, e - b, kHidden,
                                q.data(), d.data(), n, y.data() + b, kFfn);
    }
    benchmark::DoNotOptimize(y.data());
  }
  Counters(state, double(kFfn) * DTypeBytes(type, kHidden), 2.0 * n * kFfn * kHidden);
}

// One decoded token's attention over `positions` cached positions, per layer of the 0.74 B
// long-context model (16 heads over 4 KV heads, head_dim 128), through 16 layers' caches in turn
// (134 MB at 2048 f32 positions: every step streams from memory, as in decode): args isa, KV
// type, positions, threads. Bytes: the keys and values read.
void BM_AttentionDecode(benchmark::State& state) {
  const auto* k = KernelsFor(static_cast<Isa>(state.range(0)));
  if (k == nullptr) return state.SkipWithError("ISA not supported by this CPU");
  const auto type = static_cast<DType>(state.range(1));
  const int64_t positions = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  constexpr int64_t kLayers = 16;
  const AttentionShape shape{.heads = 16, .kv_heads = 4, .head_dim = 128};
  const int64_t per_layer = shape.kv_heads * positions * shape.head_dim;
  std::vector<float> f32(per_layer);
  std::mt19937 rng(5);
  for (auto& v : f32) v = std::normal_distribution<float>()(rng);
  std::vector<uint8_t> cache(2 * kLayers * DTypeBytes(type, per_layer));
  for (int64_t part = 0; part < 2 * kLayers; ++part) {
    ConvertMatrix(reinterpret_cast<const uint8_t*>(f32.data()), DType::kF32, 1, per_layer, false,
                  cache.data() + part * DTypeBytes(type, per_layer), type);
  }
  std::vector<float> q(shape.heads * shape.head_dim, 0.05f), out(q.size());
  const int64_t stride = AttentionScoreStride(shape, positions);
  std::vector<float> scores(threads * stride);
  WorkerPool pool(threads);
  int64_t layer = 0;
  for (auto _ : state) {
    uint8_t* keys = cache.data() + 2 * layer * DTypeBytes(type, per_layer);
    CausalAttention(*k, shape, q.data(), 1, positions - 1, {keys, type, positions},
                    {keys + DTypeBytes(type, per_layer), type, positions}, out.data(),
                    scores.data(), stride, pool);
    benchmark::DoNotOptimize(out.data());
    layer = (layer + 1) % kLayers;
  }
  state.SetBytesProcessed(state.iterations() * 2 * DTypeBytes(type, per_layer));
}

// GPT-2 byte-level BPE on one word of random letters (a prompt without spaces is one word, and
// its merges must not grow quadratically with its length): arg bytes. The test vocabulary
// (tests/data/bpe, 361 merges).
void BM_BpeLongWord(benchmark::State& state) {
  auto read = [](const char* name) {
    std::ifstream f(std::string(ZEROSKIP_SOURCE_DIR "/tests/data/bpe/") + name);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  };
  const ByteLevelBpe bpe(read("vocab.json"), read("merges.txt"), {1, 2}, "tests/data/bpe");
  std::mt19937 rng(1);
  std::string word = " ";
  for (int64_t i = 0; i < state.range(0); ++i) word += "etaoinshrdlu"[rng() % 12];
  for (auto _ : state) benchmark::DoNotOptimize(bpe.Encode(word));
  state.SetBytesProcessed(state.iterations() * state.range(0));
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
    benchmark::DoNotOptimize(k->compact_above(g.data(), kFfn, 0.0f, rows.data(), values.data()));
  }
  state.SetItemsProcessed(state.iterations() * kFfn);
}

constexpr int kF32 = int(DType::kF32), kF16 = int(DType::kF16), kBF16 = int(DType::kBF16),
              kQ8 = int(DType::kQ8), kQ4 = int(DType::kQ4), kQ4K = int(DType::kQ4K),
              kQ6K = int(DType::kQ6K);
constexpr int kAvx2 = int(Isa::kAvx2), kAvx512 = int(Isa::kAvx512),
              kAvx512Vnni = int(Isa::kAvx512Vnni);

BENCHMARK(BM_DenseGemv)
    ->ArgNames({"isa", "type", "threads"})
    ->ArgsProduct({{kAvx2, kAvx512}, {kF32, kBF16}, {1, 2}})
    ->ArgsProduct({{kAvx2, kAvx512, kAvx512Vnni}, {kQ8, kQ4, kQ4K, kQ6K}, {1, 2}})
    ->UseRealTime();
BENCHMARK(BM_DenseGemvL2)
    ->ArgNames({"isa", "type"})
    ->ArgsProduct({{kAvx2, kAvx512}, {kF32, kBF16}})
    ->ArgsProduct({{kAvx2, kAvx512, kAvx512Vnni}, {kQ8, kQ4, kQ4K, kQ6K}})
    ->UseRealTime();
BENCHMARK(BM_DenseGemvOneDnn)
    ->ArgNames({"type", "threads"})
    ->ArgsProduct({{kF32, kBF16}, {1, 2}})
    ->UseRealTime();
BENCHMARK(BM_DenseGemvEigen)->UseRealTime();
BENCHMARK(BM_SparseUpDown)
    ->ArgNames({"isa", "type", "sparsity", "threads"})
    ->ArgsProduct({{kAvx2, kAvx512}, {kF32, kBF16}, {50, 90, 99}, {1, 2}})
    ->ArgsProduct({{kAvx2, kAvx512, kAvx512Vnni}, {kQ8, kQ4, kQ4K, kQ6K}, {90}, {1, 2}})
    ->UseRealTime();
BENCHMARK(BM_QuantMatmul)
    ->ArgNames({"isa", "type", "tokens", "threads"})
    ->ArgsProduct({{kAvx2, kAvx512Vnni}, {kQ8, kQ4}, {2, 3, 4, 16, 64}, {1, 2}})
    ->UseRealTime();
BENCHMARK(BM_AttentionDecode)
    ->ArgNames({"isa", "kv", "positions", "threads"})
    ->ArgsProduct({{kAvx2, kAvx512}, {kF32, kF16}, {2048}, {1, 2}})
    ->UseRealTime();
BENCHMARK(BM_BpeLongWord)->Arg(20000)->Arg(200000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CompactPositive)->ArgNames({"isa"})->Args({kAvx2})->Args({kAvx512});

}  // namespace
}  // namespace zeroskip

BENCHMARK_MAIN();
