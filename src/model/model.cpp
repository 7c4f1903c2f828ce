#include "zeroskip/model.h"

#include <set>

#include "model/llama_layout.h"
#include "zeroskip/error.h"

namespace zeroskip {

std::unique_ptr<Model> Model::Load(const std::string& path) {
  auto model = std::unique_ptr<Model>(new Model());
  model->file_ = ZskFile::Open(path);
  const ZskFile& file = *model->file_;
  const ModelConfig& c = file.config();

  // Every tensor the architecture needs, as the converter would have written it; nothing else.
  std::set<std::string> expected;
  auto view = [&](const TensorSlot& slot) {
    const TensorInfo* t = file.Find(slot.name);
    if (t == nullptr) throw Error(path, "missing tensor '" + slot.name + "'");
    if (t->shape != slot.stored_shape()) {
      throw Error(path, "tensor '" + slot.name + "' has shape " + ShapeString(t->shape) +
                            " but the config implies " + ShapeString(slot.stored_shape()));
    }
    const Layout layout = slot.transposed ? Layout::kTransposed : Layout::kRowMajor;
    if (t->layout != layout) throw Error(path, "tensor '" + slot.name + "' has the wrong layout");
    if (slot.always_f32 && t->dtype != DType::kF32) {
      throw Error(path, "tensor '" + slot.name + "' must be f32");
    }
    expected.insert(slot.name);
    const int64_t rows = t->shape.size() == 2 ? static_cast<int64_t>(t->shape[0]) : 1;
    return WeightView{file.data(*t), nullptr, t->dtype, t->layout, rows,
                      static_cast<int64_t>(t->shape.back())};
  };
  auto vector = [&](const TensorSlot& slot) { return static_cast<const float*>(view(slot).data); };

  const std::vector<TensorSlot> slots = LlamaTensorSlots(c);
  // Checked first: it bounds the lookups below whatever the table holds.
  if (file.tensors().size() != slots.size()) {
    throw Error(path, "holds " + std::to_string(file.tensors().size()) + " tensors but the config "
                      "implies " + std::to_string(slots.size()));
  }
  size_t s = 0;
  model->embeddings_ = view(slots[s++]);
  model->layers_.resize(c.layers);
  for (auto& l : model->layers_) {
    l.attn_norm = vector(slots[s++]);
    l.q = view(slots[s++]);
    l.k = view(slots[s++]);
    l.v = view(slots[s++]);
    l.o = view(slots[s++]);
    l.ffn_norm = vector(slots[s++]);
    l.ffn.gate = view(slots[s++]);
    l.ffn.up = view(slots[s++]);
    l.ffn.down_t = view(slots[s++]);
  }
  for (int64_t i = 0; i < c.layers; ++i) {
    const LayerWeights& l = model->layers_[i];
    if (l.ffn.up.dtype != l.ffn.gate.dtype || l.ffn.down_t.dtype != l.ffn.gate.dtype) {
      throw Error(path, "layer " + std::to_string(i) +
                            ": ffn_gate, ffn_up and ffn_down must share one dtype");
    }
  }
  model->output_norm_ = vector(slots[s++]);
  model->lm_head_ = c.tied_embeddings ? model->embeddings_ : view(slots[s++]);
  for (const auto& t : file.tensors()) {
    if (!expected.count(t.name)) throw Error(path, "unexpected tensor '" + t.name + "'");
  }
  model->tokenizer_ = std::make_unique<Tokenizer>(file.tokenizer_model(), path);
  if (model->tokenizer_->vocab_size() > c.vocab) {
    throw Error(path, "tokenizer has more pieces than the model's vocab_size");
  }
  return model;
}

uint64_t Model::parameter_count() const {
  uint64_t n = 0;
  for (const auto& t : file_->tensors()) n += t.elements();
  return n;
}

}  // namespace zeroskip
