// What one sequence keeps between forward passes: its KV cache, rotary tables for its context,
// attention scratch and how it runs the FFN.
#pragma once

#include <vector>

#include "ffn/ffn_runtime.h"
#include "ops/rope.h"

namespace zeroskip {

struct SequenceState {
  SequenceState(const ModelConfig& config, int64_t context, int threads, FfnSettings ffn);

  // Bytes a sequence of `context` positions takes (checked against free memory first).
  static uint64_t Bytes(const ModelConfig& config, int64_t context, int threads,
                        const std::string& path);

  FfnSettings ffn;
  int64_t context;
  std::vector<float> k_cache;  // [layers, context, kv_dim]
  std::vector<float> v_cache;  // [layers, context, kv_dim]
  std::vector<float> scores;   // [threads, context] attention scores
  RopeTable rope;              // positions [0, context)
  std::vector<float> logits;   // [vocab] of the last token run
};

}  // namespace zeroskip
