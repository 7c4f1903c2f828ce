// Fuzz target: the .zsk native-file header and tensor table decoder, then the full reader.
//
// The input is a whole .zsk image. Three passes:
//  1. DecodeZskHeader + ZskHeaderChecksum + DecodeTensorTable on the fuzzer's own buffer (an
//     exact-size heap allocation, so ASan flags any read past the image). The header checksum
//     is not compared, so mutations reach the table decoder.
//  2. ZskFile::Open on the raw bytes in a memfd: the real path, checksum included.
//  3. If the header decodes, ZskFile::Open again with the checksum recomputed, so mutated
//     metadata JSON and tensor tables get past the checksum into the real reader.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "format/zsk_layout.h"
#include "fuzz_util.h"
#include "zeroskip/error.h"
#include "zeroskip/format.h"

namespace {

using zeroskip::Error;
using zeroskip::TensorInfo;
using zeroskip::ZskHeader;

bool RegionInside(uint64_t offset, uint64_t n, uint64_t lo, uint64_t size) {
  return offset >= lo && offset <= size && n <= size - offset;
}

void CheckHeader(const ZskHeader& h, uint64_t size) {
  FUZZ_CHECK(h.version >= 1 && h.version <= zeroskip::kZskVersion);
  FUZZ_CHECK(h.file_size == size && size >= zeroskip::kZskHeaderBytes);
  FUZZ_CHECK(RegionInside(h.metadata_offset, h.metadata_size, zeroskip::kZskHeaderBytes, size));
  FUZZ_CHECK(RegionInside(h.tokenizer_offset, h.tokenizer_size, zeroskip::kZskHeaderBytes, size));
  FUZZ_CHECK(h.tensor_count <= zeroskip::kZskMaxTensors);
  FUZZ_CHECK(RegionInside(h.table_offset, h.tensor_count * zeroskip::kZskTensorRecordBytes,
                          zeroskip::kZskHeaderBytes, size));
  FUZZ_CHECK(h.data_offset % zeroskip::kTensorAlign == 0 && h.data_offset <= size);
}

void CheckTable(const std::vector<TensorInfo>& tensors, uint64_t tensor_count,
                uint64_t data_offset, uint64_t size) {
  FUZZ_CHECK(tensors.size() == tensor_count);
  std::set<std::string> names;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const TensorInfo& t : tensors) {
    FUZZ_CHECK(!t.name.empty() && t.name.size() <= zeroskip::kZskMaxNameBytes);
    for (char c : t.name) FUZZ_CHECK(c >= 0x21 && c <= 0x7e);
    FUZZ_CHECK(names.insert(t.name).second);
    FUZZ_CHECK(zeroskip::DTypeBlockBytes(t.dtype) != 0);  // a known dtype
    FUZZ_CHECK(t.layout == zeroskip::Layout::kRowMajor ||
               t.layout == zeroskip::Layout::kTransposed);
    FUZZ_CHECK(!t.shape.empty() && t.shape.size() <= zeroskip::kZskMaxDims);
    const uint64_t block = zeroskip::DTypeBlockElements(t.dtype);
    FUZZ_CHECK(t.shape.back() % block == 0);  // rows are whole blocks
    uint64_t bytes = zeroskip::DTypeBlockBytes(t.dtype);
    for (size_t i = 0; i < t.shape.size(); ++i) {
      const uint64_t d = i + 1 == t.shape.size() ? t.shape[i] / block : t.shape[i];
      FUZZ_CHECK(d != 0 && bytes <= UINT64_MAX / d);
      bytes *= d;
    }
    FUZZ_CHECK(t.nbytes == bytes);
    FUZZ_CHECK(zeroskip::DTypeBytes(t.dtype, t.elements()) == bytes);
    FUZZ_CHECK(t.offset % zeroskip::kTensorAlign == 0);
    FUZZ_CHECK(RegionInside(t.offset, t.nbytes, data_offset, size));
    spans.emplace_back(t.offset, t.offset + t.nbytes);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) FUZZ_CHECK(spans[i - 1].second <= spans[i].first);
}

// The real reader on `path` (a memfd holding `size` bytes). Returns whether it opened.
bool OpenAndCheck(const std::string& path, uint64_t size) {
  std::unique_ptr<zeroskip::ZskFile> file;
  try {
    file = zeroskip::ZskFile::Open(path);
  } catch (const Error&) {
    return false;
  }
  FUZZ_CHECK(file->file_size() == size);
  FUZZ_CHECK(file->version() >= 1 && file->version() <= zeroskip::kZskVersion);
  const auto tok = file->tokenizer_model();
  FUZZ_CHECK(tok.size() <= size);
  const zeroskip::ModelConfig& c = file->config();
  FUZZ_CHECK(c.hidden >= 1 && c.heads >= 1 && c.kv_heads >= 1 && c.heads % c.kv_heads == 0);
  FUZZ_CHECK(c.bos_id >= -1 && c.bos_id < c.vocab && c.eos_id >= -1 && c.eos_id < c.vocab);
  CheckTable(file->tensors(), file->tensors().size(), 0, size);
  for (const TensorInfo& t : file->tensors()) {
    FUZZ_CHECK(file->Find(t.name) == &t);
    FUZZ_CHECK(file->data(t) != nullptr);
  }
  FUZZ_CHECK(file->Find("") == nullptr);
  try {
    file->VerifyChecksums([](size_t done, size_t total) { FUZZ_CHECK(done <= total); });
  } catch (const Error&) {
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static zeroskip::fuzz::MemFile mem;
  const std::string path = "fuzz.zsk";

  // 1. In memory, checksum not compared.
  std::optional<ZskHeader> header;
  std::optional<std::vector<TensorInfo>> table;
  try {
    header = zeroskip::DecodeZskHeader(data, size, path);
  } catch (const Error&) {
  }
  if (header) {
    CheckHeader(*header, size);
    (void)zeroskip::ZskHeaderChecksum(data, *header);  // reads metadata, tokenizer and table
    try {
      table = zeroskip::DecodeTensorTable(data, *header, path);
    } catch (const Error&) {
    }
    if (table) CheckTable(*table, header->tensor_count, header->data_offset, size);
  }

  // 2. The real reader on the raw bytes.
  const bool opened = OpenAndCheck(mem.Set(data, size), size);
  if (opened) FUZZ_CHECK(header && table);  // the reader accepts no more than the decoders

  // 3. The real reader with a correct header checksum.
  if (header) {
    const uint64_t checksum = zeroskip::ZskHeaderChecksum(data, *header);
    if (checksum != header->header_checksum) {
      std::vector<uint8_t> fixed(data, data + size);
      zeroskip::fuzz::StoreLE64(fixed.data() + zeroskip::kZskChecksumFieldOffset, checksum);
      const bool fixed_opened = OpenAndCheck(mem.Set(fixed.data(), fixed.size()), size);
      if (fixed_opened) FUZZ_CHECK(table.has_value());
    }
  }
  return 0;
}
