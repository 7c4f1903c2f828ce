// Model hyperparameters: what the runtime needs to know about a Llama-family checkpoint.
//
// Parsed from a Hugging Face config.json (hostile input: every field type- and range-checked,
// unsupported features refused by name) and stored in the native file's metadata. Holds no
// weights and does no I/O beyond reading the text it is given.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace zeroskip {

// kFatReLU (ProSparse's FATReLU, "shifted ReLU"): g if g > activation_threshold, else 0.
enum class Activation { kReLU, kSiLU, kFatReLU };

std::string_view ActivationName(Activation a);

struct ModelConfig {
  std::string hf_architecture;  // a name of src/arch/architectures.cpp
  int64_t hidden = 0;           // hidden_size
  int64_t ffn = 0;              // intermediate_size
  int64_t layers = 0;           // num_hidden_layers
  int64_t heads = 0;            // num_attention_heads
  int64_t kv_heads = 0;         // num_key_value_heads (== heads: MHA, 1: MQA)
  int64_t head_dim = 0;         // explicit head_dim or hidden / heads
  int64_t vocab = 0;            // vocab_size
  int64_t context = 0;          // max_position_embeddings (capped by a Mistral sliding_window)
  Activation activation = Activation::kReLU;
  float activation_threshold = 0.0f;  // kFatReLU: hidden_act_param, >= 0; 0 otherwise
  // dReLU (TurboSparse / Bamboo): relu(gate) * relu(up). Set by the architecture
  // (BambooForCausalLM), never stored on its own.
  bool relu_up = false;
  // OPT: no gate (fc1 -> relu -> fc2, with biases), LayerNorm with bias, learned positions.
  // Set by the architecture (OPTForCausalLM), never stored on their own.
  bool gated_ffn = true;
  // OPT: word_embed_proj_dim, the width of the embeddings and the LM head (project_in/out map
  // it to hidden when it differs); hidden for every other architecture.
  int64_t embed_dim = 0;
  // OPT with do_layer_norm_before false (OPT-350m): LayerNorm after each residual add.
  bool post_norm = false;
  float rms_eps = 1e-5f;  // the norms' epsilon (OPT's LayerNorm: 1e-5)
  float rope_theta = 10000.0f;
  bool tied_embeddings = false;
  int64_t bos_id = -1;  // -1: none
  int64_t eos_id = -1;  // -1: none

  int64_t q_dim() const { return heads * head_dim; }
  int64_t kv_dim() const { return kv_heads * head_dim; }
  // Whether act(gate) is zero wherever gate <= 0 (relu and fatrelu with a threshold >= 0).
  bool relu_family() const { return activation != Activation::kSiLU; }

  friend bool operator==(const ModelConfig&, const ModelConfig&) = default;
};

// Parses the text of a Hugging Face config.json. Throws Error(path, reason) on anything that is
// not a supported, sane Llama/Mistral configuration.
ModelConfig ParseHfConfig(std::string_view json_text, const std::string& path);

// The native file keeps the config as JSON metadata; these two round-trip it exactly.
std::string ConfigToJson(const ModelConfig& config);
ModelConfig ConfigFromJson(std::string_view json_text, const std::string& path);

}  // namespace zeroskip
