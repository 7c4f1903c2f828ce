// One decode FFN step at controlled sparsity. Sparsity comes from the input, as in a real model:
// x[0:k] is a constant 1 and every gate row has W_gate[i, 0:k] = -b/k, so gate_i = (random part) -
// b and b = σ·Φ⁻¹(s) makes a fraction s of the gates non-positive. The rest of x is redrawn every
// step, so the active set is random per step (nothing the kernels could exploit).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>

#include "bench/onednn_gemv.h"
#include "engine/workspace.h"
#include "format/dtype.h"
#include "format/shadow_gate.h"
#include "zeroskip/bench.h"
#include "zeroskip/engine.h"
#include "zeroskip/error.h"

namespace zeroskip {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Φ⁻¹(p) by bisection on erfc: precise enough for a benchmark knob.
double NormalQuantile(double p) {
  if (p <= 0) return -8;
  if (p >= 1) return 8;
  double lo = -8, hi = 8;
  for (int i = 0; i < 100; ++i) {
    const double mid = 0.5 * (lo + hi);
    (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

struct Layer {
  std::vector<uint8_t> gate, up, down_t;  // [ffn, hidden] each
  std::vector<uint8_t> shadow;            // [ffn, hidden] q8, when the shadow gate is timed
  std::vector<float> shadow_norms;        // [2, ffn]
  FfnWeights views;
  dnnl::memory onednn_gate, onednn_up, onednn_down;  // the same, in oneDNN's preferred layout
};

void Fill(std::vector<uint8_t>& bytes, int64_t rows, int64_t cols, DType dtype, float scale,
          std::mt19937_64& rng) {
  bytes.resize(static_cast<size_t>(rows) * DTypeBytes(dtype, cols));
  std::vector<float> row(cols);
  // Uniform in [-scale√3, scale√3]: standard deviation `scale`, cheap to draw.
  std::uniform_real_distribution<float> dist(-scale * 1.7320508f, scale * 1.7320508f);
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : row) v = dist(rng);
    ConvertMatrix(reinterpret_cast<const uint8_t*>(row.data()), DType::kF32, 1, cols, false,
                  bytes.data() + r * DTypeBytes(dtype, cols), dtype);
  }
}

// The offset is spread over a block of k columns, not put in one: a single weight of -b would set
// its q8 block's scale (for q8 weights and the shadow gate) far above the other weights'.
constexpr int64_t kOffsetColumns = 32;

void SetGateOffset(Layer& layer, int64_t ffn, int64_t hidden, DType dtype, float offset) {
  const int64_t k = std::min(kOffsetColumns, hidden - 1);
  const std::vector<float> part(static_cast<size_t>(k), offset / static_cast<float>(k));
  for (int64_t r = 0; r < ffn; ++r) {
    ConvertMatrix(reinterpret_cast<const uint8_t*>(part.data()), DType::kF32, 1, k, false,
                  layer.gate.data() + r * DTypeBytes(dtype, hidden), dtype);
  }
}

}  // namespace

std::vector<FfnBenchResult> RunFfnBench(const FfnBenchOptions& opt,
                                        const std::function<void(const std::string&)>& log) {
  const int64_t d = opt.hidden, f = opt.ffn;
  if (d < 2 || f < 1) throw Error("", "bench ffn: --d must be >= 2 and --f >= 1");
  const uint64_t layer_bytes = 3 * static_cast<uint64_t>(f) * DTypeBytes(opt.dtype, d);
  // Cycle through enough layers that every step streams its weights from memory.
  const uint64_t llc = std::max<uint64_t>(LastLevelCacheBytes(), 32u << 20);
  // At least one layer per timed path, so each step reads a layer the previous path did not.
  const uint64_t paths = opt.shadow_gate ? 4 : 3;
  const int layers =
      static_cast<int>(std::clamp<uint64_t>((4 * llc + layer_bytes - 1) / layer_bytes, paths, 64));
  // Weights are zero-filled when allocated: refuse what would not fit rather than be OOM-killed.
  if (layers * layer_bytes > PhysicalMemoryBytes() / 4 * 3) {
    throw Error("", "bench ffn: " + std::to_string(layers) + " layers of --d " + std::to_string(d) +
                        " x --f " + std::to_string(f) + " need " +
                        std::to_string((layers * layer_bytes) >> 30) +
                        " GiB, more than this machine can hold");
  }
  if (log) {
    log("bench ffn: hidden " + std::to_string(d) + ", ffn " + std::to_string(f) + ", " +
        std::string(DTypeName(opt.dtype)) + ", " + std::to_string(layers) + " layers of " +
        std::to_string(layer_bytes >> 20) + " MiB (last-level cache " +
        std::to_string(llc >> 20) + " MiB), " + std::to_string(opt.threads) + " threads");
  }
  omp_set_num_threads(opt.threads);  // oneDNN (the baseline) follows OpenMP's thread count
  std::mt19937_64 rng(opt.seed);
  std::vector<Layer> weights(layers);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  for (auto& l : weights) {
    Fill(l.gate, f, d, opt.dtype, scale, rng);
    Fill(l.up, f, d, opt.dtype, scale, rng);
    Fill(l.down_t, f, d, opt.dtype, scale, rng);
    l.views.gate = {.data = l.gate.data(), .dtype = opt.dtype, .rows = f, .cols = d};
    l.views.up = {.data = l.up.data(), .dtype = opt.dtype, .rows = f, .cols = d};
    l.views.down_t = {.data = l.down_t.data(), .dtype = opt.dtype,
                      .rows = f, .cols = d};
  }

  ModelConfig config;
  config.hidden = d;
  config.ffn = f;
  config.layers = layers;
  config.activation = Activation::kReLU;
  const KernelTable& kernels = ChooseKernels(opt.isa);
  DenseMatmul matmul(kernels, opt.threads);
  std::vector<float> x(d), y(d), gate(f), up(f);
  std::normal_distribution<float> normal;

  // The oneDNN dense step: gate and up GEMVs, ReLU product, down GEMV (the primitives and the
  // packed weights are prepared once, outside the timing).
  OneDnnGemv up_proj(d, f, opt.dtype), down_proj(f, d, opt.dtype);
  auto dense_step = [&](const Layer& l) {
    up_proj.Run(l.onednn_gate, x.data(), gate.data());
    up_proj.Run(l.onednn_up, x.data(), up.data());
    for (int64_t i = 0; i < f; ++i) gate[i] = std::max(gate[i], 0.0f) * up[i];
    down_proj.Run(l.onednn_down, gate.data(), y.data());
  };

  std::vector<FfnBenchResult> results;
  for (double s : opt.sparsity) {
    // The random part of each gate has standard deviation scale·√(random columns), x ~ N(0, 1).
    const int64_t random_columns = d - std::min(kOffsetColumns, d - 1);
    const float offset =
        static_cast<float>(-scale * std::sqrt(double(random_columns)) * NormalQuantile(s));
    for (auto& l : weights) {
      SetGateOffset(l, f, d, opt.dtype, offset);
      l.onednn_gate = up_proj.Prepare(l.views.gate, /*out_in=*/true);
      l.onednn_up = up_proj.Prepare(l.views.up, true);
      l.onednn_down = down_proj.Prepare(l.views.down_t, false);
      if (opt.shadow_gate) {
        l.shadow.resize(static_cast<size_t>(f) * DTypeBytes(DType::kQ8, d));
        l.shadow_norms.resize(2 * static_cast<size_t>(f));
        BuildShadowGate(l.gate.data(), opt.dtype, f, d, l.shadow.data(), l.shadow_norms.data());
        l.views.gate_shadow = {.data = l.shadow.data(), .dtype = DType::kQ8, .rows = f, .cols = d};
        l.views.gate_shadow_norms = l.shadow_norms.data();
      }
    }
    FfnRuntime runtime(config, kernels, matmul, opt.threads, 1);
    const FfnSettings sparse = FfnSettings::Resolve(config, FfnMode::kSparse, {});
    const FfnSettings own_dense = FfnSettings::Resolve(config, FfnMode::kDense, {});
    const FfnSettings shadow =
        FfnSettings::Resolve(config, FfnMode::kSparse, {}, GateMode::kShadow);
    FfnLayerStats st, own_stats, shadow_stats;
    std::vector<double> dense_ms, sparse_ms, own_ms, shadow_ms;
    const int warmup = 2 * layers;
    for (int step = 0; step < warmup + opt.steps; ++step) {
      for (auto& v : x) v = normal(rng);
      std::fill_n(x.begin(), d - random_columns, 1.0f);
      const int l = step % layers;
      // Interleaved, so all three see the same machine state; each reads a layer the previous
      // step did not touch.
      const auto t0 = Clock::now();
      dense_step(weights[l]);
      const auto t1 = Clock::now();
      runtime.Forward(sparse, l, weights[(l + 1) % layers].views, x.data(), 1, y.data(), 0, &st);
      const auto t2 = Clock::now();
      runtime.Forward(own_dense, l, weights[(l + 2) % layers].views, x.data(), 1, y.data(), 0,
                      &own_stats);
      const auto t3 = Clock::now();
      if (opt.shadow_gate) {
        runtime.Forward(shadow, l, weights[(l + 3) % layers].views, x.data(), 1, y.data(), 0,
                        &shadow_stats);
      }
      const auto t4 = Clock::now();
      if (step == warmup) st = shadow_stats = {};
      if (step >= warmup) {
        dense_ms.push_back(Ms(t0, t1));
        sparse_ms.push_back(Ms(t1, t2));
        own_ms.push_back(Ms(t2, t3));
        shadow_ms.push_back(Ms(t3, t4));
      }
    }
    FfnBenchResult r;
    r.sparsity = s;
    r.zero_fraction = st.zero_fraction();
    r.dtype = std::string(DTypeName(opt.dtype));
    r.threads = opt.threads;
    r.layers = layers;
    r.dense_ms = Median(dense_ms);
    r.sparse_ms = Median(sparse_ms);
    r.own_dense_ms = Median(own_ms);
    r.speedup = r.dense_ms / r.sparse_ms;
    if (opt.shadow_gate) {
      r.shadow_ms = Median(shadow_ms);
      r.shadow_speedup = r.dense_ms / r.shadow_ms;
      r.certified_fraction = shadow_stats.certified_fraction();
    }
    r.dense_gflop = 6.0 * d * f / 1e9;
    r.sparse_gflop = double(st.flops_done) / st.tokens / 1e9;
    r.dense_gb_s = layer_bytes / (r.dense_ms * 1e-3) / 1e9;
    r.gb_s = double(st.weight_bytes_read) / st.tokens / (r.sparse_ms * 1e-3) / 1e9;
    results.push_back(r);
    if (log) {
      char line[256];
      std::snprintf(
          line, sizeof line,
          "  sparsity %.2f (measured %.3f): dense %.3f ms, sparse %.3f ms, speedup %.2fx; "
          "shadow gate %.3f ms, %.2fx (%.1f%% of zeros certified)",
          s, r.zero_fraction, r.dense_ms, r.sparse_ms, r.speedup, r.shadow_ms, r.shadow_speedup,
          100 * r.certified_fraction);
      log(line);
    }
  }
  return results;
}

}  // namespace zeroskip
