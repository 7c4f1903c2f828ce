// Fuzz target: the GGUF reader (src/format/gguf.h), fed a whole GGUF image.
//
//  1. ParseGgufHeader on the fuzzer's own buffer (an exact-size heap copy, so ASan flags any
//     read past the image). Oracles on an accepted header: 1-4 dims each >= 1, every tensor's
//     bytes inside the file, none overlapping, names unique, rows whole blocks of its ggml type
//     and its bytes that type's blocks.
//  2. What the converter derives from it: the config.json text (without and with --act relu),
//     which must then parse or fail with zeroskip::Error; the sentencepiece model bytes, checked
//     as the converter checks them (CheckTokenizerModel).
//  3. The checkpoint view on the same bytes in a memfd: every tensor read, q/k un-permuted.
// Only zeroskip::Error may escape the reader.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "format/gguf.h"
#include "fuzz_util.h"
#include "text/tokenizer_check.h"
#include "zeroskip/config.h"
#include "zeroskip/error.h"

namespace {

using zeroskip::Error;

class MemorySource : public zeroskip::ByteSource {
 public:
  MemorySource(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint64_t size() const override { return size_; }
  void Read(uint64_t offset, void* out, uint64_t n) const override {
    FUZZ_CHECK(offset <= size_ && n <= size_ - offset);  // the reader bounds-checks first
    std::memcpy(out, data_ + offset, n);
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

void CheckHeader(const zeroskip::GgufHeader& h, uint64_t size) {
  FUZZ_CHECK(h.version == 2 || h.version == 3);
  std::set<std::string> names;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto& t : h.tensors) {
    FUZZ_CHECK(names.insert(t.name).second);
    FUZZ_CHECK(!t.dims.empty() && t.dims.size() <= 4);
    uint64_t elements = 1;
    for (uint64_t d : t.dims) {
      FUZZ_CHECK(d >= 1);
      elements *= d;  // the reader checked the product does not overflow
    }
    // ggml's {type: (values, bytes) per block} (ggml-common.h), written out independently.
    static const std::map<uint32_t, std::pair<uint64_t, uint64_t>> kBlocks = {
        {0, {1, 4}},      {1, {1, 2}},      {30, {1, 2}},     {2, {32, 18}},   {3, {32, 20}},
        {6, {32, 22}},    {7, {32, 24}},    {8, {32, 34}},    {20, {32, 18}},  {10, {256, 84}},
        {11, {256, 110}}, {12, {256, 144}}, {13, {256, 176}}, {14, {256, 210}}};
    const auto block = kBlocks.find(t.ggml_type);
    FUZZ_CHECK(block != kBlocks.end());
    FUZZ_CHECK(t.dims[0] % block->second.first == 0);
    FUZZ_CHECK(t.nbytes == elements / block->second.first * block->second.second);
    FUZZ_CHECK(t.offset <= size && t.nbytes <= size - t.offset);
    spans.emplace_back(t.offset, t.nbytes);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t k = 1; k < spans.size(); ++k) {
    FUZZ_CHECK(spans[k - 1].first + spans[k - 1].second <= spans[k].first);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static zeroskip::fuzz::MemFile file;
  const std::vector<uint8_t> copy(data, data + size);  // exact-size: ASan sees overreads
  const MemorySource source(copy.data(), copy.size());
  zeroskip::GgufHeader header;
  try {
    header = zeroskip::ParseGgufHeader(source, "fuzz.gguf");
  } catch (const Error&) {
    return 0;
  }
  CheckHeader(header, size);
  for (const char* act : {"", "relu"}) {
    try {
      const std::string config = zeroskip::GgufConfigJson(header, "fuzz.gguf", act);
      zeroskip::ParseHfConfig(config, "fuzz.gguf (metadata)");
    } catch (const Error&) {
    }
  }
  try {
    const std::string model = zeroskip::GgufTokenizerModel(header, "fuzz.gguf");
    zeroskip::CheckTokenizerModel(model, 1 << 22, "fuzz.gguf");
  } catch (const Error&) {
  }
  try {
    const std::string& path = file.Set(data, size);
    const auto ckpt = zeroskip::OpenGgufCheckpoint(path, std::move(header));
    std::vector<uint8_t> out;
    for (const auto& t : ckpt->tensors()) {
      if (t.nbytes > (64u << 20)) continue;  // bounded by the file anyway; keep runs fast
      out.resize(t.nbytes);
      ckpt->Read(t, out.data());
    }
  } catch (const Error&) {
  }
  return 0;
}
