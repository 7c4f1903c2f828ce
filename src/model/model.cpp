#include "zeroskip/model.h"

#include <set>

#include "arch/architectures.h"
#include "zeroskip/error.h"

namespace zeroskip {

std::unique_ptr<Model> Model::Load(const std::string& path) {
  auto model = std::unique_ptr<Model>(new Model());
  model->file_ = ZskFile::Open(path);
  const ZskFile& file = *model->file_;
  const ModelConfig& c = file.config();

  // Every tensor the architecture stores, as the converter would have written it; nothing else.
  const TensorTable table = ArchitectureTensors(c);
  // Checked first: it bounds the lookups below whatever the table holds.
  if (file.tensors().size() != table.stored().size()) {
    throw Error(path, "holds " + std::to_string(file.tensors().size()) +
                          " tensors but the config implies " +
                          std::to_string(table.stored().size()));
  }
  std::set<std::string> bound;
  auto view = [&](const std::string& name) {
    const TensorDef& def = table.at(name);
    const TensorInfo* t = file.Find(name);
    if (t == nullptr) throw Error(path, "missing tensor '" + name + "'");
    if (t->shape != def.stored_shape()) {
      throw Error(path, "tensor '" + name + "' has shape " + ShapeString(t->shape) +
                            " but the config implies " + ShapeString(def.stored_shape()));
    }
    if (t->layout != def.layout) throw Error(path, "tensor '" + name + "' has the wrong layout");
    if (def.always_f32 && t->dtype != DType::kF32) {
      throw Error(path, "tensor '" + name + "' must be f32");
    }
    bound.insert(name);
    return WeightView{.data = file.data(*t),
                      .dtype = t->dtype,
                      .rows = t->shape.size() == 2 ? static_cast<int64_t>(t->shape[0]) : 1,
                      .cols = static_cast<int64_t>(t->shape.back())};
  };
  auto vector = [&](const std::string& name) { return static_cast<const float*>(view(name).data); };

  model->embeddings_ = view("tok_embeddings");
  model->layers_.resize(c.layers);
  for (int64_t i = 0; i < c.layers; ++i) {
    auto name = [i](const char* role) { return LayerTensorName(i, role); };
    LayerWeights& l = model->layers_[i];
    l.attn_norm = vector(name("attn_norm"));
    l.q = view(name("attn_q"));
    l.k = view(name("attn_k"));
    l.v = view(name("attn_v"));
    l.o = view(name("attn_output"));
    l.ffn_norm = vector(name("ffn_norm"));
    l.ffn.gate = view(name("ffn_gate"));
    l.ffn.up = view(name("ffn_up"));
    l.ffn.down_t = view(name("ffn_down"));
  }
  for (int64_t i = 0; i < c.layers; ++i) {
    const FfnWeights& ffn = model->layers_[i].ffn;
    if (ffn.up.dtype != ffn.gate.dtype || ffn.down_t.dtype != ffn.gate.dtype) {
      throw Error(path, "layer " + std::to_string(i) +
                            ": ffn_gate, ffn_up and ffn_down must share one dtype");
    }
  }
  model->output_norm_ = vector("output_norm");
  // Not stored when the config ties the LM head to the embeddings.
  model->lm_head_ = table.find("output") ? view("output") : model->embeddings_;
  for (const auto& t : file.tensors()) {
    if (!bound.count(t.name)) throw Error(path, "unexpected tensor '" + t.name + "'");
  }
  model->tokenizer_ = std::make_unique<Tokenizer>(file.tokenizer_model(), path);
  if (model->tokenizer_->vocab_size() > c.vocab) {
    throw Error(path, "tokenizer has more pieces than the model's vocab_size");
  }
  model->file_->Prefault();
  return model;
}

uint64_t Model::parameter_count() const {
  uint64_t n = 0;
  for (const auto& t : file_->tensors()) n += t.elements();
  return n;
}

}  // namespace zeroskip
