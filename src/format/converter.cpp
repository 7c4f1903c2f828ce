#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <set>

#include "arch/architectures.h"
#include "format/checkpoint_reader.h"
#include "format/dtype.h"
#include "format/file_io.h"
#include "format/gguf.h"
#include "format/q4k_recipe.h"
#include "format/safetensors.h"
#include "format/shadow_gate.h"
#include "text/tokenizer_check.h"
#include "zeroskip/convert.h"
#include "zeroskip/error.h"

namespace zeroskip {
namespace {

constexpr uint64_t kMaxConfigBytes = 16u << 20;
constexpr uint64_t kMaxTokenizerBytes = 64u << 20;

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

// The dtype a tensor is stored in (docs/FORMAT.md, "Weight types"): norms f32; the requested
// dtype, or the checkpoint's; under q4 the vocabulary matrices q8 and under --dtype q4k q6k (the LM
// head reads them in full every token and is where 4 bits cost the most perplexity); a quantized
// type only for matrices whose stored rows are whole blocks of it: a K-quant falls back to q8 (rows
// of 32), anything else to bf16. `more_bits`: a tensor --dtype q4k stores in q6k (MoreBitsTensors).
DType StoredDType(const TensorDef& def, DType source, std::optional<DType> requested,
                  bool more_bits) {
  if (def.always_f32) return DType::kF32;
  DType dtype = requested.value_or(source);
  if (!IsQuantized(dtype)) return dtype;
  if (more_bits && requested == DType::kQ4K) dtype = DType::kQ6K;
  if (def.vocab_matrix && dtype == DType::kQ4) dtype = DType::kQ8;
  // A K-quant source (a GGUF's) is kept as it is unless --dtype asks.
  if (def.vocab_matrix && dtype == DType::kQ4K && requested) dtype = DType::kQ6K;
  const std::vector<uint64_t> shape = def.stored_shape();
  if (shape.size() != 2 || shape[1] % kQuantBlock != 0) return DType::kBF16;
  return shape[1] % DTypeBlockElements(dtype) != 0 ? DType::kQ8 : dtype;
}

// The tensors --dtype q4k stores in q6k: attn_v of the layers llama.cpp's Q4_K_M gives more bits
// and of the first layers, and ffn_down of the first layers only. Q4_K_M keeps ffn_down in q6k on
// all its more-bits layers; past the first layers that bought little KL divergence on the demo
// model for its bytes, and down rows are half of what sparse decode reads per active neuron
// (docs/BENCHMARKS.md, "q4k's recipe").
std::set<std::string, std::less<>> MoreBitsTensors(const ModelConfig& config) {
  std::set<std::string, std::less<>> names;
  for (int64_t l = 0; l < config.layers; ++l) {
    const bool first = Q4KFirstLayers(l, config.layers);
    if (first || Q4KMoreBits(l, config.layers)) names.insert(LayerTensorName(l, "attn_v"));
    if (first) names.insert(LayerTensorName(l, "ffn_down"));
  }
  return names;
}

// Whether a --tensor-type pattern names `name`: the stored name itself, or its role in a layer.
bool TensorTypeMatches(std::string_view pattern, std::string_view name) {
  if (pattern == name) return true;
  if (!name.starts_with("layers.")) return false;
  const size_t role = name.find('.', 7);
  return role != std::string_view::npos && name.substr(role + 1) == pattern;
}

// How an override is named in messages: the flag as the user gave it.
std::string TensorTypeFlag(const std::string& pattern, DType type) {
  return "--tensor-type " + pattern + "=" + std::string(DTypeName(type));
}

// `dtype` after the --tensor-type overrides that name `def` (in order: a later one wins); marks
// each override that matched in `used`. An override the tensor cannot take is refused, not
// quietly replaced by a fallback: the user asked for that type by name.
DType WithTensorTypes(const TensorDef& def, DType dtype,
                      const std::vector<std::pair<std::string, DType>>& overrides,
                      std::vector<bool>& used) {
  for (size_t k = 0; k < overrides.size(); ++k) {
    const auto& [pattern, type] = overrides[k];
    if (!TensorTypeMatches(pattern, def.name)) continue;
    const std::string flag = TensorTypeFlag(pattern, type);
    if (def.always_f32) throw Error(flag, def.name + " is a norm, always stored f32");
    const std::vector<uint64_t> shape = def.stored_shape();
    if (IsQuantized(type) && (shape.size() != 2 || shape[1] % DTypeBlockElements(type) != 0)) {
      throw Error(flag, def.name + " has rows of " + std::to_string(shape.back()) +
                            " values, not whole blocks of " +
                            std::to_string(DTypeBlockElements(type)));
    }
    dtype = type;
    used[k] = true;
  }
  return dtype;
}

}  // namespace

namespace {

// The conversion proper, whatever the checkpoint's container: `config_text` is what the .zsk
// keeps as the source config, `config_source` what messages about it name.
ConvertResult ConvertCheckpoint(const ConvertOptions& opt, const std::string& config_text,
                                const ModelConfig& config, std::string tokenizer,
                                const CheckpointReader& ckpt_ref, const std::string& config_path,
                                const std::string& config_source);

// A llama-architecture GGUF (src/format/gguf.h): config and tokenizer from its metadata.
ConvertResult ConvertGguf(const ConvertOptions& opt) {
  GgufHeader header = ReadGgufHeader(opt.hf_dir);
  const std::string config_text = GgufConfigJson(header, opt.hf_dir, opt.act);
  const ModelConfig config = ParseHfConfig(config_text, opt.hf_dir + " (metadata)");
  std::string tokenizer = GgufTokenizerModel(header, opt.hf_dir);
  CheckTokenizerModel(tokenizer, config.vocab, opt.hf_dir + " (tokenizer.ggml.*)");
  const std::unique_ptr<CheckpointReader> ckpt = OpenGgufCheckpoint(opt.hf_dir, std::move(header));
  RefuseOutputThatIsAnInput(opt.out_path, {opt.hf_dir});
  return ConvertCheckpoint(opt, config_text, config, std::move(tokenizer), *ckpt, opt.hf_dir,
                           "the GGUF metadata");
}

}  // namespace

bool Q4KMoreBits(int64_t layer, int64_t layers) {
  return layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;
}

bool Q4KFirstLayers(int64_t layer, int64_t layers) {
  return layer < std::max<int64_t>(1, layers / 8);
}

ConvertResult ConvertHfCheckpoint(const ConvertOptions& opt) {
  CheckOutputPath(opt.out_path);  // fail before reading gigabytes, not after
  if (struct stat st; ::stat(opt.hf_dir.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    if (IsGgufFile(opt.hf_dir)) return ConvertGguf(opt);
    throw Error(opt.hf_dir, "is neither a checkpoint directory nor a GGUF file (no GGUF magic)");
  }
  if (!opt.act.empty()) {
    throw Error(opt.hf_dir, "--act is for GGUF input (a checkpoint directory's config.json "
                            "names its hidden_act)");
  }
  const std::string config_path = opt.hf_dir + "/config.json";
  if (!FileExists(config_path)) {
    throw Error(config_path, "missing (is this a checkpoint directory?)");
  }
  const std::string config_text = ReadSmallFile(config_path, kMaxConfigBytes);
  const ModelConfig config = ParseHfConfig(config_text, config_path);

  std::vector<std::string> inputs = {config_path};
  std::string tokenizer;
  if (FindArchitecture(config.hf_architecture)->byte_level_bpe) {
    // GPT-2 byte-level BPE (OPT): vocab.json and merges.txt, checked by building it.
    const std::string vocab_path = opt.hf_dir + "/vocab.json";
    const std::string merges_path = opt.hf_dir + "/merges.txt";
    for (const std::string& p : {vocab_path, merges_path}) {
      if (!FileExists(p)) throw Error(p, "missing (" + config.hf_architecture + "'s tokenizer)");
    }
    tokenizer = PackByteLevelBpe(ReadSmallFile(vocab_path, kMaxTokenizerBytes),
                                 ReadSmallFile(merges_path, kMaxTokenizerBytes));
    const auto bpe = Tokenizer::FromPackedBpe(tokenizer, {}, opt.hf_dir);
    if (bpe->vocab_size() > config.vocab) {
      throw Error(vocab_path, "has " + std::to_string(bpe->vocab_size()) +
                                  " pieces, more than vocab_size " + std::to_string(config.vocab));
    }
    inputs.insert(inputs.end(), {vocab_path, merges_path});
  } else {
    const std::string tokenizer_path = opt.hf_dir + "/tokenizer.model";
    if (!FileExists(tokenizer_path)) {
      throw Error(tokenizer_path, "missing (a sentencepiece tokenizer.model is required)");
    }
    tokenizer = ReadSmallFile(tokenizer_path, kMaxTokenizerBytes);
    CheckTokenizerModel(tokenizer, config.vocab, tokenizer_path);
    inputs.push_back(tokenizer_path);
  }

  const std::unique_ptr<CheckpointReader> ckpt = OpenSafetensorsCheckpoint(opt.hf_dir);
  for (const auto& file : ckpt->files()) inputs.push_back(file);
  RefuseOutputThatIsAnInput(opt.out_path, inputs);
  return ConvertCheckpoint(opt, config_text, config, std::move(tokenizer), *ckpt, config_path,
                           "config.json");
}

namespace {

ConvertResult ConvertCheckpoint(const ConvertOptions& opt, const std::string& config_text,
                                const ModelConfig& config, std::string tokenizer,
                                const CheckpointReader& ckpt_ref, const std::string& config_path,
                                const std::string& config_source) {
  const CheckpointReader* ckpt = &ckpt_ref;
  const TensorTable table = ArchitectureTensors(config);

  // Every stored tensor present with the shape the config implies; nothing unexplained extra.
  std::vector<const CheckpointTensor*> sources;  // parallel to table.stored()
  for (const TensorDef& def : table.stored()) {
    const CheckpointTensor* t = ckpt->Find(def.hf_name);
    if (t == nullptr) throw Error(ckpt->path(), "missing tensor '" + def.hf_name + "'");
    if (t->shape != def.hf_shape) {
      throw Error(t->path, "tensor '" + def.hf_name + "' has shape " + ShapeString(t->shape) +
                               " but " + config_source + " implies " +
                               ShapeString(def.hf_shape));
    }
    sources.push_back(t);
  }
  std::vector<std::string> warnings;
  for (const CheckpointTensor& t : ckpt->tensors()) {
    if (table.FindHf(t.name) != nullptr) continue;
    const std::optional<std::string> skip = table.SkipReason(t.name);
    if (!skip) {
      throw Error(t.path, "unexpected tensor '" + t.name + "' (not part of a " +
                              config.hf_architecture + " with this " + config_source + ")");
    }
    warnings.push_back("skipping tensor '" + t.name + "' (" + *skip + ")");
  }

  // --shadow: each layer's gate is followed by its shadow (docs/SHADOW_GATE.md).
  std::map<std::string, int64_t, std::less<>> gate_layer;
  if (opt.shadow_gate) {
    CheckShadowable(config, config_path);
    for (int64_t l = 0; l < config.layers; ++l) gate_layer[LayerTensorName(l, "ffn_gate")] = l;
  }

  const std::set<std::string, std::less<>> more_bits = MoreBitsTensors(config);
  std::vector<bool> tensor_type_used(opt.tensor_types.size());
  std::vector<TensorSpec> specs;
  uint64_t max_src = 0, max_dst = 0, parameters = 0;
  for (size_t i = 0; i < sources.size(); ++i) {
    const TensorDef& def = table.stored()[i];
    const DType dtype = WithTensorTypes(
        def, StoredDType(def, sources[i]->dtype, opt.dtype, more_bits.contains(def.name)),
        opt.tensor_types, tensor_type_used);
    TensorSpec spec{def.name, dtype, def.layout, def.stored_shape()};
    uint64_t elements = 1;
    for (auto d : spec.shape) elements *= d;  // bounded by the config limits
    parameters += elements;
    max_src = std::max(max_src, sources[i]->nbytes);
    max_dst = std::max(max_dst, DTypeBytes(dtype, elements));
    specs.push_back(std::move(spec));
    if (const auto it = gate_layer.find(def.name); it != gate_layer.end()) {
      for (TensorSpec& s : ShadowGateSpecs(it->second, def.stored_shape()[0], config.hidden)) {
        specs.push_back(std::move(s));
      }
    }
  }

  for (size_t k = 0; k < opt.tensor_types.size(); ++k) {
    if (tensor_type_used[k]) continue;
    const auto& [pattern, type] = opt.tensor_types[k];
    throw Error(TensorTypeFlag(pattern, type),
                "names no tensor of this model (a stored name such as layers.0.ffn_down or "
                "output, or a layer role such as ffn_down)");
  }

  ZskWriter writer(opt.out_path, config, config_text, std::move(tokenizer), std::move(specs));
  // A quantized source (a GGUF's q8_0/q4_0) stored another way goes through f32.
  uint64_t max_widened = 0;
  for (size_t i = 0; i < sources.size(); ++i) {
    const DType read = sources[i]->read_type();
    if (IsQuantized(read)) {
      max_widened = std::max(max_widened, sources[i]->nbytes / DTypeBlockBytes(read) *
                                              DTypeBlockElements(read) * sizeof(float));
    }
  }
  std::vector<uint8_t> src(max_src), dst(max_dst), widened(max_widened);
  uint64_t done = 0, total_bytes = 0;
  for (const TensorInfo& t : writer.plan()) total_bytes += t.nbytes;
  size_t next = 0;  // in writer.plan(), which holds the shadows too
  for (size_t i = 0; i < sources.size(); ++i) {
    const CheckpointTensor& s = *sources[i];
    const bool transpose = table.stored()[i].layout == Layout::kTransposed;
    const TensorInfo& out = writer.plan()[next++];
    const uint8_t* stored = src.data();
    ckpt->Read(s, src.data());
    uint64_t elements = 1;
    for (uint64_t d : s.shape) elements *= d;  // the reader checked the product
    const DType read = s.read_type();
    if (const uint64_t bad = CountNonFinite(src.data(), read, elements)) {
      throw Error(s.path, "tensor '" + s.name + "': " + std::to_string(bad) +
                              " values are NaN or Inf (the checkpoint is damaged)");
    }
    const uint64_t rows = s.shape.size() == 2 ? s.shape[0] : 1;
    const uint64_t cols = s.shape.size() == 2 ? s.shape[1] : s.shape[0];
    if (!transpose && out.dtype == read) {
      writer.WriteNext({src.data(), s.nbytes});
    } else {
      const uint8_t* from = src.data();
      DType from_type = read;
      if (IsQuantized(read)) {
        // Dequantize (exact), then transpose (blocks run along the rows, which transposing turns
        // into columns) and quantize again when the output is quantized (docs/FORMAT.md, GGUF).
        ConvertMatrix(src.data(), read, rows, cols, false, widened.data(), DType::kF32);
        from = widened.data();
        from_type = DType::kF32;
      }
      const uint64_t overflows =
          ConvertMatrix(from, from_type, rows, cols, transpose, dst.data(), out.dtype);
      if (overflows > 0) {
        throw Error(s.path, "tensor '" + s.name + "': " + std::to_string(overflows) +
                                " values overflow " + std::string(DTypeName(out.dtype)) +
                                (IsQuantized(out.dtype) ? " (their block scale exceeds f16)" : "") +
                                " (use --dtype bf16 or f32)");
      }
      writer.WriteNext({dst.data(), out.nbytes});
      stored = dst.data();
    }
    done += out.nbytes;
    if (gate_layer.contains(out.name)) {
      WriteShadowGate(writer, stored, out.dtype, out.shape[0], out.shape[1], s.path, s.name);
      for (int k = 0; k < 2; ++k) done += writer.plan()[next++].nbytes;
    }
    if (opt.progress) opt.progress(done, total_bytes);
  }
  ConvertResult result{writer.plan().size(), parameters, writer.file_size(), std::move(warnings)};
  writer.Finish([&] {
    if (opt.before_commit) opt.before_commit(result);
  });
  return result;
}

}  // namespace

ConvertResult AddShadowGate(const ShadowOptions& opt) {
  CheckOutputPath(opt.out_path);
  const std::unique_ptr<ZskFile> in = ZskFile::Open(opt.in_path);
  const ModelConfig& config = in->config();
  CheckShadowable(config, opt.in_path);
  // The copy gets fresh checksums: damage the input's would catch must be caught now.
  in->VerifyChecksums();
  const TensorTable table = ArchitectureTensors(config);
  for (const TensorInfo& t : in->tensors()) {
    if (!IsShadowGateTensor(t.name) && table.find(t.name) == nullptr) {
      throw Error(opt.in_path, "unexpected tensor '" + t.name + "' (not part of a " +
                                   config.hf_architecture + ")");
    }
  }
  // Every tensor but old shadows, in file order, each layer's gate followed by its new shadow.
  std::map<std::string, int64_t, std::less<>> gate_layer;
  for (int64_t l = 0; l < config.layers; ++l) {
    const std::string name = LayerTensorName(l, "ffn_gate");
    const TensorInfo* gate = in->Find(name);
    if (gate == nullptr) throw Error(opt.in_path, "missing tensor '" + name + "'");
    if (gate->shape.size() != 2 || gate->shape[1] != static_cast<uint64_t>(config.hidden)) {
      throw Error(opt.in_path, "tensor '" + name + "' has shape " + ShapeString(gate->shape) +
                                   " but the config implies [ffn, " +
                                   std::to_string(config.hidden) + "]");
    }
    gate_layer[name] = l;
  }
  std::vector<const TensorInfo*> copied;
  std::vector<TensorSpec> specs;
  uint64_t parameters = 0;
  for (const TensorInfo& t : in->tensors()) {
    if (IsShadowGateTensor(t.name)) continue;
    copied.push_back(&t);
    specs.push_back({t.name, t.dtype, t.layout, t.shape});
    parameters += t.elements();
    if (const auto it = gate_layer.find(t.name); it != gate_layer.end()) {
      for (TensorSpec& s : ShadowGateSpecs(it->second, t.shape[0], t.shape[1])) {
        specs.push_back(std::move(s));
      }
    }
  }
  ZskWriter writer(opt.out_path, config, in->source_config_json(),
                   std::string(in->tokenizer_model()), std::move(specs));
  uint64_t done = 0, total_bytes = 0;
  for (const TensorInfo& t : writer.plan()) total_bytes += t.nbytes;
  size_t next = 0;
  for (const TensorInfo* t : copied) {
    const auto* data = static_cast<const uint8_t*>(in->data(*t));
    if (gate_layer.contains(t->name)) {
      // NaN or Inf in a gate makes NaN shadow norms, which loading the output refuses.
      if (const uint64_t bad = CountNonFinite(data, t->dtype, t->elements())) {
        throw Error(opt.in_path, "tensor '" + t->name + "': " + std::to_string(bad) +
                                     " values are NaN or Inf (the file is damaged)");
      }
    }
    writer.WriteNext({data, t->nbytes});
    done += writer.plan()[next++].nbytes;
    if (gate_layer.contains(t->name)) {
      WriteShadowGate(writer, data, t->dtype, t->shape[0], t->shape[1], opt.in_path, t->name);
      for (int k = 0; k < 2; ++k) done += writer.plan()[next++].nbytes;
    }
    if (opt.progress) opt.progress(done, total_bytes);
  }
  ConvertResult result{writer.plan().size(), parameters, writer.file_size(), {}};
  writer.Finish([&] {
    if (opt.before_commit) opt.before_commit(result);
  });
  return result;
}

}  // namespace zeroskip
