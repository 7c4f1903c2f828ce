// The one per-layer rule of the conversion policy (docs/FORMAT.md, "Weight types"): which layers
// `convert --dtype q4k` gives more bits. Defined with the converter; here so tests can pin it.
#pragma once

#include <cstdint>

namespace zeroskip {

// Whether `convert --dtype q4k` stores attn_v of `layer` (of `layers`) in q6k: llama.cpp's Q4_K_M
// rule (use_more_bits in its src/llama-quant.cpp, which also keeps those layers' ffn_down in
// Q6_K), the first and last eighth of the layers and every third one between them.
bool Q4KMoreBits(int64_t layer, int64_t layers);

}  // namespace zeroskip
