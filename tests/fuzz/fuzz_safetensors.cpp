// Fuzz target: the safetensors header parser (ParseSafetensorsHeader), and the file-level
// reader (ReadSafetensorsHeader) on the same header as a differential check.
//
// Input layout: 8 bytes little-endian D (the number of tensor-data bytes after the header),
// then the header JSON. The simulated file is 8 + len(JSON) + D bytes (mod 2^64: a wrapped size
// must be rejected too). Seeds are written by make_seeds.py.
#include <cstdint>
#include <string>
#include <string_view>

#include "format/safetensors.h"
#include "fuzz_util.h"
#include "zeroskip/error.h"
#include "zeroskip/format.h"

namespace {

using zeroskip::Error;
using zeroskip::SafetensorsFile;

void CheckParsed(const SafetensorsFile& f, uint64_t data_start, uint64_t file_size) {
  for (size_t i = 0; i < f.tensors.size(); ++i) {
    const auto& t = f.tensors[i];
    FUZZ_CHECK(t.name != "__metadata__");
    FUZZ_CHECK(t.shape.size() <= zeroskip::kZskMaxDims);
    FUZZ_CHECK(data_start <= t.begin && t.begin <= t.end && t.end <= file_size);
    uint64_t bytes = zeroskip::DTypeBytes(t.dtype, 1);  // checkpoints hold float types
    for (uint64_t d : t.shape) {
      FUZZ_CHECK(d == 0 || bytes <= UINT64_MAX / d);  // the parser rejects overflowing sizes
      bytes *= d;
    }
    FUZZ_CHECK(t.end - t.begin == bytes);
    if (i > 0) FUZZ_CHECK(f.tensors[i - 1].end <= t.begin);  // sorted, no overlap
  }
}

bool SameTensors(const SafetensorsFile& a, const SafetensorsFile& b) {
  if (a.tensors.size() != b.tensors.size()) return false;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const auto &x = a.tensors[i], &y = b.tensors[i];
    if (x.name != y.name || x.dtype != y.dtype || x.shape != y.shape || x.begin != y.begin ||
        x.end != y.end) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  static zeroskip::fuzz::MemFile mem;
  const uint64_t data_bytes = zeroskip::fuzz::LoadLE64(data);
  const std::string_view header(reinterpret_cast<const char*>(data) + 8, size - 8);
  const uint64_t data_start = 8 + header.size();
  const uint64_t file_size = data_start + data_bytes;  // may wrap: must be rejected, not trusted
  const std::string path = "fuzz.safetensors";

  bool ok = false;
  std::string error;
  SafetensorsFile parsed;
  try {
    parsed = zeroskip::ParseSafetensorsHeader(header, file_size, path);
    ok = true;
  } catch (const Error& e) {
    error = e.reason();
  }
  if (ok) CheckParsed(parsed, data_start, file_size);

  // The same header as a real (sparse) file: the reader must agree with the parser exactly.
  if (file_size >= data_start && file_size <= (uint64_t{1} << 36)) {
    std::string prefix(8, '\0');
    zeroskip::fuzz::StoreLE64(reinterpret_cast<uint8_t*>(prefix.data()), header.size());
    const std::string bytes = prefix + std::string(header);
    const std::string& file_path = mem.Set(bytes.data(), bytes.size(), file_size);
    bool read_ok = false;
    std::string read_error;
    SafetensorsFile read;
    try {
      read = zeroskip::ReadSafetensorsHeader(file_path);
      read_ok = true;
    } catch (const Error& e) {
      read_error = e.reason();
    }
    FUZZ_CHECK(read_ok == ok);
    FUZZ_CHECK(read_error == error);
    if (ok) FUZZ_CHECK(SameTensors(parsed, read));
  }
  return 0;
}
