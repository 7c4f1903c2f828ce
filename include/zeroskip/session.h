// One sequence being decoded: KV cache, scratch buffers and the FFN runtime, all sized once at
// construction so the decode loop allocates nothing.
//
// Forward runs a batch of tokens (a prompt in one batched pass, or one token at a time) at the
// next positions and returns logits. It does not sample and does not tokenize.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "zeroskip/ffn.h"
#include "zeroskip/model.h"

namespace zeroskip {

struct SessionOptions {
  int threads = 0;          // 0: physical cores
  int64_t context = 0;      // 0: the model's context length; must not exceed it
  int64_t max_batch = 256;  // longest batch Forward runs in one pass (longer inputs are chunked)
  FfnMode ffn = FfnMode::kAuto;
  ActivationOptions activation;  // the FFN activation (default: the model's own)
};

class Session {
 public:
  Session(const Model& model, const SessionOptions& options);
  ~Session();

  // Runs `tokens` at positions position()..position()+n-1. Returns logits of the last token
  // [vocab], or of every token [n, vocab] when all_logits is set (n <= max_batch then).
  // Throws Error if the tokens do not fit the context or an id is out of range.
  std::span<const float> Forward(std::span<const int> tokens, bool all_logits = false);

  void Reset() { Rewind(0); }  // back to position 0 (the cache is overwritten, not cleared)
  // Back to an earlier position, keeping the cache before it (a chat whose new prompt shares a
  // prefix with what was run). Throws Error past the current position.
  void Rewind(int64_t position);
  int64_t position() const { return position_; }
  int64_t context() const { return context_; }
  int threads() const { return threads_; }
  const FfnRuntime& ffn() const { return *ffn_; }
  FfnRuntime& ffn() { return *ffn_; }
  const Model& model() const { return model_; }

 private:
  // Sizes every buffer once (the constructor has checked the total fits in memory).
  void Allocate(const Model& model, const SessionOptions& options);
  // need_logits: whether this chunk's logits are wanted (only the last chunk's are).
  void ForwardChunk(const int* tokens, int64_t n, bool need_logits, bool all_logits, float* logits);
  void Attention(int64_t layer, int64_t n);

  const Model& model_;
  const ModelConfig& config_;
  int threads_;
  int64_t context_;
  int64_t max_batch_;
  int64_t position_ = 0;
  std::unique_ptr<DenseMatmul> matmul_;
  std::unique_ptr<FfnRuntime> ffn_;

  std::vector<float> x_;         // [max_batch, hidden] residual stream
  std::vector<float> xn_;        // [max_batch, hidden] normalized
  std::vector<float> q_;         // [max_batch, q_dim]
  std::vector<float> k_, v_;     // [max_batch, kv_dim]
  std::vector<float> att_;       // [max_batch, q_dim] attention output
  std::vector<float> proj_;      // [max_batch, hidden] attention / FFN projections
  std::vector<float> scores_;    // [threads, context] attention scores
  std::vector<float> k_cache_;   // [layers, context, kv_dim]
  std::vector<float> v_cache_;   // [layers, context, kv_dim]
  std::vector<float> rope_cos_;  // [context, head_dim / 2]
  std::vector<float> rope_sin_;  // [context, head_dim / 2]
  std::vector<float> logits_;    // [max_batch, vocab]
};

// Physical cores of this machine (OpenMP's default counts hyperthreads).
int PhysicalCores();
// Physical memory of this machine in bytes.
uint64_t PhysicalMemoryBytes();

}  // namespace zeroskip
