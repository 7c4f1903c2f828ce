#include "arch/bamboo_tensors.h"

#include "arch/llama_tensors.h"

namespace zeroskip {

TensorTable BambooTensorTable(const ModelConfig& config) {
  TensorTable table = LlamaTensorTable(config);
  // modeling_bamboo.py's BambooMLP holds them as `predictor` (model.layers.N.mlp.predictor.*).
  table.SkipHfInfix(".mlp.predictor.", "activation predictor (the gate is computed exactly)");
  return table;
}

}  // namespace zeroskip
