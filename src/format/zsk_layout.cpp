#include "format/zsk_layout.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>

#include "format/file_io.h"
#include "zeroskip/error.h"

namespace zeroskip {
namespace {

// A region [offset, offset + size) must lie inside [lo, file_size).
void CheckRegion(uint64_t offset, uint64_t size, uint64_t lo, uint64_t file_size,
                 const std::string& path, const char* what) {
  const uint64_t end = CheckedAdd(offset, size, path, std::string(what) + " end");
  if (offset < lo || end > file_size) {
    throw Error(path, std::string(what) + " region [" + std::to_string(offset) + ", " +
                          std::to_string(end) + ") lies outside the file (" +
                          std::to_string(file_size) + " bytes)");
  }
}

}  // namespace

ZskHeader DecodeZskHeader(const uint8_t* base, uint64_t size, const std::string& path) {
  if (size < kZskHeaderBytes) {
    throw Error(path, "file is truncated (" + std::to_string(size) +
                          " bytes; the header alone is " + std::to_string(kZskHeaderBytes) + ")");
  }
  if (std::memcmp(base, kZskMagic, sizeof(kZskMagic)) != 0) {
    throw Error(path, "not a zeroskip model file (bad magic)");
  }
  ZskHeader h;
  h.version = LoadLe32(base + 8);
  if (h.version == 0 || h.version > kZskVersion) {
    throw Error(path, "format version " + std::to_string(h.version) +
                          " is not supported by this zeroskip (it reads version " +
                          std::to_string(kZskVersion) + ")");
  }
  if (LoadLe32(base + 12) != kZskHeaderBytes) throw Error(path, "unexpected header size");
  h.file_size = LoadLe64(base + 16);
  if (h.file_size != size) {
    throw Error(path, "file is " + std::to_string(size) + " bytes but its header records " +
                          std::to_string(h.file_size) + " (truncated or damaged)");
  }
  h.metadata_offset = LoadLe64(base + 24);
  h.metadata_size = LoadLe64(base + 32);
  h.tokenizer_offset = LoadLe64(base + 40);
  h.tokenizer_size = LoadLe64(base + 48);
  h.table_offset = LoadLe64(base + 56);
  h.tensor_count = LoadLe64(base + 64);
  h.data_offset = LoadLe64(base + 72);
  h.header_checksum = LoadLe64(base + kZskChecksumFieldOffset);
  CheckRegion(h.metadata_offset, h.metadata_size, kZskHeaderBytes, size, path, "metadata");
  CheckRegion(h.tokenizer_offset, h.tokenizer_size, kZskHeaderBytes, size, path, "tokenizer");
  if (h.tensor_count > kZskMaxTensors) {
    throw Error(path, "tensor count " + std::to_string(h.tensor_count) + " is absurd");
  }
  CheckRegion(h.table_offset, h.tensor_count * kZskTensorRecordBytes, kZskHeaderBytes, size, path,
              "tensor table");
  if (h.data_offset % kTensorAlign != 0 || h.data_offset > size) {
    throw Error(path, "tensor data offset " + std::to_string(h.data_offset) + " is invalid");
  }
  // Metadata, tokenizer and table are disjoint and all lie before the tensor data.
  struct Region {
    uint64_t begin, end;
    const char* name;
  };
  Region regions[] = {
      {h.metadata_offset, h.metadata_offset + h.metadata_size, "metadata"},
      {h.tokenizer_offset, h.tokenizer_offset + h.tokenizer_size, "tokenizer"},
      {h.table_offset, h.table_offset + h.tensor_count * kZskTensorRecordBytes, "tensor table"}};
  std::sort(std::begin(regions), std::end(regions),
            [](const Region& a, const Region& b) { return a.begin < b.begin; });
  for (size_t i = 0; i < 3; ++i) {
    if (i > 0 && regions[i].begin < regions[i - 1].end) {
      throw Error(path, std::string(regions[i - 1].name) + " and " + regions[i].name + " overlap");
    }
    if (regions[i].end > h.data_offset) {
      throw Error(path, std::string(regions[i].name) + " runs into the tensor data");
    }
  }
  for (uint64_t i = kZskChecksumFieldOffset + 8; i < kZskHeaderBytes; ++i) {
    if (base[i] != 0) throw Error(path, "reserved header bytes are not zero");
  }
  return h;
}

void EncodeZskHeader(const ZskHeader& h, uint8_t out[kZskHeaderBytes]) {
  std::memset(out, 0, kZskHeaderBytes);
  std::memcpy(out, kZskMagic, sizeof(kZskMagic));
  StoreLe32(out + 8, h.version);
  StoreLe32(out + 12, static_cast<uint32_t>(kZskHeaderBytes));
  StoreLe64(out + 16, h.file_size);
  StoreLe64(out + 24, h.metadata_offset);
  StoreLe64(out + 32, h.metadata_size);
  StoreLe64(out + 40, h.tokenizer_offset);
  StoreLe64(out + 48, h.tokenizer_size);
  StoreLe64(out + 56, h.table_offset);
  StoreLe64(out + 64, h.tensor_count);
  StoreLe64(out + 72, h.data_offset);
  StoreLe64(out + kZskChecksumFieldOffset, h.header_checksum);
}

uint64_t ZskHeaderChecksum(const uint8_t header[kZskHeaderBytes], std::string_view metadata,
                           std::string_view tokenizer, std::string_view table) {
  XXH64_state_t* state = XXH64_createState();
  XXH64_reset(state, 0);
  XXH64_update(state, header, kZskChecksumFieldOffset);
  XXH64_update(state, metadata.data(), metadata.size());
  XXH64_update(state, tokenizer.data(), tokenizer.size());
  XXH64_update(state, table.data(), table.size());
  const uint64_t digest = XXH64_digest(state);
  XXH64_freeState(state);
  return digest;
}

uint64_t ZskHeaderChecksum(const uint8_t* base, const ZskHeader& h) {
  auto view = [base](uint64_t off, uint64_t n) {
    return std::string_view(reinterpret_cast<const char*>(base) + off, n);
  };
  return ZskHeaderChecksum(base, view(h.metadata_offset, h.metadata_size),
                           view(h.tokenizer_offset, h.tokenizer_size),
                           view(h.table_offset, h.tensor_count * kZskTensorRecordBytes));
}

std::vector<TensorInfo> DecodeTensorTable(const uint8_t* base, const ZskHeader& h,
                                          const std::string& path) {
  std::vector<TensorInfo> tensors;
  tensors.reserve(h.tensor_count);
  for (uint64_t i = 0; i < h.tensor_count; ++i) {
    const uint8_t* r = base + h.table_offset + i * kZskTensorRecordBytes;
    const std::string where = "tensor record " + std::to_string(i);
    const void* nul = std::memchr(r, 0, kZskMaxNameBytes + 1);
    if (nul == nullptr) throw Error(path, where + ": name is not terminated");
    TensorInfo t;
    t.name.assign(reinterpret_cast<const char*>(r), static_cast<const uint8_t*>(nul) - r);
    if (t.name.empty()) throw Error(path, where + ": empty name");
    for (char c : t.name) {
      if (c < 0x21 || c > 0x7e) throw Error(path, where + ": name has a non-printable byte");
    }
    const std::string tw = "tensor '" + t.name + "'";
    const uint32_t dtype = LoadLe32(r + 96), layout = LoadLe32(r + 100), ndim = LoadLe32(r + 104);
    if (dtype > static_cast<uint32_t>(DType::kQ6K)) {
      throw Error(path, tw + ": unknown dtype code " + std::to_string(dtype));
    }
    if (layout > static_cast<uint32_t>(Layout::kTransposed)) {
      throw Error(path, tw + ": unknown layout code " + std::to_string(layout));
    }
    if (ndim == 0 || ndim > kZskMaxDims) throw Error(path, tw + ": invalid rank");
    t.dtype = static_cast<DType>(dtype);
    t.layout = static_cast<Layout>(layout);
    uint64_t elements = 1;
    for (uint32_t d = 0; d < ndim; ++d) {
      t.shape.push_back(LoadLe64(r + 112 + 8 * d));
      if (t.shape.back() == 0) throw Error(path, tw + ": zero-sized dimension");
      elements = CheckedMul(elements, t.shape.back(), path, tw + ": element count");
    }
    if (LoadLe32(r + 108) != 0 || LoadLe64(r + 168) != 0 || LoadLe64(r + 176) != 0 ||
        LoadLe64(r + 184) != 0) {
      throw Error(path, tw + ": reserved fields are not zero (a newer format?)");
    }
    for (uint32_t d = ndim; d < kZskMaxDims; ++d) {
      if (LoadLe64(r + 112 + 8 * d) != 0)
        throw Error(path, tw + ": unused dimensions are not zero");
    }
    t.offset = LoadLe64(r + 144);
    t.nbytes = LoadLe64(r + 152);
    t.checksum = LoadLe64(r + 160);
    if (t.shape.back() % DTypeBlockElements(t.dtype) != 0) {
      throw Error(path, tw + ": rows of " + std::to_string(t.shape.back()) +
                            " elements are not whole " + std::string(DTypeName(t.dtype)) +
                            " blocks of " + std::to_string(DTypeBlockElements(t.dtype)));
    }
    const uint64_t blocks = elements / DTypeBlockElements(t.dtype);
    if (t.nbytes != CheckedMul(blocks, DTypeBlockBytes(t.dtype), path, tw + ": byte size")) {
      throw Error(path,
                  tw + ": byte size " + std::to_string(t.nbytes) + " does not match dtype x shape");
    }
    if (t.offset % kTensorAlign != 0)
      throw Error(path, tw + ": data offset is not 64-byte aligned");
    CheckRegion(t.offset, t.nbytes, h.data_offset, h.file_size, path, (tw + " data").c_str());
    tensors.push_back(std::move(t));
  }
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->offset < by_offset[i - 1]->offset + by_offset[i - 1]->nbytes) {
      throw Error(path, "tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name +
                            "' overlap");
    }
  }
  std::vector<const TensorInfo*> by_name(by_offset);
  std::sort(by_name.begin(), by_name.end(), [](auto* a, auto* b) { return a->name < b->name; });
  for (size_t i = 1; i < by_name.size(); ++i) {
    if (by_name[i]->name == by_name[i - 1]->name) {
      throw Error(path, "tensor '" + by_name[i]->name + "' appears twice");
    }
  }
  return tensors;
}

void EncodeTensorRecord(const TensorInfo& t, uint8_t out[kZskTensorRecordBytes]) {
  std::memset(out, 0, kZskTensorRecordBytes);
  std::memcpy(out, t.name.data(), std::min<size_t>(t.name.size(), kZskMaxNameBytes));
  StoreLe32(out + 96, static_cast<uint32_t>(t.dtype));
  StoreLe32(out + 100, static_cast<uint32_t>(t.layout));
  StoreLe32(out + 104, static_cast<uint32_t>(t.shape.size()));
  for (size_t d = 0; d < t.shape.size(); ++d) StoreLe64(out + 112 + 8 * d, t.shape[d]);
  StoreLe64(out + 144, t.offset);
  StoreLe64(out + 152, t.nbytes);
  StoreLe64(out + 160, t.checksum);
}

}  // namespace zeroskip
