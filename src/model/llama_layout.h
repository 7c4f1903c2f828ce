// The tensors of a Llama-family checkpoint: Hugging Face name, native name, shape and layout.
// The single source of truth shared by the converter (what to read and how to store it) and
// the model loader (what must be in a .zsk). Knows nothing about files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "zeroskip/config.h"

namespace zeroskip {

struct TensorSlot {
  std::string hf_name;             // e.g. "model.layers.3.mlp.down_proj.weight"
  std::string name;                // native name, e.g. "layers.3.ffn_down"
  std::vector<uint64_t> hf_shape;  // shape in the HF checkpoint ([out, in] for matrices)
  bool transposed = false;         // stored as [in, out] (the FFN down projection)
  bool always_f32 = false;         // norm weights: tiny, kept exact in f32

  std::vector<uint64_t> stored_shape() const {
    return transposed ? std::vector<uint64_t>{hf_shape[1], hf_shape[0]} : hf_shape;
  }
};

std::vector<TensorSlot> LlamaTensorSlots(const ModelConfig& config);

// Index in LlamaTensorSlots() of a layer's ffn_gate slot; ffn_up and ffn_down follow it.
size_t FfnGateSlot(int64_t layer);

// "[4096, 11008]", for messages.
std::string ShapeString(const std::vector<uint64_t>& shape);

// Native names of the per-layer tensors, so the loader and converter cannot disagree.
std::string LayerTensorName(int64_t layer, const char* role);

}  // namespace zeroskip
