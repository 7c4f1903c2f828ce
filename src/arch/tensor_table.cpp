#include "arch/tensor_table.h"

#include <stdexcept>

namespace zeroskip {

std::vector<uint64_t> TensorDef::stored_shape() const {
  return layout == Layout::kTransposed ? std::vector<uint64_t>{hf_shape[1], hf_shape[0]} : hf_shape;
}

TensorTable::TensorTable(std::vector<TensorDef> tensors,
                         std::vector<std::pair<std::string, std::string>> derived_hf_suffixes)
    : derived_hf_suffixes_(std::move(derived_hf_suffixes)) {
  for (auto& t : tensors) (t.unused_because ? unused_ : stored_).push_back(std::move(t));
  for (size_t i = 0; i < stored_.size(); ++i) {
    by_name_.emplace(stored_[i].name, i);
    by_hf_name_.emplace(stored_[i].hf_name, i);
  }
}

const TensorDef* TensorTable::find(std::string_view name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &stored_[it->second];
}

const TensorDef& TensorTable::at(std::string_view name) const {
  const TensorDef* t = find(name);
  if (t == nullptr) {
    throw std::out_of_range("no tensor '" + std::string(name) + "' in the tensor table");
  }
  return *t;
}

const TensorDef* TensorTable::FindHf(std::string_view hf_name) const {
  const auto it = by_hf_name_.find(hf_name);
  return it == by_hf_name_.end() ? nullptr : &stored_[it->second];
}

void TensorTable::SkipHfInfix(std::string infix, std::string why) {
  skipped_hf_infixes_.emplace_back(std::move(infix), std::move(why));
}

std::optional<std::string> TensorTable::SkipReason(std::string_view hf_name) const {
  for (const auto& t : unused_) {
    if (t.hf_name == hf_name) return t.unused_because;
  }
  for (const auto& [suffix, why] : derived_hf_suffixes_) {
    if (hf_name.ends_with(suffix)) return why;
  }
  for (const auto& [infix, why] : skipped_hf_infixes_) {
    if (hf_name.find(infix) != std::string_view::npos) return why;
  }
  return std::nullopt;
}

std::string ShapeString(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string LayerTensorName(int64_t layer, std::string_view role) {
  return "layers." + std::to_string(layer) + "." + std::string(role);
}

}  // namespace zeroskip
