// The forward pass of each supported architecture: embeddings → layers → final norm → logits,
// written with the ops in src/ops and the FFN runtime. A forward pass reads the model's weights,
// works in the engine's workspace and appends to the sequence's KV cache; it knows nothing of
// sampling, tokenizing or how the session was configured beyond SequenceState.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/sequence.h"
#include "engine/workspace.h"
#include "zeroskip/model.h"

namespace zeroskip {

// Consecutive rows of a pass that belong to one sequence, at its positions
// position..position+rows-1.
struct SequenceRows {
  SequenceState* seq;
  int64_t position;
  int64_t rows;
  std::vector<FfnLayerStats>* ffn_stats;  // [layers], this sequence's, added to
};

// One forward pass: the rows of one sequence (a prompt, a decode step) or of several (one decode
// step of many sequences, their weights read once). Every sequence runs its attention over its
// own cache; the FFN runs once over all rows, under the first sequence's settings (the caller
// batches only sequences whose settings compute alike: FfnSettings::Batchable).
struct ForwardPass {
  const Model& model;
  Workspace& ws;
  std::span<const SequenceRows> sequences;
  // Where each layer's FFN statistics of the whole pass go (for several sequences: the union of
  // their active neurons, the weights read once for all), or null.
  std::vector<FfnLayerStats>* batch_stats;
  int64_t rows() const;
};

// Runs tokens[0..pass.rows()) (at most the workspace's batch). When need_logits is set, writes
// to ws.logits the logits of every sequence's last token ([sequences, vocab]) or of every token
// ([rows, vocab], all_logits).
using ForwardFn = void (*)(const ForwardPass& pass, const int* tokens, bool need_logits,
                           bool all_logits);

// Llama, Mistral and their ReLU fine-tunes (src/arch/llama.cpp).
void LlamaForward(const ForwardPass& pass, const int* tokens, bool need_logits, bool all_logits);

// OPT (src/arch/opt.cpp).
void OptForward(const ForwardPass& pass, const int* tokens, bool need_logits, bool all_logits);

// The FFN of layer `layer` over the pass's rows (x and y: [rows, hidden]), its statistics added
// to each sequence's (its own tokens' zeros) and to the batch's.
void RunFfn(const ForwardPass& pass, int64_t layer, const FfnWeights& w, const float* x, float* y);

// The logits the pass asks for: the final norm and the LM head over the rows of `x`.
void RunLmHead(const ForwardPass& pass, const float* x, bool all_logits);

// The forward pass of config.hf_architecture (which loading has checked is supported).
ForwardFn ForwardFor(const ModelConfig& config);

}  // namespace zeroskip
