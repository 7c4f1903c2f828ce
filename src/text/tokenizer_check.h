// Validates a serialized sentencepiece model before it is embedded in a .zsk.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace zeroskip {

// Throws Error(path, reason) unless `model` loads as a sentencepiece model whose pieces all
// have ids below `vocab` (the model's embedding rows).
void CheckTokenizerModel(std::string_view model, int64_t vocab, const std::string& path);

}  // namespace zeroskip
