#include "zeroskip/ffn.h"

#include <omp.h>

#include <cmath>
#include <cstring>

#include "kernels/kernels.h"
#include "model/matmul.h"
#include "zeroskip/error.h"

namespace zeroskip {
namespace {

// Slices of FFN neurons are multiples of this, so SIMD compaction works on whole vectors.
constexpr int64_t kNeuronAlign = 16;

float Silu(float g) { return g / (1.0f + std::exp(-g)); }

// SplitMix64's finalizer: a strong 64-bit mix, the basis of the counter-based draw.
uint64_t Mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

bool StochasticPick(uint64_t seed, int64_t position, int64_t layer, int64_t neuron, float p) {
  const uint64_t key = Mix(Mix(Mix(seed) ^ static_cast<uint64_t>(position)) ^
                           (static_cast<uint64_t>(layer) << 32 | static_cast<uint32_t>(neuron)));
  return static_cast<double>(key >> 11) * 0x1.0p-53 < p;
}

std::string_view FfnModeName(FfnMode mode) {
  switch (mode) {
    case FfnMode::kAuto:
      return "auto";
    case FfnMode::kSparse:
      return "sparse";
    case FfnMode::kDense:
      return "dense";
  }
  return "?";
}

bool ParseFfnMode(std::string_view name, FfnMode* out) {
  for (FfnMode m : {FfnMode::kAuto, FfnMode::kSparse, FfnMode::kDense}) {
    if (name == FfnModeName(m)) {
      *out = m;
      return true;
    }
  }
  return false;
}

std::string_view FfnActivationName(FfnActivation act) {
  switch (act) {
    case FfnActivation::kModel:
      return "model";
    case FfnActivation::kReLU:
      return "relu";
    case FfnActivation::kSiLU:
      return "silu";
    case FfnActivation::kStochastic:
      return "stoch";
  }
  return "?";
}

bool ParseFfnActivation(std::string_view name, FfnActivation* out) {
  for (FfnActivation a : {FfnActivation::kModel, FfnActivation::kReLU, FfnActivation::kSiLU,
                          FfnActivation::kStochastic}) {
    if (name == FfnActivationName(a)) {
      *out = a;
      return true;
    }
  }
  return false;
}

void FfnLayerStats::Add(const FfnLayerStats& o) {
  tokens += o.tokens;
  neurons += o.neurons;
  zero_neurons += o.zero_neurons;
  flops_done += o.flops_done;
  flops_dense += o.flops_dense;
  weight_bytes_read += o.weight_bytes_read;
  negative_gates += o.negative_gates;
  picked_negatives += o.picked_negatives;
}

FfnRuntime::FfnRuntime(const ModelConfig& config, FfnMode mode, int threads, int64_t max_tokens,
                       DenseMatmul* matmul, const ActivationOptions& activation)
    : config_(config),
      mode_(mode),
      act_(activation.kind),
      stoch_p_(activation.stoch_p),
      stoch_seed_(activation.seed),
      threads_(threads),
      matmul_(matmul) {
  if (act_ == FfnActivation::kModel) {
    act_ = config.activation == Activation::kReLU ? FfnActivation::kReLU : FfnActivation::kSiLU;
  }
  if (!(stoch_p_ >= 0.0f && stoch_p_ <= 1.0f)) throw Error("", "--stoch-p must be in [0, 1]");
  if (mode == FfnMode::kSparse && act_ == FfnActivation::kSiLU) {
    throw Error("", "--ffn sparse needs a ReLU or stochastic activation (this one is silu, "
                    "which has no zeros)");
  }
  // Auto: decode sparsely whenever the activation makes exact zeros. Even at 0% zeros the sparse
  // path reads the same bytes as the dense one, so no sparsity level makes dense decode win by
  // more than noise (docs/BENCHMARKS.md).
  sparse_decode_ = act_ != FfnActivation::kSiLU && mode != FfnMode::kDense;
  stats_.resize(config.layers);
  const auto f = static_cast<size_t>(config.ffn), h = static_cast<size_t>(config.hidden);
  gate_.resize(f);
  up_.resize(f);
  active_.resize(f);
  active_g_.resize(f);
  partial_y_.resize(static_cast<size_t>(threads) * h);
  if (max_tokens > 1) {
    batch_gate_.resize(static_cast<size_t>(max_tokens) * f);
    batch_up_.resize(static_cast<size_t>(max_tokens) * f);
  }
}

FfnRuntime::~FfnRuntime() = default;

void FfnRuntime::ResetStats() {
  for (auto& s : stats_) s = {};
}

FfnLayerStats FfnRuntime::total_stats() const {
  FfnLayerStats total;
  for (const auto& s : stats_) total.Add(s);
  return total;
}

float FfnRuntime::Activate(float g, int64_t position, int64_t layer, int64_t neuron) const {
  switch (act_) {
    case FfnActivation::kSiLU:
      return Silu(g);
    case FfnActivation::kStochastic:
      if (g < 0.0f && StochasticPick(stoch_seed_, position, layer, neuron, stoch_p_)) return Silu(g);
      [[fallthrough]];
    default:
      return std::max(g, 0.0f);
  }
}

void FfnRuntime::Forward(int64_t layer, const FfnWeights& w, const float* x, int64_t n,
                         float* y, int64_t position) {
  if (n == 1) {
    DecodeStep(layer, w, x, y, position);
  } else {
    BatchedDense(layer, w, x, n, y, position);
  }
}

void FfnRuntime::DecodeStep(int64_t layer, const FfnWeights& w, const float* x, float* y,
                            int64_t position) {
  const KernelTable& k = Kernels();
  const WeightOps& ops = k.ops(w.gate.dtype);
  const int64_t hidden = config_.hidden, ffn = config_.ffn;
  const size_t row_bytes = static_cast<size_t>(hidden) * DTypeSize(w.gate.dtype);
  const bool sparse = sparse_decode_;
  const bool stochastic = act_ == FfnActivation::kStochastic;
  int64_t active_total = 0, negatives = 0, picked = 0;

#pragma omp parallel num_threads(threads_) reduction(+ : active_total, negatives, picked)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const auto [r0, r1] = ThreadSlice(ffn, t, nt, kNeuronAlign);
    const int64_t rows = r1 - r0;
    float* py = partial_y_.data() + static_cast<size_t>(t) * hidden;
    std::memset(py, 0, sizeof(float) * hidden);
    const auto* gate = static_cast<const uint8_t*>(w.gate.data) + r0 * row_bytes;
    const auto* up = static_cast<const uint8_t*>(w.up.data) + r0 * row_bytes;
    const auto* down = static_cast<const uint8_t*>(w.down_t.data) + r0 * row_bytes;
    float* g = gate_.data() + r0;
    if (rows > 0) {
      ops.dot_rows({gate, hidden}, nullptr, rows, hidden, x, g);
      if (stochastic) {
        for (int64_t i = 0; i < rows; ++i) negatives += g[i] < 0.0f;
      }
      if (sparse) {
        int32_t* active = active_.data() + r0;
        float* active_g = active_g_.data() + r0;
        int64_t count = 0;
        if (!stochastic) {
          // Only neurons with gate > 0 survive ReLU: compact them with SIMD.
          count = k.compact_positive(g, rows, active, active_g);
        } else {
          // Picked negatives are active rows too, carrying SiLU(g).
          for (int64_t i = 0; i < rows; ++i) {
            const float a = Activate(g[i], position, layer, r0 + i);
            if (a != 0.0f) {
              active[count] = static_cast<int32_t>(i);
              active_g[count++] = a;
              picked += g[i] < 0.0f;
            }
          }
        }
        ops.sparse_up_down({up, hidden}, {down, hidden}, hidden, active, active_g, count, x, py);
        active_total += count;
      } else {
        ops.dot_rows({up, hidden}, nullptr, rows, hidden, x, up_.data() + r0);
        for (int64_t i = 0; i < rows; ++i) {
          const float a = Activate(g[i], position, layer, r0 + i);
          active_total += a != 0.0f;
          picked += stochastic && g[i] < 0.0f && a != 0.0f;
          g[i] = a * up_[r0 + i];
        }
        ops.axpy_rows({down, hidden}, nullptr, g, rows, hidden, py);
      }
    }
#pragma omp barrier
    // Reduce the private accumulators, each thread owning a slice of the output.
    const auto [c0, c1] = ThreadSlice(hidden, t, nt, kNeuronAlign);
    for (int64_t c = c0; c < c1; ++c) {
      float sum = 0.0f;
      for (int s = 0; s < nt; ++s) sum += partial_y_[static_cast<size_t>(s) * hidden + c];
      y[c] = sum;
    }
  }

  FfnLayerStats step = CallStats(1, ffn - active_total, negatives, picked);
  const uint64_t hf = static_cast<uint64_t>(hidden) * ffn, elem = DTypeSize(w.gate.dtype);
  // Sparse: the whole gate, then two rows (up, down) per active neuron.
  const uint64_t active_elems = 2 * static_cast<uint64_t>(hidden) * active_total;
  step.flops_done = sparse ? 2 * (hf + active_elems) : step.flops_dense;
  step.weight_bytes_read = (sparse ? hf + active_elems : 3 * hf) * elem;
  stats_[layer].Add(step);
}

FfnLayerStats FfnRuntime::CallStats(int64_t tokens, int64_t zeros, int64_t negatives,
                                    int64_t picked) const {
  FfnLayerStats s;
  s.tokens = tokens;
  s.neurons = tokens * config_.ffn;
  s.zero_neurons = zeros;
  s.negative_gates = negatives;
  s.picked_negatives = picked;
  s.flops_dense = 6 * static_cast<uint64_t>(config_.hidden) * config_.ffn * tokens;
  return s;
}

void FfnRuntime::BatchedDense(int64_t layer, const FfnWeights& w, const float* x, int64_t n,
                              float* y, int64_t position) {
  const int64_t ffn = config_.ffn;
  float* g = batch_gate_.data();
  float* u = batch_up_.data();
  matmul_->Linear(w.gate, x, n, g);
  matmul_->Linear(w.up, x, n, u);
  const bool stochastic = act_ == FfnActivation::kStochastic;
  int64_t zeros = 0, negatives = 0, picked = 0;
#pragma omp parallel for num_threads(threads_) reduction(+ : zeros, negatives, picked)
  for (int64_t i = 0; i < n * ffn; ++i) {
    const float a = Activate(g[i], position + i / ffn, layer, i % ffn);
    zeros += a == 0.0f;
    if (stochastic && g[i] < 0.0f) {
      ++negatives;
      picked += a != 0.0f;
    }
    g[i] = a * u[i];
  }
  matmul_->LinearTransposed(w.down_t, g, n, y);

  FfnLayerStats batch = CallStats(n, zeros, negatives, picked);
  batch.flops_done = batch.flops_dense;
  // The batch reads each weight once for all n tokens.
  batch.weight_bytes_read = 3 * static_cast<uint64_t>(config_.hidden) * ffn * DTypeSize(w.gate.dtype);
  stats_[layer].Add(batch);
}

}  // namespace zeroskip
