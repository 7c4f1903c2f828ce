// The tensors of a Bamboo / TurboSparse-Mistral checkpoint (BambooForCausalLM, dReLU): Llama's
// table, and TurboSparse's per-layer activation predictors skipped (zeroskip computes every gate
// exactly, so a predictor has nothing to add).
#pragma once

#include "arch/tensor_table.h"
#include "zeroskip/config.h"

namespace zeroskip {

TensorTable BambooTensorTable(const ModelConfig& config);

}  // namespace zeroskip
