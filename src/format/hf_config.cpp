// config.json parsing and the native metadata round trip, both driven by one table of fields.
// Limits below are far beyond any real model yet keep every derived byte count (e.g. vocab *
// hidden * 4) well inside 64 bits.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <type_traits>
#include <variant>
#include <vector>

#include "arch/architectures.h"
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
constexpr double kMaxThreshold = 1e4;

// Which text is read: a Hugging Face config.json or the config in a .zsk's metadata.
enum class Source { kHfConfig, kNative };

class Fields {
 public:
  Fields(const json& j, const std::string& path) : j_(j), path_(path) {}

  [[noreturn]] void Fail(const std::string& reason) const { throw Error(path_, reason); }

  bool Has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  const json& At(const char* key) const { return j_.at(key); }

  int64_t Int(const json& v, const char* key, int64_t lo, int64_t hi) const {
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
  float Float(const json& v, const char* key, float lo, float hi) const {
    if (!v.is_number()) Fail(std::string(key) + " must be a number");
    const auto x = static_cast<float>(v.get<double>());
    if (!(x > lo && x < hi)) Fail(std::string(key) + " is out of range: " + v.dump());
    return x;
  }
  bool Bool(const json& v, const char* key) const {
    if (!v.is_boolean()) Fail(std::string(key) + " must be true or false");
    return v.get<bool>();
  }
  std::string String(const json& v, const char* key) const {
    if (!v.is_string()) Fail(std::string(key) + " must be a string");
    return v.get<std::string>();
  }
  // bos/eos ids: an integer, or a list whose first entry is used (an empty list: none).
  int64_t TokenId(const json& v, const char* key, int64_t vocab) const {
    if (v.is_array()) return v.empty() ? -1 : Int(v.front(), key, 0, vocab - 1);
    return Int(v, key, 0, vocab - 1);
  }

 private:
  const json& j_;
  const std::string& path_;
};

// ------------------------------------------------------------------------------ the field table

enum class Kind {
  kArchitecture,     // config.json: "architectures": [name, ...]; native: "architecture": name
  kActivation,       // "relu", "silu" or "fatrelu"
  kThreshold,        // fatrelu's threshold: a number in [lo, hi]; ignored for other activations
  kCount,            // an integer in [lo, hi]
  kTokenId,          // an integer in [0, vocab); absent, null or [] means none (-1)
  kFloat,            // a number, lo < x < hi once stored as a float
  kBool,             // true or false
  kWindow,           // config.json only: an integer in [lo, hi] that caps the member
  kUnsupported,      // config.json only: any value is refused
  kUnsupportedTrue,  // config.json only: true or false, true is refused
};

using Member = std::variant<std::monostate, std::string ModelConfig::*, Activation ModelConfig::*,
                            int64_t ModelConfig::*, float ModelConfig::*, bool ModelConfig::*>;

// What a text without the key (or with null) means.
struct Absent {
  enum { kAllowed, kMissing, kValue, kDerived } rule = kAllowed;
  json value;  // kValue: read as if the text held it
  // kDerived: sets the member from fields read before it.
  void (*derive)(ModelConfig&, const Fields&) = nullptr;
};
Absent Missing() { return {Absent::kMissing, {}, nullptr}; }
Absent Value(json v) { return {Absent::kValue, std::move(v), nullptr}; }
Absent Derived(void (*derive)(ModelConfig&, const Fields&)) {
  return {Absent::kDerived, {}, derive};
}

struct ConfigField {
  const char* hf_key;      // in config.json; nullptr: not read from it
  const char* native_key;  // in the native metadata and `info --json`; nullptr: not stored
  Kind kind;
  Member member;
  double lo = 0, hi = 0;  // kCount, kWindow: inclusive; kFloat: exclusive
  Absent hf_absent = Missing(), native_absent = Missing();
};

// config.json without "architectures": its model_type names the architecture.
void ArchitectureFromModelType(ModelConfig& c, const Fields& f) {
  const json type = f.Has("model_type") ? f.At("model_type") : json("");
  const Architecture* a = FindArchitectureByModelType(f.String(type, "model_type"));
  if (a == nullptr) {
    f.Fail("missing architectures (and model_type is not " + SupportedModelTypes() + ")");
  }
  c.hf_architecture = a->hf_name;
}
void KvHeadsFromHeads(ModelConfig& c, const Fields&) { c.kv_heads = c.heads; }
void HeadDimFromHidden(ModelConfig& c, const Fields& f) {
  if (c.hidden % c.heads != 0) f.Fail("hidden_size must be a multiple of num_attention_heads");
  c.head_dim = c.hidden / c.heads;
  // Derived, so the field's own range check did not see it: the native reader applies it.
  if (c.head_dim > kMaxHeadDim) {
    f.Fail("hidden_size / num_attention_heads = " + std::to_string(c.head_dim) +
           " is an absurd head_dim (at most " + std::to_string(kMaxHeadDim) + ")");
  }
}

void EmbedDimFromHidden(ModelConfig& c, const Fields&) { c.embed_dim = c.hidden; }

// Fields whose native key only OPT files hold.
bool OptOnly(const char* native_key) {
  return native_key != nullptr && (std::string_view(native_key) == "word_embed_proj_dim" ||
                                   std::string_view(native_key) == "do_layer_norm_before");
}

// Every field, in the order it is read (a later field's rule may use an earlier one's value).
const std::vector<ConfigField>& ConfigFields() {
  using C = ModelConfig;
  static const std::vector<ConfigField> fields = {
      {"architectures", "architecture", Kind::kArchitecture, &C::hf_architecture, 0, 0,
       Derived(ArchitectureFromModelType), Value("")},
      {"rope_scaling", nullptr, Kind::kUnsupported, {}, 0, 0, Absent{}},
      {"attention_bias", nullptr, Kind::kUnsupportedTrue, {}, 0, 0, Absent{}},
      {"mlp_bias", nullptr, Kind::kUnsupportedTrue, {}, 0, 0, Absent{}},
      {"hidden_act", "hidden_act", Kind::kActivation, &C::activation, 0, 0, Value("silu"),
       Value("")},
      // ProSparse: "hidden_act": "fatrelu", "hidden_act_param": 0.01. Stored only for fatrelu.
      {"hidden_act_param", "hidden_act_param", Kind::kThreshold, &C::activation_threshold, 0,
       kMaxThreshold, Absent{}, Absent{}},
      {"hidden_size", "hidden_size", Kind::kCount, &C::hidden, 1, kMaxHidden},
      {"intermediate_size", "intermediate_size", Kind::kCount, &C::ffn, 1, kMaxFfn},
      {"num_hidden_layers", "num_hidden_layers", Kind::kCount, &C::layers, 1, kMaxLayers},
      {"num_attention_heads", "num_attention_heads", Kind::kCount, &C::heads, 1, kMaxHeads},
      {"num_key_value_heads", "num_key_value_heads", Kind::kCount, &C::kv_heads, 1, kMaxHeads,
       Derived(KvHeadsFromHeads)},
      {"head_dim", "head_dim", Kind::kCount, &C::head_dim, 2, kMaxHeadDim,
       Derived(HeadDimFromHidden)},
      {"vocab_size", "vocab_size", Kind::kCount, &C::vocab, 1, kMaxVocab},
      {"max_position_embeddings", "context_length", Kind::kCount, &C::context, 1, kMaxContext,
       Value(2048)},
      // Attention is exact while the context does not exceed the window: cap it there.
      {"sliding_window", nullptr, Kind::kWindow, &C::context, 1, kMaxContext, Absent{}},
      {"rms_norm_eps", "rms_norm_eps", Kind::kFloat, &C::rms_eps, 0, 1, Value(1e-6), Value(1e-6)},
      {"rope_theta", "rope_theta", Kind::kFloat, &C::rope_theta, 0, 1e12, Value(10000.0),
       Value(10000.0)},
      {"tie_word_embeddings", "tie_word_embeddings", Kind::kBool, &C::tied_embeddings, 0, 0,
       Value(false), Value(false)},
      // OPT only (ConfigToJson writes them for OPT alone; CheckConsistency refuses them elsewhere).
      {"word_embed_proj_dim", "word_embed_proj_dim", Kind::kCount, &C::embed_dim, 1, kMaxHidden,
       Derived(EmbedDimFromHidden), Derived(EmbedDimFromHidden)},
      {"do_layer_norm_before", "do_layer_norm_before", Kind::kBool, &C::post_norm, 0, 0,
       Value(true), Value(true)},
      {"bos_token_id", "bos_token_id", Kind::kTokenId, &C::bos_id, 0, 0, Absent{}, Absent{}},
      {"eos_token_id", "eos_token_id", Kind::kTokenId, &C::eos_id, 0, 0, Absent{}, Absent{}},
  };
  return fields;
}

// Reads field `d` from `v` (nullptr: absent or null, and no value stands in) into `c`.
void ReadField(const ConfigField& d, const json* v, Source source, const Fields& f,
               ModelConfig& c) {
  const bool hf = source == Source::kHfConfig;
  const char* key = hf ? d.hf_key : d.native_key;
  const auto lo = static_cast<int64_t>(d.lo), hi = static_cast<int64_t>(d.hi);
  switch (d.kind) {
    case Kind::kArchitecture: {
      std::string name;
      if (hf) {
        if (!v->is_array() || v->empty() || !v->front().is_string()) {
          f.Fail("architectures must be a non-empty list of strings");
        }
        name = v->front().get<std::string>();
      } else {
        name = f.String(*v, key);
      }
      if (FindArchitecture(name) == nullptr) {
        f.Fail("unsupported architecture '" + name + "'" +
               (hf ? " (supported: " + SupportedArchitectureNames() + ")" : ""));
      }
      c.*std::get<std::string ModelConfig::*>(d.member) = name;
      return;
    }
    case Kind::kActivation: {
      const std::string act = f.String(*v, key);
      Activation& a = c.*std::get<Activation ModelConfig::*>(d.member);
      if (act == "relu") {
        a = Activation::kReLU;
      } else if (act == "silu") {
        a = Activation::kSiLU;
      } else if (act == "fatrelu") {
        a = Activation::kFatReLU;
      } else {
        f.Fail(hf ? "hidden_act '" + act + "' is not supported (relu, silu or fatrelu)"
                  : "unknown hidden_act '" + act + "'");
      }
      return;
    }
    case Kind::kThreshold: {
      float& t = c.*std::get<float ModelConfig::*>(d.member);
      t = 0.0f;
      // Other activations ignore it (MiniCPM configs carry one for silu).
      if (c.activation != Activation::kFatReLU) return;
      if (v == nullptr) f.Fail("hidden_act fatrelu needs hidden_act_param (its threshold)");
      if (!v->is_number()) f.Fail(std::string(key) + " must be a number");
      // Checked as stored: a float in [0, kMaxThreshold] (NaN fails both comparisons).
      t = static_cast<float>(v->get<double>());
      if (!(t >= static_cast<float>(d.lo) && t <= static_cast<float>(d.hi))) {
        f.Fail(std::string(key) + " must be in [0, " + json(d.hi).dump() + "], got " + v->dump());
      }
      return;
    }
    case Kind::kCount:
      c.*std::get<int64_t ModelConfig::*>(d.member) = f.Int(*v, key, lo, hi);
      return;
    case Kind::kWindow:
      if (v != nullptr) {
        int64_t& m = c.*std::get<int64_t ModelConfig::*>(d.member);
        m = std::min(m, f.Int(*v, key, lo, hi));
      }
      return;
    case Kind::kTokenId: {
      int64_t& id = c.*std::get<int64_t ModelConfig::*>(d.member);
      // The native metadata writes "none" as -1.
      id = v == nullptr || (!hf && *v == -1) ? -1 : f.TokenId(*v, key, c.vocab);
      return;
    }
    case Kind::kFloat:
      c.*std::get<float ModelConfig::*>(d.member) =
          f.Float(*v, key, static_cast<float>(d.lo), static_cast<float>(d.hi));
      return;
    case Kind::kBool:
      // do_layer_norm_before is stored as itself; the member says the opposite (post_norm).
      c.*std::get<bool ModelConfig::*>(d.member) =
          f.Bool(*v, key) != (d.member == Member(&ModelConfig::post_norm));
      return;
    case Kind::kUnsupported:
      if (v != nullptr) f.Fail(std::string(key) + " is not supported");
      return;
    case Kind::kUnsupportedTrue:
      if (v != nullptr && f.Bool(*v, key)) f.Fail(std::string(key) + " is not supported");
      return;
  }
}

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
  const bool opt = FindArchitecture(c.hf_architecture)->forward == ForwardFamily::kOpt;
  if (!opt && (c.embed_dim != c.hidden || c.post_norm)) {
    f.Fail("word_embed_proj_dim and do_layer_norm_before are OPT's (this is " +
           c.hf_architecture + ")");
  }
  // project_in/out map embed_dim to hidden; the forward pass keeps the narrower rows in
  // hidden-wide buffers (every published OPT has word_embed_proj_dim <= hidden_size).
  if (c.embed_dim > c.hidden) f.Fail("word_embed_proj_dim must not exceed hidden_size");
  if (opt && (c.kv_heads != c.heads || c.head_dim * c.heads != c.hidden)) {
    f.Fail("OPT has neither num_key_value_heads nor head_dim");
  }
  if (opt && !c.tied_embeddings) f.Fail("OPT with an untied lm_head is not supported");
  if (c.heads * c.head_dim > 4 * kMaxHidden) f.Fail("num_attention_heads * head_dim is absurd");
}

ModelConfig ReadConfig(const json& j, Source source, const std::string& path) {
  const Fields f(j, path);
  ModelConfig c;
  for (const ConfigField& d : ConfigFields()) {
    const char* key = source == Source::kHfConfig ? d.hf_key : d.native_key;
    if (key == nullptr) continue;
    if (f.Has(key)) {
      ReadField(d, &f.At(key), source, f, c);
      continue;
    }
    const Absent& absent = source == Source::kHfConfig ? d.hf_absent : d.native_absent;
    switch (absent.rule) {
      case Absent::kAllowed:
        ReadField(d, nullptr, source, f, c);
        break;
      case Absent::kMissing:
        f.Fail(std::string("missing ") + key);
      case Absent::kValue:
        ReadField(d, &absent.value, source, f, c);
        break;
      case Absent::kDerived:
        absent.derive(c, f);
        break;
    }
  }
  // dReLU is a property of the architecture (BambooForCausalLM's MLP applies its activation to
  // up as well), derived from it on both sides.
  c.relu_up = FindArchitecture(c.hf_architecture)->relu_up;
  c.gated_ffn = FindArchitecture(c.hf_architecture)->gated_ffn;
  if (c.relu_up && c.activation != Activation::kReLU) {
    f.Fail(c.hf_architecture + " (dReLU) needs hidden_act relu, got " +
           std::string(ActivationName(c.activation)));
  }
  CheckConsistency(c, f);
  return c;
}

bool IsOptConfig(const json& j) {
  const auto has_string = [](const json& v, const char* s) { return v.is_string() && v == s; };
  if (j.contains("architectures") && j["architectures"].is_array() &&
      !j["architectures"].empty()) {
    return has_string(j["architectures"].front(), "OPTForCausalLM");
  }
  return j.contains("model_type") && has_string(j["model_type"], "opt");
}

// OPT's config.json (OPTConfig) in the keys the field table reads: ffn_dim is
// intermediate_size, activation_function hidden_act; the defaults are OPTConfig's. What the
// runtime cannot compute is refused by name.
json OptAsLlamaKeys(json j, const std::string& path) {
  const Fields f(j, path);
  for (const char* key : {"intermediate_size", "hidden_act", "num_key_value_heads", "head_dim",
                          "rms_norm_eps", "rope_theta"}) {
    if (f.Has(key)) f.Fail(std::string(key) + " is not an OPT config key");
  }
  if (!f.Has("ffn_dim")) f.Fail("missing ffn_dim");
  j["intermediate_size"] = j["ffn_dim"];
  j["hidden_act"] = f.Has("activation_function") ? j["activation_function"] : json("relu");
  if (f.String(j["hidden_act"], "activation_function") != "relu") {
    f.Fail("activation_function '" + j["hidden_act"].get<std::string>() +
           "' is not supported (OPT: relu)");
  }
  for (const char* key : {"enable_bias", "layer_norm_elementwise_affine"}) {
    if (f.Has(key) && !f.Bool(j[key], key)) f.Fail(std::string(key) + " false is not supported");
  }
  if (f.Has("_remove_final_layer_norm") &&
      f.Bool(j["_remove_final_layer_norm"], "_remove_final_layer_norm")) {
    f.Fail("_remove_final_layer_norm is not supported");
  }
  j["rms_norm_eps"] = 1e-5;  // torch.nn.LayerNorm's default, which OPT uses
  if (!f.Has("tie_word_embeddings")) j["tie_word_embeddings"] = true;
  return j;
}

}  // namespace

std::string_view ActivationName(Activation a) {
  switch (a) {
    case Activation::kReLU:
      return "relu";
    case Activation::kSiLU:
      return "silu";
    case Activation::kFatReLU:
      return "fatrelu";
  }
  return "?";
}

ModelConfig ParseHfConfig(std::string_view json_text, const std::string& path) {
  json j = ParseObject(json_text, path, "");
  if (IsOptConfig(j)) j = OptAsLlamaKeys(j, path);
  return ReadConfig(j, Source::kHfConfig, path);
}

std::string ConfigToJson(const ModelConfig& c) {
  json j = json::object();
  for (const ConfigField& d : ConfigFields()) {
    if (d.native_key == nullptr) continue;
    // Files of other activations keep the metadata they always had.
    if (d.kind == Kind::kThreshold && c.activation != Activation::kFatReLU) continue;
    if (OptOnly(d.native_key) &&
        FindArchitecture(c.hf_architecture)->forward != ForwardFamily::kOpt) {
      continue;
    }
    json& out = j[d.native_key];
    std::visit(
        [&](auto member) {
          if constexpr (std::is_same_v<decltype(member), Activation ModelConfig::*>) {
            out = std::string(ActivationName(c.*member));
          } else if constexpr (std::is_same_v<decltype(member), bool ModelConfig::*>) {
            out = (member == &ModelConfig::post_norm) != c.*member;  // do_layer_norm_before
          } else if constexpr (!std::is_same_v<decltype(member), std::monostate>) {
            out = c.*member;
          }
        },
        d.member);
  }
  return j.dump();
}

ModelConfig ConfigFromJson(std::string_view json_text, const std::string& path) {
  try {
    return ReadConfig(ParseObject(json_text, path, "metadata "), Source::kNative, path);
  } catch (const Error& e) {
    if (e.reason().rfind("metadata", 0) == 0) throw;
    throw Error(path, "metadata: " + e.reason());
  }
}

}  // namespace zeroskip
