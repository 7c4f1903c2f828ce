// The FFN runtime: y = W_down · (act(W_gate·x) ⊙ (W_up·x)) for one layer, choosing how.
//
// For a ReLU model at decode time it computes the gate densely, compacts the active neurons
// (gate > 0) and runs the fused sparse up/down kernel over only those rows; otherwise it runs
// the dense path. The model code calls Forward and never knows which path ran. It owns its
// scratch buffers (sized once) and per-layer statistics; the decode path allocates nothing.
// Threads split rows without atomics: each thread owns a slice of the FFN neurons and a private
// output accumulator, reduced once at the end.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "zeroskip/config.h"
#include "zeroskip/weights.h"

namespace zeroskip {

class DenseMatmul;

enum class FfnMode { kAuto, kSparse, kDense };
std::string_view FfnModeName(FfnMode mode);
bool ParseFfnMode(std::string_view name, FfnMode* out);

// The FFN hidden activation at inference. kModel: the model's own (relu or silu). kStochastic
// (the paper's inference-time use of stochastic activations): a gate g >= 0 passes unchanged;
// g < 0 becomes SiLU(g) with probability p, else 0. The draw is a counter-based hash of (seed,
// absolute position, layer, neuron): the same seed gives the same output whatever the thread
// count or how the tokens were batched.
enum class FfnActivation { kModel, kReLU, kSiLU, kStochastic };
std::string_view FfnActivationName(FfnActivation act);
bool ParseFfnActivation(std::string_view name, FfnActivation* out);

struct ActivationOptions {
  FfnActivation kind = FfnActivation::kModel;
  float stoch_p = 0.5f;
  uint64_t seed = 0;
};

// True when the stochastic activation keeps the negative gate of this neuron (probability p).
bool StochasticPick(uint64_t seed, int64_t position, int64_t layer, int64_t neuron, float p);

struct FfnLayerStats {
  uint64_t tokens = 0;
  uint64_t neurons = 0;       // tokens * ffn
  uint64_t zero_neurons = 0;  // act(gate) == 0 exactly
  uint64_t flops_done = 0;    // multiply-adds counted as 2 FLOPs
  uint64_t flops_dense = 0;   // what the dense FFN would have done
  uint64_t weight_bytes_read = 0;
  uint64_t negative_gates = 0;    // stochastic activation: gates < 0 ...
  uint64_t picked_negatives = 0;  // ... and how many of them were kept as SiLU(g)

  double zero_fraction() const { return neurons ? double(zero_neurons) / neurons : 0.0; }
  void Add(const FfnLayerStats& o);
};

class FfnRuntime {
 public:
  // max_tokens: the largest batch Forward will see. `matmul` serves batched (prefill) calls.
  FfnRuntime(const ModelConfig& config, FfnMode mode, int threads, int64_t max_tokens,
             DenseMatmul* matmul, const ActivationOptions& activation = {});
  ~FfnRuntime();

  // x: [n, hidden] normalized input for the tokens at positions position..position+n-1;
  // y: [n, hidden] output (overwritten).
  void Forward(int64_t layer, const FfnWeights& w, const float* x, int64_t n, float* y,
               int64_t position = 0);

  FfnActivation activation() const { return act_; }
  bool sparse_decode() const { return sparse_decode_; }
  const std::vector<FfnLayerStats>& layer_stats() const { return stats_; }
  FfnLayerStats total_stats() const;
  void ResetStats();

 private:
  void DecodeStep(int64_t layer, const FfnWeights& w, const float* x, float* y, int64_t position);
  void BatchedDense(int64_t layer, const FfnWeights& w, const float* x, int64_t n, float* y,
                    int64_t position);
  float Activate(float g, int64_t position, int64_t layer, int64_t neuron) const;
  // The statistics every call records; callers add flops_done and weight_bytes_read.
  FfnLayerStats CallStats(int64_t tokens, int64_t zeros, int64_t negatives, int64_t picked) const;

  ModelConfig config_;
  FfnMode mode_;
  FfnActivation act_;  // resolved: never kModel
  float stoch_p_;
  uint64_t stoch_seed_;

  bool sparse_decode_;
  int threads_;
  DenseMatmul* matmul_;
  std::vector<FfnLayerStats> stats_;
  // Decode scratch; thread t works on its own slice of the ffn neurons in each.
  std::vector<float> gate_;       // [ffn] gate pre-activations, then activations
  std::vector<float> up_;         // [ffn] up projections (dense path)
  std::vector<int32_t> active_;   // [ffn] active neuron indices (slice-relative), per slice
  std::vector<float> active_g_;   // [ffn] their gate activations
  std::vector<float> partial_y_;  // [threads, hidden] private accumulators
  // Batched scratch.
  std::vector<float> batch_gate_;  // [max_tokens, ffn]
  std::vector<float> batch_up_;    // [max_tokens, ffn]
};

}  // namespace zeroskip
