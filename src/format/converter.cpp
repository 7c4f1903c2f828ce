#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "format/dtype.h"
#include "format/file_io.h"
#include "format/safetensors.h"
#include "model/architectures.h"
#include "text/tokenizer_check.h"
#include "zeroskip/convert.h"
#include "zeroskip/error.h"

namespace zeroskip {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxConfigBytes = 16u << 20;
constexpr uint64_t kMaxTokenizerBytes = 64u << 20;
constexpr uint64_t kMaxIndexBytes = 64u << 20;

// Where each tensor lives: the shard files and, per tensor name, its header entry.
struct Checkpoint {
  std::vector<SafetensorsFile> shards;
  std::map<std::string, std::pair<size_t, const SafetensorsTensor*>> tensors;
  std::string weights_path;  // what errors about missing tensors point at
};

std::vector<std::string> ShardNames(const std::string& index_path) {
  const json index = json::parse(ReadSmallFile(index_path, kMaxIndexBytes), nullptr, false);
  if (index.is_discarded() || !index.is_object()) throw Error(index_path, "is not valid JSON");
  if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
    throw Error(index_path, "missing weight_map");
  }
  std::set<std::string> names;
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    if (!file.is_string()) throw Error(index_path, "weight_map['" + tensor + "'] is not a string");
    const std::string name = file.get<std::string>();
    // Shards are plain files beside the index: no directories, no escaping the checkpoint.
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
      throw Error(index_path, "invalid shard file name '" + name + "'");
    }
    names.insert(name);
  }
  if (names.empty()) throw Error(index_path, "weight_map is empty");
  return {names.begin(), names.end()};
}

Checkpoint OpenCheckpoint(const std::string& dir) {
  Checkpoint ckpt;
  const std::string index_path = dir + "/model.safetensors.index.json";
  std::vector<std::string> files;
  if (FileExists(index_path)) {
    for (const auto& name : ShardNames(index_path)) files.push_back(dir + "/" + name);
    ckpt.weights_path = index_path;
  } else {
    const std::string single = dir + "/model.safetensors";
    if (!FileExists(single)) {
      throw Error(dir, "no model.safetensors or model.safetensors.index.json");
    }
    files.push_back(single);
    ckpt.weights_path = single;
  }
  for (const auto& f : files) ckpt.shards.push_back(ReadSafetensorsHeader(f));
  for (size_t s = 0; s < ckpt.shards.size(); ++s) {
    for (const auto& t : ckpt.shards[s].tensors) {
      if (!ckpt.tensors.emplace(t.name, std::make_pair(s, &t)).second) {
        throw Error(ckpt.shards[s].path, "tensor '" + t.name + "' appears in more than one shard");
      }
    }
  }
  return ckpt;
}

// The output must not be any file the conversion reads: renaming over config.json or a shard
// would destroy the checkpoint (compared by inode, so other spellings and hard links count).
void RefuseOutputThatIsAnInput(const std::string& out, const std::vector<std::string>& inputs) {
  struct stat out_st;
  if (::stat(out.c_str(), &out_st) != 0) return;  // a new file cannot be an input
  for (const auto& in : inputs) {
    struct stat in_st;
    if (::stat(in.c_str(), &in_st) == 0 && in_st.st_dev == out_st.st_dev &&
        in_st.st_ino == out_st.st_ino) {
      throw Error(out, "is an input of this conversion (" + in + "); choose another output");
    }
  }
}

}  // namespace

ConvertResult ConvertHfCheckpoint(const ConvertOptions& opt) {
  CheckOutputPath(opt.out_path);  // fail before reading gigabytes, not after
  const std::string config_path = opt.hf_dir + "/config.json";
  if (!FileExists(config_path)) {
    throw Error(config_path, "missing (is this a checkpoint directory?)");
  }
  const std::string config_text = ReadSmallFile(config_path, kMaxConfigBytes);
  const ModelConfig config = ParseHfConfig(config_text, config_path);

  const std::string tokenizer_path = opt.hf_dir + "/tokenizer.model";
  if (!FileExists(tokenizer_path)) {
    throw Error(tokenizer_path, "missing (a sentencepiece tokenizer.model is required)");
  }
  std::string tokenizer = ReadSmallFile(tokenizer_path, kMaxTokenizerBytes);
  CheckTokenizerModel(tokenizer, config.vocab, tokenizer_path);

  const Checkpoint ckpt = OpenCheckpoint(opt.hf_dir);
  std::vector<std::string> inputs = {config_path, tokenizer_path, ckpt.weights_path};
  for (const auto& shard : ckpt.shards) inputs.push_back(shard.path);
  RefuseOutputThatIsAnInput(opt.out_path, inputs);
  const TensorTable table = ArchitectureTensors(config);

  // Every stored tensor present with the shape the config implies; nothing unexplained extra.
  std::vector<const SafetensorsTensor*> sources;  // parallel to table.stored()
  std::vector<size_t> source_shard;
  for (const TensorDef& def : table.stored()) {
    const auto it = ckpt.tensors.find(def.hf_name);
    if (it == ckpt.tensors.end()) {
      throw Error(ckpt.weights_path, "missing tensor '" + def.hf_name + "'");
    }
    const auto& [shard, t] = it->second;
    if (t->shape != def.hf_shape) {
      throw Error(ckpt.shards[shard].path, "tensor '" + def.hf_name + "' has shape " +
                                               ShapeString(t->shape) + " but config.json implies " +
                                               ShapeString(def.hf_shape));
    }
    sources.push_back(t);
    source_shard.push_back(shard);
  }
  std::vector<std::string> warnings;
  for (const auto& [name, where] : ckpt.tensors) {
    if (table.FindHf(name) != nullptr) continue;
    const std::optional<std::string> skip = table.SkipReason(name);
    if (!skip) {
      throw Error(ckpt.shards[where.first].path, "unexpected tensor '" + name +
                                                     "' (not part of a " + config.hf_architecture +
                                                     " with this config.json)");
    }
    warnings.push_back("skipping tensor '" + name + "' (" + *skip + ")");
  }

  // The sparse kernels read gate, up and down of a layer with one weight type.
  auto source = [&](int64_t layer, const char* role) {
    return ckpt.tensors.at(table.at(LayerTensorName(layer, role)).hf_name);
  };
  for (int64_t l = 0; l < config.layers && !opt.dtype; ++l) {
    const DType gate = source(l, "ffn_gate").second->dtype;
    if (source(l, "ffn_up").second->dtype != gate || source(l, "ffn_down").second->dtype != gate) {
      throw Error(ckpt.shards[source(l, "ffn_gate").first].path,
                  "layer " + std::to_string(l) + ": gate_proj, up_proj and down_proj have " +
                      "different dtypes (pass --dtype to convert them to one)");
    }
  }

  std::vector<TensorSpec> specs;
  uint64_t total_bytes = 0, max_src = 0, max_dst = 0, parameters = 0;
  for (size_t i = 0; i < sources.size(); ++i) {
    const TensorDef& def = table.stored()[i];
    const DType dtype = def.always_f32 ? DType::kF32 : opt.dtype.value_or(sources[i]->dtype);
    TensorSpec spec{def.name, dtype, def.layout, def.stored_shape()};
    uint64_t elements = 1;
    for (auto d : spec.shape) elements *= d;  // bounded by the config limits
    parameters += elements;
    max_src = std::max(max_src, sources[i]->end - sources[i]->begin);
    max_dst = std::max(max_dst, elements * DTypeSize(dtype));
    total_bytes += elements * DTypeSize(dtype);
    specs.push_back(std::move(spec));
  }

  ZskWriter writer(opt.out_path, config, config_text, std::move(tokenizer), std::move(specs));
  std::vector<uint8_t> src(max_src), dst(max_dst);
  std::vector<std::unique_ptr<InputFile>> files;
  for (const auto& shard : ckpt.shards) files.push_back(std::make_unique<InputFile>(shard.path));
  uint64_t done = 0;
  for (size_t i = 0; i < sources.size(); ++i) {
    const SafetensorsTensor& s = *sources[i];
    const bool transpose = table.stored()[i].layout == Layout::kTransposed;
    const TensorInfo& out = writer.plan()[i];
    const uint64_t n = s.end - s.begin;
    files[source_shard[i]]->ReadAt(s.begin, src.data(), n);
    if (const uint64_t bad = CountNonFinite(src.data(), s.dtype, n / DTypeSize(s.dtype))) {
      throw Error(files[source_shard[i]]->path(),
                  "tensor '" + s.name + "': " + std::to_string(bad) +
                      " values are NaN or Inf (the checkpoint is damaged)");
    }
    const uint64_t rows = s.shape.size() == 2 ? s.shape[0] : 1;
    const uint64_t cols = s.shape.size() == 2 ? s.shape[1] : s.shape[0];
    if (!transpose && out.dtype == s.dtype) {
      writer.WriteNext({src.data(), n});
    } else {
      const uint64_t overflows =
          ConvertMatrix(src.data(), s.dtype, rows, cols, transpose, dst.data(), out.dtype);
      if (overflows > 0) {
        throw Error(files[source_shard[i]]->path(),
                    "tensor '" + s.name + "': " + std::to_string(overflows) + " values overflow " +
                        std::string(DTypeName(out.dtype)) + " (use --dtype bf16 or f32)");
      }
      writer.WriteNext({dst.data(), out.nbytes});
    }
    done += out.nbytes;
    if (opt.progress) opt.progress(done, total_bytes);
  }
  writer.Finish();
  return {sources.size(), parameters, writer.file_size(), std::move(warnings)};
}

}  // namespace zeroskip
