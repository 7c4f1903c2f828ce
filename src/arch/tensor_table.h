// An architecture's tensors, looked up by name: for each, the native name a .zsk stores it
// under, the Hugging Face name it is converted from, its shape (from the config), layout and
// dtype rule. The converter (what to read, how to store it) and Model::Load (what a .zsk must
// hold) both work from one table, so they cannot disagree. Knows nothing about files.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "zeroskip/format.h"

namespace zeroskip {

struct TensorDef {
  std::string name;                   // native name, e.g. "layers.3.ffn_down"
  std::string hf_name;                // e.g. "model.layers.3.mlp.down_proj.weight"
  std::vector<uint64_t> hf_shape;     // shape in the HF checkpoint ([out, in] for matrices)
  Layout layout = Layout::kRowMajor;  // kTransposed: stored [in, out] (the FFN down projection)
  bool always_f32 = false;            // norm weights: tiny, kept exact in f32
  // A [vocab, hidden] matrix (embeddings, LM head): converted to q4 it is stored q8 instead.
  bool vocab_matrix = false;
  // Set when this config does not store the tensor (lm_head of a tied model): a .zsk must not
  // hold it, and the converter skips a checkpoint's copy, saying why.
  const char* unused_because = nullptr;

  std::vector<uint64_t> stored_shape() const;
};

class TensorTable {
 public:
  // `tensors` in file order. `derived_hf_suffixes`: checkpoint buffers the runtime recomputes
  // (name suffix, why it is skipped), e.g. {".rotary_emb.inv_freq", "derived rotary buffer"}.
  TensorTable(std::vector<TensorDef> tensors,
              std::vector<std::pair<std::string, std::string>> derived_hf_suffixes);

  // The tensors a .zsk of this config holds, in file order.
  const std::vector<TensorDef>& stored() const { return stored_; }

  // The stored tensor with this native name, or nullptr.
  const TensorDef* find(std::string_view name) const;
  // The same, for names the code binds: an unknown name is a bug, so it throws std::out_of_range.
  const TensorDef& at(std::string_view name) const;
  // The stored tensor converted from this Hugging Face name, or nullptr.
  const TensorDef* FindHf(std::string_view hf_name) const;
  // Also skips every checkpoint tensor whose Hugging Face name contains `infix`, saying `why`.
  void SkipHfInfix(std::string infix, std::string why);
  // Why a checkpoint tensor that is not stored may be skipped; nullopt if it must be refused.
  std::optional<std::string> SkipReason(std::string_view hf_name) const;

 private:
  std::vector<TensorDef> stored_, unused_;
  std::vector<std::pair<std::string, std::string>> derived_hf_suffixes_, skipped_hf_infixes_;
  std::map<std::string, size_t, std::less<>> by_name_, by_hf_name_;  // -> index in stored_
};

// "[4096, 11008]", for messages.
std::string ShapeString(const std::vector<uint64_t>& shape);

// Native names of the per-layer tensors: "layers.3.ffn_down".
std::string LayerTensorName(int64_t layer, std::string_view role);

}  // namespace zeroskip
