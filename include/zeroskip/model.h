// A loaded model: the mapped .zsk file, its config, tokenizer and typed views of every weight.
//
// Loading validates that every tensor the architecture needs is present with the shape, dtype
// and layout the config implies, and that nothing unexpected is there. Views point into the
// read-only mapping (zero-copy). A Model is immutable and can be shared by many Sessions; it
// owns no per-sequence state and does no compute.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "zeroskip/config.h"
#include "zeroskip/format.h"
#include "zeroskip/tokenizer.h"
#include "zeroskip/weights.h"

namespace zeroskip {

struct LayerWeights {
  const float* attn_norm = nullptr;  // [hidden]
  WeightView q, k, v;                // [q_dim | kv_dim, hidden]
  WeightView o;                      // [hidden, q_dim]
  const float* ffn_norm = nullptr;   // [hidden]
  FfnWeights ffn;
  // OPT: LayerNorm biases and the attention projections' biases ([hidden] each), else null.
  const float* attn_norm_bias = nullptr;
  const float* ffn_norm_bias = nullptr;
  const float *q_bias = nullptr, *k_bias = nullptr, *v_bias = nullptr, *o_bias = nullptr;
};

struct NeuronLayout;

// How much memory a model's weights may take. A model larger than its budget keeps resident what
// every token reads (attention, norms, embeddings, LM head, shadow gates, and the gate of a layer
// without one) and reads the FFN's up and down rows (and a shadowed gate's rows) from its neuron
// file (`model.zsk.neurons`, docs/FORMAT.md) into a cache of the rest of the budget, a neuron at
// a time: the output is the same, bit for bit. The KV cache and scratch come on top, and each
// Engine on the model has a cache of its own.
struct LoadOptions {
  // 0: 85% of the memory available to this process (MemAvailable, or its memory cgroup's limit
  // when lower), and a model larger than that without a neuron file is mapped as a whole.
  uint64_t mem_budget = 0;
  bool direct_io = true;  // neuron reads bypass the page cache (O_DIRECT where the file system can)
  bool io_uring = true;   // false: one pread at a time
  // Read the FFN from the neuron file even when the model fits the budget (the cache then takes
  // what the budget leaves): tests, and measuring the reads apart from memory pressure.
  bool always_offload = false;
  // The memory this process may use; 0: ProcessMemoryLimitBytes(). The default budget is 85% of
  // it; with a model larger than its budget, sessions' KV caches get what the budget leaves of it
  // (Engine::session_memory_left).
  uint64_t memory_limit = 0;
};

// What loading decided (Model::memory()).
struct MemoryPlan {
  uint64_t budget = 0;          // bytes the weights may take
  uint64_t resident_bytes = 0;  // the weights kept mapped: all of the file unless offloaded
  bool offloaded = false;       // FFN rows are read from the neuron file on demand
  std::string neuron_file;      // offloaded: its path ...
  uint64_t bundle_bytes = 0;    // ... one neuron's bytes in it ...
  uint64_t cache_slots = 0;     // ... and how many neurons the cache holds
  bool direct_io = true, io_uring = true;
  uint64_t limit = 0;  // the memory this process may use (LoadOptions::memory_limit)
};

class Model {
 public:
  // Throws Error naming the file if it is damaged or does not fit `options.mem_budget` (saying
  // how much it needs).
  static std::unique_ptr<Model> Load(const std::string& path, const LoadOptions& options = {});
  ~Model();

  const ModelConfig& config() const { return file_->config(); }
  const ZskFile& file() const { return *file_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const WeightView& embeddings() const { return embeddings_; }  // [vocab, hidden]
  const LayerWeights& layer(int64_t i) const { return layers_[i]; }
  const float* output_norm() const { return output_norm_; }
  const WeightView& lm_head() const { return lm_head_; }  // embeddings when tied
  // OPT: learned positions [context + 2, hidden]; project_in [hidden, embed_dim] and project_out
  // [embed_dim, hidden] (data null unless embed_dim != hidden); the final norm's bias (or null).
  const WeightView& positions() const { return positions_; }
  const WeightView& project_in() const { return project_in_; }
  const WeightView& project_out() const { return project_out_; }
  const float* output_norm_bias() const { return output_norm_bias_; }
  uint64_t parameter_count() const;
  const MemoryPlan& memory() const { return memory_; }
  // Offloaded: the neuron file's layout and its checked descriptor (for the engine's cache).
  const NeuronLayout* neuron_layout() const { return neuron_layout_.get(); }
  int neuron_fd() const { return neuron_fd_; }
  // Offloaded: drops layer `layer`'s offloaded FFN matrices from memory after a batched pass
  // (a prompt) read them through the file's mapping; decode reads them from the neuron file.
  void ReleaseOffloadedFfn(int64_t layer) const;

 private:
  Model() = default;
  // Decides what stays resident under `options` (opening the neuron file if it must) and maps
  // the resident weights now.
  void PlanMemory(const LoadOptions& options);

  std::unique_ptr<ZskFile> file_;
  std::unique_ptr<Tokenizer> tokenizer_;
  WeightView embeddings_, lm_head_, positions_, project_in_, project_out_;
  const float* output_norm_ = nullptr;
  const float* output_norm_bias_ = nullptr;
  std::vector<LayerWeights> layers_;
  MemoryPlan memory_;
  std::unique_ptr<NeuronLayout> neuron_layout_;
  int neuron_fd_ = -1;
};

}  // namespace zeroskip
