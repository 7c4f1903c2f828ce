// The tensors of a Llama-family checkpoint (Llama, Mistral): the Hugging Face names they come
// from, the native names a .zsk stores them under, shapes from the config and layouts.
#pragma once

#include "arch/tensor_table.h"
#include "zeroskip/config.h"

namespace zeroskip {

// In file order: embeddings, then per layer attn_norm, attn_q, attn_k, attn_v, attn_output,
// ffn_norm, ffn_gate, ffn_up, ffn_down, then output_norm and output (unused when tied).
TensorTable LlamaTensorTable(const ModelConfig& config);

}  // namespace zeroskip
