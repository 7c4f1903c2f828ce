// The neuron file (docs/FORMAT.md, "Neuron file"): a model's gated FFN rearranged for decoding
// with less memory than the model needs. Each neuron's up row, down row (a column of the HF down
// projection) and gate row sit together in one bundle, so a neuron costs one aligned read of its
// gate row when the shadow gate cannot certify it, and one of its up and down rows when active.
// Written beside the .zsk (`model.zsk.neurons`) from the .zsk's own bytes and tied to them by a
// digest of their checksums. This file plans and checks it (the writer is WriteNeuronFile in
// zeroskip/convert.h); reading bundles at run time is the FFN runtime's (src/ffn/neuron_cache.h).
#pragma once

#include <cstdint>
#include <string>

#include "zeroskip/format.h"

namespace zeroskip {

// Bundle parts start and end at multiples of this: reads with O_DIRECT need offsets, sizes and
// buffers aligned to the device's logical block, 512 bytes on most (the cache falls back to the
// page cache where a device needs more). The header takes 4 KiB.
inline constexpr uint64_t kBundleAlign = 512;
inline constexpr uint64_t kNeuronHeaderBytes = 4096;

struct NeuronLayout {
  int64_t layers = 0, ffn = 0, hidden = 0;
  DType gate = DType::kF32, up = DType::kF32, down = DType::kF32;
  uint64_t gate_bytes = 0, up_bytes = 0, down_bytes = 0;  // one row of each
  // A bundle: the gate row, rounded up to kBundleAlign (gate_read bytes, read alone for a row
  // the shadow gate cannot certify), then the up and down rows, rounded up the same way
  // (up_down_read bytes, read for an active neuron).
  uint64_t gate_read = 0, up_down_read = 0;
  uint64_t stride = 0;         // gate_read + up_down_read
  uint64_t source_digest = 0;  // XXH64 of the FFN tensors' checksums, layer by layer

  uint64_t BundleOffset(int64_t layer, int64_t neuron) const {
    return kNeuronHeaderBytes + (static_cast<uint64_t>(layer) * ffn + neuron) * stride;
  }
  uint64_t FileBytes() const { return BundleOffset(layers, 0); }
};

// Neuron i's bundle from its rows as the .zsk stores them (gate_row, up_row, down_row: row i of
// ffn_gate, ffn_up and the transposed ffn_down), padding zeroed: what the file holds for it.
void AssembleBundle(const NeuronLayout& layout, const uint8_t* gate_row, const uint8_t* up_row,
                    const uint8_t* down_row, uint8_t* bundle);

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
