// The tensor table of OPT (OPTForCausalLM): native names, Hugging Face names and shapes.
#pragma once

#include "arch/tensor_table.h"
#include "zeroskip/config.h"

namespace zeroskip {

TensorTable OptTensorTable(const ModelConfig& config);

}  // namespace zeroskip
