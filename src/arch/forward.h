// The forward pass of each supported architecture: embeddings → layers → final norm → logits,
// written with the ops in src/ops and the FFN runtime. A forward pass reads the model's weights,
// works in the engine's workspace and appends to the sequence's KV cache; it knows nothing of
// sampling, tokenizing or how the session was configured beyond SequenceState.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/sequence.h"
#include "engine/workspace.h"
#include "zeroskip/model.h"

namespace zeroskip {

struct ForwardPass {
  const Model& model;
  Workspace& ws;
  SequenceState& seq;
  std::vector<FfnLayerStats>& ffn_stats;  // [layers], added to
  int threads;
};

// Runs tokens[0..n) at positions position..position+n-1 (n <= the workspace's batch). When
// need_logits is set, writes the logits of the last token ([vocab]) or of every token
// ([n, vocab], all_logits) to ws.logits.
using ForwardFn = void (*)(const ForwardPass& pass, const int* tokens, int64_t n,
                           int64_t position, bool need_logits, bool all_logits);

// Llama, Mistral and their ReLU fine-tunes (src/arch/llama.cpp).
void LlamaForward(const ForwardPass& pass, const int* tokens, int64_t n, int64_t position,
                  bool need_logits, bool all_logits);

// The forward pass of config.hf_architecture (which loading has checked is supported).
ForwardFn ForwardFor(const ModelConfig& config);

}  // namespace zeroskip
