// The FFN runtime: y = W_down · (act(W_gate·x) ⊙ (W_up·x)) for one layer, choosing how; for
// dReLU models y = W_down · (act(W_gate·x) ⊙ relu(W_up·x)); for ungated ones (OPT) y = W_down ·
// act(W_gate·x + b_gate) + b_down, fc1 as the gate: the sparse path reads only the active rows
// of W_down (fc2) and no up at all.
//
// One token (decode) runs in steps, each thread on its own slice of the FFN neurons, all in one
// phase of the WorkerPool (a slice is a chunk: the same sums whichever thread runs it):
//   gate rows      the gate GEMV over the slice; with a shadow gate (docs/SHADOW_GATE.md) the
//                  int8 shadow's GEMV first, then the full gate only for the rows its bound
//                  does not certify as zero (the certified ones get g = 0)
//   activate       act(gate) per neuron; the sparse path compacts the nonzero ones into
//                  (row, coefficient) lists, the dense path keeps every row
//   up/down        sparse: the fused up+down kernel over the active rows only (dReLU, or up
//                  and down of different weight types: up for the active rows, then down for
//                  them, dReLU only for those whose up is positive); dense: up for every row,
//                  then the down projection weighted by act(gate) ⊙ up
//   reduce         the slices' private [hidden] accumulators summed into y in slice order
//                  by the caller (no atomics, no second phase)
// A batch (prefill) runs the gate as one batched matmul. The sparse path then works neuron by
// neuron: up only for the tokens whose activation is nonzero, and the down projection as rows
// added to those tokens' outputs, each thread owning a slice of the output columns (every output
// sums its terms in neuron order, so the result does not depend on the thread count). The dense
// path runs up and down as batched matmuls too.
//
// The runtime is shared by every session of an Engine: it owns scratch sized once (the decode
// path allocates nothing) but no per-sequence state. The settings (path, activation) and the
// statistics belong to the caller and come in with each call.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "ffn/neuron_cache.h"
#include "kernels/kernels.h"
#include "zeroskip/config.h"
#include "zeroskip/ffn.h"
#include "zeroskip/weights.h"

namespace zeroskip {

class DenseMatmul;

// How one sequence runs its FFN, resolved against the model.
struct FfnSettings {
  FfnActivation act = FfnActivation::kReLU;  // never kModel
  // kReLU keeps g only where g > threshold: 0 for ReLU, the model's hidden_act_param for FATReLU
  // (never negative, so every zero of ReLU is one of FATReLU and the shadow gate stays exact).
  float threshold = 0.0f;
  // dReLU (the model's architecture): up goes through ReLU too, act(g) * relu(u); the sparse
  // path then skips the down row of every active neuron whose up is not positive.
  bool relu_up = false;
  float stoch_p = 0.5f;
  uint64_t seed = 0;
  bool sparse_decode = true;
  GateMode gate = GateMode::kDense;  // kAuto or kShadow only with sparse decode and ReLU

  // Throws Error on a combination that cannot run (a sparse FFN with an activation that has no
  // zeros, p outside [0, 1], a shadow gate without sparse ReLU).
  static FfnSettings Resolve(const ModelConfig& config, FfnMode mode,
                             const ActivationOptions& activation, GateMode gate = GateMode::kDense);
  // Whether the decode step of a layer with these weights goes through its shadow gate.
  bool UsesShadow(const FfnWeights& w) const;
  // Whether tokens of sequences with these settings and `other`'s can share one batched FFN call
  // and each get what it would get alone: the same path and activation, and no stochastic draws
  // (they depend on each token's position and its sequence's seed).
  bool Batchable(const FfnSettings& other) const;
};

class FfnRuntime {
 public:
  // max_tokens: the largest batch Forward will see. `matmul` serves batched (prefill) calls.
  FfnRuntime(const ModelConfig& config, const KernelTable& kernels, DenseMatmul& matmul,
             int threads, int64_t max_tokens);

  // x: [n, hidden] normalized input for the tokens at positions position..position+n-1;
  // y: [n, hidden] output (overwritten). Adds this call's statistics to *stats.
  void Forward(const FfnSettings& settings, int64_t layer, const FfnWeights& w, const float* x,
               int64_t n, float* y, int64_t position, FfnLayerStats* stats);

  // Decode steps of the sparse gated FFN read their up, down and (with the shadow gate) gate rows
  // through `cache` (docs/FORMAT.md, "Neuron file"), into the same kernels, so they compute
  // what they compute in memory bit for bit. Null: every row from the weights' own memory.
  // A prompt's batched pass (any batch of more than one token) then leaves the neurons it
  // activated most often in the cache (NeuronCache::Warm), copied from the rows it read.
  void UseNeuronCache(NeuronCache* cache) {
    neurons_ = cache;
    warm_counts_.assign(static_cast<size_t>(config_.ffn), 0);
  }

  // The statistics of rows [row, row + rows) of the last Forward on their own: their zeros and
  // the work they alone would need (the weights the call read are in its own statistics).
  FfnLayerStats RowStats(const FfnSettings& settings, int64_t row, int64_t rows) const;

 private:
  // One thread's share of a decode step: neurons [r0, r0 + rows) and its scratch.
  struct Slice {
    int64_t r0 = 0, rows = 0;  // neurons [r0, r0 + rows)
    float* g = nullptr;        // [rows] gate pre-activations, then (dense) coefficients
    int64_t active = 0;        // neurons with act(g) != 0
    int64_t negatives = 0;     // stochastic: gates < 0 ...
    int64_t picked = 0;        // ... kept as SiLU(g)
    int64_t uncertain = 0;     // shadow gate: rows whose full gate row was read
    int64_t up_zeros = 0;      // dReLU, sparse: active neurons whose up was not positive
  };
  struct Call;

  // Where the active rows of a slice are: each matrix's rows, and their indices in both.
  struct ActiveRows {
    WeightRows up, down;
    int32_t* rows;  // [slice's active] (dReLU compacts them in place)
  };

  FfnLayerStats DecodeStep(const Call& call, const float* x, float* y);
  // A decode step whose FFN rows come from the neuron cache: what each slice needs (with the
  // shadow gate, its uncertain rows, certified in pieces, each piece's gate rows requested before
  // the next: with up and down for those the shadow estimates positive), then for each part of
  // the bundles it reads (those gate rows; the active rows' up and down rows) a wait for all
  // slices' reads and a phase of the usual kernels on the slots.
  FfnLayerStats DecodeStepFromCache(const Call& call, const float* x, float* y);
  // Requests part_of(slice, row) of the neurons each slice lists in `rows` (slice-relative), from
  // the first not requested yet (requested_) to its s.*count, and records their slots in
  // neuron_slot_ (their bytes are there after the cache's Wait); returns how many.
  template <typename PartOf>
  int64_t RequestRows(const Call& call, const std::vector<int32_t>& rows, int64_t Slice::*count,
                      PartOf part_of);
  // The slots of a slice's rows[0, n) (slice-relative neurons), in its part of slot_rows_.
  int32_t* SlotsOf(const Slice& s, const int32_t* rows, int64_t n);
  // Slice t of a decode step, reset; and its private accumulator, zeroed.
  Slice& StartSlice(int t);
  float* PartialY(int t);
  // The slices' accumulators summed into y, and the step's statistics.
  FfnLayerStats FinishDecodeStep(const Call& call, float* y);
  FfnLayerStats BatchedDense(const Call& call, const float* x, int64_t n, float* y);
  FfnLayerStats BatchedSparse(const Call& call, const float* x, int64_t n, float* y);
  // After a batch of n tokens: NeuronCache::Warm with each neuron's count of tokens it was
  // active for; returns the bundles copied.
  int64_t WarmNeuronCache(const Call& call, int64_t n);
  // The stochastic activation's counts over a batch, added to by every chunk.
  struct BatchCounts {
    std::atomic<int64_t> negatives = 0, picked = 0;
  };
  // act(g) in place over tokens [k0, k1) and neurons [i0, i1) of a batch's [n, ffn] gate
  // pre-activations; adds each token's zeros to row_zeros_ (cleared by the caller) and the
  // stochastic activation's negatives and picked negatives to `counts`.
  void ActivateBlock(const Call& call, float* g, int64_t k0, int64_t k1, int64_t i0, int64_t i1,
                     BatchCounts& counts);
  // The zeros of the last batch of n tokens: the sum of row_zeros_.
  int64_t BatchZeros(int64_t n) const;

  // The phases of a decode step, run by each thread on its slice.
  void GateRows(const Call& call, Slice& s, const float* x);
  void ShadowGateRows(const Call& call, Slice& s, const float* x);
  // The shadow gate's two halves: the rows it cannot certify (of the slice's rows [begin, end),
  // added to its uncertain ones), then their full gate rows from `gate` (row rows[k] for the
  // k-th uncertain row).
  void CertifyShadowRows(const Call& call, Slice& s, int64_t begin, int64_t end);
  void FullGateRows(const Call& call, Slice& s, const float* x, WeightRows gate,
                    const int32_t* rows);
  void ActivateRows(const Call& call, Slice& s);
  void UpDownRows(const Call& call, Slice& s, const float* x, float* partial_y);
  // The sparse gated FFN's up and down over a slice's active rows.
  void UpDownActive(const Call& call, Slice& s, const float* x, float* partial_y,
                    const ActiveRows& rows);

  // Weight matrices per layer: 3 (gate, up, down), or 2 for an ungated FFN (fc1, fc2).
  uint64_t Matrices() const;
  // Batched calls: the gate's bias added to each of n rows of [n, ffn], and down's to [n, hidden].
  void AddGateBias(const Call& call, float* g, int64_t n) const;
  void AddDownBias(const Call& call, float* y, int64_t n) const;

  // The statistics every call records; callers add flops_done and weight_bytes_read.
  FfnLayerStats CallStats(int64_t tokens, int64_t zeros, int64_t negatives, int64_t picked) const;

  ModelConfig config_;
  const KernelTable& kernels_;
  DenseMatmul& matmul_;
  int threads_;
  // Decode scratch; thread t works on its own slice of the ffn neurons in each.
  std::vector<float> gate_;       // [ffn] gate pre-activations, then coefficients
  std::vector<float> up_;         // [ffn] up projections (dense path)
  std::vector<int32_t> active_;   // [ffn] active neuron indices (slice-relative), per slice
  std::vector<float> active_g_;   // [ffn] their gate activations
  std::vector<float> partial_y_;  // [threads, hidden] private accumulators
  std::vector<int32_t> uncertain_;  // [ffn] shadow: rows the bound did not certify, per slice
  std::vector<int16_t> shadow_xq_;  // [hidden] shadow: x as int16 levels ...
  std::vector<float> shadow_xd_;    // [hidden / 32] ... and their block scales
  std::vector<Slice> slices_;       // [threads] the last decode step's slices
  // Decode from the neuron cache (null: none).
  NeuronCache* neurons_ = nullptr;
  std::vector<int64_t> requested_;    // [threads] rows of the slice's list requested so far
  std::vector<int32_t> fetch_;        // [ffn] the neurons a step fetches, in order ...
  std::vector<NeuronCache::Part> fetch_parts_;  // [ffn] ... what of them ...
  std::vector<int32_t> fetch_slots_;  // [ffn] ... the slots they are in ...
  std::vector<int32_t> neuron_slot_;  // [ffn] ... and by neuron
  std::vector<int32_t> slot_rows_;    // [ffn] each slice's rows as slots
  std::vector<int32_t> warm_counts_;  // [ffn] tokens of a batch each neuron was active for
  // Batched scratch.
  std::vector<float> batch_gate_;  // [max_tokens, ffn]
  std::vector<float> batch_up_;    // [max_tokens, ffn]
  std::vector<int64_t> row_zeros_;  // [max_tokens] zeros of each token of the last call
};

// act(g) for one neuron under `settings` (the stochastic draw needs where the neuron is).
float ActivateNeuron(const FfnSettings& settings, float g, int64_t position, int64_t layer,
                     int64_t neuron);

}  // namespace zeroskip
