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

}  // namespace

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

void FfnLayerStats::Add(const FfnLayerStats& o) {
  tokens += o.tokens;
  neurons += o.neurons;
  zero_neurons += o.zero_neurons;
  flops_done += o.flops_done;
  flops_dense += o.flops_dense;
  weight_bytes_read += o.weight_bytes_read;
  sparse_tokens += o.sparse_tokens;
}

FfnRuntime::FfnRuntime(const ModelConfig& config, FfnMode mode, int threads, int64_t max_tokens,
                       DenseMatmul* matmul)
    : config_(config), mode_(mode), threads_(threads), matmul_(matmul) {
  const bool relu = config.activation == Activation::kReLU;
  if (mode == FfnMode::kSparse && !relu) {
    throw Error("", "--ffn sparse needs a model with hidden_act relu (this one uses silu)");
  }
  // Auto: a ReLU model decodes sparsely. Even at 0% zeros the sparse path reads the same bytes as
  // the dense one, so there is no sparsity level where dense decode wins by more than noise.
  sparse_decode_ = relu && mode != FfnMode::kDense;
  stats_.resize(config.layers);
  const auto f = static_cast<size_t>(config.ffn), h = static_cast<size_t>(config.hidden);
  gate_.resize(f + kNeuronAlign);
  up_.resize(f);
  active_.resize(f + kNeuronAlign);
  active_g_.resize(f + kNeuronAlign);
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

void FfnRuntime::Forward(int64_t layer, const LayerWeights& w, const float* x, int64_t n,
                         float* y) {
  if (n == 1) {
    DecodeStep(layer, w, x, y, sparse_decode_);
  } else {
    BatchedDense(layer, w, x, n, y);
  }
}

void FfnRuntime::DecodeStep(int64_t layer, const LayerWeights& w, const float* x, float* y,
                            bool sparse) {
  const KernelTable& k = Kernels();
  const int type = static_cast<int>(w.gate.dtype);
  const int64_t hidden = config_.hidden, ffn = config_.ffn;
  const size_t row_bytes = static_cast<size_t>(hidden) * DTypeSize(w.gate.dtype);
  const bool relu = config_.activation == Activation::kReLU;
  int64_t active_total = 0;

#pragma omp parallel num_threads(threads_) reduction(+ : active_total)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const auto [r0, r1] = ThreadSlice(ffn, t, nt, kNeuronAlign);
    const int64_t rows = r1 - r0;
    float* py = partial_y_.data() + static_cast<size_t>(t) * hidden;
    std::memset(py, 0, sizeof(float) * hidden);
    const auto* gate = static_cast<const uint8_t*>(w.gate.data) + r0 * row_bytes;
    const auto* up = static_cast<const uint8_t*>(w.up.data) + r0 * row_bytes;
    const auto* down = static_cast<const uint8_t*>(w.down_t.data) + r0 * row_bytes;
    if (rows > 0) {
      k.dot_rows[type](gate, hidden, nullptr, rows, hidden, x, gate_.data() + r0);
      if (sparse) {
        // Only neurons with gate > 0 survive ReLU: compact them, then up+down over those rows.
        const int64_t count =
            k.compact_positive(gate_.data() + r0, rows, active_.data() + r0, active_g_.data() + r0);
        k.sparse_up_down[type](up, down, hidden, active_.data() + r0, active_g_.data() + r0,
                               count, x, py);
        active_total += count;
      } else {
        k.dot_rows[type](up, hidden, nullptr, rows, hidden, x, up_.data() + r0);
        int64_t nonzero = 0;
        for (int64_t i = r0; i < r1; ++i) {
          const float a = relu ? std::max(gate_[i], 0.0f) : Silu(gate_[i]);
          gate_[i] = a * up_[i];
          nonzero += a != 0.0f;
        }
        k.axpy_rows[type](down, hidden, nullptr, gate_.data() + r0, rows, hidden, py);
        active_total += nonzero;
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

  FfnLayerStats& s = stats_[layer];
  const uint64_t hf = static_cast<uint64_t>(hidden) * ffn, elem = DTypeSize(w.gate.dtype);
  s.tokens += 1;
  s.neurons += ffn;
  s.zero_neurons += ffn - active_total;
  s.flops_dense += 6 * hf;
  if (sparse) {
    s.sparse_tokens += 1;
    s.flops_done += 2 * hf + 4 * static_cast<uint64_t>(hidden) * active_total;
    s.weight_bytes_read += (hf + 2 * static_cast<uint64_t>(hidden) * active_total) * elem;
  } else {
    s.flops_done += 6 * hf;
    s.weight_bytes_read += 3 * hf * elem;
  }
}

void FfnRuntime::BatchedDense(int64_t layer, const LayerWeights& w, const float* x, int64_t n,
                              float* y) {
  const int64_t ffn = config_.ffn;
  float* g = batch_gate_.data();
  float* u = batch_up_.data();
  matmul_->Linear(w.gate, x, n, g);
  matmul_->Linear(w.up, x, n, u);
  const bool relu = config_.activation == Activation::kReLU;
  int64_t zeros = 0;
#pragma omp parallel for num_threads(threads_) reduction(+ : zeros)
  for (int64_t i = 0; i < n * ffn; ++i) {
    const float a = relu ? std::max(g[i], 0.0f) : Silu(g[i]);
    zeros += a == 0.0f;
    g[i] = a * u[i];
  }
  matmul_->LinearTransposed(w.down_t, g, n, y);

  FfnLayerStats& s = stats_[layer];
  const uint64_t hf = static_cast<uint64_t>(config_.hidden) * ffn;
  s.tokens += n;
  s.neurons += n * ffn;
  s.zero_neurons += zeros;
  s.flops_dense += 6 * hf * n;
  s.flops_done += 6 * hf * n;
  s.weight_bytes_read += 3 * hf * DTypeSize(w.gate.dtype);
}

}  // namespace zeroskip
