#include "arch/architectures.h"

#include <stdexcept>

#include "arch/bamboo_tensors.h"
#include "arch/llama_tensors.h"
#include "arch/opt_tensors.h"

namespace zeroskip {
namespace {

constexpr Architecture kArchitectures[] = {
    {"LlamaForCausalLM", "llama", LlamaTensorTable, ForwardFamily::kLlama},
    // Llama's tensors and forward; its sliding window is folded into the context length.
    {"MistralForCausalLM", "mistral", LlamaTensorTable, ForwardFamily::kLlama},
    // ProSparse (SparseLLM/prosparse-llama-2-*): a Llama body whose hidden_act is fatrelu.
    {"SparseLlamaForCausalLM", "sparsellama", LlamaTensorTable, ForwardFamily::kLlama},
    // Bamboo and TurboSparse-Mistral (PowerInfer): a Mistral body with dReLU,
    // down(relu(gate(x)) * relu(up(x))); TurboSparse's activation predictors are skipped.
    {"BambooForCausalLM", "bamboo", BambooTensorTable, ForwardFamily::kLlama, true},
    // OPT (facebook/opt-*): ungated ReLU FFN with biases, LayerNorm, learned positions, tied
    // LM head; config.json keys are OPT's own (ParseHfConfig maps them).
    {"OPTForCausalLM", "opt", OptTensorTable, ForwardFamily::kOpt, false, false, true},
};

}  // namespace

const Architecture* FindArchitecture(std::string_view hf_name) {
  for (const auto& a : kArchitectures) {
    if (a.hf_name == hf_name) return &a;
  }
  return nullptr;
}

const Architecture* FindArchitectureByModelType(std::string_view model_type) {
  for (const auto& a : kArchitectures) {
    if (a.model_type == model_type) return &a;
  }
  return nullptr;
}

std::string SupportedArchitectureNames() {
  std::string names;
  for (const auto& a : kArchitectures)
    names += (names.empty() ? "" : ", ") + std::string(a.hf_name);
  return names;
}

std::string SupportedModelTypes() {
  std::string types;
  const size_t n = std::size(kArchitectures);
  for (size_t i = 0; i < n; ++i) {
    types += (i == 0 ? "" : i + 1 == n ? " or " : ", ") + std::string(kArchitectures[i].model_type);
  }
  return types;
}

const Architecture& ArchitectureOf(const ModelConfig& config) {
  const Architecture* a = FindArchitecture(config.hf_architecture);
  if (a == nullptr) {
    throw std::invalid_argument("unsupported architecture '" + config.hf_architecture + "'");
  }
  return *a;
}

TensorTable ArchitectureTensors(const ModelConfig& config) {
  return ArchitectureOf(config).tensors(config);
}

}  // namespace zeroskip
