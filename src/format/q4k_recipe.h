// The one per-layer rule of the conversion policy (docs/FORMAT.md, "Weight types"): which layers
// `convert --dtype q4k` gives more bits. Defined with the converter; here so tests can pin it.
#pragma once

#include <cstdint>

namespace zeroskip {

// llama.cpp's Q4_K_M rule for the layers that get more bits (use_more_bits in its
// src/llama-quant.cpp): the first and last eighth of the layers and every third one between them.
// `convert --dtype q4k` stores attn_v of these layers in q6k (Q4_K_M also their ffn_down).
bool Q4KMoreBits(int64_t layer, int64_t layers);

// The first eighth of the layers, at least one: `convert --dtype q4k` stores their attn_v and
// ffn_down in q6k. Measured by KL divergence on the demo model, layer 0's ffn_down alone is
// worth more than the ffn_downs of every more-bits layer (docs/BENCHMARKS.md, "q4k's recipe").
bool Q4KFirstLayers(int64_t layer, int64_t layers);

}  // namespace zeroskip
