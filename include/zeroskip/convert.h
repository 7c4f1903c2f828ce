// Hugging Face checkpoint directory (or a llama-architecture GGUF file) -> native .zsk file.
//
// Reads config.json, model.safetensors (or the shards named by model.safetensors.index.json)
// and tokenizer.model, validates all of it against the configuration, and streams tensor by
// tensor into an atomic writer: peak memory is about two copies of the largest tensor. Extra
// tensors are refused, except derived buffers (rotary inv_freq) and a duplicate lm_head of a
// tied model, which are skipped and reported in the result's warnings.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "zeroskip/format.h"

namespace zeroskip {

struct ConvertResult {
  uint64_t tensors = 0;
  uint64_t parameters = 0;
  uint64_t file_bytes = 0;
  std::vector<std::string> warnings;  // returned, not printed: a failed run says one line only
};

struct ConvertOptions {
  std::string hf_dir;
  std::string out_path;
  std::optional<DType> dtype;  // nullopt: keep each tensor's dtype (norms are always f32)
  // --tensor-type: (pattern, dtype) pairs applied after `dtype` and its recipe, in order (a later
  // match wins). A pattern is a stored name ("layers.3.ffn_down", "output") or a layer role
  // ("ffn_down": that tensor of every layer). A pattern that names no matrix, or a quantized
  // dtype whose blocks do not divide the matched tensor's rows, is refused before any write.
  std::vector<std::pair<std::string, DType>> tensor_types;
  bool shadow_gate = false;    // add each layer's shadow gate (docs/SHADOW_GATE.md)
  // GGUF input only: the activation (relu|silu|fatrelu) when the metadata has no
  // llama.hidden_act; empty: the metadata must say it.
  std::string act;
  std::function<void(uint64_t bytes_done, uint64_t bytes_total)> progress;
  // Called with the result once the file is complete and durable, before it is renamed into
  // place: a front end reports there, and if the report throws, no file is left behind.
  std::function<void(const ConvertResult&)> before_commit;
};

ConvertResult ConvertHfCheckpoint(const ConvertOptions& options);

// Copies the .zsk at `in_path` to `out_path` with every layer's shadow gate added (or rebuilt
// from the gate, if it had one), written atomically; `out_path` may be `in_path`. Throws Error if
// any tensor checksum of the input fails, a tensor is not one of its architecture's, a gate holds
// NaN or Inf, or a gate cannot have a shadow (rows not whole blocks of 32): the copy would carry
// the damage under fresh checksums. (Front ends also load the input as a model first.)
struct ShadowOptions {
  std::string in_path;
  std::string out_path;
  std::function<void(uint64_t bytes_done, uint64_t bytes_total)> progress;
  std::function<void(const ConvertResult&)> before_commit;  // as ConvertOptions'
};
ConvertResult AddShadowGate(const ShadowOptions& options);

// Writes the neuron file of `model` (docs/FORMAT.md, "Neuron file"; by default
// `<model>.neurons`, where loading looks for it): its gated FFN's rows regrouped neuron by
// neuron, so a memory budget smaller than the model reads one bundle per active neuron. Written
// atomically from the .zsk's bytes, each FFN tensor's checksum checked as it streams past. Throws
// Error naming the model if its FFN cannot be bundled (ungated, or quantized).
struct NeuronFileOptions {
  std::string out_path;
  std::function<void(uint64_t layers_done, uint64_t layers)> progress{};
  std::function<void(uint64_t file_bytes)> before_commit{};  // as ConvertOptions'
};
void WriteNeuronFile(const ZskFile& model, const NeuronFileOptions& options);
// `model_path` + ".neurons": where a model's neuron file is looked for.
std::string NeuronFilePath(const std::string& model_path);

}  // namespace zeroskip
