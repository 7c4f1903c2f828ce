// Byte-level encoding of the .zsk header and tensor table (docs/FORMAT.md). Split from the
// reader so the fuzz target can exercise decoding past the header checksum.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "zeroskip/format.h"

namespace zeroskip {

struct ZskHeader {
  uint32_t version = 0;
  uint64_t file_size = 0;
  uint64_t metadata_offset = 0, metadata_size = 0;
  uint64_t tokenizer_offset = 0, tokenizer_size = 0;
  uint64_t table_offset = 0, tensor_count = 0;
  uint64_t data_offset = 0;
  uint64_t header_checksum = 0;
};

inline constexpr uint64_t kZskChecksumFieldOffset = 80;
inline constexpr uint64_t kZskMaxTensors = 1u << 20;

// Decodes and validates the fixed header of an image of `size` bytes (size >= what it claims).
ZskHeader DecodeZskHeader(const uint8_t* base, uint64_t size, const std::string& path);
void EncodeZskHeader(const ZskHeader& h, uint8_t out[kZskHeaderBytes]);

// xxh64 over the header's first 80 bytes, the metadata, the tokenizer and the tensor table.
uint64_t ZskHeaderChecksum(const uint8_t* base, const ZskHeader& h);
uint64_t ZskHeaderChecksum(const uint8_t header[kZskHeaderBytes], std::string_view metadata,
                           std::string_view tokenizer, std::string_view table);

// Decodes the tensor table and checks every record against the header and file size.
std::vector<TensorInfo> DecodeTensorTable(const uint8_t* base, const ZskHeader& h,
                                          const std::string& path);
void EncodeTensorRecord(const TensorInfo& t, uint8_t out[kZskTensorRecordBytes]);

}  // namespace zeroskip
