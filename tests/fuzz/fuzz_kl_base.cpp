// Fuzz target: the KL divergence base file reader (perplexity --kl-divergence), on the raw bytes
// in a memfd, then again with the trailing checksum recomputed so that mutated headers, token ids
// and rows get past it into the size checks and Row.
#include <xxhash.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "zeroskip/error.h"
#include "zeroskip/kl_divergence.h"

namespace {

// Opens `path` (a memfd holding `size` bytes) and reads every row. Returns whether it opened.
bool OpenAndRead(const std::string& path, uint64_t size) {
  std::unique_ptr<zeroskip::KlBaseReader> base;
  try {
    base = std::make_unique<zeroskip::KlBaseReader>(path);
  } catch (const zeroskip::Error&) {
    return false;
  }
  const zeroskip::KlBaseInfo& info = base->info();
  FUZZ_CHECK(info.vocab >= 2 && info.context >= 1 && info.bos_id >= -1 && info.bos_id < info.vocab);
  FUZZ_CHECK(info.positions <= info.text_ids.size());
  FUZZ_CHECK(48 + 4 * info.text_ids.size() + 4 * info.positions * uint64_t(info.vocab) == size);
  for (const int id : info.text_ids) FUZZ_CHECK(id >= 0 && id < info.vocab);
  base->CheckSameRun(info);  // a run that is the base's own matches
  for (uint64_t i = 0; i < info.positions; ++i) {
    try {
      const auto row = base->Row(i);
      FUZZ_CHECK(row.size() == static_cast<size_t>(info.vocab));
      for (const float v : row) FUZZ_CHECK(v <= 0 && std::isfinite(v));
    } catch (const zeroskip::Error&) {
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static zeroskip::fuzz::MemFile mem;
  OpenAndRead(mem.Set(data, size), size);
  if (size >= 8) {
    std::vector<uint8_t> fixed(data, data + size);
    zeroskip::fuzz::StoreLE64(fixed.data() + size - 8, XXH64(fixed.data(), size - 8, 0));
    OpenAndRead(mem.Set(fixed.data(), fixed.size()), size);
  }
  return 0;
}
