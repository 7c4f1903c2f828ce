// The shadow gate: an int8 copy of a layer's FFN gate with, per row, the norms that bound how far
// its dot products can be from the gate's (docs/SHADOW_GATE.md). The runtime multiplies x with
// the shadow first and computes the full gate only for rows the bound cannot certify as zero.
//
// Stored per layer as two optional tensors (docs/FORMAT.md, "Shadow gate"): the q8 shadow
// [ffn, hidden] and f32 norms [2, ffn] (row 0: ‖gate_i − shadow_i‖₂, row 1: ‖gate_i‖₂, both
// rounded up). This file builds and names them; it knows nothing about kernels or threads.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "zeroskip/config.h"
#include "zeroskip/format.h"

namespace zeroskip {

inline constexpr std::string_view kShadowRole = "ffn_gate_shadow";
inline constexpr std::string_view kShadowNormsRole = "ffn_gate_shadow_norms";

// The two tensors of layer `layer`'s shadow gate, in file order (right after its ffn_gate).
std::vector<TensorSpec> ShadowGateSpecs(int64_t layer, uint64_t ffn, uint64_t hidden);

// Throws Error naming `path` unless this config's gate rows are whole blocks of 32 (the shadow's
// q8 blocks, as for any q8 matrix).
void CheckShadowable(const ModelConfig& config, const std::string& path);

// True for the name of a shadow tensor of any layer.
bool IsShadowGateTensor(std::string_view name);

// Builds the shadow of a [rows, cols] gate of `dtype` (cols a multiple of kQuantBlock):
// `shadow` receives rows * cols / 32 q8 blocks, `norms` [2, rows] the error and row norms.
// Returns how many blocks' scales overflow f16 (weights beyond ~8e6: no shadow possible).
uint64_t BuildShadowGate(const uint8_t* gate, DType dtype, uint64_t rows, uint64_t cols,
                         uint8_t* shadow, float* norms);

// Writes the two tensors of a layer's shadow into `writer` (the next two it has planned, as
// ShadowGateSpecs lists them). Throws Error naming `path` and the tensor if a scale overflows.
void WriteShadowGate(ZskWriter& writer, const uint8_t* gate, DType dtype, uint64_t rows,
                     uint64_t cols, const std::string& path, const std::string& gate_name);

}  // namespace zeroskip
