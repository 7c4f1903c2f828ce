#include "zeroskip/model.h"

#include <unistd.h>

#include <algorithm>
#include <limits>
#include <set>

#include "arch/architectures.h"
#include "format/file_io.h"
#include "format/neuron_file.h"
#include "format/shadow_gate.h"
#include "zeroskip/convert.h"
#include "zeroskip/engine.h"
#include "zeroskip/error.h"

namespace zeroskip {
namespace {

// The FFN matrices of a layer that an offloaded model reads from its neuron file: up and down,
// and the gate where a shadow stands in for it.
std::vector<const WeightView*> OffloadedFfn(const FfnWeights& ffn) {
  std::vector<const WeightView*> views = {&ffn.up, &ffn.down_t};
  if (ffn.gate_shadow.data != nullptr) views.push_back(&ffn.gate);
  return views;
}

// A layer's optional shadow gate (docs/FORMAT.md, "Shadow gate"): both tensors or neither, with
// the shapes and dtypes of the spec, and norms the bound can use (finite, not negative; a
// negative norm would certify neurons that fire).
void BindShadowGate(const ZskFile& file, int64_t layer, std::set<std::string>* bound,
                    FfnWeights* ffn) {
  const ModelConfig& c = file.config();
  const std::vector<TensorSpec> specs = ShadowGateSpecs(layer, c.ffn, c.hidden);
  const TensorInfo* shadow = file.Find(specs[0].name);
  const TensorInfo* norms = file.Find(specs[1].name);
  if (shadow == nullptr && norms == nullptr) return;
  for (size_t k = 0; k < specs.size(); ++k) {
    const TensorInfo* t = k == 0 ? shadow : norms;
    if (t == nullptr) {
      throw Error(file.path(), "missing tensor '" + specs[k].name + "' (half a shadow gate)");
    }
    if (t->dtype != specs[k].dtype || t->shape != specs[k].shape ||
        t->layout != Layout::kRowMajor) {
      throw Error(file.path(), "tensor '" + t->name + "' must be " +
                                   std::string(DTypeName(specs[k].dtype)) + " " +
                                   ShapeString(specs[k].shape) + ", row-major");
    }
    bound->insert(t->name);
  }
  const auto* values = static_cast<const float*>(file.data(*norms));
  for (int64_t i = 0; i < 2 * c.ffn; ++i) {
    if (!(values[i] >= 0.0f && values[i] <= std::numeric_limits<float>::max())) {
      throw Error(file.path(), "tensor '" + norms->name + "' holds a norm that is negative, " +
                                   "infinite or NaN");
    }
  }
  ffn->gate_shadow = {
      .data = file.data(*shadow), .dtype = DType::kQ8, .rows = c.ffn, .cols = c.hidden};
  ffn->gate_shadow_norms = values;
}

}  // namespace

std::unique_ptr<Model> Model::Load(const std::string& path, const LoadOptions& options) {
  auto model = std::unique_ptr<Model>(new Model());
  model->file_ = ZskFile::Open(path);
  const ZskFile& file = *model->file_;
  const ModelConfig& c = file.config();

  // Every tensor the architecture stores, as the converter would have written it; nothing else.
  const TensorTable table = ArchitectureTensors(c);
  // Checked first: it bounds the lookups below whatever the table holds. Each layer may also
  // hold the two tensors of a shadow gate.
  const uint64_t least = table.stored().size(), most = least + 2 * c.layers;
  if (file.tensors().size() < least || file.tensors().size() > most) {
    throw Error(path, "holds " + std::to_string(file.tensors().size()) +
                          " tensors but the config implies " + std::to_string(least) +
                          (file.tensors().size() > most
                               ? " (" + std::to_string(most) + " with shadow gates)"
                               : ""));
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
  // Tensors only some architectures store (OPT's biases, positions, projections).
  auto optional_view = [&](const std::string& name) {
    return table.find(name) ? view(name) : WeightView{};
  };
  auto optional_vector = [&](const std::string& name) {
    return static_cast<const float*>(optional_view(name).data);
  };

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
    l.attn_norm_bias = optional_vector(name("attn_norm_bias"));
    l.q_bias = optional_vector(name("attn_q_bias"));
    l.k_bias = optional_vector(name("attn_k_bias"));
    l.v_bias = optional_vector(name("attn_v_bias"));
    l.o_bias = optional_vector(name("attn_output_bias"));
    l.ffn_norm_bias = optional_vector(name("ffn_norm_bias"));
    if (c.gated_ffn) {
      l.ffn.gate = view(name("ffn_gate"));
      l.ffn.up = view(name("ffn_up"));
      l.ffn.down_t = view(name("ffn_down"));
      BindShadowGate(file, i, &bound, &l.ffn);
    } else {
      // fc1 is the gate whose ReLU decides which fc2 rows are read. Its bias keeps the shadow
      // gate's bound (on fc1·x alone) from applying: a file holding one has unexpected tensors.
      l.ffn.gate = view(name("ffn_fc1"));
      l.ffn.gate_bias = vector(name("ffn_fc1_bias"));
      l.ffn.down_t = view(name("ffn_fc2"));
      l.ffn.down_bias = vector(name("ffn_fc2_bias"));
    }
  }
  // OPT-350m style post-norm models have no final norm.
  model->output_norm_ = optional_vector("output_norm");
  model->output_norm_bias_ = optional_vector("output_norm_bias");
  model->positions_ = optional_view("pos_embeddings");
  model->project_in_ = optional_view("project_in");
  model->project_out_ = optional_view("project_out");
  // Not stored when the config ties the LM head to the embeddings.
  model->lm_head_ = table.find("output") ? view("output") : model->embeddings_;
  for (const auto& t : file.tensors()) {
    if (!bound.count(t.name)) throw Error(path, "unexpected tensor '" + t.name + "'");
  }
  model->tokenizer_ = file.LoadTokenizer();
  if (model->tokenizer_->vocab_size() > c.vocab) {
    throw Error(path, "tokenizer has more pieces than the model's vocab_size");
  }
  model->PlanMemory(options);
  return model;
}

Model::~Model() {
  if (neuron_fd_ >= 0) ::close(neuron_fd_);
}

void Model::PlanMemory(const LoadOptions& options) {
  const ZskFile& file = *file_;
  const ModelConfig& c = file.config();
  memory_.direct_io = options.direct_io;
  memory_.io_uring = options.io_uring;
  const bool automatic = options.mem_budget == 0;
  memory_.limit = options.memory_limit > 0 ? options.memory_limit : ProcessMemoryLimitBytes();
  memory_.budget = automatic ? memory_.limit / 100 * 85 : options.mem_budget;
  memory_.resident_bytes = file.file_size();
  const std::string neuron_path = NeuronFilePath(file.path());
  if ((file.file_size() <= memory_.budget && !options.always_offload) ||
      (automatic && (!c.gated_ffn || !FileExists(neuron_path)))) {
    file.Prefault();
    return;
  }
  if (!FileExists(neuron_path)) {
    throw Error(file.path(), "has no neuron file " + neuron_path + " to read its FFN from (it is " +
                                 std::to_string(file.file_size()) +
                                 " bytes; the memory budget is " + std::to_string(memory_.budget) +
                                 ")");
  }
  // What decode reads a neuron at a time (OffloadedFfn). Not resident, and not counted in the
  // budget: the embeddings' rows, faulted in as used.
  std::set<const void*> offloaded;
  for (const LayerWeights& l : layers_) {
    for (const WeightView* view : OffloadedFfn(l.ffn)) offloaded.insert(view->data);
  }
  // A token reads one row of the embeddings (all of them only when they are the LM head too).
  if (embeddings_.data != lm_head_.data) offloaded.insert(embeddings_.data);
  const auto is_offloaded = [&](const TensorInfo& t) { return offloaded.count(file.data(t)) > 0; };
  uint64_t resident = file.file_size();
  for (const TensorInfo& t : file.tensors()) resident -= is_offloaded(t) ? t.nbytes : 0;
  uint64_t size = 0;
  neuron_fd_ = OpenRegularFile(neuron_path, &size);  // refuses a missing file with its name
  neuron_layout_ =
      std::make_unique<NeuronLayout>(ReadNeuronFileHeader(neuron_path, neuron_fd_, size, file));
  const NeuronLayout& l = *neuron_layout_;
  // The cache holds at least one layer's neurons, so any token's request for a layer fits.
  const uint64_t least = resident + static_cast<uint64_t>(l.ffn) * l.stride;
  if (memory_.budget < least) {
    throw Error(file.path(), "a memory budget of " + std::to_string(memory_.budget) +
                                 " bytes is too small: it needs at least " + std::to_string(least) +
                                 " (" + std::to_string(resident) + " resident, " +
                                 std::to_string(least - resident) +
                                 " for one layer's neurons in the cache)");
  }
  memory_.offloaded = true;
  memory_.resident_bytes = resident;
  memory_.neuron_file = neuron_path;
  memory_.bundle_bytes = l.stride;
  memory_.cache_slots = std::min<uint64_t>((memory_.budget - resident) / l.stride,
                                           static_cast<uint64_t>(l.layers) * l.ffn);
  file.Prefault(is_offloaded);
}

void Model::ReleaseOffloadedFfn(int64_t layer) const {
  if (!memory_.offloaded) return;
  for (const WeightView* view : OffloadedFfn(layers_[layer].ffn)) {
    file_->Release(view->data, DTypeBytes(view->dtype, view->rows * view->cols));
  }
}

uint64_t Model::parameter_count() const {
  uint64_t n = 0;
  for (const auto& t : file_->tensors()) n += t.elements();
  return n;
}

}  // namespace zeroskip
