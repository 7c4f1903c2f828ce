// The neuron file (docs/FORMAT.md, "Neuron file"): a model's gated FFN rearranged for decoding
// with less memory than the model needs. Each neuron's up row, down row (a column of the HF down
// projection) and gate row sit together in one bundle, so a neuron the gate activates costs one
// aligned read. Written beside the .zsk (`model.zsk.neurons`) from the .zsk's own bytes and tied
// to them by a digest of their checksums. This file plans and checks it (the writer is
// WriteNeuronFile in zeroskip/convert.h); reading bundles at run time is the FFN runtime's
// (src/ffn/neuron_cache.h).
#pragma once

#include <cstdint>
#include <string>

#include "zeroskip/format.h"

namespace zeroskip {

// Bundles start at multiples of this, and the header takes one such block: reads with O_DIRECT
// need offsets, sizes and buffers aligned to the device's block, which 4 KiB covers.
inline constexpr uint64_t kBundleAlign = 4096;

struct NeuronLayout {
  int64_t layers = 0, ffn = 0, hidden = 0;
  DType up = DType::kF32, down = DType::kF32, gate = DType::kF32;
  // One row of each, stored in this order at the start of a bundle.
  uint64_t up_bytes = 0, down_bytes = 0, gate_bytes = 0;
  uint64_t stride = 0;         // bytes per bundle: the three rows rounded up to kBundleAlign
  uint64_t up_down_read = 0;   // up and down rounded up to kBundleAlign: a read without the gate
  uint64_t source_digest = 0;  // XXH64 of the FFN tensors' checksums, layer by layer

  uint64_t BundleOffset(int64_t layer, int64_t neuron) const {
    return kBundleAlign + (static_cast<uint64_t>(layer) * ffn + neuron) * stride;
  }
  uint64_t FileBytes() const { return BundleOffset(layers, 0); }
};

// `model_path` + ".neurons": where a model's neuron file is looked for.
std::string NeuronFilePath(const std::string& model_path);

// The neuron file `model` has. Throws Error naming the model if its FFN cannot be bundled: an
// ungated FFN, or a quantized FFN matrix (the kernels address a bundle's rows by a stride in
// elements, which whole quantized blocks do not divide).
NeuronLayout PlanNeuronFile(const ZskFile& model);

// The layout of the neuron file open as `fd` (`size` bytes), checked against `model`: its header
// must be intact and say exactly what PlanNeuronFile(model) says, and the file must be exactly
// that long. Throws Error naming `path` otherwise.
NeuronLayout ReadNeuronFileHeader(const std::string& path, int fd, uint64_t size,
                                  const ZskFile& model);

}  // namespace zeroskip
