// Edits of generated test checkpoints (defined in test_util.cpp).
#pragma once

#include <string>
#include <vector>

namespace zeroskip::testing {

// Rewrites the single-file f32 safetensors checkpoint `file` with the tensors `names` stored as
// bf16 (truncated): a checkpoint whose tensors differ in type.
void StoreAsBf16(const std::string& file, const std::vector<std::string>& names);

}  // namespace zeroskip::testing
