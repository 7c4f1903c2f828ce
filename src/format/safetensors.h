// Reader for the safetensors header: 8-byte little-endian length N, N bytes of JSON naming each
// tensor's dtype, shape and [begin, end) data offsets (relative to the end of the header).
// Validates everything against the file size before any data is read.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "format/checkpoint_reader.h"
#include "zeroskip/format.h"

namespace zeroskip {

inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100u << 20;  // the reference limit

struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<uint64_t> shape;
  uint64_t begin = 0;  // absolute file offsets of the data
  uint64_t end = 0;
};

struct SafetensorsFile {
  std::string path;
  std::vector<SafetensorsTensor> tensors;  // sorted by data offset
};

// Parses the JSON header (the bytes after the length prefix) of a file of `file_size` bytes.
SafetensorsFile ParseSafetensorsHeader(std::string_view header_json, uint64_t file_size,
                                       const std::string& path);

// Reads and parses the header of the file at `path`.
SafetensorsFile ReadSafetensorsHeader(const std::string& path);

// The safetensors weights of a Hugging Face checkpoint directory: model.safetensors, or the
// shards model.safetensors.index.json names (plain files beside it, each tensor in one shard).
std::unique_ptr<CheckpointReader> OpenSafetensorsCheckpoint(const std::string& dir);

}  // namespace zeroskip
