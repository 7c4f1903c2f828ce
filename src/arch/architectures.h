// The architectures zeroskip supports, each listed once: the names a Hugging Face config.json
// gives it and its tensor table. Config parsing refuses any other name; the converter and
// Model::Load get their tensor table here. Knows nothing about files.
#pragma once

#include <string>
#include <string_view>

#include "arch/tensor_table.h"
#include "zeroskip/config.h"

namespace zeroskip {

// Which forward pass computes an architecture (src/arch/forward.h maps each to its function).
enum class ForwardFamily { kLlama, kOpt };

struct Architecture {
  std::string_view hf_name;     // config.json architectures[0]; stored in a .zsk
  std::string_view model_type;  // config.json model_type, used when architectures is absent
  TensorTable (*tensors)(const ModelConfig& config);
  ForwardFamily forward;
  bool relu_up = false;  // dReLU: the MLP applies its ReLU to up as well (relu(g) * relu(u))
  bool gated_ffn = true;  // false: fc1 -> act -> fc2 with biases (OPT)
  // The tokenizer: GPT-2 byte-level BPE from vocab.json + merges.txt, else sentencepiece.
  bool byte_level_bpe = false;
};

// nullptr when not supported.
const Architecture* FindArchitecture(std::string_view hf_name);
const Architecture* FindArchitectureByModelType(std::string_view model_type);

// The supported names joined for messages: "LlamaForCausalLM, MistralForCausalLM" and (model
// types) "llama or mistral".
std::string SupportedArchitectureNames();
std::string SupportedModelTypes();

// The architecture of config.hf_architecture, which config parsing has checked is supported
// (std::invalid_argument otherwise: a config that bypassed parsing is a bug).
const Architecture& ArchitectureOf(const ModelConfig& config);

// Its tensor table: ArchitectureOf(config).tensors(config).
TensorTable ArchitectureTensors(const ModelConfig& config);

}  // namespace zeroskip
