// Typed views of weight matrices as they sit in a mapped model file (or a test's buffer).
//
// A view points at memory it does not own and never copies; it says how to read the bytes
// (element type, layout) and nothing about what the matrix is for.
#pragma once

#include <cstdint>

#include "zeroskip/format.h"

namespace zeroskip {

// A matrix as stored: [rows, cols] row-major, elements of `dtype` (quantized types: each row is
// cols / kQuantBlock blocks, their scales inside). Which orientation a matrix has is its role's
// (the FFN down projection is stored transposed), checked when the model loads.
struct WeightView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
};

// The gated FFN of one layer: y = down · (act(gate · x) ⊙ (up · x)). All three are [ffn, hidden]
// (down transposed from the HF [hidden, ffn]) so each neuron is one contiguous row of each.
// Ungated (OPT): y = down · act(gate · x + gate_bias) + down_bias, with fc1 as the gate, fc2 as
// down and no up (data null).
struct FfnWeights {
  WeightView gate, up;  // [ffn, hidden]
  WeightView down_t;    // [ffn, hidden]
  const float* gate_bias = nullptr;  // [ffn] or null
  const float* down_bias = nullptr;  // [hidden] or null
  // Optional (data null when the file has none): the gate's int8 shadow, q8 [ffn, hidden], and
  // per row ‖gate_i − shadow_i‖₂ then ‖gate_i‖₂ rounded up, [2, ffn] (docs/SHADOW_GATE.md).
  WeightView gate_shadow;
  const float* gate_shadow_norms = nullptr;
};

}  // namespace zeroskip
