// An Engine's compute state, shared by its sessions: the kernel table, the matmul primitives,
// the FFN runtime and the activation buffers of one forward pass ([max_batch, ...] each).
// Only one forward pass uses it at a time (`lock`).
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ffn/ffn_runtime.h"
#include "ffn/neuron_cache.h"
#include "kernels/kernels.h"
#include "model/matmul.h"

namespace zeroskip {

// The kernels named `isa` ("" = the best this CPU runs); throws Error if unknown or unsupported.
const KernelTable& ChooseKernels(const std::string& isa);

struct Workspace {
  Workspace(const ModelConfig& config, const KernelTable& kernels, int threads, int64_t max_batch);

  // Bytes the buffers below take for this config (checked against free memory before allocating).
  static uint64_t Bytes(const ModelConfig& config, int threads, int64_t max_batch,
                        const std::string& path);

  std::mutex lock;
  const KernelTable& kernels;
  DenseMatmul matmul;
  FfnRuntime ffn;
  // The FFN rows decode reads from the model's neuron file (null: the model is all in memory).
  std::unique_ptr<NeuronCache> neurons;

  std::vector<float> x;       // [max_batch, hidden] residual stream
  std::vector<float> xn;      // [max_batch, hidden] normalized
  std::vector<float> q;       // [max_batch, q_dim]
  std::vector<float> k, v;    // [max_batch, kv_dim]
  std::vector<float> att;     // [max_batch, q_dim] attention output
  std::vector<float> proj;    // [max_batch, hidden] attention / FFN projections
  std::vector<float> logits;  // [max_batch, vocab]
};

}  // namespace zeroskip
