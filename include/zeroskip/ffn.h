// What a caller chooses and sees of the FFN: y = W_down · (act(W_gate·x) ⊙ (W_up·x)).
//
// The path (sparse or dense), the activation used at inference and the per-layer statistics a
// session reports. The runtime that computes the FFN is internal (src/ffn/ffn_runtime.h): the
// model code calls it and never knows which path ran.
#pragma once

#include <cstdint>
#include <string_view>

namespace zeroskip {

enum class FfnMode { kAuto, kSparse, kDense };
std::string_view FfnModeName(FfnMode mode);
bool ParseFfnMode(std::string_view name, FfnMode* out);

// How a decode step finds the gate's zeros. kDense: every row of the gate. kShadow: the gate's
// int8 shadow first, then the full gate only for the rows its bound cannot certify as zero; the
// output is bit-identical (docs/SHADOW_GATE.md). Needs a file with shadow gates (`zeroskip
// shadow`), the sparse FFN and plain ReLU. kAuto: the shadow for layers that have one and whose
// gate is a float type; a q8/q4 gate is already int8-sized (docs/BENCHMARKS.md, "Shadow gate").
enum class GateMode { kAuto, kDense, kShadow };
std::string_view GateModeName(GateMode mode);
bool ParseGateMode(std::string_view name, GateMode* out);

// The FFN hidden activation at inference. kModel: the model's own (relu, silu, or fatrelu with
// its threshold; a dReLU model's ReLU on up applies whatever is chosen here). kStochastic
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
  uint64_t shadow_rows = 0;       // neurons whose gate went through the shadow first ...
  uint64_t shadow_zeros = 0;      // ... the zeros among them ...
  uint64_t certified_rows = 0;    // ... and those certified zero without their full gate row
  // dReLU, sparse decode: neurons with act(gate) != 0 whose up was not positive (down skipped).
  uint64_t up_zero_neurons = 0;
  uint64_t pass_rows = 0;       // neurons per call, summed over calls ...
  uint64_t pass_rows_read = 0;  // ... and those whose up/down rows a call read: in a batch, the
                                // neurons active for at least one of its tokens
  // Decoding from a neuron file (a memory budget smaller than the model): the parts of bundles
  // decode steps needed (an uncertain row's gate row, an active row's up and down rows), those
  // of them read from the file (the rest were cached), and the bytes read.
  uint64_t neuron_fetches = 0, neuron_reads = 0, neuron_bytes_read = 0;
  // ... and the bundles a prompt's batched pass copied into the cache from the rows it read.
  uint64_t neuron_warmed = 0;

  double zero_fraction() const { return neurons ? double(zero_neurons) / neurons : 0.0; }
  // The share of the zeros the shadow certified (the rest cost a full gate row each).
  double certified_fraction() const {
    return shadow_zeros ? double(certified_rows) / shadow_zeros : 0.0;
  }
  uint64_t uncertain_rows() const { return shadow_rows - certified_rows; }
  void Add(const FfnLayerStats& o);
};

}  // namespace zeroskip
