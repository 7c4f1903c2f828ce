// A checkpoint's tensors, whatever container holds them: all the converter sees of its weights.
//
// An implementation validates its container when it opens it (offsets, sizes, overlaps, a tensor
// in two files) and then lists every tensor by name, dtype and shape; it reads one tensor's bytes
// on request, so a conversion holds one tensor at a time. It does not know what the tensors mean
// (that is the architecture's tensor table). Implementations: safetensors, one file or a sharded
// index (safetensors.h).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "zeroskip/format.h"

namespace zeroskip {

struct CheckpointTensor {
  std::string name;  // as the checkpoint names it: "model.layers.0.mlp.up_proj.weight"
  DType dtype = DType::kF32;
  std::vector<uint64_t> shape;  // row-major, last index fastest
  uint64_t nbytes = 0;          // read_type() size x elements: what Read gives
  std::string path;             // the file that holds it, for messages
  // Read gives its values as f32 (exact) and `dtype` is the type they map to but which cannot
  // hold them exactly: the converter quantizes them once (a GGUF's Q4_1, Q5_1, Q5_K, Q2_K).
  bool read_f32 = false;

  DType read_type() const { return read_f32 ? DType::kF32 : dtype; }
};

class CheckpointReader {
 public:
  virtual ~CheckpointReader() = default;

  // What messages about the checkpoint as a whole (a missing tensor) name: an index file or
  // the single weights file.
  virtual const std::string& path() const = 0;
  // Every file the reader reads (the index first, if any).
  virtual std::vector<std::string> files() const = 0;
  // Every tensor, sorted by name.
  virtual const std::vector<CheckpointTensor>& tensors() const = 0;
  // Reads the bytes of `tensor` (one of tensors()) into `out`, which holds tensor.nbytes:
  // elements of tensor.read_type(), little-endian, row-major.
  virtual void Read(const CheckpointTensor& tensor, void* out) const = 0;

  // The tensor named `name`, or nullptr.
  const CheckpointTensor* Find(std::string_view name) const {
    const auto& all = tensors();
    const auto it = std::lower_bound(all.begin(), all.end(), name,
                                     [](const auto& t, std::string_view n) { return t.name < n; });
    return it != all.end() && it->name == name ? &*it : nullptr;
  }
};

}  // namespace zeroskip
