// config.json parsing and the native metadata round trip. Limits below are far beyond any real
// model yet keep every derived byte count (e.g. vocab * hidden * 4) well inside 64 bits.
#include <nlohmann/json.hpp>

#include "zeroskip/config.h"
#include "zeroskip/error.h"

namespace zeroskip {
namespace {

using nlohmann::json;

constexpr int64_t kMaxHidden = 1 << 16;
constexpr int64_t kMaxFfn = 1 << 18;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxHeadDim = 1024;
constexpr int64_t kMaxVocab = 1 << 22;
constexpr int64_t kMaxContext = 1 << 22;

class Fields {
 public:
  Fields(const json& j, const std::string& path) : j_(j), path_(path) {}

  [[noreturn]] void Fail(const std::string& reason) const { throw Error(path_, reason); }

  bool Has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  int64_t Int(const char* key, int64_t lo, int64_t hi) const {
    if (!Has(key)) Fail(std::string("missing ") + key);
    return IntValue(j_.at(key), key, lo, hi);
  }
  int64_t IntOr(const char* key, int64_t fallback, int64_t lo, int64_t hi) const {
    return Has(key) ? Int(key, lo, hi) : fallback;
  }
  int64_t IntValue(const json& v, const char* key, int64_t lo, int64_t hi) const {
    if (!v.is_number_integer()) Fail(std::string(key) + " must be an integer");
    // Unsigned values above INT64_MAX are out of range whatever `hi` is.
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      Fail(std::string(key) + " is out of range");
    }
    const auto x = v.get<int64_t>();
    if (x < lo || x > hi) {
      Fail(std::string(key) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
           "], got " + std::to_string(x));
    }
    return x;
  }
  // The range is checked on the float the value is stored as, so what is accepted here reads
  // back identically from the native file (1e-50 would become 0, 0.9999999999 would become 1).
  float Float(const char* key, float fallback, float lo, float hi) const {
    if (!Has(key)) return fallback;
    const json& v = j_.at(key);
    if (!v.is_number()) Fail(std::string(key) + " must be a number");
    const auto x = static_cast<float>(v.get<double>());
    if (!(x > lo && x < hi)) Fail(std::string(key) + " is out of range: " + v.dump());
    return x;
  }
  bool Bool(const char* key, bool fallback) const {
    if (!Has(key)) return fallback;
    if (!j_.at(key).is_boolean()) Fail(std::string(key) + " must be true or false");
    return j_.at(key).get<bool>();
  }
  std::string String(const char* key) const {
    if (!Has(key)) return {};
    if (!j_.at(key).is_string()) Fail(std::string(key) + " must be a string");
    return j_.at(key).get<std::string>();
  }
  // bos/eos ids: an integer, null, or a list whose first entry is used.
  int64_t TokenId(const char* key, int64_t vocab) const {
    if (!Has(key)) return -1;
    const json& v = j_.at(key);
    if (v.is_array()) {
      if (v.empty()) return -1;
      return IntValue(v.front(), key, 0, vocab - 1);
    }
    return IntValue(v, key, 0, vocab - 1);
  }

 private:
  const json& j_;
  const std::string& path_;
};

json ParseObject(std::string_view text, const std::string& path, const std::string& prefix) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw Error(path, prefix + "is not valid JSON");
  if (!j.is_object()) throw Error(path, prefix + "is not a JSON object");
  return j;
}

void CheckConsistency(const ModelConfig& c, const Fields& f) {
  if (c.kv_heads > c.heads || c.heads % c.kv_heads != 0) {
    f.Fail("num_attention_heads (" + std::to_string(c.heads) +
           ") must be a multiple of num_key_value_heads (" + std::to_string(c.kv_heads) + ")");
  }
  if (c.head_dim % 2 != 0) f.Fail("head_dim must be even for rotary embeddings");
  if (c.heads * c.head_dim > 4 * kMaxHidden) f.Fail("num_attention_heads * head_dim is absurd");
}

ModelConfig ConfigFromMetadata(const json& j, const std::string& path);

}  // namespace

std::string_view ActivationName(Activation a) { return a == Activation::kReLU ? "relu" : "silu"; }

ModelConfig ParseHfConfig(std::string_view json_text, const std::string& path) {
  const json j = ParseObject(json_text, path, "");
  const Fields f(j, path);
  ModelConfig c;

  std::string arch;
  if (f.Has("architectures")) {
    const json& a = j.at("architectures");
    if (!a.is_array() || a.empty() || !a.front().is_string()) {
      f.Fail("architectures must be a non-empty list of strings");
    }
    arch = a.front().get<std::string>();
  } else {
    const std::string type = f.String("model_type");
    if (type == "llama") arch = "LlamaForCausalLM";
    if (type == "mistral") arch = "MistralForCausalLM";
    if (arch.empty()) f.Fail("missing architectures (and model_type is not llama or mistral)");
  }
  if (arch != "LlamaForCausalLM" && arch != "MistralForCausalLM") {
    f.Fail("unsupported architecture '" + arch + "' (supported: LlamaForCausalLM, " +
           "MistralForCausalLM)");
  }
  c.hf_architecture = arch;

  if (f.Has("rope_scaling")) f.Fail("rope_scaling is not supported");
  if (f.Bool("attention_bias", false)) f.Fail("attention_bias is not supported");
  if (f.Bool("mlp_bias", false)) f.Fail("mlp_bias is not supported");

  const std::string act = f.Has("hidden_act") ? f.String("hidden_act") : "silu";  // HF default
  if (act == "relu") {
    c.activation = Activation::kReLU;
  } else if (act == "silu") {
    c.activation = Activation::kSiLU;
  } else {
    f.Fail("hidden_act '" + act + "' is not supported (relu or silu)");
  }

  c.hidden = f.Int("hidden_size", 1, kMaxHidden);
  c.ffn = f.Int("intermediate_size", 1, kMaxFfn);
  c.layers = f.Int("num_hidden_layers", 1, kMaxLayers);
  c.heads = f.Int("num_attention_heads", 1, kMaxHeads);
  c.kv_heads = f.IntOr("num_key_value_heads", c.heads, 1, kMaxHeads);
  if (f.Has("head_dim")) {
    c.head_dim = f.Int("head_dim", 2, kMaxHeadDim);
  } else {
    if (c.hidden % c.heads != 0) f.Fail("hidden_size must be a multiple of num_attention_heads");
    c.head_dim = c.hidden / c.heads;
  }
  c.vocab = f.Int("vocab_size", 1, kMaxVocab);
  c.context = f.IntOr("max_position_embeddings", 2048, 1, kMaxContext);
  if (f.Has("sliding_window")) {
    // Attention is exact while the context does not exceed the window: cap it there.
    c.context = std::min(c.context, f.Int("sliding_window", 1, kMaxContext));
  }
  c.rms_eps = f.Float("rms_norm_eps", 1e-6f, 0.0f, 1.0f);
  c.rope_theta = f.Float("rope_theta", 10000.0f, 0.0f, 1e12f);
  c.tied_embeddings = f.Bool("tie_word_embeddings", false);
  c.bos_id = f.TokenId("bos_token_id", c.vocab);
  c.eos_id = f.TokenId("eos_token_id", c.vocab);
  CheckConsistency(c, f);
  return c;
}

std::string ConfigToJson(const ModelConfig& c) {
  json j = {{"architecture", c.hf_architecture},
            {"hidden_size", c.hidden},
            {"intermediate_size", c.ffn},
            {"num_hidden_layers", c.layers},
            {"num_attention_heads", c.heads},
            {"num_key_value_heads", c.kv_heads},
            {"head_dim", c.head_dim},
            {"vocab_size", c.vocab},
            {"context_length", c.context},
            {"hidden_act", std::string(ActivationName(c.activation))},
            {"rms_norm_eps", c.rms_eps},
            {"rope_theta", c.rope_theta},
            {"tie_word_embeddings", c.tied_embeddings},
            {"bos_token_id", c.bos_id},
            {"eos_token_id", c.eos_id}};
  return j.dump();
}

ModelConfig ConfigFromJson(std::string_view json_text, const std::string& path) {
  try {
    return ConfigFromMetadata(ParseObject(json_text, path, "metadata "), path);
  } catch (const Error& e) {
    if (e.reason().rfind("metadata", 0) == 0) throw;
    throw Error(path, "metadata: " + e.reason());
  }
}

namespace {

ModelConfig ConfigFromMetadata(const json& j, const std::string& path) {
  const Fields f(j, path);
  ModelConfig c;
  c.hf_architecture = f.String("architecture");
  if (c.hf_architecture != "LlamaForCausalLM" && c.hf_architecture != "MistralForCausalLM") {
    f.Fail("unsupported architecture '" + c.hf_architecture + "'");
  }
  c.hidden = f.Int("hidden_size", 1, kMaxHidden);
  c.ffn = f.Int("intermediate_size", 1, kMaxFfn);
  c.layers = f.Int("num_hidden_layers", 1, kMaxLayers);
  c.heads = f.Int("num_attention_heads", 1, kMaxHeads);
  c.kv_heads = f.Int("num_key_value_heads", 1, kMaxHeads);
  c.head_dim = f.Int("head_dim", 2, kMaxHeadDim);
  c.vocab = f.Int("vocab_size", 1, kMaxVocab);
  c.context = f.Int("context_length", 1, kMaxContext);
  const std::string act = f.String("hidden_act");
  if (act != "relu" && act != "silu") f.Fail("unknown hidden_act '" + act + "'");
  c.activation = act == "relu" ? Activation::kReLU : Activation::kSiLU;
  c.rms_eps = f.Float("rms_norm_eps", 1e-6f, 0.0f, 1.0f);
  c.rope_theta = f.Float("rope_theta", 10000.0f, 0.0f, 1e12f);
  c.tied_embeddings = f.Bool("tie_word_embeddings", false);
  c.bos_id =
      f.Has("bos_token_id") && j.at("bos_token_id") == -1 ? -1 : f.TokenId("bos_token_id", c.vocab);
  c.eos_id =
      f.Has("eos_token_id") && j.at("eos_token_id") == -1 ? -1 : f.TokenId("eos_token_id", c.vocab);
  CheckConsistency(c, f);
  return c;
}

}  // namespace
}  // namespace zeroskip
